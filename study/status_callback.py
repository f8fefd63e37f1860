"""The status tracker (study/tracker.py) as a Tune `Callback`: Tune's public hooks,
each handed to the tracker, which only changes rows in memory (its writer thread
does the I/O). Kept apart from the tracker so that importing the tracker (resume
planning, `vaestudy status`) does not import ray.tune."""
from __future__ import annotations

from ray.tune import Callback


class StatusCallback(Callback):
    def __init__(self, tracker):
        self.tracker = tracker

    def __getstate__(self) -> dict:
        """Tune pickles its callbacks into its experiment state, which a study never resumes
        from (it resumes from its own records); the tracker's lock and thread cannot be."""
        return {"tracker": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.tracker.trial_started(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.tracker.trial_result(trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.tracker.trial_ended(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Failed, to be retried (FailureConfig.max_failures): its error shows meanwhile."""
        self.tracker.trial_failed(trial, error_text(trial), retrying=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.tracker.trial_failed(trial, error_text(trial), retrying=False)


def error_text(trial) -> str:
    """The trial's latest error as Tune recorded it (`Trial.get_error`: its error file, of
    which the last failure is the tail), or a placeholder where Tune wrote none."""
    text = trial.get_error()
    if not text:
        return "trial error (Tune recorded no text)"
    text = str(text).strip()
    last = text.rfind("Failure # ")                # the file holds every failure so far
    return text[last:] if last > 0 else text
