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
from resultstore.store import ResultStore
from trainables.train import run_trial

STUDY = "quickstart"
OPTS = report.Options(rotations=4, workers=2)                 # fast Higgins, 2 processes
ONLY_SEARCH = {"search_front"}                                 # drawn for Optuna studies only
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
    return report.compute_tables(study, STUDY, OPTS)


def test_tables_from_a_real_study(tables):
    f = tables.frames
    assert f["per_trial"].height == 6 and f["intrinsic_dimension"].height == 4
    assert f["seed_pairs"].height == 2                       # one pair per specified sigma2
    assert f["ground_truth"].height == 6 and f["higgins"].height == 6
    assert f["learned_noise"]["beta"].to_list() == [1.0, 2.0]
    assert f["tradeoff"]["pareto"].any()
    r2 = f["seed_pairs"].drop_nulls()
    assert r2.height and (r2["procrustes_r2"] <= 1.0).all() and (r2["permutation_r2"] <= 1.0).all()
    h = f["higgins"]
    assert ((h["higgins"] >= 0) & (h["higgins"] <= 1)).all() and (h["setting"] == "fast").all()
    assert h["train_accuracy"].is_not_null().all()
    assert f["seed_agreement"].height == 2 and (f["seed_agreement"]["pairs"] == 1).all()
    assert f["seed_agreement"]["verdict"].to_list() == ["", ""]        # one pair: no interval
    assert f["per_trial"]["mi_xz_est"].is_not_null().all()
    assert (f["per_trial"]["mi_xz_est"] <= f["per_trial"]["mi_xz"] + 0.1).all()  # Def. 2 bounds
    assert set(tables.chosen) == {"fig2", "fig16"} and all(tables.chosen.values())
    assert f["curves"]["epoch"].n_unique() == 3


@pytest.mark.parametrize("name", [n for n in figures.FIGURES if n not in ONLY_SEARCH])
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
    for name in ("fig8_learned_sigma2", "fig9_beta_sigma2"):         # linear, as the paper's
        assert figures.draw(name, tables).axes[0].get_yscale() == "linear"


def test_importing_the_analysis_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys
    code = ("import matplotlib; matplotlib.use('svg'); import analysis.report, analysis.plots; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_report_is_written_self_contained(study):
    path = report.build_report(study, STUDY, OPTS)
    page = path.read_text()
    folder = path.parent
    assert path == folder / "report.html" and folder.name == STUDY
    first = re.search(r'<p class="lead">(.*?)</p>', page).group(1)
    assert first.startswith("Theorem 1 check:") and "P = 3" in first
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(figures.FIGURES) - len(ONLY_SEARCH)     # nothing else skipped
    assert all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    md = (folder / "report.md").read_text()
    for link in re.findall(r"\]\((analysis/figures/[^)]+\.png)\)", md):
        assert (folder / link).stat().st_size > 0
    for name in ("intrinsic_dimension", "seed_pairs", "ground_truth", "higgins", "tradeoff"):
        assert pl.read_parquet(folder / "analysis" / f"{name}.parquet").height > 0
    assert "src=\"http" not in page and "<script" not in page
    assert (folder / "analysis" / "figures" / "fig4_evlb.svg").read_bytes().lstrip()[:5] in \
        (b"<?xml", b"<svg ")
    pages = re.findall(r'href="(pages/[^"]+\.html)"', page)
    assert len(set(pages)) == 6 and all((folder / p).stat().st_size > 1000 for p in pages)
    assert "± 0 " not in page and "<th>n</th>" in page


@pytest.mark.slow
def test_report_opens_in_headless_chromium_with_every_image_loaded(study, tmp_path):
    """Debian's chromium renders report.html: every <img> decodes, and the screenshot is
    not blank."""
    import shutil
    import subprocess
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    path = report.build_report(study, STUDY, report.Options(higgins=None, trial_pages=False))
    probe = tmp_path / "probe.html"                 # the report plus a script that counts images
    script = ("<script>addEventListener('load',()=>{const i=[...document.images];"
              "document.title='loaded '+i.filter(x=>x.complete&&x.naturalWidth>0).length+"
              "' of '+i.length+' width '+document.documentElement.scrollWidth;});</script>")
    probe.write_text(path.read_text().replace("</body>", script + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--window-size=1280,2000",
                          "--virtual-time-budget=5000", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    title = re.search(r"<title>(.*?)</title>", dom.stdout).group(1)
    n = len(re.findall(r"<img ", path.read_text()))
    loaded, width = re.fullmatch(r"(loaded \d+ of \d+) width (\d+)", title).groups()
    assert loaded == f"loaded {n} of {n}" and n > 5
    assert int(width) <= 1280                                       # no sideways scrolling
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2000",
                    path.as_uri()], capture_output=True, timeout=120)
    from matplotlib.image import imread
    img = imread(str(shot))
    assert img.shape[1] == 1280 and img[..., :3].std() > 0.02       # not a blank page


def test_summary_table_has_one_line_per_configuration(study):
    lines = report.summary_table(study, STUDY).splitlines()
    assert lines[0].split()[:2] == ["noise", "beta"] and len(lines) == 1 + 4 + 1
    assert np.isfinite(float(lines[1].split()[-1]))
