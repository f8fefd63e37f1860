"""Optuna-guided search for the reconstruction / disentanglement trade-off.

    search:
      optuna:
        sampler: tpe              # tpe (default), nsga2, random
        seed: 0
        objectives: [evlb, kl_qz_pz]   # or {recon_mse: min, kl_qz_pz: min}
        used_target: 4            # optional third objective: |n_used_factors - 4|
        storage: sqlite           # default: DIR/STUDY/optuna.db; or a postgresql:// URL
      asha: {metric: evlb, grace_period: 2, reduction_factor: 2}   # optional early stopping
    num_samples: 16
    noise: {kind: {choice: [specified, learned]}, sigma2: {loguniform: [0.001, 0.1]}}

The Optuna study lives in RDB storage and is driven by `OptunaStudySearcher`
(ask/tell). A trial's id is its config hash plus its Optuna number, so a
search killed mid-run and resumed re-suggests the Optuna trials that were
still running with their own parameters: they continue from their
checkpoints, and neither Optuna nor the Parquet tables see a duplicate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from study.inputs import UsageError
from trainables.config import ConfigError, TrialConfig

DIRECTIONS = {"evlb": "max", "recon_mse": "min", "kl_qz_pz": "min", "kl_post_prior": "min",
              "mi_xz": "max", "kl_qstar_pz": "min", "n_used_factors": "min",
              "used_distance": "min", "train_loss": "min",
              "mig": "max", "sap": "max", "modularity": "max"}   # eval.metrics, known factors
SAMPLERS = ("tpe", "nsga2", "random")
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
OPTUNA_KEYS = {"sampler", "seed", "objectives", "used_target", "storage"}
ASHA_KEYS = {"metric", "mode", "grace_period", "reduction_factor"}


@dataclass(frozen=True)
class SearchConfig:
    sampler: str
    seed: int
    objectives: tuple[tuple[str, str], ...]      # (metric, "max" | "min")
    used_target: int | None
    storage: str                                 # "sqlite" or an RDB URL
    num_samples: int
    asha: dict[str, Any] | None
    space: dict[str, Any]                        # dotted key -> optuna distribution
    fixed: dict[str, Any]                        # dotted key -> value

    def storage_url(self, store) -> str:
        if self.storage != "sqlite":
            return self.storage
        if not store.local:
            raise UsageError("search.optuna.storage: the default SQLite file needs a local "
                             "results root; give a postgresql:// URL for remote storage")
        return f"sqlite:///{store.path('optuna.db')}"


def parse_search(spec) -> SearchConfig:
    """Validate `search:` and the spec's distributions; every error names its key."""
    raw = spec.search or {}
    unknown = set(raw) - {"optuna", "asha"}
    if unknown:
        raise UsageError(f"search.{sorted(unknown)[0]}: unknown key; allowed: optuna, asha")
    opt = raw.get("optuna") or {}
    if not isinstance(opt, dict):
        raise UsageError(f"search.optuna: got {opt!r}; allowed: a mapping of {sorted(OPTUNA_KEYS)}")
    for k in opt:
        if k not in OPTUNA_KEYS:
            raise UsageError(f"search.optuna.{k}: unknown key; allowed: {', '.join(sorted(OPTUNA_KEYS))}")
    sampler = opt.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise UsageError(f"search.optuna.sampler: got {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    seed = opt.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"search.optuna.seed: got {seed!r}; allowed: an integer")
    target = opt.get("used_target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 0):
        raise UsageError(f"search.optuna.used_target: got {target!r}; allowed: an integer >= 0")
    objectives = _objectives(opt.get("objectives", ["evlb", "kl_qz_pz"]), target)
    storage = opt.get("storage", "sqlite")
    if not isinstance(storage, str) or not (storage == "sqlite" or "://" in storage):
        raise UsageError(f"search.optuna.storage: got {storage!r}; allowed: sqlite (a file in the "
                         "study folder) or an RDB URL such as postgresql://user@host/db")
    n = spec.num_samples
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"num_samples: got {n!r}; allowed: an integer >= 1 (the search's budget)")
    space, fixed = _space(spec)
    _ask_for_scores(objectives, fixed, space)
    asha = _asha(raw.get("asha"), objectives)
    cfg = SearchConfig(sampler, seed, objectives, target, storage, n, asha, space, fixed)
    _check_extremes(cfg)
    return cfg


def _objectives(raw: Any, target: int | None) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, list):
        pairs = [(m, DIRECTIONS.get(m, "?")) for m in raw]
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise UsageError(f"search.optuna.objectives: got {raw!r}; allowed: a list of metrics "
                         "or a mapping metric: max|min")
    for m, d in pairs:
        if m not in DIRECTIONS:
            raise UsageError(f"search.optuna.objectives: unknown metric {m!r}; allowed: "
                             f"{', '.join(sorted(DIRECTIONS))}")
        if d not in ("max", "min"):
            raise UsageError(f"search.optuna.objectives.{m}: got {d!r}; allowed: max or min")
    if target is not None and "used_distance" not in dict(pairs):
        pairs.append(("used_distance", "min"))
    if "used_distance" in dict(pairs) and target is None:
        raise UsageError("search.optuna.objectives: used_distance needs search.optuna.used_target")
    if not pairs:
        raise UsageError("search.optuna.objectives: empty; allowed: one to three metrics")
    return tuple(pairs)


def _ask_for_scores(objectives, fixed: dict, space: dict) -> None:
    """Objectives such as mig are computed by each trial at each evaluation: add them to
    eval.metrics; refuse them on data without ground-truth factors."""
    from trainables.config import EVAL_METRICS

    wanted = [m for m, _ in objectives if m in EVAL_METRICS]
    if not wanted:
        return
    names = [fixed.get("dataset.name", "intrinsic")]
    if "dataset.name" in space:
        names = list(space["dataset.name"].choices)
    for name in names:
        if name in ("mnist", "image_folder"):
            raise UsageError(f"search.optuna.objectives: {wanted[0]} needs data with ground-truth "
                             f"factors (intrinsic, or npz with a 'factors' array); got "
                             f"dataset.name {name}")
    fixed["eval.metrics"] = sorted(set(fixed.get("eval.metrics") or []) | set(wanted))


def _space(spec) -> tuple[dict[str, Any], dict[str, Any]]:
    import optuna.distributions as od

    space, fixed = {}, {}
    items = dict(spec.trial)
    if len(spec.seeds) > 1:
        items["train.seed"] = list(spec.seeds)
    else:
        fixed["train.seed"] = spec.seeds[0]
    for key, value in items.items():
        if isinstance(value, list) and key != "dataset.split":
            space[key] = od.CategoricalDistribution(value)        # a list is a choice here
        elif isinstance(value, dict):
            space[key] = _distribution(key, value)
        else:
            fixed[key] = value
    if not space:
        raise UsageError("search: the spec has no distribution or list to search over; "
                         "e.g. noise.sigma2: {loguniform: [0.001, 0.1]}")
    return space, fixed


def _distribution(key: str, value: dict):
    import optuna.distributions as od

    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        raise UsageError(f"{key}: got {value!r}; allowed: one of "
                         f"{{{', '.join(DISTRIBUTIONS)}: ...}}")
    kind, args = next(iter(value.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UsageError(f"{key}.choice: got {args!r}; allowed: a non-empty list")
        return od.CategoricalDistribution(args)
    if (not isinstance(args, list) or len(args) != 2
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        raise UsageError(f"{key}.{kind}: got {args!r}; allowed: bounds [low, high]")
    low, high = args
    if not low < high:
        raise UsageError(f"{key}.{kind}: got [{low}, {high}]; allowed: low < high")
    if kind == "loguniform":
        if low <= 0:
            raise UsageError(f"{key}.loguniform: got low {low}; allowed: low > 0")
        return od.FloatDistribution(float(low), float(high), log=True)
    if kind == "uniform":
        return od.FloatDistribution(float(low), float(high))
    if not all(isinstance(a, int) for a in args):
        raise UsageError(f"{key}.randint: got {args!r}; allowed: integer bounds")
    return od.IntDistribution(low, high)


def _asha(raw: Any, objectives) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UsageError(f"search.asha: got {raw!r}; allowed: a mapping of {sorted(ASHA_KEYS)}")
    for k in raw:
        if k not in ASHA_KEYS:
            raise UsageError(f"search.asha.{k}: unknown key; allowed: {', '.join(sorted(ASHA_KEYS))}")
    metric = raw.get("metric", objectives[0][0])
    if metric not in DIRECTIONS or metric == "used_distance":
        raise UsageError(f"search.asha.metric: got {metric!r}; allowed: one reported metric "
                         f"({', '.join(sorted(set(DIRECTIONS) - {'used_distance'}))}); "
                         "Ray's schedulers stop trials on one metric")
    mode = raw.get("mode", DIRECTIONS[metric])
    if mode not in ("max", "min"):
        raise UsageError(f"search.asha.mode: got {mode!r}; allowed: max or min")
    grace = raw.get("grace_period", 1)
    factor = raw.get("reduction_factor", 2)
    if not isinstance(grace, int) or grace < 1:
        raise UsageError(f"search.asha.grace_period: got {grace!r}; allowed: epochs >= 1")
    if not isinstance(factor, (int, float)) or factor <= 1:
        raise UsageError(f"search.asha.reduction_factor: got {factor!r}; allowed: a number > 1")
    return {"metric": metric, "mode": mode, "grace_period": grace, "reduction_factor": factor}


def _check_extremes(cfg: SearchConfig) -> None:
    """Build the trial config at each bound of each distribution: bad values fail here."""
    base = {k: _values(d)[0] for k, d in cfg.space.items()}
    for key, dist in cfg.space.items():
        for v in _values(dist):
            try:
                TrialConfig.from_dict({**cfg.fixed, **base, key: v})
            except ConfigError as e:
                raise UsageError(str(e)) from None


def _values(dist) -> list:
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def objective_values(cfg: SearchConfig, result: dict) -> list[float] | None:
    """The objectives from a trial's final metrics, or None when one is missing or not finite."""
    out = []
    for metric, _ in cfg.objectives:
        if metric == "used_distance":
            v = result.get("n_used_factors")
            v = None if v is None else abs(v - cfg.used_target)
        else:
            v = result.get(metric)
        if v is None or not math.isfinite(float(v)):
            return None
        out.append(float(v))
    return out


def make_sampler(cfg: SearchConfig, n_trials: int = 0):
    """The sampler of a search that already holds `n_trials` trials.

    Its seed comes from the search's seed and that count, so a resumed search never replays
    the stream it drew from before (the random sampler's draws, TPE's startup trials,
    NSGA-II's first generation); a fresh search is seeded with `seed` itself."""
    import numpy as np
    import optuna

    seed = cfg.seed if n_trials == 0 else \
        int(np.random.SeedSequence([cfg.seed, n_trials]).generate_state(1)[0])
    return {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
            "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
            "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[cfg.sampler]()
