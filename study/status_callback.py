"""The status tracker (study/tracker.py) as a Tune `Callback`: Tune's public hooks,
each handed to the tracker, which only changes rows in memory (its writer thread
does the I/O). Kept apart from the tracker so that importing the tracker (resume
planning, `vaestudy status`) does not import ray.tune."""
from __future__ import annotations

import os

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
    """The trial's latest error as Tune recorded it: `Trial.error_file`, which Tune writes on
    the driver before it calls the hook (`Trial.get_error` reads the copy in the experiment's
    storage, which is synced later), else `get_error`, else a placeholder."""
    text = None
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path, errors="replace") as f:
            text = f.read()
    text = str(text or trial.get_error() or "").strip()
    if not text:
        return "trial error (Tune recorded no text)"
    last = text.rfind("Failure # ")                # the file holds every failure so far
    return text[last:] if last > 0 else text
