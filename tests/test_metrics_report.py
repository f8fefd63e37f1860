"""analysis/metrics.parquet and the report's metrics section, on real stored studies:
the format fixture (codes, no checkpoints) and one tiny trial trained in-process."""
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from analysis.metrics.section import metrics_frames, metrics_section, summary
from analysis.metrics.table import COLUMNS, metrics_table
from trainables.config import TrialConfig
from resultstore.store import ResultStore
from trainables.train import run_trial

FIXTURE = Path(__file__).parent / "data" / "studies" / "v2" / "tiny"


@pytest.fixture()
def tiny(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "tiny")
    return str(tmp_path), "tiny"


def test_one_row_per_trial_from_the_stored_codes_and_reasons_for_the_rest(tiny):
    table = metrics_table(*tiny, ("mig", "sap", "dci", "modularity", "explicitness", "factorvae"))
    assert table.height == 2 and table["trial_id"].n_unique() == 2
    assert set(COLUMNS) <= set(table.columns)
    assert table["points"].to_list() == [50, 50]
    for c in ("mig", "sap", "dci_lasso_informativeness", "modularity", "explicitness"):
        assert table[c].is_not_null().all() and ((table[c] >= 0) & (table[c] <= 1)).all(), c
    assert table["factorvae"].is_null().all()
    assert table["not_applicable"].str.contains("factorvae: the trial has no checkpoint").all()
    again = metrics_table(*tiny, ("mig", "sap", "dci", "modularity"))
    assert again.select("mig", "sap", "modularity").equals(table.select("mig", "sap", "modularity"))


def test_summary_gives_no_interval_below_three_seeds():
    t = pl.DataFrame({"trial_id": list("abcd"), "config_key": ["c1"] * 3 + ["c2"],
                      "seed": [0, 1, 2, 0], "mig": [0.2, 0.4, 0.6, 0.5]})
    s = summary(t).sort("config_key")
    assert s["mig_mean"].to_list() == pytest.approx([0.4, 0.5])
    assert s["mig_ci95"][0] == pytest.approx(4.302653 * 0.2 / 3 ** 0.5, rel=1e-5)
    assert s["mig_ci95"][1] is None
    blocks = metrics_section(t.with_columns(not_applicable=pl.lit(None, pl.String)), {"c1": "one"})
    cells = blocks[2][1]
    assert cells["configuration"].to_list()[0] == "one"
    assert cells["mig"].to_list() == ["0.4 ± 0.497", "0.5 (n=1)"]


@pytest.mark.slow
def test_report_cli_writes_metrics_parquet_and_refuses_unknown_names(tiny):
    study = str(Path(tiny[0]) / "tiny")
    cli = [sys.executable, "-m", "study.cli", "report", study, "--no-higgins"]
    r = subprocess.run([*cli, "--metrics", "mig,bogus"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "'bogus'" in r.stderr
    assert not (Path(study) / "report.html").exists()
    r = subprocess.run([*cli, "--metrics", "mig,sap"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "metrics cost: mig:" in r.stdout
    table = pl.read_parquet(Path(study) / "analysis" / "metrics.parquet")
    assert table.height == 2 and table["mig"].is_not_null().all()
    assert table["dci_lasso_disentanglement"].is_null().all()    # not asked for
    assert "Disentanglement metrics" in (Path(study) / "report.md").read_text()


@pytest.mark.slow
def test_factorvae_and_betavae_on_a_trained_intrinsic_trial(tmp_path):
    cfg = TrialConfig.from_dict({"dataset": {"name": "intrinsic", "n": 300, "factors": 2},
                                 "model": {"latent_dim": 3}, "train": {"epochs": 1},
                                 "eval": {"traversals": False, "codes_points": 60}})
    store = ResultStore(str(tmp_path), "one")
    run_trial(cfg, store, log=lambda s: None)
    frames = metrics_frames(str(tmp_path), "one", ("mig", "factorvae", "betavae"),
                            log=lambda s: None)
    row = frames["metrics"].row(0, named=True)
    assert row["points"] == 60 and row["not_applicable"] is None
    for c in ("mig", "factorvae", "factorvae_train", "betavae_eval"):
        assert 0 <= row[c] <= 1, c
