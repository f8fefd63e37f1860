"""Optuna-guided search: RDB storage matching Parquet, Pareto front, kill and resume."""
import signal
import time
from pathlib import Path

import optuna
import polars as pl
import pytest

from study import runner
from study.cli import main
from study.spec import parse
from support.procs import cli, procs  # noqa: F401
from resultstore.store import ResultStore

pytestmark = pytest.mark.slow
BASE = {"num_samples": 6, "max_concurrent": 2,
        "search": {"optuna": {"sampler": "tpe", "seed": 0}},
        "dataset": {"name": "intrinsic", "n": 400, "factors": 2}, "model": {"latent_dim": 4},
        "noise": {"kind": {"choice": ["specified", "learned"]},
                  "sigma2": {"loguniform": [0.001, 0.3]}},
        "train": {"epochs": 3}, "eval": {"traversals": False}}


def _study(root, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{root}/{name}/optuna.db")


def _check_consistent(root, name, n):
    store = ResultStore(str(root), name)
    study = _study(root, name)
    trials = study.get_trials()
    assert len(trials) == n
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(len(t.values) == 2 for t in trials)
    ids = [t.user_attrs["trial_id"] for t in trials]
    assert len(set(ids)) == n
    rows = pl.read_parquet(store.glob("trials"))
    assert rows.n_unique(["trial_id", "epoch"]) == rows.height
    last = rows.filter(pl.col("status") == "completed")
    assert sorted(last["trial_id"]) == sorted(ids)
    for t in trials:
        row = last.filter(pl.col("trial_id") == t.user_attrs["trial_id"]).row(0, named=True)
        assert t.values == pytest.approx([row["evlb"], row["kl_qz_pz"]])
        assert row["noise"] == t.params["noise.kind"]
    return study, last


def test_six_trial_search_fills_sqlite_parquet_and_the_pareto_front(tmp_path):
    import ray
    runner.start_ray(None)
    try:
        out = runner.run(parse({**BASE, "name": "s6"}), str(tmp_path))
    finally:
        ray.shutdown()
    assert out.counts["completed"] == 6
    study, last = _check_consistent(tmp_path, "s6", 6)
    front = pl.read_parquet(tmp_path / "s6" / "analysis" / "pareto.parquet")
    pts = last.select("trial_id", "evlb", "kl_qz_pz")
    # non-dominated and complete: exactly the trials nobody beats on both objectives
    expected = set()
    for r in pts.iter_rows(named=True):
        beaten = pts.filter((pl.col("evlb") >= r["evlb"]) & (pl.col("kl_qz_pz") <= r["kl_qz_pz"])
                            & ((pl.col("evlb") > r["evlb"]) | (pl.col("kl_qz_pz") < r["kl_qz_pz"])))
        if beaten.height == 0:
            expected.add(r["trial_id"])
    assert set(front["trial_id"]) == expected and expected
    assert {t.user_attrs["trial_id"] for t in study.best_trials} == expected


def test_killed_and_resumed_search_ends_with_the_budget_and_no_duplicates(procs):
    import yaml
    spec = procs.tmp / "search.yaml"
    raw = {**BASE, "name": "sk", "train": {"epochs": 6}, "checkpoint": {"every": 2}}
    spec.write_text(yaml.safe_dump(raw))
    root = procs.tmp / "res"
    driver = procs.start(cli("run", str(spec), "--out", str(root), "--no-report"), "run")
    deadline = time.time() + 240
    while time.time() < deadline:
        if list((root / "sk" / "checkpoints").glob("*/epoch-000004.pt")):
            break
        assert driver.poll() is None, "the search ended before it could be killed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    procs.kill(driver)
    rc, out = procs.run(cli("resume", str(root / "sk"), "--no-report"), "resume")
    assert rc == 0, out[-3000:]
    _check_consistent(root, "sk", 6)
    rows = pl.read_parquet(str(root / "sk" / "trials" / "**" / "*.parquet"))
    assert rows.group_by("trial_id").agg(pl.col("epoch").max())["epoch"].to_list() == [6] * 6


@pytest.mark.parametrize("search,needle", [
    ({"optuna": {"sampler": "cmaes-ish"}}, "search.optuna.sampler: got 'cmaes-ish'"),
    ({"optuna": {"objectives": ["evlb", "sharpness"]}}, "unknown metric 'sharpness'"),
    ({"optuna": {"objectives": {"evlb": "up"}}}, "search.optuna.objectives.evlb: got 'up'"),
    ({"optuna": {"colour": 1}}, "search.optuna.colour: unknown key"),
    ({"asha": {"metric": "used_distance"}}, "search.asha.metric"),
    ({"grid": {}}, "search.grid: unknown key"),
])
def test_bad_search_specs_are_refused(capsys, tmp_path, search, needle):
    import yaml
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**BASE, "name": "bad", "search": search}))
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dist,needle", [
    ({"loguniform": [0.001]}, "allowed: bounds [low, high]"),
    ({"loguniform": []}, "allowed: bounds [low, high]"),
    ({"loguniform": [0.0, 0.1]}, "allowed: low > 0"),
    ({"uniform": [0.2, 0.1]}, "allowed: low < high"),
    ({"uniform": [-0.1, 0.1]}, "noise.sigma2: got -0.1"),
    ({"normal": [0, 1]}, "allowed: one of"),
])
def test_distributions_without_proper_bounds_are_refused(capsys, tmp_path, dist, needle):
    import yaml
    spec = tmp_path / "s.yaml"
    raw = {**BASE, "name": "bad", "noise": {"kind": "specified", "sigma2": dist}}
    spec.write_text(yaml.safe_dump(raw))
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert needle in capsys.readouterr().err


def test_asha_stopped_trials_are_stopped_in_parquet_and_pruned_in_optuna(tmp_path):
    import ray
    raw = {**BASE, "name": "asha", "num_samples": 8, "train": {"epochs": 4},
           "eval": {"every": 1, "traversals": False},
           "search": {"optuna": {"sampler": "random", "seed": 1},
                      "asha": {"metric": "evlb", "grace_period": 1, "reduction_factor": 2}}}
    runner.start_ray(None)
    try:
        runner.run(parse(raw), str(tmp_path))
    finally:
        ray.shutdown()
    store = ResultStore(str(tmp_path), "asha")
    study = _study(tmp_path, "asha")
    states = {t.user_attrs["trial_id"]: t.state for t in study.get_trials()}
    assert len(states) == 8
    stopped = {s["trial_id"] for s in store.all_status() if s["state"] == "stopped"}
    assert stopped, "ASHA stopped nothing"
    assert stopped == {t for t, st in states.items() if st == optuna.trial.TrialState.PRUNED}
    rows = pl.read_parquet(store.glob("trials"))
    assert rows.n_unique(["trial_id", "epoch"]) == rows.height
    last = rows.sort("epoch").group_by("trial_id").last()
    for r in last.iter_rows(named=True):
        if r["trial_id"] in stopped:
            assert r["status"] == "stopped" and r["epoch"] < 4
            assert sorted(rows.filter(pl.col("trial_id") == r["trial_id"])["epoch"]) == \
                list(range(1, r["epoch"] + 1))             # every evaluated row kept
        else:
            assert r["status"] == "completed" and r["epoch"] == 4
