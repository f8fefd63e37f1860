"""Study specs: a trial config where values may be lists (a grid), plus study keys.

    name: quickstart            # one path component under the results root
    seeds: [0, 1]               # one more grid axis (train.seed)
    # or seeds until each configuration's seed-agreement verdict is decided (study/adaptive.py):
    # seeds: {adaptive: {start: 3, step: 2, max: 15, until: [seed_agreement]}}
    noise: {kind: specified, sigma2: [0.01, 0.03]}
    resources: {cpu: 1, gpu: 0} # per trial; fractional gpu shares a card
    max_concurrent: 2
    checkpoint: {every: 5}
    failure: {max_retries: 1}
    storage: results            # local path, NFS path, s3:// or gs:// URI
    storage_shared: false       # true: the local path is mounted on every node (NFS)
    reuse: [other-study]        # finished trials of these studies (same root) copied in

`parse` validates everything (every expanded trial builds a TrialConfig) before
anything starts; every error names the key, the value and what is allowed.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from study.inputs import UsageError, check_name
from trainables.config import SECTIONS, ConfigError, TrialConfig, all_keys, nest
from resultstore.uri import StoreError, check_uri

if TYPE_CHECKING:
    from analysis.sequential import Schedule

STUDY_KEYS = {"name", "seeds", "resources", "max_concurrent", "failure", "storage", "search",
              "num_samples", "description", "storage_shared", "pack", "reuse"}
LIST_VALUED = {"dataset.split"}          # keys whose single value is itself a list
LEAVES = set(all_keys())


@dataclass(frozen=True)
class StudySpec:
    name: str
    trial: dict[str, Any]                           # dotted trial keys -> value, list or distribution
    seeds: tuple[int, ...] = (0,)
    cpu: float = 1.0
    gpu: float | None = None                       # None: 0.25 when GPUs exist, else 0
    max_concurrent: int | None = None
    max_retries: int = 1
    storage: str = "results"
    storage_shared: bool = False                   # a local path every node mounts (NFS)
    search: dict[str, Any] | None = None
    num_samples: int | None = None
    description: str = ""
    pack: int | str | None = None                  # members per pack (int or "auto"); None: unpacked
    reuse: tuple[str, ...] = ()                    # studies whose finished trials are copied in
    adaptive: Schedule | None = None               # seeds added until the verdict is decided
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def axes(self) -> dict[str, list]:
        """Grid axes in spec order: dotted key -> values (seeds last)."""
        ax = {k: v for k, v in self.trial.items() if _is_grid(k, v)}
        ax["train.seed"] = list(self.seeds)
        return ax

    def grid(self) -> list[dict[str, Any]]:
        """Every trial's flat config (dotted keys), in a stable order."""
        base = {k: v for k, v in self.trial.items() if not _is_grid(k, v)}
        ax = self.axes()
        return [{**base, **dict(zip(ax, combo))} for combo in itertools.product(*ax.values())]

    def size_line(self) -> str:
        if self.search is not None:
            keys = [k for k, v in self.trial.items() if isinstance(v, dict) or _is_grid(k, v)]
            keys += ["train.seed"] if len(self.seeds) > 1 else []
            sampler = ((self.search.get("optuna") or {}).get("sampler", "tpe")
                       if isinstance(self.search, dict) else "tpe")
            return (f"optuna {sampler} search over {', '.join(keys) or 'nothing'}: "
                    f"{self.num_samples} trials")
        parts = [f"{len(v)} {k.split('.')[-1] if k != 'train.seed' else ('seeds' if len(v) > 1 else 'seed')}"
                 for k, v in self.axes().items()]
        n = 1
        for v in self.axes().values():
            n *= len(v)
        line = f"{' x '.join(parts)} = {n} trial{'s' if n != 1 else ''}"
        if self.adaptive:
            a = self.adaptive
            line += (f" to start; then {a.step} more seeds per round to each configuration whose "
                     f"seed-agreement verdict is undecided, up to {a.max} seeds")
        return line

    def to_json(self) -> str:
        return json.dumps(self.raw, sort_keys=True, default=str)


def _is_grid(key: str, value: Any) -> bool:
    if key in LIST_VALUED:
        return isinstance(value, list) and bool(value) and isinstance(value[0], list)
    return isinstance(value, list)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys down to the trial keys; a mapping at a trial key is a distribution."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in LEAVES:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse(raw: dict[str, Any], search_ok: bool = True) -> StudySpec:
    """Validate a spec dict (after presets and --set are merged) into a StudySpec."""
    raw = nest(raw)
    unknown = set(raw) - STUDY_KEYS - set(SECTIONS)
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(f"{key}: unknown key; allowed: {', '.join(sorted(STUDY_KEYS | set(SECTIONS)))}")
    name = check_name(raw.get("name", "study"))
    trial = _flatten({k: v for k, v in raw.items() if k in SECTIONS})
    if "train.seed" in trial:
        if "seeds" in raw:
            raise UsageError("train.seed: set either `seeds` (a list) or train.seed, not both")
        raw_seeds = trial.pop("train.seed")
    else:
        raw_seeds = raw.get("seeds", [0])
    adaptive = _adaptive(raw_seeds, raw.get("search"))
    seeds = list(range(adaptive.start)) if adaptive else _int_list("seeds", raw_seeds)
    res = _mapping("resources", raw.get("resources", {}), {"cpu", "gpu"})
    cpu = _number("resources.cpu", res.get("cpu", 1), minimum=0.01)
    gpu = res.get("gpu")
    if gpu is not None:
        gpu = _number("resources.gpu", gpu, minimum=0.0)
    failure = _mapping("failure", raw.get("failure", {}), {"max_retries"})
    retries = _int("failure.max_retries", failure.get("max_retries", 1), minimum=0)
    mc = raw.get("max_concurrent")
    mc = None if mc is None else _int("max_concurrent", mc, minimum=1)
    storage = raw.get("storage", "results")
    if not isinstance(storage, str) or not storage:
        raise UsageError(f"storage: got {storage!r}; allowed: a local path or a s3:// / gs:// URI")
    try:
        check_uri(storage)
    except StoreError as e:
        raise UsageError(str(e)) from None
    shared = raw.get("storage_shared", False)
    if not isinstance(shared, bool):
        raise UsageError(f"storage_shared: got {shared!r}; allowed: true (the storage path is "
                         "mounted on every node) or false")
    search = raw.get("search")
    if search is not None and not isinstance(search, dict):
        raise UsageError(f"search: got {search!r}; allowed: a mapping such as {{optuna: {{...}}}}")
    pack = _pack(raw.get("pack"), search)
    reuse = _reuse(raw.get("reuse"), search)
    spec = StudySpec(name=name, trial=trial, seeds=tuple(seeds), cpu=cpu, gpu=gpu,
                     max_concurrent=mc, max_retries=retries, storage=storage, storage_shared=shared,
                     search=search,
                     num_samples=raw.get("num_samples"), description=str(raw.get("description", "")),
                     pack=pack, reuse=reuse, adaptive=adaptive, raw=raw)
    _check_trials(spec, allow_distributions=search is not None)
    return spec


def _check_trials(spec: StudySpec, allow_distributions: bool) -> None:
    for key, value in spec.trial.items():
        if isinstance(value, list) and not value:
            raise UsageError(f"{key}: empty grid []; allowed: a value or a non-empty list of values")
        if isinstance(value, dict):
            if not allow_distributions:
                raise UsageError(f"{key}: got {value!r}; a distribution needs `search:` in the "
                                 "spec; for a grid, give a list of values")
    if not allow_distributions:                     # the search module checks distributions
        trial_configs(spec)


def trial_configs(spec: StudySpec) -> list[TrialConfig]:
    """Every grid point's TrialConfig; a bad value or two points that make one trial are refused."""
    seen: dict[str, dict] = {}
    configs = []
    for flat in spec.grid():
        try:
            cfg = TrialConfig.from_dict(flat)
        except ConfigError as e:
            raise UsageError(str(e)) from None
        tid = cfg.trial_id()
        if tid in seen:
            diff = sorted(k for k in flat if flat[k] != seen[tid].get(k))
            raise UsageError(f"{', '.join(diff) or 'grid'}: two grid points make the same trial "
                             f"({tid}); these keys do not change what a trial computes")
        seen[tid] = flat
        configs.append(cfg)
    return configs


def _pack(value: Any, search: Any) -> int | str | None:
    """`pack: G` or `pack: auto`; packing is for grids, a search runs one trial per config."""
    if value is None:
        return None
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UsageError(f"pack: got {value!r}; allowed: an integer >= 1 (members per pack) "
                         "or auto")
    if search is not None:
        raise UsageError("pack: a search runs one trial per configuration; allowed: pack with "
                         "a grid only (drop `pack` or `search`)")
    return None if value == 1 else value


def _reuse(value: Any, search: Any) -> tuple[str, ...]:
    """`reuse: [OTHER, ...]`: studies under the same results root (study/reuse.py)."""
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names:
        raise UsageError(f"reuse: got {value!r}; allowed: a study name or a list of them")
    if search is not None:
        raise UsageError("reuse: a search's trials are Optuna's suggestions; allowed: reuse "
                         "with a grid only (drop `reuse` or `search`)")
    return tuple(check_name(n, f"reuse[{i}]") for i, n in enumerate(names))


def _adaptive(value: Any, search: Any) -> Schedule | None:
    """`seeds: {adaptive: {start, step, max, until, spending}}` (analysis/sequential.py)."""
    if not isinstance(value, dict):
        return None
    from analysis.sequential import MAX_SEEDS, SPENDING, Schedule   # only for such a spec
    a = _mapping("seeds", value, {"adaptive"}).get("adaptive")
    if a is None:
        raise UsageError("seeds: got a mapping without `adaptive`; allowed: a list of seeds or "
                         "{adaptive: {start: 3, step: 2, max: 15, until: [seed_agreement]}}")
    a = _mapping("seeds.adaptive", a, {"start", "step", "max", "until", "spending"})
    if search is not None:
        raise UsageError("seeds.adaptive: a search's trials are Optuna's suggestions; allowed: "
                         "adaptive seeds with a grid only")
    start = _int("seeds.adaptive.start", a.get("start", 3), minimum=3)   # an interval needs 3
    step = _int("seeds.adaptive.step", a.get("step", 2), minimum=1)
    top = _int("seeds.adaptive.max", a.get("max", 15), minimum=start)
    if top > MAX_SEEDS:
        raise UsageError(f"seeds.adaptive.max: got {top}; allowed: {start} to {MAX_SEEDS} (the "
                         f"verdict's pairs are taken among a configuration's first {MAX_SEEDS} "
                         "seeds)")
    until = a.get("until", ["seed_agreement"])
    until = [until] if isinstance(until, str) else until
    if until != ["seed_agreement"]:
        raise UsageError(f"seeds.adaptive.until: got {a.get('until')!r}; allowed: "
                         "[seed_agreement]")
    spending = a.get("spending", "obf")
    if spending not in SPENDING:
        raise UsageError(f"seeds.adaptive.spending: got {spending!r}; allowed: "
                         f"{', '.join(SPENDING)}")
    return Schedule(start, step, top, spending)


def _mapping(key: str, value: Any, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise UsageError(f"{key}: got {value!r}; allowed: a mapping of {', '.join(sorted(allowed))}")
    for k in value:
        if k not in allowed:
            raise UsageError(f"{key}.{k}: unknown key; allowed: {', '.join(sorted(allowed))}")
    return value


def _number(key: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise UsageError(f"{key}: got {value!r}; allowed: a number >= {minimum}")
    return float(value)


def _int(key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{key}: got {value!r}; allowed: an integer >= {minimum}")
    return value


def _int_list(key: str, value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UsageError(f"{key}: got {value!r}; allowed: a non-empty list of integers")
    if len(set(map(str, value))) != len(value):
        raise UsageError(f"{key}: got {value!r}; allowed: distinct integers")
    return [_int(f"{key}[{i}]", v, 0) for i, v in enumerate(value)]
