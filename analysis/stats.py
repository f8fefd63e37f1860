"""Means with t-based 95% confidence intervals, and how the report writes them.

Seeds are few (one to ten), so intervals use Student's t with n - 1 degrees of
freedom; a quantity measured on pairs of seeds gets its interval over the seeds
(`pair_interval`), not over the pairs, which are not independent. Where n < 3
the report shows the mean and n and no interval: a "± 0" from one seed, or an
interval from two, says more than the data do.
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy import stats

LEVEL = 0.95
MIN_N = 3                                       # fewer: no interval is shown


def t_interval(values, level: float = LEVEL) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the finite values; low/high NaN where n < 2."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def pair_interval(values, seed_a, seed_b, level: float = LEVEL) -> tuple[float, float, float, int]:
    """(mean, low, high, seeds) of a quantity measured on pairs of seeds. The mean over all
    pairs is a U-statistic; pairs that share a seed are not independent, so a t-interval
    over the pairs would be too narrow (with 5 seeds, 10 pairs but 5 independent units).
    The interval is the mean +- t(s - 1) * the leave-one-seed-out jackknife standard error
    (Arvesen 1969): over s seeds, var = (s - 1) / s * sum_i (mean without seed i - their
    mean)^2. low/high NaN with fewer than 3 seeds."""
    v, a, b = (np.asarray(x) for x in (values, seed_a, seed_b))
    ok = np.array([x is not None and math.isfinite(x) for x in v], dtype=bool)
    v, a, b = v[ok].astype(float), a[ok], b[ok]
    seeds = np.unique(np.concatenate([a, b]))
    s = len(seeds)
    if len(v) == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if s < 3:
        return m, math.nan, math.nan, s
    loo = np.array([v[(a != i) & (b != i)].mean() if ((a != i) & (b != i)).any() else np.nan
                    for i in seeds])
    half = jackknife_half(loo, level)            # NaN where a seed is in every pair
    return m, m - half, m + half, s


def jackknife_half(loo, level: float = LEVEL) -> float:
    """Half-width of the leave-one-seed-out jackknife interval over s seeds, from the s
    estimates without each seed: t(s - 1) * sqrt((s - 1) / s * sum_i (loo_i - mean)^2)
    (Arvesen 1969); NaN below 3 seeds or where an estimate is missing."""
    loo = np.asarray(loo, dtype=float)
    s = len(loo)
    if s < 3 or not np.isfinite(loo).all():
        return math.nan
    return float(stats.t.ppf(0.5 + level / 2, s - 1)
                 * math.sqrt((s - 1) / s * ((loo - loo.mean()) ** 2).sum()))


def half_width(std: pl.Expr, n: pl.Expr, level: float = LEVEL) -> pl.Expr:
    """Polars: the t-interval's half width from a std and a count column (null where n < 2)."""
    def t_quantile(s: pl.Series) -> pl.Series:
        arr = s.cast(pl.Float64).to_numpy()
        out = np.where(arr >= 2, stats.t.ppf(0.5 + level / 2, np.maximum(arr - 1, 1)), np.nan)
        return pl.Series(out).fill_nan(None)
    q = n.map_batches(t_quantile, return_dtype=pl.Float64)
    return q * std / n.cast(pl.Float64).sqrt()


def fmt(mean, half, n, digits: int = 3, show_n: bool = True) -> str:
    """'2.31 ± 0.42 (n=5)', or '2 (n=1)' where n < 3 or the interval is unknown; without
    '(n=...)' where the table has an n column (`show_n=False`)."""
    tail = f" (n={n})" if show_n else ""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–" + tail
    m = f"{mean:.{digits}g}"
    if n is None or n < MIN_N or half is None or not math.isfinite(half):
        return m + tail
    return f"{m} ± {half:.2g}" + tail


def fmt_expr(col: str, n: str, digits: int = 3, show_n: bool = False) -> pl.Expr:
    """Polars: `fmt` of {col}_mean, {col}_half and the count column `n` (shown beside)."""
    return pl.struct(pl.col(f"{col}_mean").alias("m"), pl.col(f"{col}_half").alias("h"),
                     pl.col(n).alias("n")).map_elements(
        lambda r: fmt(r["m"], r["h"], r["n"], digits, show_n), return_dtype=pl.String)
