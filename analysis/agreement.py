"""Seed agreement (Theorems 4-5): the pair statistic, the per-configuration interval and
the verdict, with the error rates measured in `analysis.calibration`.

For a pair of seeds (codes za [M, Ka], zb [M, Kb] of the same M points) the statistic is
d = R^2(Procrustes) - R^2(signed permutation), both alignments fitted on one random half
of the points and scored on the other (`pair_statistic`). Seeds that agree up to a
signed permutation give d ~ 0 (slightly below: Procrustes fits more parameters); seeds
that agree only up to a rotation give d > 0; unrelated codes give R^2 < 0 for both.

Per configuration (`config_interval`), the means over pairs of d and of the Procrustes
R^2 get 95% intervals over seeds (`stats.pair_interval`: pairs sharing a seed are not
independent). The decision (`decide`) is an equivalence test with a margin on both sides,
symmetric about MARGIN:
- "rotation, not a signed permutation": related, and the interval of d lies above MARGIN;
- "signed permutation": related, and the interval of d lies below MARGIN;
- "" (no verdict): the interval contains MARGIN, or the seeds are not shown related.
Related: the interval of the Procrustes R^2 lies above 0 (unrelated codes score < 0 held
out). No shuffled null enters: up to issue 21 a single row shuffle, drawn alike for every
pair, was subtracted from the difference, its error never averaged nor carried into the
interval, so its sign decided the verdict.

Many configurations: one verdict each, each at its own error rate (the calibration
table in docs/analysis.md); there is no family-wise or false-discovery control, so
among C configurations whose seeds truly agree up to a signed permutation about
C x (the false-"rotation" rate) are expected to be called "rotation".

`pair_statistic` and `config_interval` are the pieces a sequential rule (adding seeds
until a verdict, issue 24) reuses: it needs the per-pair values and an interval that it
may widen for repeated looks (`level`).
"""
from __future__ import annotations

import math

import numpy as np

from analysis import align, stats

MARGIN = 0.05               # R^2 that a rotation must add over the best signed permutation
ROTATION = "rotation, not a signed permutation"
PERMUTATION = "signed permutation"


def pair_statistic(za: np.ndarray, zb: np.ndarray, rng: np.random.Generator) -> dict:
    """Held-out R^2 of the Procrustes and the signed-permutation alignment of a pair
    (za [M, Ka], zb [M, Kb]), fitted on one random half of the points, scored on the other."""
    fit, test = align.halves(len(za), rng)
    k = max(za.shape[1], zb.shape[1])
    a, b = align.pad(za, k), align.pad(zb, k)                         # [M, k] each
    ma, mb = a[fit].mean(0), b[fit].mean(0)
    fa, fb, ta, tb = a[fit] - ma, b[fit] - mb, a[test] - ma, b[test] - mb
    out = {}
    for name, how in (("procrustes_r2", align.procrustes),
                      ("permutation_r2", align.signed_permutation)):
        out[name] = 0.5 * (align.r2(ta @ how(fa, fb), tb) + align.r2(tb @ how(fb, fa), ta))
    return out


def config_interval(procrustes, permutation, seed_a, seed_b,
                    level: float = stats.LEVEL) -> dict:
    """Means over a configuration's pairs, with `level` intervals over its seeds, of
    d = procrustes - permutation (`diff_*`) and of the Procrustes R^2 (`procrustes_*`)."""
    p, q = np.asarray(procrustes, dtype=float), np.asarray(permutation, dtype=float)
    m, lo, hi, n = stats.pair_interval(p - q, seed_a, seed_b, level)
    pm, plo, phi, _ = stats.pair_interval(p, seed_a, seed_b, level)
    return {"seeds": n, "diff_mean": m, "diff_low": lo, "diff_high": hi,
            "procrustes_mean": pm, "procrustes_low": plo, "procrustes_high": phi}


def decide(ci: dict, margin: float = MARGIN) -> str:
    """The verdict from `config_interval`'s output: see the module's docstring."""
    lo, hi, related = ci["diff_low"], ci["diff_high"], ci["procrustes_low"]
    if not all(math.isfinite(v) for v in (lo, hi, related)) or related <= 0:
        return ""
    if lo > margin:
        return ROTATION
    if hi < margin:
        return PERMUTATION
    return ""
