"""Aligning two sets of factors: the linear algebra behind Theorems 4-5.

Theorems 4-5 (factor equivalence): for any orthogonal Q, Qz is an equally good
factor set, so runs differing only in seed should agree up to a rotation
(orthogonal Procrustes fit, R^2 near 1) and not merely up to a signed
permutation of the axes. Every function takes codes as arrays [M, K] of the
same M evaluation points and returns plain floats or arrays.

Fitted on the points it is scored on, Procrustes can never lose to the signed
permutation (a signed permutation is orthogonal), so such a comparison cannot
fail. `heldout_r2` fits on one half of the points and scores on the other.
The numerics are scipy's: `linear_sum_assignment` (Hungarian),
`orthogonal_procrustes`, `ortho_group` (Haar rotations).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes
from scipy.optimize import linear_sum_assignment
from scipy.stats import ortho_group


def center(x: np.ndarray) -> np.ndarray:
    return x - x.mean(0, keepdims=True)


def standardize(x: np.ndarray) -> np.ndarray:
    x = center(x)
    sd = x.std(0, keepdims=True)
    return x / np.where(sd > 0, sd, 1.0)


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of the (centred) target's total variance explained by pred."""
    total = float((center(target) ** 2).sum())
    return float("nan") if total == 0 else 1.0 - float(((target - pred) ** 2).sum()) / total


def procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The orthogonal W [K, K] minimising ||a W - b||^2 (a, b [M, K]; scipy)."""
    return orthogonal_procrustes(a, b)[0]


def assignment(cost: np.ndarray) -> np.ndarray:
    """cols[i] for each row i minimising sum cost[i, cols[i]]; needs n <= m (scipy's Hungarian)."""
    n, m = cost.shape
    if n > m:
        raise ValueError(f"assignment: {n} rows > {m} columns; transpose the cost")
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def signed_permutation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The W [K, K] that matches axes one to one with signs, minimising ||a W - b||^2."""
    c = a.T @ b                                                      # [K, K]
    rows, cols = linear_sum_assignment(-np.abs(c))                   # max sum |c|
    w = np.zeros_like(c)
    w[rows, cols] = np.where(c[rows, cols] < 0, -1.0, 1.0)
    return w


def pad(x: np.ndarray, k: int) -> np.ndarray:
    """x [M, K'] with zero columns appended up to k: a factor absent from one set is 0 there."""
    return np.hstack([x, np.zeros((len(x), k - x.shape[1]))])


def _padded(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = max(a.shape[1], b.shape[1])
    return pad(a, k), pad(b, k)


def aligned_r2(a: np.ndarray, b: np.ndarray, fit=procrustes) -> float:
    """In-sample R^2 of b from a after `fit` (procrustes or signed_permutation), both
    directions averaged. Both sets are centred and zero-padded to the larger count, so
    variance of factors that the other set lacks counts as unexplained."""
    a, b = _padded(center(a), center(b))
    return 0.5 * (r2(a @ fit(a, b), b) + r2(b @ fit(b, a), a))


def procrustes_r2(a: np.ndarray, b: np.ndarray) -> float:
    return aligned_r2(a, b, procrustes)


def permutation_r2(a: np.ndarray, b: np.ndarray) -> float:
    return aligned_r2(a, b, signed_permutation)


def halves(m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random split of m points into a fitting half and a scoring half."""
    idx = rng.permutation(m)
    return idx[: m // 2], idx[m // 2:]


def heldout_r2(a: np.ndarray, b: np.ndarray, fit, rng: np.random.Generator) -> float:
    """R^2 of b from a (both directions averaged) with the alignment fitted on one half of
    the points (centred by that half's means) and scored on the other half."""
    fit_idx, test_idx = halves(len(a), rng)
    a, b = _padded(a, b)
    ma, mb = a[fit_idx].mean(0), b[fit_idx].mean(0)
    fa, fb, ta, tb = a[fit_idx] - ma, b[fit_idx] - mb, a[test_idx] - ma, b[test_idx] - mb
    return 0.5 * (r2(ta @ fit(fa, fb), tb) + r2(tb @ fit(fb, fa), ta))


def linear_r2(z: np.ndarray, y: np.ndarray, rng: np.random.Generator | None = None) -> float:
    """Mean over true factors of the R^2 of the best affine map from the codes z to y[:, p],
    fitted on one half of the points and scored on the other (scikit-learn)."""
    from sklearn.linear_model import LinearRegression

    fit_idx, test_idx = halves(len(z), rng or np.random.default_rng(0))
    model = LinearRegression().fit(z[fit_idx], y[fit_idx])
    resid = ((y[test_idx] - model.predict(z[test_idx])) ** 2).sum(0)
    total = (center(y[test_idx]) ** 2).sum(0)
    return float(np.mean(1.0 - resid / np.where(total > 0, total, np.nan)))


def axis_alignment(z: np.ndarray, y: np.ndarray) -> float:
    """Mean over true factors of the largest squared loading of the fitted rotation.

    The rotation W [K, P] maps standardised codes onto standardised true factors
    (Procrustes, zero-padded to a square); its columns are normalised, so 1 means one
    latent per true factor and 1/K a true factor spread evenly over K latents (1/2 for
    App. C's 45 degrees).
    """
    za, ya = _padded(standardize(z), standardize(y))
    w = procrustes(za, ya)[: z.shape[1], : y.shape[1]]               # [K, P]
    w = w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-12)
    return float((w ** 2).max(0).mean())


def random_rotation(k: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal matrix [k, k] (scipy's ortho_group)."""
    return np.eye(1) if k == 1 else ortho_group.rvs(k, random_state=rng)
