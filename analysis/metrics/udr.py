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
  fails on an empty mask); a trial with no pair left has no score, and says why.
"""
from __future__ import annotations

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


def seed_score(b: dict, others: list[dict], correlation: str) -> dict | str:
    """Seed b's UDR: the median of the scores of the pairs (a, b) over the other seeds a
    (Lasso predicting b's codes from a's, as disentanglement_lib's model score), or why not."""
    if not others:
        return "no other seed of its configuration"
    if not b["used_idx"]:
        return "no used factor (mi above eval.used_threshold)"
    pairs = [p for a in others if (p := pair_score(*common_codes(a, b), correlation)) is not None]
    if not pairs:
        return "no other seed of its configuration with used factors on common points"
    return {f"udr_{correlation}": float(np.median(pairs))}


def compute_udr(seeds: list[dict], random_state=None, correlation: str = "lasso") -> list:
    """Per seed of one configuration ({"mu": [N, H], "index": [N] evaluation point ids,
    "used_idx": its used dims}): {"udr_<correlation>": its UDR} or why it has none.
    `random_state` is unused (the fits are deterministic); it keeps the registry's signature."""
    if correlation not in VARIANTS:
        raise ValueError(f"udr: correlation {correlation!r}; allowed: {', '.join(VARIANTS)}")
    arrays = [code_arrays(s) for s in seeds]
    return [seed_score(b, arrays[:i] + arrays[i + 1:], correlation)
            for i, b in enumerate(arrays)]
