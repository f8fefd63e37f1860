"""Theorem 1 (information conservation): how many factors each configuration uses.

An ideal VAE uses as many factors as the data's intrinsic dimension P; a factor
is used when its mutual information mi_h (Def. 3) exceeds 0.5 nats (App. E),
and sits at the prior ("normal variance", Fig. 5b) when its mean posterior
variance is within each trial's `eval.normal_var_tol` of 1. The configurations
are compared on the paper's common x-axis, the equivalent variance beta * sigma2
(Sec. 7.2.1; for learned noise beta * sigma2_learnt, for a mixture beta over its
average precision sum_k pi_k / sigma2_k).

Only completed trials count by default (`load.counted`); every table carries n
(trials) and the epoch range it was measured at, and means come with t-based 95%
intervals (`analysis.stats`).
"""
from __future__ import annotations

import polars as pl

from analysis import load, stats
from trainables.saturation import ESTIMATE_POINTS, SATURATION_MARGIN

GROUP = ["config_key", "series_key", "dataset", "noise", "beta", "sigma2_cfg", "latent_dim"]


def factor_counts(factors: pl.LazyFrame, rows: pl.LazyFrame,
                  threshold: float | None = None) -> pl.LazyFrame:
    """Per (trial_id, epoch) of `rows`: used and normal-variance factor counts.

    `threshold` None keeps each trial's own `used` flag (its eval.used_threshold);
    a number recounts with mi > threshold (App. E uses 0.5 nats). Normal variance is
    |post_var - 1| < the trial's own normal_var_tol.
    """
    used = pl.col("used") if threshold is None else pl.col("mi") > threshold
    keys = rows.select("trial_id", "epoch", "normal_var_tol")
    factors = factors.join(keys, on=["trial_id", "epoch"], how="inner")
    return load.dedupe(factors, "factors").group_by(
        "trial_id", "epoch").agg(
        used.sum().cast(pl.Int64).alias("n_used"),
        ((pl.col("post_var") - 1.0).abs() < pl.col("normal_var_tol")).sum().cast(pl.Int64)
        .alias("n_normal"),
        pl.col("mi").filter(used).sum().alias("mi_used"))


def unsaturated(col: str) -> pl.Expr:
    """`col` (kl_qz_pz_est or tc_est) nulled where the row's I(x;z) lower bound is within
    SATURATION_MARGIN of log N (`trainables.saturation`): rows written before issue 21
    stored the biased values; the rule is the one `estimates` now applies."""
    n = pl.min_horizontal(pl.col("eval_points").fill_null(ESTIMATE_POINTS), ESTIMATE_POINTS)
    cap = n.cast(pl.Float64).log() - SATURATION_MARGIN
    return pl.when(pl.col("mi_xz_est") <= cap).then(pl.col(col)).otherwise(None).alias(col)


def per_trial(rows: pl.LazyFrame, factors: pl.LazyFrame,
              threshold: float | None = None) -> pl.LazyFrame:
    """One row per counted trial (`load.counted`) with its factor counts and indicators."""
    counts = factor_counts(factors, rows, threshold)
    return (rows.join(counts, on=["trial_id", "epoch"], how="left")
            .with_columns(pl.coalesce("n_used", "n_used_factors").alias("n_used"),
                          pl.coalesce("n_normal", "n_normal_variance_factors").alias("n_normal"),
                          unsaturated("kl_qz_pz_est"), unsaturated("tc_est")))


MEANS = ("n_used", "n_normal", "mi_xz", "kl_qz_pz", "mi_xz_est", "kl_qz_pz_est", "tc_est", "evlb")


SATURABLE = ("kl_qz_pz_est", "tc_est")      # null where the MI bound saturates


def _agg(col: str) -> list[pl.Expr]:
    """Mean and sd; for a SATURABLE estimate null where any seed's is (a mean over the
    unsaturated seeds alone would be biased low)."""
    c = pl.col(col)
    if col in SATURABLE:
        whole = c.null_count() == 0
        return [pl.when(whole).then(c.mean()).alias(f"{col}_mean"),
                pl.when(whole).then(c.std()).alias(f"{col}_std")]
    return [c.mean().alias(f"{col}_mean"), c.std().alias(f"{col}_std")]


def with_intervals(table: pl.LazyFrame, cols=MEANS, n: str = "n") -> pl.LazyFrame:
    """{col}_half: the 95% t-interval's half width of each {col}_mean over `n` trials."""
    return table.with_columns(stats.half_width(pl.col(f"{c}_std"), pl.col(n)).alias(f"{c}_half")
                              for c in cols)


def aggregate(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Across the seeds of each configuration: n, epoch range, counts, the paper's Def. 2/4
    bounds and the MC estimates, EVLB (Eq. 13); means with t-interval half widths."""
    used, P = pl.col("n_used"), pl.col("true_factors")
    table = (rows.group_by(GROUP)
             .agg(pl.len().alias("n"), pl.col("seed").n_unique().alias("seeds"),
                  pl.col("epoch").min().alias("epoch_min"),
                  pl.col("epoch").max().alias("epoch_max"),
                  pl.col("equivalent_sigma2").mean().alias("equivalent_sigma2"),
                  pl.col("equivalent_sigma2_arith").mean().alias("equivalent_sigma2_arith"),
                  pl.col("pi_at_floor").max().alias("pi_at_floor_max"),
                  pl.col("sigma2").mean().alias("sigma2_mean"),
                  *[e for c in MEANS for e in _agg(c)],
                  used.min().alias("n_used_min"), used.max().alias("n_used_max"),
                  pl.col("recon_mse").mean().alias("recon_mse_mean"),
                  P.first().alias("true_factors"),
                  (used == P).mean().alias("frac_at_P"),
                  (used == P).sum().cast(pl.Int64).alias("n_at_P"),
                  (used - P).abs().mean().alias("mae_P"),
                  pl.col("state").eq("running").sum().alias("n_running"))
             .sort("noise", "equivalent_sigma2", "beta"))
    return with_intervals(table)


def intrinsic_dimension(rows: pl.LazyFrame, factors: pl.LazyFrame,
                        threshold: float | None = None) -> pl.LazyFrame:
    """The intrinsic-dimension table: one row per configuration, across seeds (Theorem 1).

    `rows` are the counted trials (`load.counted`). `frac_at_P` is the fraction of seeds
    whose used-factor count equals the data's true P and `mae_P` the mean |used - P|; both
    are null where P is unknown (mnist, image folders).
    """
    return aggregate(per_trial(rows, factors, threshold))


def from_study(root: str, study: str, threshold: float | None = None,
               include_running: bool = False) -> pl.DataFrame:
    rows = load.counted(load.trials(root, study, last=False), include_running)
    return intrinsic_dimension(rows, load.scan_factors(root, study), threshold).collect()


def at_p_intervals(known: pl.DataFrame, P: int) -> pl.DataFrame:
    """Each configuration with `plateau`: its used-count interval (mean +- the 95%
    t half width, n >= 3) contains P and excludes P - 1 and P + 1."""
    lo = pl.col("n_used_mean") - pl.col("n_used_half")
    hi = pl.col("n_used_mean") + pl.col("n_used_half")
    ok = (pl.col("n") >= stats.MIN_N) & (lo <= P) & (hi >= P) & (lo > P - 1) & (hi < P + 1)
    return known.sort("noise", "equivalent_sigma2", "beta").with_columns(
        ok.fill_null(False).alias("plateau"))


def plateau_runs(known: pl.DataFrame, P: int) -> list[list[dict]]:
    """Runs of at least two adjacent settings (one noise kind, ordered by equivalent
    variance) whose intervals each contain P and exclude P +- 1: Theorem 1's plateau.
    A count falling from H to 0 across a sweep passes through P at one setting, or at
    several without intervals that exclude P +- 1; neither is a plateau."""
    runs, cur = [], []
    for noise, g in at_p_intervals(known, P).group_by("noise", maintain_order=True):
        for r in g.iter_rows(named=True):
            if r["plateau"]:
                cur.append(r)
                continue
            runs, cur = runs + ([cur] if len(cur) >= 2 else []), []
        runs, cur = runs + ([cur] if len(cur) >= 2 else []), []
    return runs


def reached_p(table: pl.DataFrame) -> str | None:
    """One paragraph on Theorem 1: does the used-factor count plateau at the data's true P?"""
    known = table.filter(pl.col("true_factors").is_not_null() & pl.col("n_used_mean").is_not_null())
    if known.is_empty():
        return None
    P = int(known["true_factors"][0])
    runs = plateau_runs(known, P)
    at_p, n_trials = int(known["n_at_P"].sum()), int(known["n"].sum())
    configs = known.filter(pl.col("n_at_P") > 0).height
    best = known.sort("mae_P", "equivalent_sigma2").row(0, named=True)
    if runs:
        widest = max(runs, key=len)
        said = (f"Yes, the used-factor count (mi_h > 0.5 nats, App. E) plateaus at the data's "
                f"true intrinsic dimension P = {P}: over {len(widest)} adjacent settings of "
                f"{widest[0]['noise']} noise (equivalent variance "
                f"{widest[0]['equivalent_sigma2']:.3g} to {widest[-1]['equivalent_sigma2']:.3g})"
                f" the 95% interval of the seed mean contains P and excludes P ± 1.")
    else:
        said = (f"No, the used-factor count (mi_h > 0.5 nats, App. E) does not plateau at the "
                f"data's true intrinsic dimension P = {P}: no two adjacent settings of one noise "
                f"kind have 95% intervals of the seed mean (n ≥ {stats.MIN_N}) that contain P "
                "and exclude P ± 1.")
    return (f"Theorem 1 check: {said} {at_p} of {n_trials} trials had exactly P used factors "
            f"({configs} of {known.height} configurations had a trial at P); counts ranged "
            f"from {known['n_used_min'].min()} to {known['n_used_max'].max()} across the sweep. "
            f"Closest to P: {best['noise']} noise, beta = {best['beta']:g}, equivalent "
            f"variance {best['equivalent_sigma2']:.3g}, {best['n_used_mean']:.2f} used factors "
            f"on average over {best['n']} trial{'s' if best['n'] != 1 else ''}.")


def learned_noise(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Fig. 8-9: learned sigma2 and beta * sigma2 against beta, per series of
    noise-learning trials (every setting but beta and the seed, `series_key`)."""
    return with_intervals(
        rows.filter(pl.col("noise") == "learned")
        .group_by("series_key", "beta", "latent_dim", "dataset")
        .agg(pl.len().alias("n"), pl.col("seed").n_unique().alias("seeds"),
             pl.col("epoch").min().alias("epoch_min"), pl.col("epoch").max().alias("epoch_max"),
             *_agg("sigma2"), *_agg("equivalent_sigma2"))
        .sort("dataset", "series_key", "beta"), ("sigma2", "equivalent_sigma2"))
