"""A driver paused (SIGSTOP) past its lease while a second driver takes the study over, then
continued: the first driver's trials (which SIGSTOP does not stop: they are Ray workers)
stop writing and deleting at their next write, the first driver exits without the final
status, `finished` or a compaction, and every row of the second driver's trials survives,
each (trial, epoch) once. Real drivers (`vaestudy run` / `resume`), real local Rays."""
import json
import os
import signal
import time

import pytest
import yaml

from analysis import load
from resultstore.store import ResultStore
from support.procs import cli, procs  # noqa: F401

TTL = 6.0
EPOCHS = 8


def _spec(tmp_path):
    spec = {"name": "take", "seeds": [0, 1],
            "dataset": {"name": "intrinsic", "n": 400, "factors": 2},
            "model": {"latent_dim": 4}, "eval": {"traversals": False},
            "train": {"epochs": EPOCHS, "fault_epoch_delay": 1.5, "device": "cpu"},
            "checkpoint": {"every": 1}, "resources": {"cpu": 1}, "max_concurrent": 2,
            "failure": {"max_retries": 0}}
    path = tmp_path / "take.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _wait(cond, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if got := cond():
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_paused_driver_is_fenced_and_the_new_drivers_rows_survive(procs, tmp_path):  # noqa: F811
    root = str(tmp_path / "res")
    env = {"VAESTUDY_LEASE_TTL": str(TTL)}
    first = procs.start(cli("run", str(_spec(tmp_path)), "--out", root, "--no-report"), "first",
                        env=env)
    store = ResultStore(root, "take")

    def both_checkpointed():
        st = [s for s in store.all_status() if s["state"] == "running"]
        return len(st) == 2 and all(store.trial(s["trial_id"]).checkpoints() for s in st)

    _wait(both_checkpointed, 240, "both trials to checkpoint\n" + procs.log("first"))
    os.kill(first.pid, signal.SIGSTOP)                 # the driver only: its trials go on
    time.sleep(TTL + 2)
    second = procs.start(cli("resume", str(tmp_path / "res" / "take"), "--no-report"),
                         "second", env=env)
    _wait(lambda: "taking over study 'take'" in procs.log("second"), 120,
          "the takeover\n" + procs.log("second"))
    time.sleep(3 * 1.5)                                # the first driver's trials write again
    os.kill(first.pid, signal.SIGCONT)
    assert first.wait(120) == 3, procs.log("first")
    assert "lease lost" in procs.log("first")
    assert second.wait(400) == 0, procs.log("second")
    rows = load.trials(root, "take", last=False).collect()
    assert rows.height == 2 * EPOCHS and rows.n_unique(["trial_id", "epoch"]) == 2 * EPOCHS
    assert sorted(set(load.trials(root, "take").collect()["state"])) == ["completed"]
    meta = json.loads(store.read_bytes(store.path("study.json")))
    assert meta.get("finished"), meta                  # written by the second driver only
    fenced = [line for line in procs.log("first").splitlines() + _worker_logs(tmp_path)
              if "taken over by a newer driver" in line]
    assert fenced, "the first driver's trials were never fenced"


def _worker_logs(tmp_path) -> list[str]:
    """Lines of Ray worker logs under the test's Ray folder (a fenced trial says so there)."""
    out = []
    for p in tmp_path.parent.rglob("worker-*.err"):
        out += p.read_text(errors="replace").splitlines()
    for p in tmp_path.parent.rglob("worker-*.out"):
        out += p.read_text(errors="replace").splitlines()
    return out
