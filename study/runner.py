"""Run a study on Ray Tune: local Ray or an existing cluster, resumable at any point.

A study is the list of its trials (id and config), fixed before anything starts
and recorded in study.json. That record is authoritative: running the study again
(`vaestudy resume`, or `vaestudy run` with the same spec) uses the recorded ids,
never recomputed ones, so a study written by an earlier version resumes as
written. The driver plans the run: trials that finished (completed or diverged)
never reach Tune, the others continue from their latest checkpoint on storage.
Tune's search space holds only trial ids; the id -> config map goes to the
trials once through Ray's object store (`tune.with_parameters`). A status
tracker (study/tracker.py) keeps the study's status table while Tune runs, and
the finished trials are compacted when the driver ends.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from importlib.metadata import version
import socket
import time
from dataclasses import dataclass

from study.inputs import UsageError
from study.spec import StudySpec, _is_grid, trial_configs
from study.status import count_states
from study.tracker import StatusTracker, as_callback, config_row
from trainables.config import ConfigError, TrialConfig
from trainables.store import (FINISHED, FORMAT_VERSION, ResultStore, StoreError, code_version,
                              recorded_trials)


LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": a node's address stays 127.0.0.1


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
        scfg.storage_url(store)                      # refuses SQLite on remote storage
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
            datasets.check(cfg.dataset)
        except datasets.DataError as e:
            raise UsageError(f"dataset.path: {e}") from None


def write_meta(store: ResultStore, spec: StudySpec, trials: list[dict] | None, **extra) -> None:
    """study.json in the current format; `trials` as [{"id", "config"}] (None: keep them)."""
    path = store.path("study.json")
    old = store.read_json(path) if store.exists(path) else {}
    meta = {**old, "name": spec.name, "format_version": FORMAT_VERSION, "spec": spec.raw,
            "spec_json": spec.to_json(), "size": spec.size_line(),
            "trials": trials or recorded_trials(old),
            "versions": {"vaestudy": code_version(), "ray": version("ray"),
                         "torch": version("torch")},     # without importing them: seconds
            "started": old.get("started", time.time()), **extra}
    store.write_json(path, meta)


def start_ray(address: str | None, log=print) -> None:
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    if address:
        log(f"joining the Ray cluster at {address}")
        if _is_loopback(address):
            # A cluster whose nodes run on loopback (tests, one-machine clusters): stay there,
            # instead of Ray's swap of 127.0.0.1 for the machine's outward address.
            from ray._private import services
            services.resolve_ip_for_localhost = lambda host: host
            ray.init(address=address, log_to_driver=False, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, log_to_driver=False)
    else:
        # A private single-node Ray: its node address is loopback (Ray otherwise swaps
        # 127.0.0.1 for the machine's outward address), and there is no dashboard.
        os.environ[LOOPBACK_ONLY] = "0"                  # for the processes Ray starts
        from ray._private import ray_constants           # and for this one, imported already
        ray_constants.ENABLE_RAY_CLUSTER = False
        # address="local": always a new private instance, never a `ray start` cluster (or a
        # dead one's leftover address file) that ray.init() would otherwise look for.
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", configure_logging=True, logging_level="warning")


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def run(spec: StudySpec, root: str, address: str | None = None, resume: bool = False,
        log=print) -> Outcome:
    store, trials, scfg = prepare(spec, root, resume)
    log(f"study {spec.name}: {spec.size_line()}")
    log(f"results: {store.uri()}")
    t0 = time.time()
    ids = [tid for tid, _ in trials]
    with driver_lock(store):
        write_meta(store, spec, [{"id": tid, "config": c.to_dict()} for tid, c in trials],
                   driver_host=socket.gethostname())
        rows, todo = plan(store, trials) if scfg is None else (store.trial_states()[0], {})
        tracker = StatusTracker(store, rows, todo, {"started": t0, "cpu": spec.cpu,
                                                    "gpu": spec.gpu or 0.0})
        tracker.write(final=False)
        errors: dict[str, str] = {}
        if scfg is None:
            log(f"plan: {len(ids) - len(todo)} trials finished before, {len(todo)} to run")
            if todo:
                start_ray(address, log)
                errors = fit(spec, store, {"trial": _grid(todo)}, configs=todo,
                             callbacks=[as_callback(tracker)], names=_names(spec, todo))
        else:
            from study import optuna_run

            start_ray(address, log)
            ids, errors = optuna_run.fit_search(spec, scfg, store, log,
                                                callbacks=[as_callback(tracker)])
        record_failures(store, tracker, errors)
        tracker.write(final=True)
        write_meta(store, spec, None if scfg is None else [{"id": i} for i in ids],
                   finished=time.time())
        if todo or scfg is not None:             # a finished study's resume writes no row
            compact_finished(store, log)
    return Outcome(store, count_states(tracker.rows, ids), time.time() - t0)


def plan(store: ResultStore, trials: list[tuple[str, TrialConfig]]) -> tuple[dict[str, dict], dict]:
    """(a status row per trial, {id: config} of those to run): finished trials stay out.

    One read of the status table when it is current, else the trials' status files in
    parallel; a finished state is final, so the table's word is enough for it."""
    known, _ = store.trial_states([tid for tid, _ in trials])
    rows = {}
    for tid, cfg in trials:
        rows[tid] = config_row(tid, cfg.to_dict())
        rows[tid].update({k: v for k, v in known.get(tid, {}).items() if v is not None})
    todo = {tid: cfg.to_dict() for tid, cfg in trials if rows[tid]["state"] not in FINISHED}
    return rows, todo


def record_failures(store: ResultStore, tracker: StatusTracker, errors: dict[str, str]) -> None:
    """Trials Tune gave up on are failed, unless their status file says they ended."""
    for trial_id, error in errors.items():
        st = store.status(trial_id)
        if not st or st["state"] not in ("completed", "diverged", "stopped"):
            store.set_status(trial_id, "failed", error=error)
    tracker.record_errors(errors)


def compact_finished(store: ResultStore, log=print) -> None:
    """Merge the finished trials' files into one file per table (trainables/compact.py)."""
    from trainables.compact import compact

    n = compact(store, grace_s=COMPACT_GRACE_S)
    if n:
        log(f"compacted {n} finished trials into one file per table")


COMPACT_GRACE_S = 2.0     # readers that listed the old files have this long to open them


@contextmanager
def driver_lock(store: ResultStore):
    """One driver per study: a second `run`/`resume` of a study that is running is refused;
    the lock of a driver that died (SIGKILL, reboot) is taken over."""
    path = store.path("driver.lock")
    if store.exists(path):
        old = store.read_json(path)
        if old.get("host") == socket.gethostname() and _alive(old.get("pid", -1)):
            raise UsageError(f"name: study {store.study!r} is being run by pid {old['pid']} on "
                             f"{old['host']} since {time.ctime(old.get('since', 0))}; wait for "
                             "it, or stop it and `vaestudy resume`")
    store.write_json(path, {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
    try:
        yield
    finally:
        store.delete(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError, ValueError):
        return False
    return True


def _grid(todo: dict[str, dict]):
    from ray import tune

    return tune.grid_search(list(todo))


def _names(spec: StudySpec, todo: dict[str, dict]) -> dict[str, str]:
    """Trial names for Tune's table: the id and the values of the spec's grid axes."""
    axes = spec.axes()
    out = {}
    for tid, cfg in todo.items():
        flat = TrialConfig.from_dict(cfg).flat()
        vals = ",".join(f"{k.split('.')[-1]}={flat[k]}" for k in axes if k in flat)
        out[tid] = f"{tid}({vals})" if vals else tid
    return out


def fit(spec: StudySpec, store: ResultStore, space: dict, search_alg=None, scheduler=None,
        num_samples: int = 1, callbacks=None, configs: dict | None = None,
        names: dict | None = None) -> dict[str, str]:
    """Run trials through Tune; returns {trial_id: error} of trials that failed for good.

    `configs` (id -> config) reaches the trials through Ray's object store when the
    space holds trial ids (a grid); a searcher puts whole configs in its suggestions."""
    import ray
    from ray import tune

    from study.tracker import trial_key

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")     # the concise table, not per-result boxes
    gpu = spec.gpu
    if gpu is None:                               # share a card between small models
        gpu = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    fn = tune.with_parameters(_trainable(), configs=configs) if configs else _trainable()
    trainable = tune.with_resources(fn, {"cpu": spec.cpu, "gpu": gpu})
    names = names or {}
    if search_alg is None:                        # a searcher puts the context in its configs
        space = {**space, "study": study_context(spec, store)}
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent, reuse_actors=True,
                                    search_alg=search_alg, scheduler=scheduler,
                                    num_samples=num_samples,
                                    trial_name_creator=lambda t: names.get(
                                        trial_key(t.config), trial_key(t.config)),
                                    trial_dirname_creator=lambda t: trial_key(t.config)),
        run_config=tune.RunConfig(
            name="_tune", storage_path=store.uri(), verbose=1, callbacks=callbacks,
            progress_reporter=reporter(spec),
            failure_config=tune.FailureConfig(max_failures=spec.max_retries)))
    grid = tuner.fit()
    errors = {}
    for r in grid:
        if r.error is not None and r.config and "trial" in r.config:
            errors[trial_key(r.config)] = f"{type(r.error).__name__}: {r.error}"[-2000:]
    return errors


def study_context(spec: StudySpec, store: ResultStore) -> dict:
    """What a trial needs to find its store and data: an absolute root, and the driver's
    folder for relative data paths, since Ray runs trials in working directories of its own."""
    root = store.root if "://" in store.root else os.path.abspath(os.path.expanduser(store.root))
    return {"root": root, "name": store.study, "cpu": spec.cpu, "cwd": os.getcwd()}


def reporter(spec: StudySpec):
    """Tune's trial table with the study's axes and a few indicators, every 30 s."""
    from ray.tune import CLIReporter

    params = None                       # a grid: the trial names carry the axes' values
    if spec.search is not None:
        keys = [k for k, v in spec.trial.items() if isinstance(v, dict) or _is_grid(k, v)]
        params = {"trial/config/" + k.replace(".", "/"): k.split(".")[-1]
                  for k in keys + ["train.seed"]}
    return CLIReporter(
        parameter_columns=params, max_report_frequency=30, max_progress_rows=40,
        metric_columns={"epoch": "epoch", "evlb": "evlb", "recon_mse": "mse", "mi_xz": "mi_xz",
                        "kl_qz_pz": "kl_qz_pz", "n_used_factors": "used"},
        sort_by_metric=False)


def _trainable():
    from study.trainable import trainable
    return trainable
