"""A study whose driver is SIGKILLed mid-run, then `vaestudy resume`d: every trial
completes and every (trial_id, epoch) is stored exactly once."""
import json
import signal
import time
from pathlib import Path

import polars as pl
import pytest

from support.procs import cli, procs  # noqa: F401
from resultstore.store import ResultStore

pytestmark = pytest.mark.slow
SPEC = """
name: killed
seeds: [0, 1]
dataset: {name: intrinsic, n: 800, factors: 2}
model: {latent_dim: 4}
noise: {sigma2: [0.01, 0.1]}
train: {epochs: 8, fault_epoch_delay: 1.0}   # a kill after the epoch-4 checkpoint leaves 4 s
eval: {every: 1, traversals: false}
checkpoint: {every: 2}
max_concurrent: 2
"""


def test_sigkilled_driver_then_resume_gives_each_epoch_once(procs):
    spec = procs.tmp / "spec.yaml"
    spec.write_text(SPEC)
    root = procs.tmp / "res"
    store = ResultStore(str(root), "killed")
    driver = procs.start(cli("run", str(spec), "--out", str(root), "--no-report"), "run")
    deadline = time.time() + 240
    while time.time() < deadline:                 # kill once some trial passed a checkpoint
        ckpts = list(Path(store.path("checkpoints")).glob("*/epoch-000004.pt"))
        if ckpts:
            break
        assert driver.poll() is None, "the study ended before it could be killed"
        time.sleep(0.2)
    assert ckpts, "no checkpoint within 240 s"
    driver.send_signal(signal.SIGKILL)             # the driver alone, as a crash would
    driver.wait()
    procs.kill(driver)                             # what Ray left of the killed driver's session
    states = {s["state"] for s in store.all_status()}
    assert "completed" not in states or len(store.all_status()) < 4
    rc, out = procs.run(cli("resume", str(root / "killed"), "--no-report"), "resume")
    assert rc == 0, out[-3000:]

    assert "4 completed" in out
    trials = pl.scan_parquet(store.glob("trials")).collect()
    assert trials.height == 4 * 8
    assert trials.n_unique(["trial_id", "epoch"]) == trials.height
    assert sorted(trials.group_by("trial_id").agg(pl.col("epoch").max())["epoch"]) == [8] * 4
    factors = pl.scan_parquet(store.glob("factors")).collect()
    assert factors.n_unique(["trial_id", "epoch", "factor"]) == factors.height == 4 * 8 * 4
    resumed_trials = [s for s in store.all_status() if s.get("attempts", 1) > 1]
    assert resumed_trials, "no trial was interrupted and resumed"
    assert all(s["state"] == "completed" for s in store.all_status())


def test_ctrl_c_stops_the_study_and_says_how_to_resume(procs):
    spec = procs.tmp / "spec.yaml"
    spec.write_text(SPEC.replace("name: killed", "name: interrupted"))
    root = procs.tmp / "res"
    store = ResultStore(str(root), "interrupted")
    driver = procs.start(cli("run", str(spec), "--out", str(root), "--no-report"), "run")
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None:
        if list(Path(store.path("checkpoints")).glob("*/epoch-000002.pt")):
            break
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=180)
    out = procs.log("run")
    assert driver.returncode == 130, out[-2000:]
    assert "vaestudy resume" in out
    leases = sorted((root / "interrupted" / "lease").glob("driver-*.json"))
    assert [json.loads(p.read_text())["released"] for p in leases] == [True]   # released
    rc, resumed = procs.run(cli("resume", str(root / "interrupted"), "--no-report"), "resume")
    assert rc == 0, resumed[-3000:]
    trials = pl.scan_parquet(store.glob("trials")).collect()
    assert trials.height == 4 * 8 and trials.n_unique(["trial_id", "epoch"]) == trials.height
