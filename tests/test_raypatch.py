"""study/raypatch.py: the Ray range is one fact (pyproject, TESTED, the installed Ray), and
each patch is checked for what it changes, so a Ray that stops needing it (or changes what it
patches) fails here rather than silently."""
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from study import raypatch

ROOT = Path(__file__).resolve().parent.parent


def test_the_ray_range_is_the_tested_one_and_holds_the_installed_ray():
    import ray

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if d.startswith("ray[tune]"))
    low = re.search(r">=(\d+)\.(\d+)", spec)
    high = re.search(r"<(\d+)\.(\d+)", spec)
    assert low and high, f"ray needs a lower and an upper bound: {spec}"
    assert raypatch.TESTED[0] == (int(low[1]), int(low[2]))
    assert raypatch.TESTED[1] == (int(high[1]), int(high[2]) - 1)
    assert raypatch.TESTED[0] <= raypatch.minor(ray.__version__) <= raypatch.TESTED[1]


@pytest.mark.parametrize("version,minor", [("2.60.0", (2, 60)), ("2.6.3", (2, 6)),
                                           ("2.52.1rc1", (2, 52)), ("3.0.0.dev0", (3, 0))])
def test_a_version_is_compared_by_number_not_by_prefix(version, minor):
    assert raypatch.minor(version) == minor


PROBE = """
import socket, sys
from ray._private import services
from study import raypatch
before = services.resolve_ip_for_localhost("127.0.0.1"), services.get_node_ip_address()
raypatch.keep_loopback_address()
raypatch.private_single_node()
after = services.resolve_ip_for_localhost("127.0.0.1"), services.get_node_ip_address()
print(*before, *after)
"""


def _outward_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:     # UDP: nothing is sent
        try:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_ray_swaps_loopback_for_the_outward_address_and_the_patches_keep_it():
    """The behaviour each patch exists for: unpatched, Ray turns 127.0.0.1 into the machine's
    outward address (a node would advertise an address it does not listen on); patched, the
    address stays 127.0.0.1. When Ray stops swapping, the first assertion fails: the patches
    can go."""
    if _outward_address() is None:
        pytest.skip("this machine has no outward address: Ray has nothing to swap in")
    from study import raypatch
    # unpatched means also without the flag an earlier in-process study left in os.environ
    env = {k: v for k, v in os.environ.items() if k != raypatch.LOOPBACK_ONLY}
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                       cwd=str(ROOT), timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    resolved, node, resolved_after, node_after = r.stdout.split()
    assert resolved != "127.0.0.1" and node != "127.0.0.1", r.stdout
    assert resolved_after == node_after == "127.0.0.1", r.stdout


def test_tunes_current_output_still_prints_a_box_per_trial_at_its_table_verbosity(monkeypatch):
    """Why raypatch.legacy_output exists: at the verbosity that shows the trial table, Tune's
    current reporter also prints every trial's start and end. When Ray gives the table
    without them, this fails: switch to the current output then. And the switch itself
    still turns the current output off."""
    from ray.tune.experimental import output

    assert output.TuneReporterBase._start_end_verbosity <= \
        output.TuneReporterBase._heartbeat_threshold
    monkeypatch.delenv(raypatch.NEW_OUTPUT, raising=False)
    assert output.get_air_verbosity(1) is not None
    raypatch.legacy_output()
    assert output.get_air_verbosity(1) is None


@pytest.mark.slow
def test_a_private_ray_runs_its_node_on_loopback():
    """What raypatch.private_single_node and loopback_node (ray.init's private
    `_node_ip_address`) are for: the driver's own Ray advertises 127.0.0.1, never the
    machine's outward address, so nothing listens beyond this machine."""
    code = ("import json, ray; from study.tuner import start_ray; start_ray(None, log=print);"
            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes()])); ray.shutdown()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(ROOT), timeout=180, env={**os.environ, "RAY_ADDRESS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == '["127.0.0.1"]', r.stdout
