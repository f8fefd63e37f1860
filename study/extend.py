"""`vaestudy extend DIR/STUDY [--spec FILE] [--set k=v ...] [--reuse OTHER ...]`.

A study grows with the question: more seeds, more grid values, a larger search
budget, without retraining what finished. The new spec is the recorded one with
`--set` applied (or the file `--spec`); its trials must hold every recorded
trial. A trial id hashes the experiment's config, so "holds" is exact: the
recorded configs, hashed by this code, must all be in the new grid. Then

    finished trials    are kept under their recorded ids (never rerun)
    unfinished ones    resume from their checkpoints, as `vaestudy resume` would
    new trials         are planned and run (packed apart from the old ones)

and study.json records the extension: the spec before and after, when, the
command, the code version, and the code versions of the trials it kept (ids hash
the config, not the code; the report flags a study of mixed versions). Reading
the kept trials' rows also checks their results format: one written by a newer
vaestudy is refused. A search may only raise `num_samples`: the same Optuna study
continues. A change that would alter an existing trial (another number of epochs,
another data set), drop one, or add none is refused in one line naming the key,
before anything is written.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from resultstore import reuse as copying
from resultstore.format import recorded_trials
from resultstore.store import ResultStore, code_version
from resultstore.uri import StoreError
from study import reuse, runner
from study.inputs import UsageError, check_name, load_yaml, merge
from study.provenance import command, now_iso
from study.search import parse_search
from study.spec import StudySpec, _flatten, parse, trial_configs
from study.status import split_study_path
from trainables.config import RUNTIME_KEYS, TrialConfig, nest

# Study keys that change how trials run or where, not what any trial computes.
RUNTIME_STUDY = {"resources", "max_concurrent", "failure", "description", "storage",
                 "storage_shared", "pack", "reuse"}


@dataclass
class Extension:
    spec: StudySpec
    root: str
    prepared: tuple                       # (store, trials, search config): runner.run's plan
    record: dict                          # this extension, as study.json lists it
    added: set[str] = field(default_factory=set)
    meta: dict = field(default_factory=dict)     # study.json before

    def describe(self) -> str:
        """The line `vaestudy extend` prints first: what is kept, by which code, what is new."""
        r = self.record
        kept = ", ".join(f"{n} x {v}" for v, n in r["kept_code_versions"].items()) or "none"
        mixed = set(r["kept_code_versions"]) - {r["code_version"]}
        return (f"extend: {r['trials_before']} trials kept (rows computed by {kept}), "
                f"{r['trials_added']} added; this code is {r['code_version']}"
                + ("; the report flags the mixed versions" if mixed else ""))

    def study_json(self, packs: dict) -> dict:
        """study.json's keys this run sets: the extensions so far, no `finished` until it
        ends, and the recorded packs kept beside the new trials' (existing packs keep theirs)."""
        out = {"extensions": [*self.meta.get("extensions", []), self.record], "finished": None}
        if packs.get("packs") or self.meta.get("packs"):
            out["packs"] = {**(self.meta.get("packs") or {}), **(packs.get("packs") or {})}
        return out


def prepare(study: str, spec_file: str | None, sets: dict, others: list[str] | None) -> Extension:
    """Everything that can be refused, before a file is written or Ray starts."""
    root, name = split_study_path(study)
    try:
        store = ResultStore(root, check_name(name, "DIR/STUDY"))
        meta = store.read_meta()
    except StoreError as e:
        raise UsageError(str(e)) from None
    if meta is None:
        raise UsageError(f"{study}: no study.json there; nothing to extend (start a study with "
                         "`vaestudy run`)")
    old = parse(meta["spec"])
    new = parse(_new_raw(meta["spec"], spec_file, sets, others, name, root))
    reuse.check(new, store)
    if old.adaptive != new.adaptive:
        raise UsageError(f"seeds: an extension keeps how seeds are chosen (here "
                         f"{_seeds_text(old)}); a changed schedule would change the levels of "
                         "looks already taken and void their error bound; for another, start a "
                         "new study (`reuse:` this one there)")
    if (old.search is None) != (new.search is None):
        raise UsageError("search: an extension keeps the study's kind (a grid stays a grid, a "
                         "search a search); for the other, start a new study")
    if new.search is not None:
        scfg = _search(old, new)
        trials, added, n_added = [], [], scfg.num_samples - parse_search(old).num_samples
        kept_ids = [t["id"] for t in recorded_trials(meta)]
    else:
        trials, added = grid_trials(meta, old, new)
        runner.check_data([c for _, c in added])
        scfg, n_added = None, len(added)
        kept_ids = [tid for tid, _ in trials[:len(trials) - len(added)]]
    try:
        kept = copying.versions(store, kept_ids)       # reading them checks their format
        store.check_writable()
    except StoreError as e:
        raise UsageError(str(e)) from None
    record = {"at": now_iso(), "command": command(), "code_version": code_version(),
              "spec_before": meta["spec"], "spec_after": new.raw,
              "trials_before": len(kept_ids), "trials_added": n_added,
              "kept_code_versions": dict(Counter(kept.values()))}
    return Extension(new, root, (store, trials, scfg), record, {t for t, _ in added}, meta)


def _new_raw(recorded: dict, spec_file: str | None, sets: dict, others: list[str] | None,
             name: str, root: str) -> dict:
    raw = merge(load_yaml(spec_file) if spec_file else recorded, sets)
    if raw.get("name", name) != name:
        raise UsageError(f"name: the spec names study {raw['name']!r}, but {name!r} is the one "
                         "extended; allowed: the study's own name (or none)")
    raw["name"], raw["storage"] = name, root
    if others:
        have = raw.get("reuse") or []
        have = [have] if isinstance(have, str) else have
        raw["reuse"] = [*have, *[r for r in others if r not in have]]
    return raw


def grid_trials(meta: dict, old: StudySpec, new: StudySpec):
    """(every trial: the recorded ones as recorded, then the new ones; the new ones)."""
    recorded = runner.recorded(meta, trial_configs(old))
    have = {cfg.trial_id(): tid for tid, cfg in recorded}      # this code's hash -> id
    configs = trial_configs(new)
    wanted = {c.trial_id() for c in configs} | _grown(recorded, configs, new)
    lost = [tid for h, tid in have.items() if h not in wanted]
    if lost:
        raise UsageError(altered([c for _, c in recorded], configs, len(lost)))
    added = [(c.trial_id(), c) for c in configs if c.trial_id() not in have]
    if not added:
        raise UsageError(f"extend: the new spec adds no trial to the study's {len(recorded)} "
                         "(give more seeds or grid values); `vaestudy resume` continues it as is")
    return recorded + added, added


def _seeds_text(spec: StudySpec) -> str:
    a = spec.adaptive
    return (f"adaptive: start {a.start}, step {a.step}, max {a.max}, {a.spending} spending"
            if a else "a fixed list")


def _grown(recorded: list, configs: list[TrialConfig], new: StudySpec) -> set[str]:
    """Trials an adaptive study's rounds added (seeds past `start`) that the new spec keeps:
    their configuration is in its grid and their seed within its `max`."""
    if new.adaptive is None:
        return set()
    from study.adaptive import config_key

    keys = {config_key(c) for c in configs}
    return {cfg.trial_id() for _, cfg in recorded
            if cfg.train.seed < new.adaptive.max and config_key(cfg) in keys}


def altered(old: list[TrialConfig], new: list[TrialConfig], n: int) -> str:
    """The line naming the key whose recorded values the new grid no longer has."""
    runtime = {f"{s}.{k}" for s, keys in RUNTIME_KEYS.items() for k in keys}
    before, after = [c.flat() for c in old], [c.flat() for c in new]
    for key in before[0]:
        if key in runtime:
            continue
        was = {json.dumps(f[key], sort_keys=True) for f in before}
        now = {json.dumps(f[key], sort_keys=True) for f in after}
        if not was <= now:
            shown = "seeds" if key == "train.seed" else key
            return (f"{shown}: {', '.join(sorted(was - now))} is gone from the extended grid "
                    f"({', '.join(sorted(now))}), which would change or drop {n} of the study's "
                    "existing trials; an extension may only add values (more seeds, grid "
                    "points); for other values, start a new study (`reuse:` this one there)")
    return (f"grid: the extension drops {n} of the study's existing trials (a combination of "
            "values no longer in the grid); give a grid that holds every recorded trial")


def _search(old: StudySpec, new: StudySpec):
    """A search continues its Optuna study: only `num_samples` may grow."""
    from study import optuna_storage

    a, b = _study_flat(old.raw), _study_flat(new.raw)
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] not in RUNTIME_STUDY | {"num_samples"} and a.get(key) != b.get(key):
            raise UsageError(f"{key}: a search's extension may only raise num_samples (the same "
                             f"Optuna study continues); got {a.get(key)!r} -> {b.get(key)!r}")
    was, scfg = parse_search(old).num_samples, parse_search(new)
    if scfg.num_samples <= was:
        raise UsageError(f"num_samples: got {scfg.num_samples}; allowed: more than the "
                         f"study's {was} (the same Optuna study continues)")
    optuna_storage.check(scfg.storage)
    return scfg


def _study_flat(raw: dict) -> dict:
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in _flatten(nest(raw)).items()}
