"""Guard rails: local storage on a cluster, an explicit GPU share on a cluster, no credentials in
a storage URI, a device that follows its share, the storage probe, out-of-memory failing fast, a resumed search that does not repeat."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from study import guards, runner
from study.cli import main
from study.inputs import UsageError
from study.spec import parse, trial_configs
from conftest import tiny
from test_cli import _refused
from resultstore.store import ResultStore

ROOT = Path(__file__).resolve().parent.parent


# ---- local storage on a cluster --------------------------------------------------------

@pytest.mark.parametrize("how", ["flag", "env"])
def test_local_storage_on_a_cluster_is_refused_before_anything_starts(capsys, tmp_path,
                                                                      monkeypatch, how):
    out = tmp_path / "results"
    argv = ["run", "--set", "dataset.n=300", "--out", str(out)]
    if how == "flag":
        argv += ["--address", "10.0.0.1:6379"]
    else:
        monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"storage: '{out}' is a local path and the study joins the Ray cluster at " \
           "10.0.0.1:6379" in err and "storage_shared: true" in err
    assert not out.exists()
    import ray
    assert not ray.is_initialized()


def test_shared_or_object_storage_passes_the_cluster_check():
    spec = parse({"name": "x", "storage_shared": True})
    guards.check_cluster_storage(spec, "/mnt/nfs/results", "10.0.0.1:6379")
    guards.check_cluster_storage(parse({"name": "x"}), "s3://b/p", "10.0.0.1:6379")
    guards.check_cluster_storage(parse({"name": "x"}), "results", None)      # one machine
    with pytest.raises(UsageError, match="storage_shared: got 'yes'; allowed: true"):
        parse({"name": "x", "storage_shared": "yes"})


# ---- GPU shares ------------------------------------------------------------------------

def test_a_study_joining_a_cluster_without_resources_gpu_is_refused_in_one_line(capsys, tmp_path):
    """No public Ray API gives the GPUs of node types with no node up (an autoscaling
    cluster at min_workers 0), and a guessed 0 hides every GPU: the share is asked for."""
    _refused(capsys, tmp_path, ["run", "--address", "10.0.0.1:6379", "--set",
                                "storage_shared=true", "--set", "dataset.n=300"],
             "resources.gpu: not set, and the study joins the Ray cluster at 10.0.0.1:6379")


@pytest.mark.parametrize("raw,share", [
    ({"resources": {"gpu": 0.5}}, 0.5),
    ({"resources": {"gpu": 0}}, 0.0),                  # CPU only, said so
    ({"pack": 4}, 1.0),                                # a pack fills a whole GPU by default
])
def test_a_cluster_share_is_the_one_set(raw, share):
    assert guards.gpu_share(parse({"name": "x", **raw}), "10.0.0.1:6379") == share


def test_a_missing_share_on_a_cluster_is_refused_by_the_share_too():
    with pytest.raises(UsageError, match="resources.gpu: not set.*e.g. resources.gpu: 0.25"):
        guards.gpu_share(parse({"name": "x"}), "10.0.0.1:6379")


# ---- credentials in the storage URI ---------------------------------------------------

SECRET_URIS = [
    ("s3://AKIAEXAMPLE:hunter2@bucket/p", "user-info part of the s3:// URI"),
    ("s3://AKIAEXAMPLE@bucket/p", "user-info part of the s3:// URI"),
    ("abfs://:hunter2@account.dfs.core.windows.net/c", "user-info part of the abfs:// URI"),
    ("abfs://c:hunter2@account.dfs.core.windows.net/p", "user-info part of the abfs:// URI"),
    ("hdfs://u:hunter2@namenode:8020/p", "user-info part of the hdfs:// URI"),
    ("s3://bucket/p?secret_key=hunter2", "secret_key in the URI"),
    ("gs://bucket/p?access_token=hunter2", "access_token in the URI"),
    ("abfs://c@account.dfs.core.windows.net/p?account_key=hunter2", "account_key in the URI"),
    ("abfs://c@account.dfs.core.windows.net/p?sv=1&sig=hunter2", "sig in the URI"),
    ("hdfs://namenode:8020/p?kerb_ticket_password=hunter2", "kerb_ticket_password in the URI"),
]


@pytest.mark.parametrize("uri,needle", SECRET_URIS, ids=[u for u, _ in SECRET_URIS])
def test_a_credential_anywhere_in_the_storage_uri_is_refused_without_repeating_it(
        capsys, uri, needle):
    import ray

    assert main(["run", "--set", f"storage={uri}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and "hunter2" not in err, err
    assert not ray.is_initialized()


def test_names_that_are_not_secrets_pass():
    from resultstore.uri import check_uri

    for uri in ("abfs://container@account.dfs.core.windows.net/p", "hdfs://alice@namenode/p",
                "s3://b/p?endpoint_override=127.0.0.1:9000&scheme=http&region=x"):
        check_uri(uri)


DEVICE = """
import os, sys, torch
sys.path.insert(0, {root!r})
from study import guards
try:
    guards.follow_gpu_share({share}, "node-a")
except RuntimeError as e:
    print("error:", e)
print(repr(os.environ.get("CUDA_VISIBLE_DEVICES")), torch.cuda.device_count())
"""


def _device_child(share):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}        # as Ray leaves it for 0 GPUs
    r = subprocess.run([sys.executable, "-c", DEVICE.format(root=str(ROOT), share=share)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_zero_share_hides_the_gpus_before_cuda_starts():
    assert _device_child(0.0).splitlines()[-1] == "'' 0"


def test_a_gpu_share_without_a_visible_gpu_is_an_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = _device_child(0.25)
    assert "error: resources.gpu: the trial was given 0.25 of a GPU on node node-a, but no GPU " \
           "is visible there" in out


# ---- out of memory ---------------------------------------------------------------------

def test_out_of_memory_in_vaestudy_train_fails_at_once_with_the_hint(capsys, tmp_path):
    sets = [f"{k}={v}" for k, v in tiny(**{"train.epochs": 3, "train.fault_oom_epoch": 2}).items()]
    argv = ["train", "--out", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA out of memory on " in err
    assert "raise resources.gpu (fewer trials per GPU) or lower `pack`" in err
    store = ResultStore(str(tmp_path), "train")
    [st] = store.all_status()
    assert st["state"] == "failed" and st["error"] in err
    assert pl.read_parquet(store.glob("trials"))["epoch"].to_list() == [1]   # epoch 1 kept


# ---- on a real local Ray ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray
    runner.start_ray(None)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_out_of_memory_in_a_study_is_not_retried(tmp_path, ray_local):
    spec = parse({"name": "oom", "dataset": {"name": "intrinsic", "n": 300, "factors": 2},
                  "model": {"latent_dim": 3}, "eval": {"traversals": False},
                  "train": {"epochs": 2, "fault_oom_epoch": [None, 2]},
                  "checkpoint": {"every": 1}, "failure": {"max_retries": 2}, "max_concurrent": 2})
    out = runner.run(spec, str(tmp_path), log=lambda s: None)
    assert out.counts["completed"] == 1 and out.counts["failed"] == 1
    [failed] = [s for s in out.store.all_status() if s["state"] == "failed"]
    assert failed["attempts"] == 1                       # max_retries 2, yet one attempt
    assert failed["error"].startswith("CUDA out of memory on ")
    assert "raise resources.gpu" in failed["error"]


@pytest.mark.slow
def test_a_node_that_cannot_see_the_probe_fails_its_trial_at_once(tmp_path, ray_local):
    """What a node sees on its own disk: a probe an earlier driver left, not this driver's."""
    spec = parse({"name": "blind", "dataset": {"name": "intrinsic", "n": 300, "factors": 2},
                  "model": {"latent_dim": 3}, "eval": {"traversals": False},
                  "train": {"epochs": 2}, "failure": {"max_retries": 2}})
    store = ResultStore(str(tmp_path), "blind")
    store.write_json(store.path(guards.PROBE), {"driver": "an-earlier-driver"})
    trials = [(c.trial_id(), c) for c in trial_configs(spec)]
    t0 = time.time()
    todo = {tid: c.to_dict() for tid, c in trials}
    errors = runner.fit(spec, store, runner._grid_space(spec, todo)[0], configs=todo)
    [(tid, line)] = errors.items()
    assert tid == trials[0][0] and line.count("\n") == 0
    assert line.startswith("storage: node ") and "cannot see the study storage " \
        f"{store.uri()} (another driver's probe (an-earlier-driver)" in line
    assert store.status(tid) is None                     # it never started training
    assert time.time() - t0 < 120


# ---- a resumed search does not repeat itself --------------------------------------------

SEARCH = {"num_samples": 6, "max_concurrent": 1,
          "search": {"optuna": {"sampler": "random", "seed": 0}},
          "dataset": {"name": "intrinsic", "n": 400, "factors": 2}, "model": {"latent_dim": 3},
          "noise": {"sigma2": {"loguniform": [0.001, 0.3]}, "beta": {"uniform": [0.5, 2.0]}},
          "train": {"epochs": 4}, "eval": {"traversals": False}, "checkpoint": {"every": 1}}


def test_a_reopened_search_draws_new_parameters(tmp_path):
    from study.optuna_searcher import open_study
    from study.search import parse_search

    scfg = parse_search(parse({**SEARCH, "name": "re"}))
    url = f"sqlite:///{tmp_path}/o.db"
    seen = []
    for _ in range(3):                                   # a run, then two resumes
        study = open_study(scfg, url, "re")
        seen += [tuple(sorted(study.ask(fixed_distributions=scfg.space).params.items()))
                 for _ in range(2)]
    assert len(set(seen)) == 6, seen


@pytest.mark.slow
def test_a_sigkilled_random_search_resumes_without_repeating_a_parameter_set(tmp_path):
    import optuna
    spec = tmp_path / "search.yaml"
    spec.write_text(yaml.safe_dump({**SEARCH, "name": "rk"}))
    root = tmp_path / "res"
    driver = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(spec), "--out",
                               str(root), "--no-report"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:                    # after two trials are done
            done = [p for p in (root / "rk" / "status").glob("*.json")
                    if json.loads(p.read_text())["state"] == "completed"]
            if len(done) >= 2:
                break
            assert driver.poll() is None, "the search ended before it could be killed"
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        r = subprocess.run([sys.executable, "-m", "study.cli", "resume", str(root / "rk"),
                            "--no-report"], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-1500:]
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    study = optuna.load_study(study_name="rk", storage=f"sqlite:///{root}/rk/optuna.db")
    params = [tuple(sorted(t.params.items())) for t in study.get_trials()]
    assert len(params) == 6 and len(set(params)) == 6, params
