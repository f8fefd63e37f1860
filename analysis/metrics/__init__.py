"""disentanglement_lib's metric suite, one function per metric, registered by name.

Three kinds, as in disentanglement_lib (`compute_x(data, representation_fn,
random_state, **hparams) -> dict`):
- on stored codes, `compute_x(mu [N, H], y [N, P], random_state, **hparams)`: any trial's
  codes table (`mu`, `truth`) recomputes them, whatever its size: mig, dci_lasso, dci_gbt,
  sap, modularity, explicitness (disentanglement_lib computes the last two together:
  `compute_modularity_explicitness`; apart here, as explicitness costs 100x more);
- on fresh observations, `compute_x(truth, representation_fn, random_state, **hparams)`:
  factorvae, betavae, where the data set can render images for chosen factor values
  (`truth.ground_truth`).
`METRICS[name].columns` are the columns each one fills in analysis/metrics.parquet; no two
metrics share a column. MIG, SAP and modularity live in `trainables.metrics` (a trial
computes them at each evaluation) and are re-exported here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from analysis.metrics.dci import compute_dci
from analysis.metrics.factorvae import FAST as FACTORVAE_FAST
from analysis.metrics.factorvae import compute_factor_vae
from analysis.metrics.udr import compute_udr
from analysis.higgins import FAST as HIGGINS_FAST
from trainables.metrics import SEARCHABLE, compute_searchable, stream
from trainables.metrics.mig import compute_mig
from trainables.metrics.modularity import compute_explicitness, compute_modularity_explicitness
from trainables.metrics.sap import compute_sap


def compute_betavae(truth, representation_fn, random_state, batch_size: int = 64,
                    num_train: int = 10000, num_eval: int = 5000) -> dict:
    """The BetaVAE (Higgins et al.) metric through `analysis.higgins.compute_higgins`."""
    from analysis.higgins import compute_higgins

    out = compute_higgins(truth, representation_fn, random_state, batch_size=batch_size,
                          num_train=num_train, num_eval=num_eval)
    return {"betavae_train": out["train_accuracy"], "betavae_eval": out["eval_accuracy"]}


def _prefixed(fn: Callable, prefix: str) -> Callable:
    """A DCI variant writing its own columns: dci_x -> {prefix}_x."""
    def run(*args, **kw) -> dict:
        return {k.replace("dci_", f"{prefix}_", 1): v for k, v in fn(*args, **kw).items()}
    return run


def _rename(fn: Callable, names: dict[str, str]) -> Callable:
    def run(*args, **kw) -> dict:
        return {names.get(k, k): v for k, v in fn(*args, **kw).items()}
    return run


def _dci_columns(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}_{c}" for c in ("disentanglement", "completeness", "informativeness"))


@dataclass(frozen=True)
class Metric:
    fn: Callable[..., dict]
    kind: str                                 # "codes" | "render" | "seeds"
    columns: tuple[str, ...]
    hparams: dict = field(default_factory=dict)   # the report's setting
    title: str = ""                               # what the report calls it


METRICS = {
    "mig": Metric(compute_mig, "codes", ("mig",), title="MIG"),
    "dci_lasso": Metric(_prefixed(compute_dci, "dci_lasso"), "codes", _dci_columns("dci_lasso"),
                        {"importance": "lasso"},
                        "DCI, Lasso (Eastwood & Williams' linear variant; not "
                        "disentanglement_lib's)"),
    "dci_gbt": Metric(_prefixed(compute_dci, "dci_gbt"), "codes", _dci_columns("dci_gbt"),
                      {"importance": "gbt"}, "DCI, gradient-boosted trees on all codes "
                                             "(disentanglement_lib's)"),
    "sap": Metric(compute_sap, "codes", ("sap",), title="SAP"),
    "modularity": Metric(compute_modularity_explicitness, "codes", ("modularity",),
                         {"explicit": False}, "modularity"),
    "explicitness": Metric(compute_explicitness, "codes", ("explicitness",),
                           title="explicitness"),
    "factorvae": Metric(_rename(compute_factor_vae, {"eval_accuracy": "factorvae",
                                                     "train_accuracy": "factorvae_train"}),
                        "render", ("factorvae", "factorvae_train"), FACTORVAE_FAST,
                        "FactorVAE (fast setting)"),
    "betavae": Metric(compute_betavae, "render", ("betavae_train", "betavae_eval"),
                      HIGGINS_FAST, "BetaVAE (the report's fast Higgins setting)"),
    "udr_lasso": Metric(compute_udr, "seeds", ("udr_lasso", "udr_lasso_config_ci95"), {"correlation": "lasso"},
                        "UDR, Lasso (disentanglement_lib's default; alpha 0.1: a perfect "
                        "match scores about 0.9)"),
    "udr_spearman": Metric(compute_udr, "seeds", ("udr_spearman", "udr_spearman_config_ci95"),
                           {"correlation": "spearman"}, "UDR, Spearman"),
}
ALIASES = {"dci": "dci_lasso",                # the name issue 16 gave the Lasso variant
           "udr": "udr_lasso"}                # disentanglement_lib's default correlation
DEFAULT = ("mig", "dci_lasso", "sap", "modularity")


def parse_names(text: str) -> tuple[str, ...]:
    """'mig,sap' -> ("mig", "sap"); 'none' -> (); ValueError naming an unknown one."""
    names = tuple(ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip())
    if names in (("none",), ()):
        return ()
    for n in names:
        if n not in METRICS:
            raise ValueError(f"--metrics: unknown metric {n!r}; allowed: "
                             f"{', '.join(METRICS)} (comma-separated; dci = dci_lasso, "
                             f"udr = udr_lasso), or none")
    return tuple(dict.fromkeys(names))


__all__ = ["METRICS", "DEFAULT", "SEARCHABLE", "Metric", "parse_names", "compute_searchable",
           "stream", "compute_mig", "compute_dci", "compute_sap",
           "compute_modularity_explicitness", "compute_explicitness", "compute_factor_vae",
           "compute_betavae", "compute_udr"]
