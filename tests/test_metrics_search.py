"""MIG, SAP and modularity as search objectives: computed by each trial at each evaluation
on the points it just encoded, stored in the trials table, told to Optuna."""
import numpy as np
import optuna
import polars as pl
import pytest

from analysis.metrics import compute_mig
from study import runner
from study.inputs import UsageError
from study.search import parse_search
from study.spec import parse
from trainables.config import ConfigError, TrialConfig
from resultstore.store import ResultStore
from trainables.train import run_trial

SEARCH = {"name": "s", "num_samples": 3, "max_concurrent": 1,
          "search": {"optuna": {"sampler": "random", "seed": 0,
                                "objectives": {"recon_mse": "min", "mig": "max"}}},
          "dataset": {"name": "intrinsic", "n": 300, "factors": 2}, "model": {"latent_dim": 3},
          "noise": {"sigma2": {"loguniform": [0.01, 0.3]}},
          "train": {"epochs": 2}, "eval": {"traversals": False}}


def test_a_mig_objective_asks_each_trial_for_it():
    cfg = parse_search(parse(SEARCH))
    assert cfg.objectives == (("recon_mse", "min"), ("mig", "max"))
    assert cfg.fixed["eval.metrics"] == ["mig"]


def test_a_mig_objective_on_data_without_factors_is_refused():
    spec = {**SEARCH, "dataset": {"name": "mnist", "path": "nowhere"}}
    with pytest.raises(UsageError, match="objectives: mig needs data with ground-truth factors"):
        parse_search(parse(spec))


def test_eval_metrics_accepts_only_the_cheap_scores_and_keeps_default_ids():
    with pytest.raises(ConfigError, match="eval.metrics: got 'dci'; allowed: mig, sap, modularity"):
        TrialConfig.from_dict({"eval.metrics": ["dci"]})
    assert TrialConfig.from_dict({"eval.metrics": []}).trial_id() == TrialConfig().trial_id()


def test_each_evaluation_stores_the_scores_recomputable_from_the_codes(tmp_path):
    cfg = TrialConfig.from_dict({**{k: v for k, v in SEARCH.items() if k in ("dataset", "model")},
                                 "noise": {"sigma2": 0.05}, "train": {"epochs": 2},
                                 "eval": {"traversals": False, "metrics": ["mig", "sap", "modularity"]}})
    store = ResultStore(str(tmp_path), "one")
    final = run_trial(cfg, store, log=lambda s: None)
    rows = store.trial(cfg.trial_id()).read("trials").to_pylist()
    assert len(rows) == 2 and all(0 <= r[m] <= 1 for r in rows for m in ("mig", "sap", "modularity"))
    assert final["mig"] == rows[-1]["mig"]
    codes = store.trial(cfg.trial_id()).read("codes").to_pylist()
    assert len(codes) == rows[-1]["eval_points"]                    # all evaluated points stored
    mu = np.array([c["mu"] for c in codes], dtype=np.float64)
    y = np.array([c["truth"] for c in codes], dtype=np.float64)
    assert compute_mig(mu, y)["mig"] == pytest.approx(rows[-1]["mig"], abs=1e-12)


@pytest.mark.slow
def test_a_search_on_recon_mse_and_mig_tells_optuna_the_stored_values(tmp_path):
    import ray
    runner.start_ray(None)
    try:
        out = runner.run(parse(SEARCH), str(tmp_path))
    finally:
        ray.shutdown()
    assert out.counts["completed"] == 3
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/s/optuna.db")
    last = pl.read_parquet(ResultStore(str(tmp_path), "s").glob("trials")) \
        .filter(pl.col("status") == "completed")
    for t in study.get_trials():
        row = last.filter(pl.col("trial_id") == t.user_attrs["trial_id"]).row(0, named=True)
        assert t.values == pytest.approx([row["recon_mse"], row["mig"]])


def test_a_trial_computes_its_metrics_without_importing_the_analysis():
    """The per-evaluation metrics live in trainables.metrics; analysis.metrics re-exports."""
    import subprocess
    import sys

    import analysis.metrics as registry
    import trainables.metrics as below
    assert registry.compute_mig is below.compute_mig and registry.SEARCHABLE is below.SEARCHABLE
    code = ("import sys, trainables.train, trainables.metrics\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'analysis'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
