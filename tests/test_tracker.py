"""The driver's status tracker: Tune's hooks touch memory only, a background thread writes
the status table coalesced, and a failed trial's error text shows while the study runs."""
import time

import pytest

from study.tracker import StatusTracker, as_callback, config_row
from resultstore.store import ResultStore


def _tracker(store: ResultStore, ids: list[str], every_s: float) -> StatusTracker:
    rows = {t: config_row(t, {"train": {"epochs": 1}}) for t in ids}
    return StatusTracker(store, rows, {t: {} for t in ids}, {"started": time.time()},
                         every_s=every_s)


def test_completions_are_coalesced_into_few_writes_and_none_is_lost(tmp_path):
    from ray.tune.experiment import Trial

    store = ResultStore(str(tmp_path), "co")
    ids = [f"t{i:04d}" for i in range(2000)]
    for t in ids:
        store.set_status(t, "completed", epoch=1)          # as each trial leaves it
    tracker = _tracker(store, ids, every_s=0.2)
    cb = as_callback(tracker)
    t0, spent = time.perf_counter(), 0.0
    for i, t in enumerate(ids):
        trial = Trial("fn", config={"trial": t}, stub=True)
        s = time.perf_counter()
        cb.on_trial_start(iteration=i, trials=[], trial=trial)
        cb.on_trial_result(iteration=i, trials=[], trial=trial, result={"epoch": 1, "evlb": -1.0})
        cb.on_trial_complete(iteration=i, trials=[], trial=trial)
        spent += time.perf_counter() - s
        if i % 200 == 0:
            time.sleep(0.05)                           # results arrive over time
    wall = time.perf_counter() - t0
    tracker.write(final=True)
    assert tracker.writes <= wall / 0.2 + 2, (tracker.writes, wall)
    assert spent < 1.0, f"{spent:.2f} s in Tune's hooks for 2,000 completions"
    rows, meta = store.read_status_table()
    assert meta["final"] and [r["state"] for r in rows] == ["completed"] * len(ids)
    assert tracker.thread is None                      # the writer has stopped


@pytest.mark.slow
def test_a_failed_trials_error_text_is_in_the_table_while_the_study_runs(tmp_path):
    """Trial `a` fails; trial `b` runs on and waits until the status table, written by the
    tracker's thread, shows a's error text: so it is there before the study ends."""
    import ray
    from ray import tune

    from study.tuner import start_ray

    store = ResultStore(str(tmp_path), "err")
    root = str(tmp_path)

    def trainable(config):
        if config["trial"] == "a":
            raise ValueError("boom-7f3a in trial a")
        seen, end = None, time.time() + 60
        while seen is None and time.time() < end:
            table = ResultStore(root, "err").read_status_table()
            rows = {r["trial_id"]: r for r in table[0]} if table else {}
            if "boom-7f3a" in str(rows.get("a", {}).get("error")):
                seen = rows["a"]["error"]
            time.sleep(0.1)
        tune.report({"seen": seen or ""})

    tracker = _tracker(store, ["a", "b"], every_s=0.2)
    start_ray(None, log=lambda s: None)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space={"trial": tune.grid_search(["a", "b"])},
            tune_config=tune.TuneConfig(max_concurrent_trials=2),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="err",
                                      callbacks=[as_callback(tracker)], verbose=0))
        grid = tuner.fit()
    finally:
        tracker.write(final=True)
        ray.shutdown()
    seen = next(r.metrics["seen"] for r in grid if r.config["trial"] == "b")
    assert "ValueError" in seen and "boom-7f3a in trial a" in seen, seen
    assert tracker.rows["a"]["state"] == "failed"


def _files(root) -> dict:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_resuming_a_finished_study_starts_nothing_and_writes_nothing(tmp_path, capsys):
    """Every trial finished and its report written: `vaestudy resume` takes no lease, starts
    no Ray, changes no file and says where the report is."""
    import subprocess
    import sys

    import ray

    from study.cli import main

    out = tmp_path / "res"
    sets = ["--set", "name=fin", "--set", "seeds=[0]", "--set", "noise.sigma2=[0.1, 0.3]",
            "--set", "dataset.name=intrinsic", "--set", "dataset.n=300",
            "--set", "train.epochs=1", "--set", "eval.traversals=false"]
    for argv in (["run", *sets, "--out", str(out), "--no-report"], ["report", str(out / "fin")]):
        r = subprocess.run([sys.executable, "-m", "study.cli", *argv], capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    before = _files(out)
    assert main(["resume", str(out / "fin")]) == 0
    said = capsys.readouterr().out
    assert _files(out) == before
    assert not ray.is_initialized()
    assert "plan: 2 trials finished before, 0 to run" in said
    assert f"report: {out / 'fin' / 'report.html'} (no result changed since it was written)" \
        in said
