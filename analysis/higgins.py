"""The Higgins et al. (2016) beta-VAE disentanglement metric and its dependence on Q (App. C).

A sample is a batch of L pairs (y1, y2) of ground-truth factors that share one
factor k (y1_k = y2_k, the rest drawn afresh); its feature is
z_diff = mean_l |z(x1_l) - z(x2_l)| and its label k; a linear classifier
predicts k, and the metric is its held-out accuracy. App. C: for z = Q y,
z_diff(k)_h = (2 / sqrt(pi)) sqrt(1 - q_{k,h}^2), so the score moves with the
rotation Q although every Q is an equally good model (Theorems 4-5): with
H = 2 and a 45-degree Q both classes give the same features (chance level).

The signature follows disentanglement_lib: `compute_higgins(truth,
representation_fn, random_state, **hparams) -> dict`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.align import random_rotation

Representation = Callable[[np.ndarray], np.ndarray]     # observations [N, ...] -> codes [N, H]


@dataclass(frozen=True)
class GroundTruth:
    """Data with known factors y ~ N(0, I_P) and a renderer x = phi(y) (Theorem 1's setting)."""
    P: int
    render: Callable[[np.ndarray], np.ndarray]            # y [N, P] -> observations [N, ...]


def pair_differences(truth: GroundTruth, representation_fn: Representation,
                     rng: np.random.Generator, n: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """(z1 - z2 [n, L, H], fixed factor k [n]) for n batches of L pairs sharing y_k."""
    k = rng.integers(truth.P, size=n)                                  # [n]
    y1 = rng.standard_normal((n, L, truth.P))
    y2 = rng.standard_normal((n, L, truth.P))
    y2[np.arange(n), :, k] = y1[np.arange(n), :, k]                    # share factor k
    z1 = representation_fn(truth.render(y1.reshape(n * L, truth.P)))   # [n L, H]
    z2 = representation_fn(truth.render(y2.reshape(n * L, truth.P)))
    return (z1 - z2).reshape(n, L, -1), k


def linear_accuracy(x_train: np.ndarray, k_train: np.ndarray, x_test: np.ndarray,
                    k_test: np.ndarray, classes: int, ridge: float = 1e-3) -> float:
    """Held-out accuracy of a linear classifier: linear discriminant analysis with one shared,
    ridge-regularised covariance (closed form, so deterministic and fast)."""
    mean, sd = x_train.mean(0), x_train.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    xtr, xte = (x_train - mean) / sd, (x_test - mean) / sd               # [n, H]
    mu = np.stack([xtr[k_train == c].mean(0) if (k_train == c).any() else np.zeros(xtr.shape[1])
                   for c in range(classes)])                          # [P, H]
    resid = xtr - mu[k_train]
    cov = resid.T @ resid / max(len(xtr) - classes, 1) + ridge * np.eye(xtr.shape[1])
    w = np.linalg.solve(cov, mu.T)                                    # [H, P]
    b = -0.5 * (mu * w.T).sum(1) + np.log(np.bincount(k_train, minlength=classes) + 1.0)
    return float(((xte @ w + b).argmax(1) == k_test).mean())


def score(diffs: np.ndarray, k: np.ndarray, P: int, n_train: int) -> float:
    """The metric from pair differences: accuracy on the batches after the first n_train."""
    x = np.abs(diffs).mean(1)                                          # z_diff [n, H]
    return linear_accuracy(x[:n_train], k[:n_train], x[n_train:], k[n_train:], P)


def rotate(diffs: np.ndarray, q: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Apply the orthogonal q to the latent dimensions `dims` of every difference."""
    out = diffs.copy()
    out[..., dims] = diffs[..., dims] @ q
    return out


def compute_higgins(truth: GroundTruth, representation_fn: Representation,
                    random_state: np.random.Generator, batch_size: int = 32,
                    n_train: int = 500, n_test: int = 300, rotations: int = 0,
                    rotate_dims: np.ndarray | None = None) -> dict:
    """Higgins et al. metric, and its value under `rotations` random rotations of `rotate_dims`.

    Returns {"score": float, "rotated": [float, ...]}; chance is 1/P.
    """
    diffs, k = pair_differences(truth, representation_fn, random_state, n_train + n_test,
                                batch_size)
    dims = np.arange(diffs.shape[2]) if rotate_dims is None else np.asarray(rotate_dims)
    rotated = []
    for _ in range(rotations if len(dims) > 1 else 0):
        q = random_rotation(len(dims), random_state)
        rotated.append(score(rotate(diffs, q, dims), k, truth.P, n_train))
    return {"score": score(diffs, k, truth.P, n_train), "rotated": rotated}
