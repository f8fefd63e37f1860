"""Studies on a real local Ray: MNIST results read back, divergence, failure, retries."""
import json
from datetime import datetime

import polars as pl
import pytest

from conftest import GPU
from study import runner
from study.spec import parse
from resultstore.format import FORMAT_VERSION, SCHEMAS
from resultstore.store import ResultStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    import ray
    runner.start_ray(None)
    yield
    ray.shutdown()


def test_four_trial_mnist_study_reads_back_with_polars(tmp_path, ray_local, mnist_dir,
                                                      monkeypatch):
    monkeypatch.chdir(mnist_dir.parent)          # a relative data path, resolved for the trials
    spec = parse({"name": "mnist4", "seeds": [0, 1],
                  "dataset": {"name": "mnist", "path": mnist_dir.name, "limit": 300},
                  "model": {"latent_dim": 8}, "noise": {"kind": ["specified", "learned"]},
                  "train": {"epochs": 2}, "eval": {"every": 1, "codes_points": 50},
                  "checkpoint": {"every": 1}, "max_concurrent": 2})
    assert spec.size_line() == "2 kind x 2 seeds = 4 trials"
    out = runner.run(spec, str(tmp_path))
    assert out.counts == {"completed": 4, "diverged": 0, "failed": 0, "running": 0, "pending": 0}
    store = ResultStore(str(tmp_path), "mnist4")
    trials = pl.scan_parquet(store.glob("trials")).collect()
    for table in ("trials", "factors", "codes"):
        got = pl.scan_parquet(store.glob(table)).collect_schema()
        assert list(got) == SCHEMAS[table].names
    assert trials.height == 8 and trials.n_unique(["trial_id", "epoch"]) == 8
    assert sorted(trials["seed"].unique()) == [0, 1]
    assert set(trials["noise"]) == {"specified", "learned"}
    last = trials.filter(pl.col("epoch") == 2)
    assert (last["status"] == "completed").all() and (last["eval_points"] == 60).all()
    learned = last.filter(pl.col("noise") == "learned")
    assert (learned["sigma2"] != 0.01).all()                 # the learned value, not the initial
    assert (last["equivalent_sigma2"] == last["beta"] * last["sigma2"]).all()
    cfg = json.loads(last["config"][0])
    assert cfg["dataset"]["limit"] == 300 and cfg["model"]["latent_dim"] == 8
    factors = pl.scan_parquet(store.glob("factors")).collect()
    assert factors.height == 8 * 8
    assert factors.n_unique(["trial_id", "epoch", "factor"]) == factors.height
    per = factors.group_by("trial_id", "epoch").agg(pl.col("mi").sum(), pl.col("used").sum())
    joined = per.join(trials, on=["trial_id", "epoch"])
    assert (joined["mi"] - joined["mi_xz"]).abs().max() < 1e-9       # Theorem 2, as stored
    assert (joined["used"] == joined["n_used_factors"]).all()
    assert pl.scan_parquet(store.glob("codes")).collect().height == 4 * 50
    meta = store.read_json(store.path("study.json"))
    assert len(meta["trials"]) == 4 and "finished" in meta and meta["versions"]["ray"]
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["versions"]["polars"] and meta["versions"]["python"] and meta["command"]
    assert datetime.fromisoformat(meta["started"]) <= datetime.fromisoformat(meta["finished"])
    for t in (t["id"] for t in meta["trials"]):
        assert store.trial(t).checkpoints() == []                          # only the final weights
        assert "opt" not in store.trial(t).load_checkpoint() and store.trial(t).load_checkpoint()["epoch"] == 2
        assert store.trial(t).parts("trials") == []                      # compacted at the end
    for table in ("trials", "factors", "codes"):                   # one file per table
        assert store.listdir(store.path(table)) == ["compact-000001.parquet"]


def test_diverging_and_crashing_trials_are_recorded_and_the_study_goes_on(tmp_path, ray_local):
    spec = parse({"name": "faults", "dataset": {"name": "intrinsic", "n": 300, "factors": 2},
                  "model": {"latent_dim": 4}, "eval": {"traversals": False},
                  "train": {"epochs": 3, "fault_nan_epoch": [None, 2], "device": ["cpu", "cuda"]},
                  "failure": {"max_retries": 1}, "max_concurrent": 2})
    out = runner.run(spec, str(tmp_path))
    n = 2 if GPU else 1                       # with a GPU visible the cuda trials run too
    assert out.counts["completed"] == n and out.counts["diverged"] == n
    store = ResultStore(str(tmp_path), "faults")
    states = {s["state"]: s for s in store.all_status()}
    assert "epoch 2" in states["diverged"]["error"]
    if not GPU:
        assert out.counts["failed"] == 2      # cuda requested on a machine without a GPU
        failed = [s for s in store.all_status() if s["state"] == "failed"]
        assert all("no GPU" in s["error"] for s in failed)
        assert all(s["attempts"] == 2 for s in failed)       # first try + max_retries
    trials = pl.read_parquet(store.glob("trials"))
    for st in store.all_status():
        if st["state"] == "diverged":
            div = trials.filter(pl.col("trial_id") == st["trial_id"])
            assert div["epoch"].to_list() == [1] and div["status"].to_list() == ["diverged"]


def test_a_rerun_of_a_finished_study_trains_nothing_and_duplicates_nothing(tmp_path, ray_local,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)              # a relative storage path, as `./dev run` gives
    raw = {"storage": "rel", "name": "again", "dataset": {"name": "intrinsic", "n": 300, "factors": 2},
           "model": {"latent_dim": 3}, "train": {"epochs": 2}, "seeds": [0, 1],
           "eval": {"traversals": False}}
    out = runner.run(parse(raw), "rel")
    assert out.counts["completed"] == 2
    store = ResultStore(str(tmp_path / "rel"), "again")
    before = pl.read_parquet(store.glob("trials")).sort("trial_id", "epoch")
    assert before.height == 4
    runner.run(parse(raw), "rel", resume=True)
    after = pl.read_parquet(store.glob("trials")).sort("trial_id", "epoch")
    assert before.equals(after)
    assert all(s["attempts"] == 1 for s in store.all_status())
