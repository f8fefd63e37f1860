"""UDR (Duan et al., ICLR 2020, "Unsupervised Model Selection for Variational Disentangled
Representation Learning"): a trial's disentanglement score from how well its codes agree
with those of its configuration's other seeds. It needs no ground-truth factors.

As disentanglement_lib computes it (`evaluation/udr/metrics/udr.py`, `compute_udr_sklearn`):
1. each model's codes standardised over the points (zero mean, unit variance, ddof 0);
2. per ordered pair (a, b), a similarity R [Ka, Kb] between a's and b's active dims:
   - "lasso" (disentanglement_lib's default): R = |W|^T, W [Kb, Ka] the weights of
     `Lasso(alpha=0.1)` predicting b's codes from a's;
   - "spearman": R[i, j] = |Spearman rank correlation of a's dim i and b's dim j|;
3. the pair's score (`relative_strength`): per column j, max_i R[i, j]^2 / sum_i R[i, j];
   per row i, max_j R[i, j]^2 / sum_j R[i, j] (0 where the sum is 0); the mean over columns
   and the mean over rows, averaged;
4. model b's UDR: the median of the scores of the pairs (a, b) over the other models a.

What differs here (docs/analysis.md):
- active dims: the trial's `used` factors (mi > eval.used_threshold, 0.5 nats, App. E), not
  mean KL > 0.01. R is computed on the used dims only, which equals disentanglement_lib's
  zeroing of inactive dims before the fit followed by masking R;
- points: the stored evaluation codes (`mu` of the codes table at the last evaluation, up to
  eval.codes_points) on the points both trials hold, not 51,200 freshly sampled images;
- models compared: the other seeds of the trial's configuration (the paper's UDR), never the
  whole study (its UDR_A2A);
- a pair where either trial has no used dim is left out of the median (disentanglement_lib
  fails on an empty mask); a trial with no pair left has no score, and says why;
- per configuration (disentanglement_lib has no such summary): the mean over its seeds,
  with a 95% interval over seeds from the leave-one-seed-out jackknife (`config_interval`):
  the seeds' scores share their pairs, so a t-interval over them would be too narrow.
"""
from __future__ import annotations

from itertools import permutations

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import Lasso

from analysis.equivalence import code_arrays, common_codes   # as the seed-agreement pairs

ALPHA = 0.1             # disentanglement_lib's Lasso penalty
MIN_POINTS = 8          # common points a pair needs, as the seed-agreement pairs
VARIANTS = ("lasso", "spearman")


def standardise(z: np.ndarray) -> np.ndarray:
    """[N, K] codes with zero mean and unit variance per column (sklearn's StandardScaler:
    ddof 0, a constant column left at 0)."""
    sd = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def spearman(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """|Spearman correlation| [Ka, Kb] between the columns of za [N, Ka] and zb [N, Kb]: the
    Pearson correlation of their ranks (ties averaged); NaN where a column is constant."""
    ra, rb = standardise(rankdata(za, axis=0)), standardise(rankdata(zb, axis=0))
    r = ra.T @ rb / len(za)                                              # [Ka, Kb]
    r[za.std(axis=0) == 0, :] = np.nan                                   # as scipy's spearmanr
    r[:, zb.std(axis=0) == 0] = np.nan
    return np.abs(r)


def lasso(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """|Lasso weights| [Ka, Kb] predicting zb [N, Kb] from za [N, Ka] (alpha 0.1; one fit per
    column of zb; coordinate descent in a fixed order, so no randomness)."""
    model = Lasso(alpha=ALPHA).fit(za, zb)
    return np.abs(np.atleast_2d(model.coef_)).T                          # coef_ [Kb, Ka]


def similarity(za: np.ndarray, zb: np.ndarray, correlation: str) -> np.ndarray:
    """R [Ka, Kb] between the active dims of two models on the same N points."""
    za, zb = standardise(za), standardise(zb)
    return lasso(za, zb) if correlation == "lasso" else spearman(za, zb)


def relative_strength(r: np.ndarray) -> float:
    """disentanglement_lib's `relative_strength_disentanglement` of R [Ka, Kb]: 1 for a
    permutation matrix, 1/K for a K x K matrix of ones, 0 for zeros."""
    with np.errstate(invalid="ignore", divide="ignore"):
        cols = np.nan_to_num(r.max(axis=0) ** 2 / r.sum(axis=0))        # [Kb]
        rows = np.nan_to_num(r.max(axis=1) ** 2 / r.sum(axis=1))        # [Ka]
    return float((cols.mean() + rows.mean()) / 2)


def pair_score(za: np.ndarray, zb: np.ndarray, correlation: str) -> float | None:
    """UDR of the pair (a, b) from their active codes za [N, Ka], zb [N, Kb]; None when
    either has no active dim or they share fewer than MIN_POINTS points."""
    if za.shape[1] == 0 or zb.shape[1] == 0 or len(za) < MIN_POINTS:
        return None
    return relative_strength(similarity(za, zb, correlation))


def pair_matrix(arrays: list[dict], correlation: str) -> np.ndarray:
    """S [s, s]: S[a, b] the score of the ordered pair (a, b) (Lasso predicting b's codes
    from a's), NaN on the diagonal and where a pair has no score."""
    s = len(arrays)
    out = np.full((s, s), np.nan)
    for a, b in permutations(range(s), 2):
        if arrays[a]["used_idx"] and arrays[b]["used_idx"]:
            score = pair_score(*common_codes(arrays[a], arrays[b]), correlation)
            out[a, b] = np.nan if score is None else score
    return out


def seed_udr(pairs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each kept seed's UDR among the kept seeds: the median of its column's pairs (NaN where
    it has none). pairs [s, s], keep [s] bool."""
    sub = pairs[np.ix_(keep, keep)]
    out = np.full(sub.shape[1], np.nan)
    has = np.isfinite(sub).any(axis=0)
    out[has] = np.nanmedian(sub[:, has], axis=0)
    return out


def config_interval(pairs: np.ndarray, level: float = 0.95) -> tuple[float, float, int]:
    """(mean UDR over the configuration's seeds, half-width of its interval, seeds scored).
    The seeds' scores share their pairs, so they are not independent draws: the interval
    is Student's t with s - 1 degrees of freedom on the leave-one-seed-out jackknife standard
    error (the seed-agreement intervals' rule, `stats.pair_interval`); NaN half-width below
    3 scored seeds."""
    from analysis.stats import jackknife_half

    every = np.ones(len(pairs), dtype=bool)
    scores = seed_udr(pairs, every)
    scored = np.flatnonzero(np.isfinite(scores))
    mean = float(np.nanmean(scores)) if len(scored) else float("nan")
    loo = []
    for i in scored:
        keep = every.copy()
        keep[i] = False
        rest = seed_udr(pairs, keep)
        loo.append(np.nanmean(rest) if np.isfinite(rest).any() else np.nan)
    return mean, jackknife_half(loo, level), len(scored)


def seed_score(b: int, arrays: list[dict], pairs: np.ndarray, correlation: str) -> dict | str:
    """Seed b's UDR: the median of the scores of the pairs (a, b) over the other seeds a
    (Lasso predicting b's codes from a's, as disentanglement_lib's model score), or why not."""
    if len(arrays) < 2:
        return "no other seed of its configuration"
    if not arrays[b]["used_idx"]:
        return "no used factor (mi above eval.used_threshold)"
    column = pairs[:, b]
    if not np.isfinite(column).any():
        return "no other seed of its configuration with used factors on common points"
    return {f"udr_{correlation}": float(np.nanmedian(column))}


def compute_udr(seeds: list[dict], random_state=None, correlation: str = "lasso") -> list:
    """Per seed of one configuration ({"mu": [N, H], "index": [N] evaluation point ids,
    "used_idx": its used dims}): {"udr_<correlation>": its UDR,
    "udr_<correlation>_config_ci95": the configuration's interval half-width
    (`config_interval`)} or why it has none. `random_state` is unused (the fits are
    deterministic); it keeps the registry's signature."""
    if correlation not in VARIANTS:
        raise ValueError(f"udr: correlation {correlation!r}; allowed: {', '.join(VARIANTS)}")
    arrays = [code_arrays(s) for s in seeds]
    pairs = pair_matrix(arrays, correlation)
    _, half, _ = config_interval(pairs)
    out = []
    for b in range(len(arrays)):
        got = seed_score(b, arrays, pairs, correlation)
        if isinstance(got, dict):
            got[f"udr_{correlation}_config_ci95"] = None if np.isnan(half) else half
        out.append(got)
    return out
