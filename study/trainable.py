"""The Ray Tune function trainable: one trial of a study.

It rebuilds its typed config from the dict Ray hands it, sets torch's thread
count to its CPU share, and runs `trainables.train.run_trial`, the same
function `vaestudy train` runs, against the study's result store. Progress and
checkpoints live on that store, keyed by the trial's config id, so a trial
restarted by Tune (a retry, a lost node) or by `vaestudy resume` after the
driver died continues from its latest checkpoint on storage; Tune's own
checkpoint bookkeeping is not relied on (a SIGKILLed driver loses what it had
not yet snapshotted).
"""
from __future__ import annotations

import dataclasses
import os
import socket

import ray
from ray import tune

from trainables.config import TrialConfig
from trainables.store import ResultStore
from trainables.train import run_trial


def trainable(config: dict, configs: dict | None = None) -> None:
    """config["trial"]: a trial id whose config is in `configs` (a grid), or {"id", "config"}
    (a searcher's suggestion)."""
    trial = config["trial"]
    trial_id, raw = (trial, configs[trial]) if isinstance(trial, str) else \
        (trial["id"], trial["config"])
    cfg = TrialConfig.from_dict(raw)
    threads = cfg.train.threads or max(1, int(config["study"]["cpu"]))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
    path = cfg.dataset.path
    if path and "://" not in path and not os.path.isabs(path):   # as the driver saw it
        path = os.path.join(config["study"].get("cwd", "."), path)
        cfg = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, path=path))
    store = ResultStore(config["study"]["root"], config["study"]["name"])
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    run_trial(cfg, store, report=tune.report, trial_id=trial_id, node=node)
