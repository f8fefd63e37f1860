"""A Ray Tune Searcher over an Optuna study (study/optuna_storage.py), safe to resume.

Tune calls `suggest` for each new trial and `on_trial_complete` when one ends.
Optuna trials left RUNNING by a killed driver are suggested again first, with
their own parameters and Optuna number, so they resume from their checkpoints
instead of being abandoned or duplicated. After every write to the study (ask,
tell) the storage's `sync` runs, which mirrors a local journal before the trial
reaches Tune. For optuna-dashboard the study carries its objectives' names, and
each trial its id, config, last epoch and used factors.
"""
from __future__ import annotations

from ray.tune.search import Searcher

from study.search import SearchConfig, make_sampler, objective_values
from trainables.config import TrialConfig
from resultstore.store import ResultStore


def trial_id_for(cfg: TrialConfig, number: int) -> str:
    return f"{cfg.trial_id()}-n{number:04d}"


def open_study(scfg: SearchConfig, storage, name: str):
    """The search's Optuna study (created on first use), its objectives named. `storage`: an
    `optuna_storage.Storage`, or an RDB URL."""
    import optuna

    from study.optuna_storage import Storage

    if isinstance(storage, str):
        storage = Storage(storage, storage)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if d == "max" else "minimize" for _, d in scfg.objectives]
    storage.optuna = optuna.storages.get_storage(storage.optuna)   # the searcher's, too
    study = optuna.create_study(storage=storage.optuna, study_name=name, directions=directions,
                                sampler=make_sampler(scfg), load_if_exists=True)
    n = len(study.get_trials(deepcopy=False))
    if n:                                          # resumed: a stream it has not drawn yet
        study.sampler = make_sampler(scfg, n)
    names = [m for m, _ in scfg.objectives]
    if study.metric_names != names:
        import warnings

        with warnings.catch_warnings():          # experimental since Optuna 3.2, still so
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    storage.sync()
    return study


def finished(study) -> list:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


class OptunaStudySearcher(Searcher):
    def __init__(self, scfg: SearchConfig, study, store: ResultStore, context: dict,
                 storage):
        """storage: the `optuna_storage.Storage` that `open_study` opened `study` in."""
        super().__init__(metric=None, mode=None)
        from optuna.trial import TrialState

        self.scfg, self.study, self.store, self.context = scfg, study, store, context
        self.sync = storage.sync
        # Optuna's public storage interface (BaseStorage) for the trial attributes written
        # after a trial's ask: one indexed lookup per completion, not a list of every trial
        self.storage = storage.optuna
        self.study_id = self.storage.get_study_id_from_name(study.study_name)
        self.pending = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
        self.live: dict[str, tuple[int, str, int]] = {}     # tune id -> (number, trial id, epochs)
        self.stopped: list[str] = []

    def suggest(self, tune_id: str) -> dict | None:
        if self.pending:                                # left running by a killed driver
            frozen = self.pending.pop(0)
            number, params = frozen.number, frozen.params
            cfg = TrialConfig.from_dict({**self.scfg.fixed, **params})
            tid = frozen.user_attrs.get("trial_id") or trial_id_for(cfg, number)   # as recorded
        else:
            trial = self.study.ask(fixed_distributions=self.scfg.space)
            number, params = trial.number, trial.params
            cfg = TrialConfig.from_dict({**self.scfg.fixed, **params})
            tid = trial_id_for(cfg, number)
            trial.set_user_attr("trial_id", tid)       # Optuna -> Parquet link
            trial.set_user_attr("config", cfg.canonical())
            self.sync()                                 # mirrored before Tune sees the trial
        self.live[tune_id] = (number, tid, cfg.train.epochs)
        return {"trial": {"id": tid, "config": cfg.to_dict(), "optuna_number": number},
                "study": self.context}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the state is the Optuna study in its RDB storage."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the RDB storage is re-opened on resume."""

    def on_trial_complete(self, tune_id: str, result: dict | None = None, error: bool = False):
        from optuna.trial import TrialState

        if tune_id not in self.live:
            return
        number, tid, epochs = self.live.pop(tune_id)
        status = (self.store.status(tid) or {}).get("state")
        values = objective_values(self.scfg, result) if result else None
        self._attrs(number, result)
        if status == "completed" and values is not None:
            self.study.tell(number, values, state=TrialState.COMPLETE)
        elif not error and result and result.get("epoch", epochs) < epochs and status == "running":
            self.stopped.append(tid)                     # stopped early by the scheduler
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self.study.tell(number, state=TrialState.FAIL)
        self.sync()

    def _attrs(self, number: int, result: dict | None) -> None:
        """The last epoch and used factors, shown by optuna-dashboard beside the trial id."""
        if not result:
            return
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        for key in ("epoch", "n_used_factors"):
            if result.get(key) is not None:
                self.storage.set_trial_user_attr(trial_id, key, result[key])
