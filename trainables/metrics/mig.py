"""MIG, the mutual information gap (Chen et al. 2018, Eq. 6), as disentanglement_lib's `mig.py`.

MIG = 1/P sum_k (I(z_a; y_k) - I(z_b; y_k)) / H(y_k), with z_a, z_b the codes of
largest and second-largest MI with factor k. Discrete estimator on 20 equal-width
bins (see `discrete.py`). Its bias: a plug-in MI on B_z x B_y bins is too high by
about (B_z - 1)(B_y - 1) / (2N) nats (Miller-Madow), 0.18 nats at N = 1,000 and
20 x 20 bins, 0.018 at N = 10,000; it lifts both top codes, so the gap shrinks
less than each term but an uninformative code's MI is never 0.
"""
from __future__ import annotations

import numpy as np

from trainables.metrics import discrete


def gap(m: np.ndarray, h: np.ndarray) -> float:
    """Mean over factors of (top - second MI [H, P]) / entropy [P]; constant factors skipped."""
    top = np.sort(m, axis=0)[::-1]                                     # [H, P], descending
    second = top[1] if len(top) > 1 else np.zeros(m.shape[1])
    ok = h > 0
    return float(np.mean((top[0, ok] - second[ok]) / h[ok])) if ok.any() else 0.0


def compute_mig(mu: np.ndarray, y: np.ndarray, random_state: np.random.Generator | None = None,
                bins: int = discrete.BINS) -> dict:
    """{"mig": float} from codes mu [N, H] and factors y [N, P] (all N points; no randomness)."""
    mu, y = discrete.check_inputs(mu, y)
    classes = discrete.factor_classes(y, bins)
    m = discrete.mutual_info(discrete.histogram_discretize(mu, bins), classes)   # [H, P]
    return {"mig": gap(m, discrete.entropy(classes))}
