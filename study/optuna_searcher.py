"""A Ray Tune Searcher over an Optuna study in RDB storage, safe to resume.

Tune calls `suggest` for each new trial and `on_trial_complete` when one ends.
Optuna trials left RUNNING by a killed driver are suggested again first, with
their own parameters and Optuna number, so they resume from their checkpoints
instead of being abandoned or duplicated.
"""
from __future__ import annotations

from ray.tune.search import Searcher

from study.search import SearchConfig, make_sampler, objective_values
from trainables.config import TrialConfig
from trainables.store import ResultStore


def trial_id_for(cfg: TrialConfig, number: int) -> str:
    return f"{cfg.trial_id()}-n{number:04d}"


def open_study(scfg: SearchConfig, url: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if d == "max" else "minimize" for _, d in scfg.objectives]
    return optuna.create_study(storage=url, study_name=name, directions=directions,
                               sampler=make_sampler(scfg), load_if_exists=True)


def finished(study) -> list:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


class OptunaStudySearcher(Searcher):
    def __init__(self, scfg: SearchConfig, study, store: ResultStore, context: dict):
        super().__init__(metric=None, mode=None)
        from optuna.trial import TrialState

        self.scfg, self.study, self.store, self.context = scfg, study, store, context
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
        if status == "completed" and values is not None:
            self.study.tell(number, values, state=TrialState.COMPLETE)
        elif not error and result and result.get("epoch", epochs) < epochs and status == "running":
            self.stopped.append(tid)                     # stopped early by the scheduler
            self.study.tell(number, state=TrialState.PRUNED)
        else:
            self.study.tell(number, state=TrialState.FAIL)
