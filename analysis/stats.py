"""Means with t-based 95% confidence intervals, and how the report writes them.

Seeds and seed pairs are few (one to ten), so intervals use Student's t with
n - 1 degrees of freedom. Where n < 3 the report shows the mean and n and no
interval: a "± 0" from one seed, or an interval from two, says more than the
data do.
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
