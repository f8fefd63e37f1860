"""The Higgins et al. (2016) beta-VAE disentanglement metric and its dependence on Q (App. C).

A sample is a batch of L pairs (y1, y2) of ground-truth factors that share one
factor k (y1_k = y2_k, the rest drawn afresh); its feature is
z_diff = mean_l |z(x1_l) - z(x2_l)| and its label k; a linear classifier
(scikit-learn's LogisticRegression, as disentanglement_lib) predicts k, and the
metric is its accuracy on held-out samples. App. C: for z = Q y,
z_diff(k)_h = (2 / sqrt(pi)) sqrt(1 - q_{k,h}^2), so the score moves with the
rotation Q although every Q is an equally good model (Theorems 4-5): with
H = 2 and a 45-degree Q both classes give the same features (chance level).

The signature and defaults are disentanglement_lib's (`beta_vae.compute_beta_vae_sklearn`):
`compute_higgins(truth, representation_fn, random_state, batch_size=64,
num_train=10000, num_eval=5000) -> {"train_accuracy", "eval_accuracy", "rotated"}`.
That setting encodes 2 x 64 x 15,000 = 1.9 M images per trial; `FAST` (3,200 images)
is the report's one fast setting (the Higgins section and the BetaVAE metric alike)
and its numbers are not comparable with published ones. The classifier is
`LogisticRegression(max_iter=1000)` where disentanglement_lib leaves scikit-learn's
100 iterations: a fit stopped before convergence would score lower for a reason that
is not the representation's; where the default converges both give the same fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.align import random_rotation

Representation = Callable[[np.ndarray], np.ndarray]     # observations [N, ...] -> codes [N, H]

PUBLISHED = {"batch_size": 64, "num_train": 10000, "num_eval": 5000}   # disentanglement_lib
FAST = {"batch_size": 8, "num_train": 120, "num_eval": 80}            # the report's default
SETTINGS = {"fast": FAST, "published": PUBLISHED}


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
    return (np.asarray(z1) - np.asarray(z2)).reshape(n, L, -1), k


def accuracies(x: np.ndarray, k: np.ndarray, num_train: int, seed: int) -> tuple[float, float]:
    """(train, eval) accuracy of a logistic regression fitted on the first num_train samples."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(k[:num_train])) < 2:                # one class: the constant predictor
        label = k[0]
        return float((k[:num_train] == label).mean()), float((k[num_train:] == label).mean())
    model = LogisticRegression(random_state=seed, max_iter=1000)
    model.fit(x[:num_train], k[:num_train])
    return (float(model.score(x[:num_train], k[:num_train])),
            float(model.score(x[num_train:], k[num_train:])))


def features(diffs: np.ndarray) -> np.ndarray:
    return np.abs(diffs).mean(1)                                       # z_diff [n, H]


def rotate(diffs: np.ndarray, q: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Apply the orthogonal q to the latent dimensions `dims` of every difference."""
    out = diffs.copy()
    out[..., dims] = diffs[..., dims] @ q
    return out


def compute_higgins(truth: GroundTruth, representation_fn: Representation,
                    random_state: np.random.Generator, batch_size: int = 64,
                    num_train: int = 10000, num_eval: int = 5000, rotations: int = 0,
                    rotate_dims: np.ndarray | None = None) -> dict:
    """The metric, and its eval accuracy under `rotations` random rotations of `rotate_dims`.

    Returns {"train_accuracy", "eval_accuracy": float, "rotated": [float, ...]}; chance is 1/P.
    """
    diffs, k = pair_differences(truth, representation_fn, random_state, num_train + num_eval,
                                batch_size)
    seed = int(random_state.integers(2**31))
    train, test = accuracies(features(diffs), k, num_train, seed)
    dims = np.arange(diffs.shape[2]) if rotate_dims is None else np.asarray(rotate_dims)
    rotated = []
    for _ in range(rotations if len(dims) > 1 else 0):
        q = random_rotation(len(dims), random_state)
        rotated.append(accuracies(features(rotate(diffs, q, dims)), k, num_train, seed)[1])
    return {"train_accuracy": train, "eval_accuracy": test, "rotated": rotated}
