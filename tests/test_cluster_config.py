"""cluster.yaml and cluster-onprem.yaml: Ray's own validation, and the security contract.

Validation is the cluster launcher's own first step (`ray up` calls
`prepare_config` then `validate_config`: defaults merged, the autoscaler's
JSON schema checked); nothing here contacts a cloud provider. The contract
tests pin what issue 6 asks of the files: SSH only into the cluster, the
dashboard on loopback, token authentication on every node with the token
copied from the laptop and never written in the file, min 0 GPU workers,
the project installed at a pinned version.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
FILES = ["cluster.yaml", "cluster-onprem.yaml"]
SECRET_PATTERNS = [r"AKIA[0-9A-Z]{16}", r"aws_secret_access_key", r"aws_session_token",
                   r"BEGIN [A-Z ]*PRIVATE KEY", r"RAY_AUTH_TOKEN\s*[:=]", r"password"]


def raw(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def prepared(name: str) -> dict:
    config = prepare_config(raw(name))
    validate_config(config)
    return config


@pytest.mark.parametrize("name", FILES)
def test_ray_validates_the_config(name):
    config = prepared(name)
    assert config["head_node_type"] in config["available_node_types"]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("mutate", [
    lambda c: c.update(idle_timeout_minute=5),                 # misspelt key
    lambda c: c.update(idle_timeout_minutes=-1),               # out of range
    lambda c: c["auth"].update(password="x"),                  # not an auth field
])
def test_the_same_validation_refuses_a_broken_copy(name, mutate):
    config = copy.deepcopy(raw(name))
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", FILES)
def test_no_secrets_in_the_file(name):
    text = (ROOT / name).read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text, re.IGNORECASE), f"{name}: matches {pattern}"


@pytest.mark.parametrize("name", FILES)
def test_token_auth_on_every_node_with_the_laptops_token(name):
    config = prepared(name)
    mounts = {remote: local for remote, local in config["file_mounts"].items()
              if remote.endswith("/.ray/auth_token")}
    assert list(mounts.values()) == ["~/.ray/auth_token"]       # copied, never inlined
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(c for c in config[key] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start, key
    assert any("RAY_AUTH_MODE=token" in c for c in config["initialization_commands"])


@pytest.mark.parametrize("name", FILES)
def test_dashboard_and_job_api_on_loopback_only(name):
    config = prepared(name)
    head = next(c for c in config["head_start_ray_commands"] if "ray start" in c)
    assert "--dashboard-host=127.0.0.1" in head
    commands = [c for key, v in config.items() if key.endswith("_commands") for c in v]
    assert not any("0.0.0.0" in c for c in commands)


@pytest.mark.parametrize("name", FILES)
def test_project_installed_at_a_pinned_version(name):
    setup = " ".join(prepared(name)["setup_commands"])
    assert re.search(r'"ray\[default\]==\d+\.\d+\.\d+"', setup)
    pin = re.search(r"vaestudy @ git\+\S+?\.git@(\S+?)\"", setup)
    assert pin, "vaestudy is installed from a git URL"
    assert re.fullmatch(r"v\d+\.\d+\.\d+|[0-9a-f]{40}", pin.group(1)), pin.group(1)


def test_aws_ssh_is_the_only_way_in():
    provider = prepared("cluster.yaml")["provider"]
    assert provider["type"] == "aws"
    # Ray's own rules for a new group: node-to-node traffic and SSH; add none.
    assert provider["security_group"]["IpPermissions"] == []


def test_aws_cpu_head_and_autoscaling_gpu_workers():
    config = prepared("cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}                      # no trial on the head
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    gpu = workers[0]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))
    assert gpu["min_workers"] == 0
    assert 1 <= gpu["max_workers"] <= config["max_workers"]
    assert config["idle_timeout_minutes"] > 0
    # workers write to S3 too, with a profile of their own: not the head's (Ray's default,
    # which may launch instances and pass roles), but one scoped to the results bucket
    arn = gpu["node_config"]["IamInstanceProfile"]["Arn"]
    assert arn.endswith(":instance-profile/vaestudy-worker") and "ray-autoscaler" not in arn
    assert "IamInstanceProfile" not in head["node_config"]


def test_onprem_uses_the_local_provider():
    config = prepared("cluster-onprem.yaml")
    provider = config["provider"]
    assert provider["type"] == "local"
    assert provider["head_ip"] and provider["worker_ips"]
    assert provider["head_ip"] not in provider["worker_ips"]


def test_setup_needs_only_python_and_pip():
    """No uv, no `pip install --user` (refused by Debian 12's system Python): a venv and its
    pip, the same commands in both files (tests/test_cluster_up.py runs the on-prem ones)."""
    onprem, aws = (prepared(n)["setup_commands"] for n in FILES[::-1])
    for cmd in onprem + aws:
        assert not re.search(r"\buv\b|--user", cmd), cmd
    install = [c for c in onprem if " -m venv " in c or " -m pip install " in c]
    assert len(install) == 2 and install == [c for c in aws if c in install]


def test_onprem_head_runs_autoscaler_v1():
    """`ray up` turns on autoscaler v2, which never starts a local provider's workers."""
    head = next(c for c in prepared("cluster-onprem.yaml")["head_start_ray_commands"]
                if "ray start" in c)
    assert "RAY_enable_autoscaler_v2=0" in head


def test_docs_never_give_credentials_through_the_jobs_runtime_env():
    """Ray keeps a job's runtime env in its record (dashboard, `ray job list`): credentials go
    to each machine instead; the docs may warn against it, never show it."""
    import re

    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert not re.search(r"env_vars[^\n]{0,200}AWS_(ACCESS|SECRET|SESSION)", text), doc
        for line in text.splitlines():
            if "--runtime-env-json" in line:
                assert "Never" in line, (doc, line)       # the warning itself
