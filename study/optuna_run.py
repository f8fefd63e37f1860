"""Running a study whose spec has `search:`: Optuna suggests, Tune runs, ASHA may stop."""
from __future__ import annotations

from study import optuna_storage
from study.optuna_searcher import OptunaStudySearcher, finished, open_study
from study.search import SearchConfig
from study.tuner import fit, study_context
from resultstore.store import ResultStore


def fit_search(spec, scfg: SearchConfig, store: ResultStore, log=print,
               callbacks=None) -> tuple[list[str], dict]:
    """Run the remaining budget; returns (every trial id of the search, {trial id: error})."""
    storage = optuna_storage.open_storage(scfg.storage, store)
    study = open_study(scfg, storage, spec.name)
    remaining = scfg.num_samples - len(finished(study))
    log(f"optuna study {spec.name!r} in {storage.name}: "
        f"{len(finished(study))} of {scfg.num_samples} trials done")
    errors: dict[str, str] = {}
    searcher = OptunaStudySearcher(scfg, study, store, study_context(spec, store), storage)
    if remaining > 0:
        errors = fit(spec, store, {}, search_alg=searcher, scheduler=_scheduler(scfg, spec),
                     num_samples=remaining, callbacks=callbacks)
    reconcile(study, store)
    ids = [t.user_attrs["trial_id"] for t in study.get_trials(deepcopy=False)
           if "trial_id" in t.user_attrs]
    return ids, errors


def reconcile(study, store: ResultStore) -> None:
    """Trials Optuna saw pruned whose rows are still open are closed as `stopped`."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)):
        tid = t.user_attrs.get("trial_id")
        st = store.status(tid) if tid else None
        if st and st["state"] == "running":
            store.trial(tid).finish("stopped", error="stopped early by ASHA")


def _scheduler(scfg: SearchConfig, spec):
    if not scfg.asha:
        return None
    from ray.tune.schedulers import ASHAScheduler

    epochs = int(spec.trial.get("train.epochs", 20))
    a = scfg.asha
    return ASHAScheduler(time_attr="epoch", metric=a["metric"], mode=a["mode"], max_t=epochs,
                         grace_period=a["grace_period"], reduction_factor=a["reduction_factor"])


def write_pareto(store: ResultStore, scfg: SearchConfig) -> int:
    """analysis/pareto.parquet: the non-dominated completed trials on the search's objectives."""
    import polars as pl

    from analysis import load
    from analysis.tradeoff import pareto_mask

    rows = load.trials(store.root, store.study).filter(pl.col("state") == "completed").collect()
    if rows.height == 0:
        return 0
    if scfg.used_target is not None:
        rows = rows.with_columns(used_distance=(pl.col("n_used_factors") - scfg.used_target).abs())
    objectives = dict(scfg.objectives)
    front = rows.filter(pareto_mask(rows, objectives)).select(
        "trial_id", "noise", "beta", "sigma2", "equivalent_sigma2", "latent_dim", "seed", "epoch",
        *objectives).sort(scfg.objectives[0][0])
    store.write_parquet(store.path("analysis", "pareto.parquet"), front.to_arrow())
    return front.height
