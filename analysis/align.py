"""Aligning two sets of factors: the linear algebra behind Theorems 4-5.

Theorems 4-5 (factor equivalence): for any orthogonal Q, Qz is an equally good
factor set, so runs differing only in seed should agree up to a rotation
(orthogonal Procrustes fit, R^2 near 1) and not merely up to a signed
permutation of the axes. Every function takes codes as arrays [M, K] of the
same M evaluation points and returns plain floats or arrays.
"""
from __future__ import annotations

import numpy as np


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
    """The W [Ka, Kb] with orthonormal rows or columns maximising tr(W^T a^T b).

    For Ka <= Kb it minimises ||a W - b||^2 (orthogonal Procrustes; a rotation for Ka = Kb).
    """
    u, _, vt = np.linalg.svd(a.T @ b, full_matrices=False)      # [Ka, r], [r, Kb]
    return u @ vt


def assignment(cost: np.ndarray) -> np.ndarray:
    """Hungarian algorithm: cols[i] for each row i minimising sum cost[i, cols[i]]; needs n <= m.

    Kuhn-Munkres with potentials (O(n^2 m)), vectorised over columns.
    """
    n, m = cost.shape
    if n > m:
        raise ValueError(f"assignment: {n} rows > {m} columns; transpose the cost")
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    p, way = np.zeros(m + 1, dtype=int), np.zeros(m + 1, dtype=int)   # p[j]: row of column j
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = np.full(m + 1, np.inf), np.zeros(m + 1, dtype=bool)
        while p[j0] != 0:
            used[j0] = True
            cur = cost[p[j0] - 1] - u[p[j0]] - v[1:]                   # [m]
            better = ~used[1:] & (cur < minv[1:])
            minv[1:][better], way[1:][better] = cur[better], j0
            cand = np.where(used[1:], np.inf, minv[1:])
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            p[j0], j0 = p[j1], j1
    cols = np.empty(n, dtype=int)
    for j in range(1, m + 1):
        if p[j]:
            cols[p[j] - 1] = j - 1
    return cols


def signed_permutation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The W [Ka, Kb] that matches axes one to one with signs, minimising ||a W - b||^2."""
    c = a.T @ b                                                      # [Ka, Kb]
    cost = (a ** 2).sum(0)[:, None] - 2 * np.abs(c)                  # per matched pair
    w = np.zeros_like(c)
    if c.shape[0] <= c.shape[1]:
        rows, cols = np.arange(c.shape[0]), assignment(cost)
    else:
        cols, rows = np.arange(c.shape[1]), assignment(cost.T)
    w[rows, cols] = np.sign(c[rows, cols]) + (c[rows, cols] == 0)
    return w


def pad(x: np.ndarray, k: int) -> np.ndarray:
    """x [M, K'] with zero columns appended up to k: a factor absent from one set is 0 there."""
    return np.hstack([x, np.zeros((len(x), k - x.shape[1]))])


def aligned_r2(a: np.ndarray, b: np.ndarray, fit=procrustes) -> float:
    """R^2 of b from a after `fit` (procrustes or signed_permutation), both directions averaged.

    Both sets are zero-padded to the larger count, so each fit is an exact least-squares
    problem and variance of factors that the other set lacks counts as unexplained;
    a signed permutation is an orthogonal matrix, so Procrustes' R^2 is never lower.
    """
    k = max(a.shape[1], b.shape[1])
    a, b = pad(center(a), k), pad(center(b), k)
    return 0.5 * (r2(a @ fit(a, b), b) + r2(b @ fit(b, a), a))


def procrustes_r2(a: np.ndarray, b: np.ndarray) -> float:
    return aligned_r2(a, b, procrustes)


def permutation_r2(a: np.ndarray, b: np.ndarray) -> float:
    return aligned_r2(a, b, signed_permutation)


def linear_r2(z: np.ndarray, y: np.ndarray) -> float:
    """Mean over true factors of the R^2 of the best affine map from the codes z to y[:, p]."""
    x = np.hstack([z, np.ones((len(z), 1))])
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = ((y - x @ w) ** 2).sum(0)
    total = (center(y) ** 2).sum(0)
    return float(np.mean(1.0 - resid / np.where(total > 0, total, np.nan)))


def axis_alignment(z: np.ndarray, y: np.ndarray) -> float:
    """Mean over true factors of the largest squared loading of the fitted rotation.

    The rotation W [K, P] maps standardised codes onto standardised true factors
    (Procrustes); its columns are normalised, so 1 means one latent per true factor
    and 1/K a true factor spread evenly over K latents (1/2 for App. C's 45 degrees).
    """
    w = procrustes(standardize(z), standardize(y))                   # [K, P]
    w = w / np.maximum(np.linalg.norm(w, axis=0, keepdims=True), 1e-12)
    return float((w ** 2).max(0).mean())


def random_rotation(k: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed orthogonal matrix [k, k] (QR of a Gaussian with sign fix)."""
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))
