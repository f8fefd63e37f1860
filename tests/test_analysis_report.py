"""Every figure and the report from a small real study (run_trial on intrinsic data).

Six real trials (2 sigma2 x 2 seeds of specified noise, learned noise at beta 1
and 2), 3 epochs on 600 images: enough for used factors, codes, checkpoints and
traversals, so no figure is skipped."""
import base64
import re

import numpy as np
import polars as pl
import pytest
import torch

from analysis import figures, report
from trainables.config import TrialConfig
from trainables.store import ResultStore
from trainables.train import run_trial

STUDY = "quickstart"
HIGGINS = {"n_train": 150, "n_test": 100, "batch_size": 16, "rotations": 4}
TRIALS = [("specified", 0.002, 1.0, 0), ("specified", 0.002, 1.0, 1),
          ("specified", 0.02, 1.0, 0), ("specified", 0.02, 1.0, 1),
          ("learned", 0.01, 1.0, 0), ("learned", 0.01, 2.0, 0)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("results"))
    store = ResultStore(root, STUDY)
    threads = torch.get_num_threads()
    for kind, sigma2, beta, seed in TRIALS:
        cfg = TrialConfig.from_dict({
            "dataset": {"name": "intrinsic", "n": 600, "factors": 3},
            "model": {"latent_dim": 6}, "noise": {"kind": kind, "sigma2": sigma2, "beta": beta},
            "train": {"epochs": 3, "seed": seed, "lr": 3e-3, "batch_size": 20, "device": "cpu",
                      "threads": 1},
            "eval": {"every": 1}})
        run_trial(cfg, store, log=lambda _: None)
    torch.set_num_threads(threads)
    return root


@pytest.fixture(scope="module")
def tables(study):
    return report.compute_tables(study, STUDY, higgins_opts=HIGGINS)


def test_tables_from_a_real_study(tables):
    f = tables.frames
    assert f["per_trial"].height == 6 and f["intrinsic_dimension"].height == 4
    assert f["seed_pairs"].height == 2                       # one pair per specified sigma2
    assert f["ground_truth"].height == 6 and f["higgins"].height == 6
    assert f["learned_noise"]["beta"].to_list() == [1.0, 2.0]
    assert f["tradeoff"]["pareto"].any()
    r2 = f["seed_pairs"].drop_nulls()
    assert r2.height and (r2["procrustes_r2"] <= 1.0).all() and (r2["permutation_r2"] <= 1.0).all()
    h = f["higgins"]["higgins"]
    assert ((h >= 0) & (h <= 1)).all()


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_every_figure_is_drawn_with_labelled_axes(tables, name):
    fig = figures.draw(name, tables)
    assert not isinstance(fig, str), f"{name} skipped: {fig}"
    ax = fig.axes[0]
    if name == "traversals":
        assert ax.get_title() and ax.images
    else:
        assert any(a.get_xlabel() for a in fig.axes) and ax.get_ylabel() and ax.has_data()
    png = figures.plots.save(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_log_x_where_the_paper_has_it(tables):
    for name in ("fig4_evlb", "fig5a_kl_qz_pz", "fig6b_used", "used_vs_p"):
        assert figures.draw(name, tables).axes[0].get_xscale() == "log"


def test_report_is_written_self_contained(study):
    path = report.build_report(study, STUDY, higgins_opts=HIGGINS)
    page = path.read_text()
    folder = path.parent
    assert path == folder / "report.html" and folder.name == STUDY
    first = re.search(r'<p class="lead">(.*?)</p>', page).group(1)
    assert first.startswith("Theorem 1 check:") and "P = 3" in first
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(figures.FIGURES)                        # nothing skipped
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    md = (folder / "report.md").read_text()
    for link in re.findall(r"\]\((analysis/figures/[^)]+\.png)\)", md):
        assert (folder / link).stat().st_size > 0
    for name in ("intrinsic_dimension", "seed_pairs", "ground_truth", "higgins", "tradeoff"):
        assert pl.read_parquet(folder / "analysis" / f"{name}.parquet").height > 0
    assert "src=\"http" not in page and "<script" not in page


def test_summary_table_has_one_line_per_configuration(study):
    lines = report.summary_table(study, STUDY).splitlines()
    assert lines[0].split()[:2] == ["noise", "beta"] and len(lines) == 1 + 4 + 1
    assert np.isfinite(float(lines[1].split()[-1]))
