"""Analysis tables on a hand-built results set written with the store's own schemas:
loading (dedupe, state, last epoch), the intrinsic-dimension table (Theorem 1), the
trade-off's Pareto flag, the CLI summary and a report without checkpoints or codes."""
import json
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from analysis import figures, intrinsic, load, report, tradeoff
from analysis.tradeoff import pareto_mask
from trainables.config import TrialConfig
from resultstore.store import ResultStore

STUDY = "handmade"
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def config(sigma2=0.01, seed=0, kind="specified", beta=1.0):
    return TrialConfig.from_dict({"dataset": {"name": "intrinsic", "factors": 3},
                                  "model": {"latent_dim": 4},
                                  "noise": {"kind": kind, "sigma2": sigma2, "beta": beta},
                                  "train": {"seed": seed}})


def trial_row(cfg, trial_id, epoch, used, evlb, written=0, sigma2=None):
    s2 = cfg.noise.sigma2 if sigma2 is None else sigma2
    return {"study": STUDY, "trial_id": trial_id, "epoch": epoch, "status": "running",
            "dataset": "intrinsic", "noise": cfg.noise.kind, "beta": cfg.noise.beta,
            "sigma2": s2, "equivalent_sigma2": cfg.noise.beta * s2, "latent_dim": 4,
            "seed": cfg.train.seed, "evlb": evlb, "recon_mse": 0.01, "kl_post_prior": 5.0,
            "mi_xz": 2.0 * used, "kl_qz_pz": 1.0 / (1 + used), "kl_qstar_pz": 0.5,
            "n_used_factors": used, "n_normal_variance_factors": 4 - used, "train_loss": 1.0,
            "noise_pi": None, "noise_sigma2_k": None, "eval_points": 100,
            "used_threshold": 0.5, "var_floor": 1e-6, "true_factors": 3,
            "config": json.dumps(cfg.to_dict(), sort_keys=True), "code_version": "test",
            "host": "h", "wall_time": 1.0, "written_at": T0 + timedelta(seconds=written)}


def factor_rows(trial_id, epoch, used):
    return [{"study": STUDY, "trial_id": trial_id, "epoch": epoch, "factor": h,
             "mi": 2.0 if h < used else 0.01, "post_var": 0.1 if h < used else 1.0,
             "qstar_var": 1.0, "used": h < used} for h in range(4)]


def write_trial(store, cfg, used_by_epoch, state="completed", evlb=100.0):
    tid = cfg.trial_id()
    for e, used in enumerate(used_by_epoch, start=1):
        rows = {"trials": [trial_row(cfg, tid, e, used, evlb + e)],
                "factors": factor_rows(tid, e, used)}
        store.trial(tid).append(rows, e, e)
    if state != "running":
        store.trial(tid).finish(state)
    else:
        store.set_status(tid, "running")
    return tid


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two sigma2 values x 2 seeds (one still running), a learned trial, a failed trial,
    and a duplicated epoch left by a crash window (two files, the later write wins)."""
    root = str(tmp_path_factory.mktemp("results"))
    st = ResultStore(root, STUDY)
    ids = {"a0": write_trial(st, config(0.001, 0), [2, 3]),
           "a1": write_trial(st, config(0.001, 1), [3, 4]),
           "b0": write_trial(st, config(0.1, 0), [1, 1], evlb=50.0),
           "b1": write_trial(st, config(0.1, 1), [2], state="running", evlb=60.0),
           "l0": write_trial(st, config(0.01, 0, "learned", 2.0), [3], evlb=80.0)}
    stale = trial_row(config(0.001, 1), ids["a1"], 2, 0, -1.0, written=-5)
    st.trial(ids["a1"]).append({"trials": [stale]}, 2, 2)          # epoch 2 of a1 again
    st.set_status("tfailed", "failed", error="<b>boom</b> & co")
    return root, ids


def test_loading_dedupes_on_trial_and_epoch_keeping_the_latest_write(study):
    root, ids = study
    every = load.trials(root, STUDY, last=False).collect()
    assert every.select("trial_id", "epoch").is_duplicated().sum() == 0
    a1 = every.filter((pl.col("trial_id") == ids["a1"]) & (pl.col("epoch") == 2))
    assert a1["evlb"].to_list() == [102.0]                           # not the stale -1.0
    raw = load.scan(root, STUDY, "trials").collect()
    assert raw.height == every.height + 1


def test_last_epoch_state_and_config_key(study):
    root, ids = study
    last = load.trials(root, STUDY).collect()
    assert sorted(last["trial_id"]) == sorted(ids.values())
    row = last.filter(pl.col("trial_id") == ids["a0"]).row(0, named=True)
    assert row["epoch"] == 2 and row["state"] == "completed" and row["sigma2_cfg"] == 0.001
    assert last.filter(pl.col("trial_id") == ids["b1"])["state"][0] == "running"
    keys = dict(zip(last["trial_id"], last["config_key"]))
    assert keys[ids["a0"]] == keys[ids["a1"]] != keys[ids["b0"]] == keys[ids["b1"]]


def test_intrinsic_dimension_table_by_hand(study):
    root, _ = study
    t = intrinsic.from_study(root, STUDY)
    assert t.height == 3
    a = t.filter((pl.col("noise") == "specified") & (pl.col("sigma2_cfg") == 0.001))
    a = a.row(0, named=True)
    assert a["seeds"] == 2 and a["n_used_mean"] == 3.5 and a["n_used_min"] == 3
    assert a["n_used_max"] == 4 and a["n_used_std"] == pytest.approx(0.7071, abs=1e-4)
    assert a["frac_at_P"] == 0.5 and a["mae_P"] == 0.5 and a["true_factors"] == 3
    assert a["n_normal_mean"] == 0.5 and a["evlb_mean"] == 102.0
    assert a["n"] == 2 and (a["epoch_min"], a["epoch_max"]) == (2, 2)
    assert a["n_used_half"] == pytest.approx(12.706 * 0.7071 / 2 ** 0.5, rel=1e-3)   # t(1)
    b = t.filter(pl.col("sigma2_cfg") == 0.1).row(0, named=True)   # running seed left out
    assert b["seeds"] == 1 and b["n_used_mean"] == 1 and b["n_running"] == 0
    learned = t.filter(pl.col("noise") == "learned").row(0, named=True)
    assert learned["equivalent_sigma2"] == pytest.approx(0.02) and learned["frac_at_P"] == 1.0


def sweep(means_by_setting, P=3, sd=0.0):
    """An intrinsic-dimension table of one noise kind, 5 seeds per setting, the used
    counts of each setting given per seed."""
    rows = []
    for i, counts in enumerate(means_by_setting):
        for seed, c in enumerate(counts):
            rows.append({"config_key": f"c{i}", "series_key": f"s{i}", "dataset": "intrinsic",
                         "noise": "specified", "beta": 1.0, "sigma2_cfg": 0.01 * (i + 1),
                         "latent_dim": 8, "seed": seed, "epoch": 10,
                         "equivalent_sigma2": 0.01 * (i + 1), "equivalent_sigma2_arith": 0.0,
                         "pi_at_floor": 0.0, "sigma2": 0.01 * (i + 1), "n_used": c,
                         "n_normal": 8 - c, **{m: 0.0 for m in intrinsic.MEANS[2:]},
                         "recon_mse": 0.0, "true_factors": P, "state": "completed"})
    return intrinsic.aggregate(pl.DataFrame(rows).lazy()).collect()


def test_a_sweep_through_p_without_a_plateau_is_no_and_a_plateau_is_yes():
    """Issue 21: a count falling from H to 0 passes through P; one setting there said Yes."""
    through = sweep([[8] * 5, [6] * 5, [3] * 5, [1] * 5, [0] * 5])
    text = intrinsic.reached_p(through)
    assert text.startswith("Theorem 1 check: No") and "5 of 25 trials" in text
    noisy = sweep([[8] * 5, [1, 3, 5, 3, 3], [3, 1, 5, 3, 3], [0] * 5])   # intervals too wide
    assert intrinsic.reached_p(noisy).startswith("Theorem 1 check: No")
    flat = sweep([[8] * 5, [3] * 5, [3, 3, 3, 3, 4], [1] * 5])
    text = intrinsic.reached_p(flat)
    assert text.startswith("Theorem 1 check: Yes") and "over 2 adjacent settings" in text
    assert "9 of 20 trials had exactly P" in text


def test_threshold_recounts_used_factors_from_the_factors_table(study):
    root, _ = study
    t = intrinsic.from_study(root, STUDY, threshold=5.0)
    assert t["n_used_max"].max() == 0


def test_reached_p_sentence_and_summary_table(study):
    root, _ = study
    text = intrinsic.reached_p(intrinsic.from_study(root, STUDY))
    assert text.startswith("Theorem 1 check: No") and "P = 3" in text   # 2 seeds: no interval
    assert "2 of 4 trials had exactly P" in text
    summary = report.summary_table(root, STUDY)
    lines = summary.splitlines()
    assert len(lines) == 1 + 3 + 1 and "3.5 (n=2)" in summary and "P = 3" in lines[-1]
    assert "± 0" not in summary


def test_empty_tables_and_missing_study_are_empty_frames(tmp_path):
    assert load.trials(str(tmp_path), "none").collect().is_empty()
    assert load.codes(str(tmp_path), "none").collect().is_empty()
    assert report.summary_table(str(tmp_path), "none") == "no completed trial yet"


def test_pareto_mask_is_non_dominated_and_complete():
    f = pl.DataFrame({"evlb": [1.0, 2.0, 2.0, 0.5, 3.0, None, 2.0],
                      "kl": [1.0, 2.0, 1.5, 0.5, 3.0, 0.1, 1.5]})
    m = pareto_mask(f, {"evlb": "max", "kl": "min"}).to_list()
    assert m == [True, False, True, True, True, False, True]          # ties both kept
    assert pareto_mask(f.lazy(), {"kl": "min"}).to_list() == [False] * 5 + [True, False]
    with pytest.raises(ValueError, match="direction"):
        pareto_mask(f, {"evlb": "up"})
    with pytest.raises(ValueError, match="no column"):
        pareto_mask(f, {"missing": "max"})


def test_tradeoff_marks_the_front(study):
    root, _ = study
    t = tradeoff.tradeoff(load.trials(root, STUDY)).to_dicts()

    def beats(f, r):
        return (f["evlb"] >= r["evlb"] and f["kl_qz_pz"] <= r["kl_qz_pz"] and
                (f["evlb"] > r["evlb"] or f["kl_qz_pz"] < r["kl_qz_pz"]))

    assert len(t) == 5 and any(r["pareto"] for r in t)
    for r in t:                                  # front: nothing beats it; the rest: beaten
        assert r["pareto"] == (not any(beats(f, r) for f in t))


def test_report_without_codes_or_checkpoints_skips_figures_with_notes(study):
    root, _ = study
    path = report.build_report(root, STUDY)
    page = path.read_text()
    assert "&lt;b&gt;boom&lt;/b&gt; &amp; co" in page and "<b>boom" not in page
    assert "Theorem 1 check" in page
    md = (path.parent / "report.md").read_text()
    for name in ("equivalence", "higgins", "traversals"):
        assert "skipped" in md and figures.FIGURES[name].caption in md
        assert not (path.parent / "analysis" / "figures" / f"{name}.png").exists()
    assert (path.parent / "analysis" / "figures" / "fig4_evlb.png").stat().st_size > 1000
    states = pl.read_parquet(path.parent / "analysis" / "states.parquet")
    assert dict(states.iter_rows()) == {"completed": 4, "failed": 1, "running (stale)": 1}
    left_out = pl.read_parquet(path.parent / "analysis" / "not_counted.parquet")
    assert sorted(left_out["state"].to_list()) == ["failed", "running (stale: no live driver)"]


def test_a_running_trial_without_a_driver_is_stale(study):
    root, ids = study
    status = load.status_frame(root, STUDY)
    assert status.filter(pl.col("stale"))["trial_id"].to_list() == [ids["b1"]]


def test_include_running_compares_at_a_common_epoch(study, tmp_path):
    """With a live driver (one holding the study's lease) the running trial counts, and every
    trial is read at epoch 1; once the lease is released it is stale and does not count."""
    import shutil

    from analysis import load
    from resultstore.lease import Lease
    root = str(tmp_path / "copy")
    shutil.copytree(study[0], root)
    with Lease(ResultStore(root, STUDY), log=lambda s: None):
        t = intrinsic.from_study(root, STUDY, include_running=True)
        assert load.driver_alive(root, STUDY)
    assert set(t["epoch_max"].to_list()) == {1}
    b = t.filter(pl.col("sigma2_cfg") == 0.1).row(0, named=True)
    assert b["n"] == 2 and b["n_used_mean"] == 1.5 and b["n_running"] == 1
    assert not load.driver_alive(root, STUDY)
    t = intrinsic.from_study(root, STUDY, include_running=True)
    b = t.filter(pl.col("sigma2_cfg") == 0.1).row(0, named=True)
    assert b["n"] == 1 and b["n_running"] == 0


def test_format_2_files_are_read_with_the_new_columns_null(tmp_path):
    """Files written before format 4 lack the estimate columns; a mixture's precision-weighted
    equivalent variance is recomputed, its arithmetic one kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from resultstore.format import SCHEMAS
    new = ("mi_xz_est", "kl_qz_pz_est", "tc_est", "equivalent_sigma2_arith", "pi_at_floor",
           "normal_var_tol")
    old = pa.schema([f for f in SCHEMAS["trials"] if f.name not in new])
    cfg = config(0.01, 0, "mog", 2.0)
    row = {k: v for k, v in trial_row(cfg, "old", 1, 2, 10.0).items() if k not in new}
    row.update(noise_pi=[0.8, 0.2], noise_sigma2_k=[1e-6, 0.05],
               equivalent_sigma2=2.0 * (0.8e-6 + 0.2 * 0.05))
    (tmp_path / "s" / "trials" / "old").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=old),
                   tmp_path / "s" / "trials" / "old" / "part-000001-000001.parquet")
    got = load.trials(str(tmp_path), "s").collect().row(0, named=True)
    assert got["mi_xz_est"] is None and got["normal_var_tol"] == 0.1
    assert got["equivalent_sigma2_arith"] == pytest.approx(2.0 * 0.010_000_8)
    assert got["equivalent_sigma2"] == pytest.approx(2.0 / (0.8 / 1e-6 + 0.2 / 0.05))


def test_compare_stacks_the_studies_tables(study, tmp_path):
    import shutil
    from analysis.compare import build_compare
    root = str(tmp_path)
    shutil.copytree(f"{study[0]}/{STUDY}", f"{root}/one")
    shutil.copytree(f"{study[0]}/{STUDY}", f"{root}/two")
    path = build_compare([(root, "one"), (root, "two")], report.Options())
    page = path.read_text()
    assert path.name == "compare-one-two.html" and path.parent == tmp_path
    assert page.count("<td>one</td>") == 3 and page.count("<td>two</td>") == 3
    assert page.count("Theorem 1 check") == 2


def test_a_search_front_names_its_own_objectives():
    """A three-objective search's front is drawn apart, its third objective named."""
    front = pl.DataFrame({"trial_id": ["a", "b"], "noise": ["specified"] * 2, "beta": [1.0, 2.0],
                          "sigma2": [0.1, 0.2], "equivalent_sigma2": [0.1, 0.4],
                          "latent_dim": [3, 3], "seed": [0, 0], "epoch": [2, 2],
                          "evlb": [1.0, 2.0], "kl_qz_pz": [2.0, 3.0], "recon_mse": [0.1, 0.05]})
    assert figures.search_objectives(front) == ["evlb", "kl_qz_pz", "recon_mse"]
    fig = figures.draw("search_front", figures.Tables({"search_front": front}))
    assert "recon_mse" in fig.axes[0].get_title()


def test_stored_kl_and_tc_estimates_are_dropped_where_the_mi_bound_saturates():
    """Rows written before issue 21 hold KL and TC estimates biased by I - log N."""
    rows = pl.DataFrame({"mi_xz_est": [2.0, 4.5, 6.8, 3.0], "eval_points": [1000, 1000, 5000, 100],
                         "kl_qz_pz_est": [0.1, 4.6, 16.0, 0.2], "tc_est": [0.1, 4.6, 15.9, 0.2]})
    got = rows.select(intrinsic.unsaturated("kl_qz_pz_est"), intrinsic.unsaturated("tc_est"))
    assert got["kl_qz_pz_est"].to_list() == [0.1, None, None, None]   # log 100 - 3 = 1.6 < 3
    assert got["tc_est"].to_list() == [0.1, None, None, None]
