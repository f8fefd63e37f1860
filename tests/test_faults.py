"""Faults around a study: unusable storage, two studies at once in one root, a second
driver on a running study. Each ends with every (trial_id, epoch) stored exactly once."""
import json
import subprocess
import sys
import time

import polars as pl
import pytest

from study.cli import main
from resultstore.store import ResultStore

SPEC = """
name: {name}
seeds: [0, 1]
dataset: {{name: intrinsic, n: {n}, factors: 2}}
model: {{latent_dim: 3}}
train: {{epochs: {epochs}, fault_epoch_delay: {delay}}}
eval: {{every: 1, traversals: false}}
checkpoint: {{every: 2}}
resources: {{cpu: 1}}
max_concurrent: 1
"""


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unwritable_storage_is_refused_before_any_trial(capsys, tmp_path, where):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = str(blocker / "results") if where == "file" else "/proc/vaestudy-results"
    assert main(["run", "--set", "dataset.n=300", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "storage: cannot write to" in err and err.count("\n") == 1
    import ray
    assert not ray.is_initialized()


def _cli(*args, log):
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args, "--no-report"],
                            stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_two_studies_in_one_root_at_once_do_not_disturb_each_other(tmp_path):
    root = tmp_path / "res"
    procs = []
    for name in ("left", "right"):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(SPEC.format(name=name, n=400, epochs=3, delay=0))
        procs.append(_cli("run", str(spec), "--out", str(root),
                          log=open(tmp_path / f"{name}.log", "w")))
    for p in procs:
        assert p.wait(timeout=600) == 0
    for name in ("left", "right"):
        store = ResultStore(str(root), name)
        rows = pl.read_parquet(store.glob("trials"))
        assert rows.height == 2 * 3 and rows.n_unique(["trial_id", "epoch"]) == 6
        assert set(rows["study"]) == {name}
        assert all(s["state"] == "completed" for s in store.all_status())


@pytest.mark.slow
def test_a_second_driver_on_a_running_study_is_refused(tmp_path):
    root = tmp_path / "res"
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name="busy", n=2000, epochs=6, delay=1.0))
    first = _cli("run", str(spec), "--out", str(root), log=open(tmp_path / "first.log", "w"))
    try:
        lock = root / "busy" / "lease"
        deadline = time.time() + 120
        while not (list(lock.glob("driver-*.json")) and (root / "busy" / "study.json").exists()) \
                and time.time() < deadline:
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "study.cli", "resume", str(root / "busy")],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"is being run by pid {first.pid}" in second.stderr
        assert first.wait(timeout=600) == 0
    finally:
        if first.poll() is None:
            first.kill()
    rows = pl.read_parquet(ResultStore(str(root), "busy").glob("trials"))
    assert rows.height == 12 and rows.n_unique(["trial_id", "epoch"]) == 12
    held = sorted(lock.glob("driver-*.json"))                  # kept, marked released
    assert [p.name for p in held] == ["driver-000001.json"]
    assert json.loads(held[0].read_text())["released"]
