"""UDR (Duan et al. 2020) on codes with known answers, and through `vaestudy report`.

Closed forms come from a full factorial grid of code values, whose columns are exactly
uncorrelated in values and in ranks, so the similarity matrix R is exact; Gaussian codes
on many points give the large-sample values (Spearman of a 45-degree rotation:
(6/pi) arcsin(cos 45 / 2)). The end-to-end test trains three tiny MNIST trials (no
ground-truth factors) and runs the report's command line on them.
"""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from analysis.align import random_rotation
from analysis.metrics import METRICS, parse_names
from analysis.metrics.section import summary, view
from analysis.metrics.udr import ALPHA, VARIANTS, compute_udr, pair_score, relative_strength

SIGNED_PERM = np.eye(3)[[2, 0, 1]] * np.array([1.0, -1.0, -1.0])         # [3, 3]


def grid(m: int = 8, k: int = 3) -> np.ndarray:
    """Every combination of m centred levels in k dims: [m^k, k]."""
    levels = np.arange(m) - (m - 1) / 2
    return np.stack(np.meshgrid(*[levels] * k, indexing="ij"), -1).reshape(-1, k)


def seed(mu, used=None, index=None) -> dict:
    """One seed as the metrics table hands it over: codes, point ids, used dims."""
    mu = np.asarray(mu)
    return {"mu": mu, "index": np.arange(len(mu)) if index is None else index,
            "used_idx": list(range(mu.shape[1])) if used is None else used}


def udr(seeds, correlation) -> list:
    return [r[f"udr_{correlation}"] if isinstance(r, dict) else r
            for r in compute_udr(seeds, np.random.default_rng(0), correlation)]


def rotate45(z: np.ndarray) -> np.ndarray:
    c = np.sqrt(0.5)
    return z @ np.array([[c, -c], [c, c]])


# ---- disentanglement_lib's formula -----------------------------------------------------
def test_relative_strength_on_hand_matrices():
    assert relative_strength(np.eye(3)) == 1.0
    assert relative_strength(np.ones((3, 3))) == pytest.approx(1 / 3)
    assert relative_strength(np.array([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])) == \
        pytest.approx(2 / 3)
    assert relative_strength(np.zeros((3, 3))) == 0.0
    # by hand: columns .8^2/.9 and .4^2/.6; rows .8^2/1, .4^2/.5 and 0/0 -> 0
    r = np.array([[0.8, 0.2], [0.1, 0.4], [0.0, 0.0]])
    cols, rows = (0.64 / 0.9 + 0.16 / 0.6) / 2, (0.64 + 0.32 + 0.0) / 3
    assert relative_strength(r) == pytest.approx((cols + rows) / 2, abs=1e-12)


# ---- closed forms ------------------------------------------------------------------------
def test_a_signed_permutation_scores_one_and_the_lasso_one_minus_alpha():
    """Spearman's R is the permutation itself; Lasso on standardised orthogonal codes
    soft-thresholds each weight: 1 - alpha = 0.9 (disentanglement_lib's shrinkage)."""
    z = grid()
    seeds = [seed(z), seed(z @ SIGNED_PERM), seed(-z[:, ::-1])]
    assert udr(seeds, "spearman") == pytest.approx([1.0] * 3, abs=1e-12)
    assert udr(seeds, "lasso") == pytest.approx([1 - ALPHA] * 3, abs=1e-6)


def test_a_45_degree_rotation_is_its_closed_form():
    z = grid(m=40, k=2)
    assert pair_score(z, rotate45(z), "lasso") == pytest.approx((np.sqrt(0.5) - ALPHA) / 2,
                                                                abs=1e-6)
    g = np.random.default_rng(0).standard_normal((20_000, 2))
    expect = 3 / np.pi * np.arcsin(np.sqrt(0.5) / 2)                  # (6/pi) asin(rho/2) / 2
    assert pair_score(g, rotate45(g), "spearman") == pytest.approx(expect, abs=0.01)


@pytest.mark.parametrize("correlation", VARIANTS)
def test_a_rotation_mixing_all_dims_scores_clearly_lower(correlation):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2000, 5))
    perm = udr([seed(z), seed(z[:, [3, 1, 4, 0, 2]] * [1, -1, 1, 1, -1])], correlation)
    rot = udr([seed(z), seed(z @ random_rotation(5, rng))], correlation)
    assert min(perm) > 0.88 and max(rot) < 0.6 and min(perm) - max(rot) > 0.3, (perm, rot)


@pytest.mark.parametrize("correlation,n,ceiling", [("lasso", 200, 0.05), ("lasso", 1000, 0.0),
                                                   ("spearman", 200, 0.1),
                                                   ("spearman", 1000, 0.05)])
def test_independent_codes_per_seed_score_near_zero(correlation, n, ceiling):
    """Measured over 20 draws of 5 seeds x 4 dims (bench/bench_metrics.py --only udr): Lasso
    max 0.039 at N = 200 and exactly 0 at N = 1,000 (no weight passes alpha); Spearman, whose
    |rho| of independent codes is about 0.8 / sqrt(N), max 0.075 and 0.030."""
    for draw in range(3):
        rng = np.random.default_rng(draw)
        got = udr([seed(rng.standard_normal((n, 4))) for _ in range(5)], correlation)
        assert max(got) <= ceiling, (draw, got)


@pytest.mark.parametrize("correlation", VARIANTS)
def test_unused_dims_change_nothing_when_masked(correlation):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((500, 3))
    base = [seed(z), seed(z @ SIGNED_PERM + 0.3 * rng.standard_normal((500, 3)))]
    padded = []
    for s in base:                                   # collapsed dims at 0, 2 and 4 of 6
        mu = np.zeros((500, 6)) + 1e-3 * rng.standard_normal((500, 6))
        mu[:, [1, 3, 5]] = s["mu"]
        padded.append(seed(mu, used=[1, 3, 5]))
    assert udr(padded, correlation) == udr(base, correlation)
    unmasked = [seed(s["mu"]) for s in padded]       # counted as used: the score drops
    assert max(udr(unmasked, correlation)) < min(udr(base, correlation)) - 0.1


@pytest.mark.parametrize("correlation", VARIANTS)
def test_used_dims_only_equals_disentanglement_libs_zeroing_then_masking(correlation):
    """disentanglement_lib standardises every dim, zeroes the inactive ones, fits R on all
    and keeps R's active rows and columns; here R is fitted on the used dims alone."""
    from sklearn.linear_model import Lasso
    from scipy.stats import spearmanr

    rng = np.random.default_rng(8)
    z = rng.standard_normal((600, 6))
    za, zb = z, z @ random_rotation(6, rng) * 0.5 + z * 0.5           # all dims informative
    ua, ub = [0, 2, 3, 5], [1, 2, 4]
    full = []
    for x, u in ((za, ua), (zb, ub)):
        x = (x - x.mean(0)) / x.std(0)
        full.append(x * np.isin(np.arange(6), u))                       # inactive dims -> 0
    if correlation == "lasso":
        r = np.abs(Lasso(alpha=ALPHA).fit(full[0], full[1]).coef_).T
    else:
        with warnings.catch_warnings():                                 # constant: NaN
            warnings.simplefilter("ignore")
            r = np.abs([[spearmanr(full[0][:, i], full[1][:, j]).statistic for j in range(6)]
                        for i in range(6)])
    expect = relative_strength(r[ua][:, ub])
    got = udr([seed(za, used=ua), seed(zb, used=ub)], correlation)[1]
    assert got == pytest.approx(expect, abs=1e-9)


# ---- pairs, points and reasons -------------------------------------------------------------
def test_a_seeds_score_is_the_median_of_its_pairs_predicting_its_own_codes():
    rng = np.random.default_rng(3)
    z = [rng.standard_normal((400, 3)) @ rng.standard_normal((3, 3)) for _ in range(3)]
    a, b = z[0], z[0] @ rng.standard_normal((3, 3)) + rng.standard_normal((400, 3))
    assert pair_score(a, b, "lasso") != pytest.approx(pair_score(b, a, "lasso"), abs=1e-3)
    assert udr([seed(a), seed(b)], "lasso") == pytest.approx(
        [pair_score(b, a, "lasso"), pair_score(a, b, "lasso")], abs=1e-12)
    expect = np.median([pair_score(z[1], z[0], "lasso"), pair_score(z[2], z[0], "lasso")])
    assert udr([seed(x) for x in z], "lasso")[0] == pytest.approx(expect, abs=1e-12)


def test_codes_are_matched_on_the_points_both_seeds_hold():
    z = grid()
    ids = np.arange(len(z)) + 100
    order = np.random.default_rng(4).permutation(len(z))
    extra = np.random.default_rng(5).standard_normal((50, 3))        # points only b holds
    b = seed(np.concatenate([(z @ SIGNED_PERM)[order], extra]),
             index=np.concatenate([ids[order], np.arange(50)]))
    assert udr([seed(z, index=ids), b], "spearman") == pytest.approx([1.0, 1.0], abs=1e-12)


def test_a_trial_without_a_pair_says_why():
    z = np.random.default_rng(6).standard_normal((100, 3))
    assert udr([seed(z)], "lasso") == ["no other seed of its configuration"]
    got = udr([seed(z), seed(z, used=[])], "spearman")
    assert got == ["no other seed of its configuration with used factors on common points",
                   "no used factor (mi above eval.used_threshold)"]
    far = seed(z, index=np.arange(100) + 1000)                         # no common point
    assert isinstance(udr([seed(z), far], "lasso")[0], str)


@pytest.mark.parametrize("correlation", VARIANTS)
def test_same_inputs_same_numbers_whatever_the_seed_order(correlation):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((300, 4))
    seeds = [seed(z @ random_rotation(4, rng) * 0.2 + z) for _ in range(4)]
    first = udr(seeds, correlation)
    assert udr(seeds, correlation) == first
    assert udr(seeds[::-1], correlation) == pytest.approx(first[::-1], abs=1e-12)


def test_udr_names_its_variant_and_its_interval_is_the_jackknifes():
    assert parse_names("udr") == ("udr_lasso",)
    assert parse_names("udr,udr_spearman") == ("udr_lasso", "udr_spearman")
    assert "Lasso" in METRICS["udr_lasso"].title
    assert "Spearman" in METRICS["udr_spearman"].title
    with pytest.raises(ValueError, match="udr_lasso, udr_spearman.*udr = udr_lasso"):
        parse_names("udr_bogus")
    with pytest.raises(ValueError, match="correlation 'pearson'; allowed: lasso, spearman"):
        compute_udr([seed(np.eye(3))], None, "pearson")
    t = pl.DataFrame({"trial_id": list("abc"), "config_key": ["c"] * 3, "seed": [0, 1, 2],
                      "udr_lasso": [0.5, 0.6, 0.7], "udr_lasso_config_ci95": [0.21] * 3,
                      "mig": [0.2, 0.4, 0.6]})
    s = summary(t)
    assert s["udr_lasso_ci95"][0] == 0.21                     # the configuration's jackknife
    assert "udr_lasso_config_ci95_mean" not in s.columns       # not a score of its own
    assert s["mig_ci95"][0] is not None
    assert view(s, {})["udr_lasso"].to_list() == ["0.6 ± 0.21"]


def test_the_configuration_interval_is_the_leave_one_seed_out_jackknife():
    """Closed forms on pair matrices: equal pairs give a zero-width interval at their value;
    below 3 scored seeds no interval; and where seeds share a strong effect through their
    pairs (S[a, b] = u_a + u_b + small noise) the jackknife is wider than a t-interval over
    the seeds' scores, which treats them as independent."""
    from scipy.stats import t as student_t

    from analysis.metrics.udr import config_interval
    flat = np.full((4, 4), 0.7)
    np.fill_diagonal(flat, np.nan)
    assert config_interval(flat) == pytest.approx((0.7, 0.0, 4))
    two = flat[:2, :2]
    m, half, n = config_interval(two)
    assert (m, n) == (pytest.approx(0.7), 2) and np.isnan(half)
    rng = np.random.default_rng(3)
    wider = 0
    for _ in range(50):
        u = rng.standard_normal(6)
        pairs = u[:, None] + u[None, :] + 0.1 * rng.standard_normal((6, 6))
        np.fill_diagonal(pairs, np.nan)
        m, half, n = config_interval(pairs)
        scores = np.nanmedian(pairs, axis=0)
        naive = student_t.ppf(0.975, 5) * scores.std(ddof=1) / np.sqrt(6)
        assert m == pytest.approx(scores.mean()) and n == 6
        wider += half > naive
    assert wider >= 45


# ---- through the report, on MNIST (no ground truth) -----------------------------------------
@pytest.mark.slow
def test_report_cli_gives_udr_per_trial_and_per_configuration_on_mnist(tmp_path, mnist_dir):
    from resultstore.store import ResultStore
    from trainables.config import TrialConfig
    from trainables.train import run_trial

    store = ResultStore(str(tmp_path), "digits")
    for sigma2, s in ((0.02, 0), (0.02, 1), (0.2, 0)):
        run_trial(TrialConfig.from_dict({
            "dataset.name": "mnist", "dataset.path": str(mnist_dir), "dataset.limit": 500,
            "model.latent_dim": 4, "train.epochs": 2, "train.seed": s, "train.lr": 3e-3,
            "noise.sigma2": sigma2, "eval.traversals": False, "train.threads": 1,
            "train.device": "cpu"}), store, log=lambda _: None)
    r = subprocess.run([sys.executable, "-m", "study.cli", "report", str(tmp_path / "digits"),
                        "--no-higgins", "--no-trial-pages", "--quiet",
                        "--metrics", "udr,udr_spearman,mig"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "metrics cost: udr_lasso:" in r.stdout
    table = pl.read_parquet(tmp_path / "digits" / "analysis" / "metrics.parquet")
    assert table.height == 3 and table["mig"].is_null().all()          # no ground truth
    pair = table.filter(pl.col("config_key") == table["config_key"].mode()[0])
    assert pair.height == 2
    for c in ("udr_lasso", "udr_spearman"):
        assert pair[c].is_not_null().all() and pair[c].is_between(0, 1).all(), c
    alone = table.filter(pl.col("config_key") != pair["config_key"][0]).row(0, named=True)
    assert alone["udr_lasso"] is None and alone["udr_spearman"] is None
    assert "udr_lasso: no other seed of its configuration" in alone["not_applicable"]
    report = (tmp_path / "digits" / "report.md").read_text()
    assert "UDR, Lasso" in report and "UDR, Spearman" in report
    header = next(line for line in report.splitlines() if "| udr_lasso |" in line)
    assert "udr_spearman" in header
    assert f"| {round(pair['udr_lasso'].mean(), 3)} (n=2) |" in report


def test_the_configuration_interval_covers_its_mean_where_the_naive_one_does_not():
    """Known truth: pair scores with a per-seed effect, S[a, b] = 0.5 + 0.1 (u_a + u_b) +
    0.05 e_ab, 6 seeds. The configuration's UDR (mean over seeds of each one's median pair)
    has expectation `truth` (20,000 draws). Over 600 draws the jackknife's 95% interval holds
    it about 94% of the time; a t-interval over the seeds' scores, which treats them as
    independent, about 66%."""
    from scipy.stats import t as student_t

    from analysis.metrics.udr import config_interval, seed_udr
    rng = np.random.default_rng(5)
    s = 6

    def draw():
        u = rng.standard_normal(s)
        pairs = 0.5 + 0.1 * (u[:, None] + u[None, :]) + 0.05 * rng.standard_normal((s, s))
        np.fill_diagonal(pairs, np.nan)
        return pairs

    every = np.ones(s, dtype=bool)
    truth = np.mean([np.nanmean(seed_udr(draw(), every)) for _ in range(20_000)])
    jack = naive = 0
    for _ in range(600):
        pairs = draw()
        m, half, _ = config_interval(pairs)
        jack += abs(m - truth) <= half
        scores = np.nanmedian(pairs, axis=0)
        naive += abs(m - truth) <= student_t.ppf(0.975, s - 1) * scores.std(ddof=1) / np.sqrt(s)
    assert 0.91 <= jack / 600 <= 0.99
    assert naive / 600 < 0.80
