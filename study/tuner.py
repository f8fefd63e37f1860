"""Ray and Tune for a study: start or join Ray, run trials through a Tuner.

Tune reuses a trial's actor for the next trial only on a private one-machine Ray: on
a cluster, a reused actor takes the queued trials whose actors are still starting on
other nodes (and Tune kills those), so a study of trials shorter than a node's actor
start (a fresh Python importing torch) runs on one node alone. There a trial gets a
fresh process on whichever node Ray places it.

Tune's own experiment folder lives on the driver's local disk (`driver_dir`),
with its CSV/JSON/TensorBoard loggers off: the study storage holds only what
vaestudy writes and reads, and a study resumes from those records, never from
Tune's. Trials get the study's root as a string that carries the server's
endpoint and region but never credentials (each node takes those from its own
environment or AWS profile), so nothing secret is pickled into Tune's state.
"""
from __future__ import annotations

import dataclasses
import logging
import os

from study import guards, raypatch
from resultstore.lease import DRIVER_ID
from study.spec import StudySpec, _is_grid
from resultstore.store import ResultStore

_joined = False                     # whether start_ray joined a cluster (else: a private Ray)


def start_ray(address: str | None, log=print) -> None:
    import ray

    global _joined
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return
    _joined = guards.joining(address) is not None
    if address:
        log(f"joining the Ray cluster at {address}")
        if _is_loopback(address):
            # A cluster whose nodes run on loopback (tests, one-machine clusters): stay there,
            # instead of Ray's swap of 127.0.0.1 for the machine's outward address.
            raypatch.keep_loopback_address()
            ray.init(address=address, log_to_driver=False, **raypatch.loopback_node())
        else:
            ray.init(address=address, log_to_driver=False)
    else:
        # A private single-node Ray: its node address is loopback (Ray otherwise swaps
        # 127.0.0.1 for the machine's outward address), and there is no dashboard.
        raypatch.private_single_node()
        # address="local": always a new private instance, never a `ray start` cluster (or a
        # dead one's leftover address file) that ray.init() would otherwise look for.
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="warning", **raypatch.loopback_node())


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def fit(spec: StudySpec, store: ResultStore, space: dict, search_alg=None, scheduler=None,
        num_samples: int = 1, callbacks=None, configs: dict | None = None,
        names: dict | None = None) -> dict[str, str]:
    """Run trials through Tune; returns {trial_id: error} of trials that failed for good.

    `configs` (id -> config) reaches the trials through Ray's object store when the
    space holds trial ids (a grid); a searcher puts whole configs in its suggestions, a
    pack its members'. `names`: Tune's display name of a trial id."""
    from ray import tune

    from study.optuna_storage import driver_dir
    from study.tracker import trial_key

    raypatch.legacy_output()                   # the concise table, not per-trial boxes
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"   # no CSV/JSON/TensorBoard copies
    # ...so Tune's closing analysis finds no result.json and warns once per trial; the results
    # are on the study storage, not there: that warning says nothing to a user
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    spec = dataclasses.replace(spec, gpu=guards.gpu_share(spec, None))   # run() sets it on a cluster
    fn = tune.with_parameters(_trainable(), configs=configs) if configs else _trainable()
    trainable = tune.with_resources(fn, {"cpu": spec.cpu, "gpu": spec.gpu})
    names = names or {}
    if search_alg is None:                        # a searcher puts the context in its configs
        space = {**space, "study": study_context(spec, store)}
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=spec.max_concurrent,
                                    reuse_actors=not _joined,   # see the module docstring
                                    search_alg=search_alg, scheduler=scheduler,
                                    num_samples=num_samples,
                                    trial_name_creator=lambda t: names.get(
                                        trial_key(t.config), trial_key(t.config)),
                                    trial_dirname_creator=lambda t: trial_key(t.config)),
        run_config=tune.RunConfig(
            name=store.study, storage_path=str(driver_dir(store)), verbose=1, callbacks=callbacks,
            progress_reporter=reporter(spec),
            failure_config=tune.FailureConfig(max_failures=spec.max_retries)))
    grid = tuner.fit()
    errors = {}
    for r in grid:
        if not r.config or "trial" not in r.config:
            continue
        error = None
        if r.error is not None:
            error = f"{type(r.error).__name__}: {r.error}"[-2000:]
        elif (r.metrics or {}).get("fatal"):           # failed at once, not retried
            error = r.metrics["fatal"]
        if error:
            for trial_id in member_ids(r.config["trial"]):
                errors[trial_id] = error
    return errors


def member_ids(trial: dict | str) -> list[str]:
    """The trial ids a Tune trial stands for: its own, or its pack's members'."""
    if isinstance(trial, str):
        return [trial]
    return [m["id"] for m in trial["members"]] if "members" in trial else [trial["id"]]


def study_context(spec: StudySpec, store: ResultStore) -> dict:
    """What a trial needs to find its store and data: an absolute root, and the driver's
    folder for relative data paths, since Ray runs trials in working directories of its own."""
    root = os.path.abspath(os.path.expanduser(store.root)) if store.local else store.root
    return {"root": root, "name": store.study, "cpu": spec.cpu, "cwd": os.getcwd(),
            "gpu": spec.gpu or 0.0, "driver": DRIVER_ID, "lease": store.fence}


def reporter(spec: StudySpec):
    """Tune's trial table with the study's axes and a few indicators, every 30 s."""
    from ray.tune import CLIReporter

    params = {}                    # a grid: trial names carry the axes' values (runner._names);
    if spec.search is not None:    # a pack's members are in `vaestudy status`
        keys = [k for k, v in spec.trial.items() if isinstance(v, dict) or _is_grid(k, v)]
        params = {"trial/config/" + k.replace(".", "/"): k.split(".")[-1]
                  for k in keys + ["train.seed"]}
    return CLIReporter(
        parameter_columns=params, max_report_frequency=30, max_progress_rows=40,
        metric_columns={"epoch": "epoch", "evlb": "evlb", "recon_mse": "mse", "mi_xz": "mi_xz",
                        "kl_qz_pz": "kl_qz_pz", "n_used_factors": "used", "members": "members",
                        "finished": "finished"},
        sort_by_metric=False)


def _trainable():
    from study.trainable import trainable
    return trainable
