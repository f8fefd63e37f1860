"""The disentanglement metrics a trial computes at each evaluation (`eval.metrics`):
MIG, SAP and modularity on the codes just encoded and the data's true factors.

They live below `trainables/` so that a trial never imports `analysis/`; the
analysis's registry (`analysis.metrics.METRICS`) re-exports them beside the
costlier ones it alone runs (DCI, explicitness, FactorVAE, BetaVAE).
"""
from __future__ import annotations

import numpy as np

from trainables.metrics.mig import compute_mig
from trainables.metrics.modularity import compute_modularity_explicitness
from trainables.metrics.sap import compute_sap

# Each metric's random stream: seeded by (seed, STREAM[name]), so adding or dropping a metric
# leaves the others' values unchanged. The numbers are the registry order at issue 16; new
# metrics take new numbers, never an old one.
STREAM = {"mig": 0, "dci_lasso": 1, "dci_gbt": 2, "sap": 3, "modularity": 4, "explicitness": 5,
          "factorvae": 6, "betavae": 7, "udr_lasso": 8, "udr_spearman": 9}
SEARCHABLE = {"mig": (compute_mig, {}), "sap": (compute_sap, {}),
              "modularity": (compute_modularity_explicitness, {"explicit": False})}


def stream(seed, name: str) -> np.random.Generator:
    """The generator of metric `name` for a trial or report seed (an int or a tuple)."""
    return np.random.default_rng([*np.atleast_1d(seed), STREAM[name]])


def compute_searchable(names, mu, y, seed) -> dict:
    """{name: score} for names in SEARCHABLE on codes mu [N, H] and factors y [N, P], as a
    trial computes them at each evaluation (modularity without explicitness)."""
    out = {}
    for name in names:
        fn, hparams = SEARCHABLE[name]
        out[name] = fn(mu, y, stream(seed, name), **hparams)[name]
    return out


__all__ = ["SEARCHABLE", "STREAM", "stream", "compute_searchable", "compute_mig", "compute_sap",
           "compute_modularity_explicitness"]
