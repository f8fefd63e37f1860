"""disentanglement_lib's metric suite, one function per metric, registered by name.

Two kinds, as in disentanglement_lib (`compute_x(data, representation_fn,
random_state, **hparams) -> dict`):
- on stored codes, `compute_x(mu [N, H], y [N, P], random_state, **hparams)`: any trial's
  codes table (`mu`, `truth`) recomputes them, whatever its size: mig, dci, dci_gbt,
  sap, modularity, explicitness (disentanglement_lib computes the last two together:
  `compute_modularity_explicitness`; apart here, as explicitness costs 100x more);
- on fresh observations, `compute_x(truth, representation_fn, random_state, **hparams)`:
  factorvae, betavae, where the data set can render images for chosen factor values
  (`truth.ground_truth`).
`METRICS[name].columns` are the columns each one fills in analysis/metrics.parquet.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from analysis.metrics.dci import compute_dci
from analysis.metrics.factorvae import FAST as FACTORVAE_FAST
from analysis.metrics.factorvae import compute_factor_vae
from analysis.metrics.mig import compute_mig
from analysis.metrics.modularity import compute_explicitness, compute_modularity_explicitness
from analysis.metrics.sap import compute_sap

BETAVAE_FAST = {"batch_size": 64, "num_train": 300, "num_eval": 200}


def compute_betavae(truth, representation_fn, random_state, batch_size: int = 64,
                    num_train: int = 10000, num_eval: int = 5000) -> dict:
    """The BetaVAE (Higgins et al.) metric through `analysis.higgins.compute_higgins`."""
    from analysis.higgins import compute_higgins

    params = inspect.signature(compute_higgins).parameters
    sizes = {"num_train": num_train, "num_eval": num_eval} if "num_train" in params else \
        {"n_train": num_train, "n_test": num_eval}
    out = compute_higgins(truth, representation_fn, random_state, batch_size=batch_size, **sizes)
    return {"betavae_train": out.get("train_accuracy"),
            "betavae_eval": out.get("eval_accuracy", out.get("score"))}


def _rename(fn: Callable, names: dict[str, str]) -> Callable:
    def run(*args, **kw) -> dict:
        return {names.get(k, k): v for k, v in fn(*args, **kw).items()}
    return run


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., dict]
    kind: str                                 # "codes" | "render"
    columns: tuple[str, ...]
    hparams: dict = field(default_factory=dict)   # the report's setting


METRICS = {
    "mig": Metric(compute_mig, "codes", ("mig",)),
    "dci": Metric(compute_dci, "codes", ("dci_disentanglement", "dci_completeness",
                                         "dci_informativeness"), {"importance": "lasso"}),
    "dci_gbt": Metric(compute_dci, "codes", ("dci_disentanglement", "dci_completeness",
                                             "dci_informativeness"),
                      {"importance": "gbt", "codes": "used"}),
    "sap": Metric(compute_sap, "codes", ("sap",)),
    "modularity": Metric(compute_modularity_explicitness, "codes", ("modularity",),
                         {"explicit": False}),
    "explicitness": Metric(compute_explicitness, "codes", ("explicitness",)),
    "factorvae": Metric(_rename(compute_factor_vae, {"eval_accuracy": "factorvae",
                                                     "train_accuracy": "factorvae_train"}),
                        "render", ("factorvae", "factorvae_train"), FACTORVAE_FAST),
    "betavae": Metric(compute_betavae, "render", ("betavae_train", "betavae_eval"), BETAVAE_FAST),
}
DEFAULT = ("mig", "dci", "sap", "modularity")
SEARCHABLE = ("mig", "sap", "modularity")     # cheap enough for every evaluation


def compute_searchable(names, mu, y, seed) -> dict:
    """{name: score} for names in SEARCHABLE on codes mu [N, H] and factors y [N, P], as a
    trial computes them at each evaluation (modularity without explicitness)."""
    import numpy as np

    out = {}
    for name in names:
        rng = np.random.default_rng([*np.atleast_1d(seed), list(METRICS).index(name)])
        out[name] = METRICS[name].fn(mu, y, rng, **METRICS[name].hparams)[name]
    return out


def parse_names(text: str) -> tuple[str, ...]:
    """'mig,sap' -> ("mig", "sap"); 'none' -> (); ValueError naming an unknown one."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if names in (("none",), ()):
        return ()
    for n in names:
        if n not in METRICS:
            raise ValueError(f"--metrics: unknown metric {n!r}; allowed: "
                             f"{', '.join(METRICS)} (comma-separated), or none")
    return names


__all__ = ["METRICS", "DEFAULT", "SEARCHABLE", "Metric", "parse_names", "compute_searchable",
           "compute_mig",
           "compute_dci", "compute_sap", "compute_modularity_explicitness", "compute_explicitness",
           "compute_factor_vae",
           "compute_betavae"]
