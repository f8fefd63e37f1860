"""The FactorVAE metric (Kim & Mnih 2018), as disentanglement_lib's `factor_vae.py`.

Codes are scaled by their global standard deviation (from `num_variance_estimate`
fresh points); dimensions of sd below `prune_threshold` (disentanglement_lib's study
configs: 0.05) are dropped. A vote: fix one factor k across a batch of `batch_size`
fresh images, take the active dimension of least scaled variance. A majority-vote
classifier maps each dimension to the factor it votes for most; the score is its
accuracy on `num_train` training votes and `num_eval` fresh ones (chance 1/P).
"""
from __future__ import annotations

import numpy as np

from analysis.higgins import GroundTruth

FAST = {"batch_size": 64, "num_train": 300, "num_eval": 200, "num_variance_estimate": 2000}


def votes(truth: GroundTruth, rep, rng: np.random.Generator, n: int, L: int,
          scale: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Vote counts [P, H]: per batch, fixed factor k -> dim of least variance / global."""
    out = np.zeros((truth.P, len(scale)), dtype=np.int64)
    for _ in range(n):
        k = int(rng.integers(truth.P))
        y = rng.standard_normal((L, truth.P))
        y[:, k] = y[0, k]                                                  # share factor k
        z = rep(truth.render(y))                                           # [L, H]
        local = np.var(z, axis=0, ddof=1)[active] / scale[active] ** 2
        out[k, np.flatnonzero(active)[np.argmin(local)]] += 1
    return out


def compute_factor_vae(truth: GroundTruth, representation_fn, random_state: np.random.Generator,
                       batch_size: int = 64, num_train: int = 10000, num_eval: int = 5000,
                       num_variance_estimate: int = 10000, prune_threshold: float = 0.05) -> dict:
    """{"train_accuracy", "eval_accuracy", "num_active_dims"} (disentanglement_lib defaults)."""
    z = representation_fn(truth.render(random_state.standard_normal((num_variance_estimate,
                                                                       truth.P))))
    scale = np.sqrt(np.var(z, axis=0, ddof=1))                             # [H]
    active = scale >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    train = votes(truth, representation_fn, random_state, num_train, batch_size, scale, active)
    classifier = np.argmax(train, axis=0)                                  # dim -> factor
    held = votes(truth, representation_fn, random_state, num_eval, batch_size, scale, active)
    cols = np.arange(train.shape[1])
    return {"train_accuracy": float(train[classifier, cols].sum() / train.sum()),
            "eval_accuracy": float(held[classifier, cols].sum() / held.sum()),
            "num_active_dims": int(active.sum())}
