"""Run a study on Ray Tune: local Ray or an existing cluster, resumable at any point.

A study is the list of its trials (id and config), fixed before anything starts
and recorded in study.json. That record is authoritative: running the study again
(`vaestudy resume`, or `vaestudy run` with the same spec) hands Tune the recorded
ids, never recomputed ones, so a study written by an earlier version resumes as
written. Finished trials return at once, unfinished ones continue from their
latest checkpoint on storage.
"""
from __future__ import annotations

import dataclasses
import json
import socket
import time
from dataclasses import dataclass

from study import guards, tuner
from study.inputs import UsageError
from study.lease import Lease
from study.provenance import now_iso
from study.tuner import fit, start_ray  # noqa: F401  (tests and benches call them here)
from study.spec import StudySpec, trial_configs
from study.status import count_states
from trainables.config import ConfigError, TrialConfig
from trainables.store import FORMAT_VERSION, ResultStore, StoreError, recorded_trials


@dataclass
class Outcome:
    store: ResultStore
    counts: dict[str, int]
    seconds: float


def prepare(spec: StudySpec, root: str, resume: bool = False):
    """Everything that can fail on user input, before Ray starts or a file is written.

    Returns (store, trials, search config): a grid's [(trial id, config)], the recorded
    ids where the study exists; for a search, no trials and the search config."""
    scfg = None
    if spec.search is not None:
        from study.search import parse_search

        scfg = parse_search(spec)
        sample = {**scfg.fixed, **{k: _first(d) for k, d in scfg.space.items()}}
        configs = [TrialConfig.from_dict(sample)]
    else:
        configs = trial_configs(spec)
    check_data(configs)
    if scfg is not None:
        from study import optuna_storage

        optuna_storage.check(scfg.storage)           # its driver installed, its server up
    try:
        store = ResultStore(root, spec.name)
        store.check_writable()
    except StoreError as e:
        raise UsageError(str(e)) from None
    try:
        old = store.read_meta()
    except StoreError as e:
        raise UsageError(str(e)) from None
    if old is not None:
        if json.loads(old["spec_json"]) != json.loads(spec.to_json()):
            raise UsageError(f"name: a different study named {spec.name!r} already exists in "
                             f"{store.uri()}; choose another name (--set name=...) or resume it "
                             f"with `vaestudy resume {store.uri()}`")
    elif resume:
        raise UsageError(f"{store.uri()}: no study.json; nothing to resume")
    if scfg is not None:
        return store, [], scfg
    return store, (recorded(old, configs) if old else [(c.trial_id(), c) for c in configs]), scfg


def recorded(meta: dict, configs: list[TrialConfig]) -> list[tuple[str, TrialConfig]]:
    """The study's trials as study.json records them. Format 1 recorded ids alone, hashed
    from every value: the spec's configs are matched to them by that old hash."""
    trials = recorded_trials(meta)
    if all(t["config"] is not None for t in trials):
        try:
            return [(t["id"], TrialConfig.from_dict(t["config"])) for t in trials]
        except ConfigError as e:
            raise UsageError(f"study.json: a recorded trial config: {e}") from None
    by_legacy = {c.legacy_trial_id(): c for c in configs}
    missing = [t["id"] for t in trials if t["id"] not in by_legacy]
    if missing or len(trials) != len(configs):
        raise UsageError(f"study.json: its {len(trials)} recorded trials do not match the "
                         f"spec's {len(configs)} ({', '.join(missing[:3]) or 'count'}); "
                         "the study folder was edited or damaged")
    return [(t["id"], by_legacy[t["id"]]) for t in trials]


def _first(dist):
    return dist.choices[0] if hasattr(dist, "choices") else dist.low


def check_data(configs: list[TrialConfig]) -> None:
    """Load each distinct data set once: a missing path or a bad file stops the study here."""
    from trainables import data as datasets

    seen = set()
    for cfg in configs:
        key = json.dumps(cfg.to_dict()["dataset"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            datasets.load(cfg.dataset)
        except datasets.DataError as e:
            raise UsageError(f"dataset.path: {e}") from None


def write_meta(store: ResultStore, spec: StudySpec, trials: list[dict] | None, **extra) -> None:
    """study.json in the current format; `trials` as [{"id", "config"}] (None: keep them)."""
    path = store.path("study.json")
    old = store.read_json(path) if store.exists(path) else {}
    from study.provenance import command, now_iso, versions

    meta = {**old, "name": spec.name, "format_version": FORMAT_VERSION, "spec": spec.raw,
            "spec_json": spec.to_json(), "size": spec.size_line(),
            "trials": trials or recorded_trials(old),
            "versions": versions(), "command": command(),
            "started": old.get("started", now_iso()), **extra}
    store.write_json(path, meta)


def run(spec: StudySpec, root: str, address: str | None = None, resume: bool = False,
        log=print) -> Outcome:
    guards.check_cluster_storage(spec, root, address)
    store, trials, scfg = prepare(spec, root, resume)
    log(f"study {spec.name}: {spec.size_line()}")
    log(f"results: {store.uri()}")
    t0 = time.time()
    ids = [tid for tid, _ in trials]
    space, packs = _grid_space(spec, trials, log)
    with Lease(store, log=log):
        tuner.start_ray(address, log)
        share = guards.gpu_share(spec, address)
        if spec.pack and spec.gpu is None and share > 0:
            share = 1.0                                   # a pack fills a GPU
        spec = dataclasses.replace(spec, gpu=share)
        _write_meta(store, spec, [{"id": tid, "config": c.to_dict()} for tid, c in trials],
                    driver_host=socket.gethostname(), **packs)
        guards.write_probe(store)
        if scfg is None:
            errors = fit(spec, store, space)
        else:
            from study import optuna_run

            ids, errors = optuna_run.fit_search(spec, scfg, store, log)
    for trial_id, error in errors.items():
        st = store.status(trial_id)
        if not st or st["state"] not in ("completed", "diverged", "stopped"):
            store.set_status(trial_id, "failed", error=error)
    write_meta(store, spec, None if scfg is None else [{"id": i} for i in ids],
               finished=now_iso())
    return Outcome(store, count_states(store, ids), time.time() - t0)


def _write_meta(store: ResultStore, *args, **kw) -> None:
    """The first write of a run: storage that lists but refuses writes stops here, in one line."""
    try:
        write_meta(store, *args, **kw)
    except OSError as e:
        from trainables.store import _why
        raise UsageError(f"storage: cannot write to {store.uri()}: {_why(e)}") from None


def _grid_space(spec: StudySpec, trials: list[tuple[str, TrialConfig]],
                log=print) -> tuple[dict, dict]:
    """Tune's grid (one entry per trial, or per pack) and, when packed, {"packs": {id: ids}}."""
    from ray import tune

    if not spec.pack or not trials:
        return {"trial": tune.grid_search([{"id": tid, "config": c.to_dict()}
                                           for tid, c in trials])}, {}
    from study import packing

    parts = packing.partition(trials, spec.pack)
    log(f"packed: {packing.describe(parts)}")
    entries = packing.pack_space(parts)
    return ({"trial": tune.grid_search(entries)},
            {"packs": {e["id"]: [m["id"] for m in e["members"]] for e in entries}})

