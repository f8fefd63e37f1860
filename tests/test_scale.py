"""The result layout at scale, on small studies: compaction, the status table, status,
checkpoint retention, directory readers while trials write."""
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from analysis import load
from study.status import status_text
from resultstore import compact as compaction
from resultstore.store import ResultStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import synthetic  # noqa: E402

H, EPOCHS = 3, 4


def study(root, states, name="s", every=2):
    store = ResultStore(str(root), name)
    rows = [synthetic.write_trial(store, i, epochs=EPOCHS, H=H, every=every, codes=5, state=s,
                                  upto=2)
            for i, s in enumerate(states)]
    return store, rows


def table(store, name, last=False):
    frame = load.factors(store.root, store.study, last=last) if name == "factors" else \
        load.trials(store.root, store.study, last=last).select(pl.exclude("state"))
    return frame.collect().sort(pl.all())


def test_compaction_merges_finished_trials_into_one_sorted_file_and_loses_no_row(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setattr(compaction, "GROUP_ROWS", {"trials": 6, "factors": 20, "codes": 12})
    store, _ = study(tmp_path, ["completed"] * 4 + ["diverged", "running"])
    before = {t: table(store, t) for t in ("trials", "factors")}
    assert compaction.compact(store, grace_s=0) == 5
    assert store.listdir(store.path("factors")) == ["compact-000001.parquet", "t000005"]
    for t in before:
        assert table(store, t).equals(before[t])
    pf = pq.ParquetFile(store.path("factors", "compact-000001.parquet"))
    groups = [pf.read_row_group(i).column("trial_id").to_pylist() for i in range(pf.num_row_groups)]
    assert pf.num_row_groups > 1 and sum(groups, []) == sorted(sum(groups, []))
    assert all(set(a).isdisjoint(b) for a, b in zip(groups, groups[1:]))     # whole trials
    got = ds.dataset(store.path("factors"), format="parquet").to_table()
    assert got.num_rows == before["factors"].height                           # running + compact
    synthetic.write_trial(store, 5, epochs=EPOCHS, H=H, every=2, codes=5)     # it finishes
    assert compaction.compact(store, grace_s=0) == 1
    for t in ("trials", "factors", "codes"):
        assert store.listdir(store.path(t)) == ["compact-000002.parquet"]
    f = table(store, "factors")
    assert f.height == 6 * EPOCHS * H and f.n_unique(["trial_id", "epoch", "factor"]) == f.height
    assert pl.read_parquet(store.path("trials")).height == 6 * EPOCHS         # a directory reader


def test_the_loader_sees_each_row_once_while_compaction_runs(tmp_path):
    store, _ = study(tmp_path, ["completed"] * 24, every=1)
    want = 24 * EPOCHS * H
    done = threading.Event()

    def run():
        try:
            compaction.compact(store, grace_s=0)
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    reads = 0
    while not done.is_set() or reads < 3:
        f = load.factors(store.root, store.study, last=False).collect()
        assert f.height == want and f.n_unique(["trial_id", "epoch", "factor"]) == want
        reads += 1
    worker.join()
    assert store.listdir(store.path("factors")) == ["compact-000001.parquet"]


def test_pyarrow_dataset_reads_a_table_folder_while_trials_write(tmp_path):
    """Temp files are hidden ('.' prefix), so a directory reader never meets a half file; a
    segment merged away between listing and reading is the one race, retried (docs/analysis.md)."""
    store = ResultStore(str(tmp_path), "live")
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            synthetic.write_trial(store, i, epochs=EPOCHS, H=H, every=1, codes=0)
            i += 1

    w = threading.Thread(target=writer)
    w.start()
    reads, deadline = 0, time.time() + 5
    try:
        while time.time() < deadline:
            if not Path(store.path("factors")).exists():
                continue
            try:
                t = ds.dataset(store.path("factors"), format="parquet").to_table()
            except FileNotFoundError:
                continue
            assert t.num_rows % H == 0                  # whole evaluations, never a part file
            reads += 1
    finally:
        stop.set()
        w.join()
    assert reads > 5
    assert not [p for p in Path(store.path("factors")).rglob("*") if "tmp" in p.name]


def test_status_reads_the_table_and_falls_back_to_status_files_when_it_is_stale(tmp_path):
    states = ["completed"] * 5 + ["diverged", "running"]
    store, rows = study(tmp_path, states)
    now = time.time()
    rows[6].update(updated=now - 3600, epoch=2, seconds=100.0)          # silent for an hour
    for r in rows[:6]:
        r["updated"] = now - 60
    store.write_json(store.path("study.json"), {"trials": [r["trial_id"] for r in rows],
                                                "size": "7 trials", "started": now - 3600})
    store.write_status_table(rows, final=False, started=now - 3600, cpu=1, gpu=0.5)
    for p in Path(store.path("status")).glob("*.json"):      # the table alone must do
        p.rename(p.with_suffix(".bak"))
    text = status_text(store, now=now)
    assert "read from status table" in text
    assert "completed: 5" in text and "diverged: 1" in text and "running: 1" in text
    assert "t000006  2/4  60 min ago  STALE" in text
    assert "diverged t000005: non-finite loss" in text
    assert "6.0 trials/hour" in text and "GPU-hours" in text and "1 to go, ETA 10 min" in text
    assert "best 5 by EVLB" in text
    for p in Path(store.path("status")).glob("*.bak"):
        p.rename(p.with_suffix(".json"))
    store.write_status_table(rows, final=False, written_at=now - 1000)   # a dead driver's
    text = status_text(store, now=now)
    assert "read from status files" in text and "completed: 5" in text and "running: 1" in text


@pytest.mark.parametrize("mode", ["weights", "full", "none"])
def test_a_completed_trial_keeps_only_what_checkpoint_final_says(tmp_path, mode, monkeypatch):
    import conftest
    from analysis.equivalence import trial_truth
    from trainables.config import TrialConfig
    from trainables.train import run_trial

    cfg = TrialConfig.from_dict(conftest.tiny(**{"checkpoint.final": mode, "train.epochs": 3}))
    assert cfg.trial_id() == TrialConfig.from_dict(conftest.tiny(**{"train.epochs": 3})).trial_id()
    store = ResultStore(str(tmp_path), "ck")
    tid = cfg.trial_id()
    sizes = []
    from resultstore.trial import TrialHandle
    save = TrialHandle._checkpoint                        # measures each checkpoint's size
    monkeypatch.setattr(TrialHandle, "_checkpoint", lambda self, *a, **k: (
        save(self, *a, **k), sizes.append(Path(self.checkpoints()[-1][1]).stat().st_size)))
    run_trial(cfg, store, log=lambda s: None)
    files = sorted(p.name for p in Path(store.path("checkpoints", tid)).glob("*"))
    assert files == {"weights": ["final.pt"], "full": ["epoch-000003.pt"], "none": []}[mode]
    if mode == "weights":
        today = cfg.checkpoint.keep * sizes[-1]               # what a trial used to keep
        assert 3 * Path(store.path("checkpoints", tid, "final.pt")).stat().st_size <= today
        state = store.trial(tid).load_checkpoint()
        assert "opt" not in state and state["epoch"] == 3
        rows = load.trials(str(tmp_path), "ck").collect()
        assert trial_truth(str(tmp_path), "ck", tid, rows["config"][0]) is not None


@pytest.mark.slow
def test_resume_plans_on_the_driver_finished_trials_never_reach_tune(tmp_path, monkeypatch):
    import tempfile

    import ray

    from study import runner
    from study.spec import parse

    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    raw = {"name": "plan", "seeds": [0, 1], "dataset": {"name": "intrinsic", "n": 200, "factors": 2},
           "model": {"latent_dim": 3}, "train": {"epochs": 1, "device": ["cpu", "cuda"]},
           "eval": {"traversals": False}, "failure": {"max_retries": 0}, "max_concurrent": 2}
    handed = []
    real_fit = runner.fit
    monkeypatch.setattr(runner, "fit", lambda spec, store, space, **k: (
        handed.append({"space": space, **k}), real_fit(spec, store, space, **k))[1])
    logs = []
    try:
        first = runner.run(parse(raw), str(tmp_path), log=logs.append)
        assert first.counts["completed"] == 2 and first.counts["failed"] == 2
        store = first.store
        failed = sorted(t for t, r in store.trial_states()[0].items() if r["state"] == "failed")
        again = runner.run(parse(raw), str(tmp_path), resume=True, log=logs.append)
        assert "plan: 2 trials finished before, 2 to run" in logs
        assert sorted(handed[-1]["configs"]) == failed                # only those reach Tune
        assert sorted(handed[-1]["space"]["trial"]["grid_search"]) == failed  # ids, not configs
        assert again.counts == first.counts
        done = parse({**raw, "name": "done", "train": {"epochs": 1}})
        runner.run(done, str(tmp_path), log=logs.append)
        calls, t0 = len(handed), time.perf_counter()
        out = runner.run(done, str(tmp_path), resume=True, log=logs.append)
        assert len(handed) == calls and time.perf_counter() - t0 < 10  # no Tune, no trial
        assert "plan: 2 trials finished before, 0 to run" in logs and out.counts["completed"] == 2
        assert all(s["attempts"] == 1 for s in out.store.all_status())
    finally:
        ray.shutdown()


def test_compact_command_merges_a_study_and_refuses_a_non_study(tmp_path, capsys):
    from study.cli import main

    store, _ = study(tmp_path, ["completed"] * 3)
    assert main(["compact", str(tmp_path / "s"), "--grace", "0"]) == 0
    assert "compacted 3 newly finished trials" in capsys.readouterr().out
    assert store.listdir(store.path("trials")) == ["compact-000001.parquet"]
    assert main(["compact", str(tmp_path / "s"), "--grace", "0"]) == 0
    assert "nothing to compact" in capsys.readouterr().out
    assert main(["compact", str(tmp_path / "nope")]) == 2
    assert "not a study folder" in capsys.readouterr().err


def test_status_needs_a_study_json_or_status_files_and_lists_neither_whole(tmp_path, capsys):
    """`vaestudy status` tells a study folder by one HEAD of study.json or a one-key look
    at status/ (not a listing of every trial's status file: a page per 1,000 on S3)."""
    from study.cli import main

    store, _ = study(tmp_path, ["completed"] * 3)
    assert main(["status", str(tmp_path / "s")]) == 0
    assert "completed: 3" in capsys.readouterr().out
    store.delete(store.path("study.json"))                 # a `vaestudy train` folder
    assert main(["status", str(tmp_path / "s")]) == 0
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "not a study folder" in capsys.readouterr().err
