"""Run a study on Ray Tune: local Ray or an existing cluster, resumable at any point.

A study is the list of its trials (id and config), fixed before anything starts
and recorded in study.json. That record is authoritative: running the study again
(`vaestudy resume`, or `vaestudy run` with the same spec) hands Tune the recorded
ids, never recomputed ones, so a study written by an earlier version resumes as
written. The driver plans the run: trials that finished (completed or diverged)
never reach Tune, the others continue from their latest checkpoint on storage.
Tune's search space holds only trial ids (or packs of them); the id -> config map
goes to the trials once through Ray's object store (`tune.with_parameters`). A
status tracker (study/tracker.py) keeps the study's status table while Tune
runs, and the finished trials are compacted when the driver ends.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import time
from dataclasses import dataclass

from study import guards, reuse, tuner
from study.inputs import UsageError
from resultstore.lease import Lease, LeaseHeld
from study.provenance import now_iso
from study.tuner import fit, start_ray  # noqa: F401  (tests and benches call them here)
from study.spec import StudySpec, trial_configs
from study.status import count_states
from study.tracker import StatusTracker, as_callback, config_row
from trainables.config import ConfigError, TrialConfig
from resultstore.format import FINISHED, FORMAT_VERSION, recorded_trials
from resultstore.store import ResultStore
from resultstore.uri import StoreError


@dataclass
class Outcome:
    store: ResultStore
    counts: dict[str, int]
    seconds: float
    ran: bool = True              # False: every trial had finished before; nothing was written
    lost: bool = False                # the lease was lost: another driver runs the study


def prepare(spec: StudySpec, root: str, resume: bool = False):
    """Everything that can fail on user input, before Ray starts or a file is written (a
    finished study's resume checks no data set: nothing will read one).

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
    if not resume or scfg is not None:       # a grid's resume: below, where trials will run
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
    trials = recorded(old, configs) if old else [(c.trial_id(), c) for c in configs]
    if resume and finished_before(store, trials) is None:
        check_data([c for _, c in trials])
    return store, trials, scfg


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
            datasets.check(cfg.dataset)
        except datasets.DataError as e:
            raise UsageError(f"dataset.path: {e}") from None


def write_meta(store: ResultStore, spec: StudySpec, trials: list[dict] | None, **extra) -> None:
    """study.json in the current format; `trials` as [{"id", "config"}] (None: keep them)."""
    path = store.path("study.json")
    old = json.loads(store.read_optional(path) or b"{}")
    from study.provenance import command, now_iso, versions

    meta = {**old, "name": spec.name, "format_version": FORMAT_VERSION, "spec": spec.raw,
            "spec_json": spec.to_json(), "size": spec.size_line(),
            "trials": trials or recorded_trials(old),
            "versions": versions(), "command": command(),
            "started": old.get("started", now_iso()), **extra}
    store.write_json(path, meta)


def run(spec: StudySpec, root: str, address: str | None = None, resume: bool = False,
        log=print, grow=None) -> Outcome:
    """grow: a `study.extend.Extension`, whose plan replaces `prepare`'s."""
    guards.check_cluster_storage(spec, root, address)
    guards.check_gpu_share(spec, address)
    store, trials, scfg = grow.prepared if grow else prepare(spec, root, resume)
    if spec.reuse and not resume:        # a resume copies what it still finds, if anything
        reuse.check(spec, store)
    log(f"study {spec.name}: {spec.size_line()}")
    log(f"results: {store.uri()}")
    t0 = time.time()
    ids = [tid for tid, _ in trials]
    done = finished_before(store, trials) if scfg is None else None
    if done is not None:                       # no lease, no Ray, no write
        log(f"plan: {len(ids)} trials finished before, 0 to run")
        return Outcome(store, count_states(done, ids), time.time() - t0, ran=False)
    with hold(store, log) as lease:
        rows, todo = plan(store, trials) if scfg is None else (trial_states(store), {})
        found = reuse.find(store, spec.reuse, todo) if spec.reuse else {}
        if scfg is None:
            log(f"plan: {len(ids) - len(todo)} trials finished before, "
                + (f"{len(found)} to copy from other studies, " if found else "")
                + f"{len(todo) - len(found)} to run")
        copied = reuse.copy_in(store, found, rows, todo, log)
        space, packs = _grid_space(spec, todo, log, trials,
                                   apart=grow.added if grow else frozenset(),
                                   recorded=(grow.meta if grow else store.read_meta() or {})
                                   .get("packs") if spec.pack else None)
        if todo or scfg is not None:
            tuner.start_ray(address, log)
            spec = dataclasses.replace(spec, gpu=_gpu_share(spec, address))
        _write_meta(store, spec, [{"id": tid, "config": c.to_dict()} for tid, c in trials],
                    driver_host=socket.gethostname(),
                    **(grow.study_json(packs) if grow else packs))
        tracker = StatusTracker(store, rows, todo, {"started": t0, "cpu": spec.cpu,
                                                    "gpu": spec.gpu or 0.0},
                                packs=packs.get("packs"))
        tracker.write(final=False)
        errors: dict[str, str] = {}
        if todo or scfg is not None:
            guards.write_probe(store)
        if todo:
            errors = fit(spec, store, space, configs=todo, names=_names(spec, todo),
                         callbacks=[as_callback(tracker)])
        if spec.adaptive is not None:
            planned = len(trials)
            trials = rounds(spec, store, trials, tracker, lease, errors, address, log,
                            ray_up=bool(todo), packs=packs)
            ids = [tid for tid, _ in trials]
            todo = todo or (len(trials) > planned)        # a round ran: compact at the end
        elif scfg is not None:
            from study import optuna_run

            ids, errors = optuna_run.fit_search(spec, scfg, store, log,
                                                callbacks=[as_callback(tracker)])
        if lease.lost:                       # a newer driver runs the study: write nothing
            log("this driver lost the study's lease: exiting without the final status, "
                "`finished` or a compaction (the driver holding it writes them)")
            return Outcome(store, count_states(tracker.rows, ids), time.time() - t0, lost=True)
        record_failures(store, tracker, errors)
        tracker.write(final=True)
        if scfg is not None:                 # from the final table: every trial's end state
            from study.optuna_run import write_pareto

            n = write_pareto(store, scfg)
            log(f"pareto front: {n} trials in {store.uri('analysis', 'pareto.parquet')}")
        write_meta(store, spec, None if scfg is None else [{"id": i} for i in ids],
                   finished=now_iso())
        if todo or copied or scfg is not None:   # a finished study's resume writes no row
            compact_finished(store, log)
    return Outcome(store, count_states(tracker.rows, ids), time.time() - t0)


def rounds(spec: StudySpec, store: ResultStore, trials: list, tracker: StatusTracker, lease,
           errors: dict, address: str | None, log, ray_up: bool, packs: dict) -> list:
    """Seeds until the verdict is decided (study/adaptive.py): look at every configuration,
    give the undecided ones the next seeds, run those, until none gets more. Returns every
    trial. Each look is recorded in study.json; a resumed study looks again, which gives the
    same verdicts (the same pairs, splits and levels), so it grows the same trials."""
    from study import adaptive
    from study.status_callback import StatusCallback

    while not lease.lost:
        tracker.write(final=False)                 # the look reads the trials' states
        meta = store.read_meta() or {}
        looked = adaptive.look(store, spec.adaptive, trials,
                               (meta.get("adaptive") or {}).get("configs"))
        more = adaptive.grow(spec, trials, looked)
        record = adaptive.record(meta, spec.adaptive, looked, len(more))
        log(adaptive.summary(record))
        trials = trials + more
        todo = {tid: cfg.to_dict() for tid, cfg in more}
        space, new_packs = _grid_space(spec, todo, log, more)
        packs = {"packs": {**(packs.get("packs") or {}), **(new_packs.get("packs") or {})}} \
            if packs.get("packs") or new_packs.get("packs") else {}
        _write_meta(store, spec, [{"id": tid, "config": c.to_dict()} for tid, c in trials],
                    adaptive=record, **packs)
        if not more:
            return trials
        tracker.add(todo, new_packs.get("packs") or {})
        if not ray_up:
            tuner.start_ray(address, log)
            spec = dataclasses.replace(spec, gpu=_gpu_share(spec, address))
            guards.write_probe(store)
            ray_up = True
        if tracker.thread is None:
            tracker.start()
        errors.update(fit(spec, store, space, configs=todo, names=_names(spec, todo),
                          callbacks=[StatusCallback(tracker)]))
    return trials


@contextlib.contextmanager
def hold(store: ResultStore, log=print):
    """The study's lease for the block (resultstore/lease.py); held by another driver: one line."""
    try:
        lease = Lease(store, log=log)
        lease.acquire()
    except LeaseHeld as e:
        raise UsageError(str(e)) from None
    try:
        yield lease
    finally:
        lease.release()


def _gpu_share(spec: StudySpec, address: str | None) -> float:
    share = guards.gpu_share(spec, address)
    if spec.pack and spec.gpu is None and share > 0:
        share = 1.0                                       # a pack fills a GPU
    return share


def finished_before(store: ResultStore, trials: list[tuple[str, TrialConfig]]
                    ) -> dict[str, dict] | None:
    """The status rows when an earlier driver ended the study (its final table) with every
    trial finished, else None. Finished states are final, so no other driver can change
    them: a resume with nothing to run needs no lease."""
    table = store.read_status_table()          # one read; never the per-trial files
    # a table of an older format: the study's records need upgrading (write_meta), a run does it
    if table is None or not table[1].get("final") or \
            table[1].get("format_version") != FORMAT_VERSION:
        return None
    known = {r["trial_id"]: r for r in table[0]}
    if any((known.get(tid) or {}).get("state") not in FINISHED for tid, _ in trials):
        return None
    return known


def report_current(store: ResultStore) -> str | None:
    """Where report.html is when it was written after the status table (the results have not
    changed since), else None."""
    report = store.backend.mtime(store.path("report.html"))
    table = store.backend.mtime(store.path("status.parquet"))
    if report is None or table is None or report < table:
        return None
    return store.uri("report.html")


def plan(store: ResultStore, trials: list[tuple[str, TrialConfig]]) -> tuple[dict[str, dict], dict]:
    """(a status row per trial, {id: config} of those to run): finished trials stay out.

    One read of the status table when it is current, else the trials' status files in
    parallel; a finished state is final, so the table's word is enough for it."""
    known = trial_states(store, [tid for tid, _ in trials])
    rows = {}
    for tid, cfg in trials:
        rows[tid] = config_row(tid, cfg.to_dict())
        rows[tid].update({k: v for k, v in known.get(tid, {}).items() if v is not None})
    todo = {tid: cfg.to_dict() for tid, cfg in trials if rows[tid]["state"] not in FINISHED}
    return rows, todo


def trial_states(store: ResultStore, trial_ids: list[str] | None = None) -> dict[str, dict]:
    """The store's status rows, where a driver's table is not final (it runs, or was killed)
    with its unfinished trials read from their own status files: the tracker writes the table
    at most every WRITE_EVERY_S, so a killed driver's last table may miss the last seconds'
    completions. A finished state is final, so the table's word is enough for those."""
    from resultstore.format import status_row

    rows, meta = store.trial_states(trial_ids)
    if meta is not None and not meta.get("final"):
        if trial_ids is None:          # a search: the table may not list a trial at all yet
            files = {st["trial_id"]: st for st in store.all_status()}
        else:
            files = store.status_many([t for t in trial_ids
                                       if rows.get(t, {}).get("state") not in FINISHED])
        for tid, st in files.items():
            if rows.get(tid, {}).get("state") not in FINISHED:
                rows.setdefault(tid, {}).update(
                    {k: v for k, v in status_row(st).items() if v is not None})
    return rows


def record_failures(store: ResultStore, tracker: StatusTracker, errors: dict[str, str]) -> None:
    """Trials Tune gave up on are failed, unless their status file says they ended."""
    for trial_id, error in errors.items():
        st = store.status(trial_id)
        if not st or st["state"] not in ("completed", "diverged", "stopped"):
            store.set_status(trial_id, "failed", error=error)
    tracker.record_errors(errors)


def compact_finished(store: ResultStore, log=print) -> None:
    """Merge the finished trials' files into one file per table (resultstore/compact.py)."""
    from resultstore.compact import compact

    n = compact(store, grace_s=COMPACT_GRACE_S)
    if n:
        log(f"compacted {n} finished trials into one file per table")


COMPACT_GRACE_S = 2.0     # readers that listed the old files have this long to open them


def _write_meta(store: ResultStore, *args, **kw) -> None:
    """The first write of a run: storage that lists but refuses writes stops here, in one line."""
    try:
        write_meta(store, *args, **kw)
    except OSError as e:
        from resultstore.store import why as _why
        raise UsageError(f"storage: cannot write to {store.uri()}: {_why(e)}") from None


def _grid_space(spec: StudySpec, todo: dict[str, dict], log=print,
                trials: list | None = None, apart: set[str] = frozenset(),
                recorded: dict[str, list[str]] | None = None) -> tuple[dict, dict]:
    """Tune's grid: the ids of the trials to run, or their packs ({"id", "members"});
    when packed, also {"packs": {pack id: member ids}} for study.json and the tracker.
    `apart`: trials an extension added, packed among themselves, not with the old ones.
    `recorded`: study.json's packs; a trial an earlier run packed stays in its pack, under
    its name (a grown study's resume would otherwise cut the grid anew)."""
    if not todo:                                  # nothing for Tune: ray.tune stays unimported
        return {}, {}
    from ray import tune

    if not spec.pack:
        return {"trial": tune.grid_search(list(todo))}, {}
    from study import packing

    grid = trials or [(tid, TrialConfig.from_dict(c)) for tid, c in todo.items()]
    configs = dict(grid)
    kept = [{"id": pid, "members": [{"id": m, "config": configs[m].to_dict()}
                                    for m in members if m in todo and m in configs]}
            for pid, members in (recorded or {}).items()]
    kept = [e for e in kept if e["members"]]
    packed = {m for members in (recorded or {}).values() for m in members}
    grid = [t for t in grid if t[0] not in packed]
    groups = ([t for t in grid if t[0] not in apart], [t for t in grid if t[0] in apart])
    parts = [p for group in groups if group                  # the whole grid: stable packs,
             for p in packing.partition(group, spec.pack)]   # an extension's new trials apart
    entries = kept + packing.pack_space(parts, set(todo))
    log(f"packed: {packing.describe(parts)}"
        + (f" and {len(kept)} packs of earlier runs" if kept else "")
        + f"; {len(entries)} with trials to run")
    return ({"trial": tune.grid_search(entries)},
            {"packs": {e["id"]: [m["id"] for m in e["members"]] for e in entries}})


def _names(spec: StudySpec, todo: dict[str, dict]) -> dict[str, str]:
    """Trial names for Tune's table: the id and the values of the spec's grid axes."""
    axes = spec.axes()
    out = {}
    for tid, cfg in todo.items():
        flat = TrialConfig.from_dict(cfg).flat()
        vals = ",".join(f"{k.split('.')[-1]}={flat[k]}" for k in axes if k in flat)
        out[tid] = f"{tid}({vals})" if vals else tid
    return out
