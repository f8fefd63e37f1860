"""The Ray Tune function trainable: one trial of a study.

It rebuilds its typed config from the dict Ray hands it, sets torch's thread
count to its CPU share, and runs `trainables.train.run_trial`, the same
function `vaestudy train` runs, against the study's result store. Progress and
checkpoints live on that store, keyed by the trial's config id, so a trial
restarted by Tune (a retry, a lost node) or by `vaestudy resume` after the
driver died continues from its latest checkpoint on storage; Tune's own
checkpoint bookkeeping is not relied on (a SIGKILLed driver loses what it had
not yet snapshotted).

Before anything else the trial checks that its node sees the driver's probe in
the study storage and makes its device follow its GPU share (study/guards.py).
A failure no retry can fix (that probe missing, CUDA out of memory) ends the
trial at once: it is reported as `fatal` instead of raised, so Tune does not
retry it, and the driver records it as failed.
"""
from __future__ import annotations

import dataclasses
import os
import socket

import ray
from ray import tune

from study import guards
from trainables.config import TrialConfig
from trainables.pack_run import run_pack
from resultstore.store import ResultStore
from trainables.train import FatalTrialError, run_trial


def trainable(config: dict, configs: dict | None = None) -> None:
    """config["trial"]: a trial id whose config is in `configs` (a grid), {"id", "config"}
    (a searcher's suggestion), or {"id", "members": [{"id", "config"}, ...]} (a pack)."""
    study = config["study"]
    node = f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"
    store = ResultStore(study["root"], study["name"], fence=study.get("lease"))
    trial = config["trial"]
    if isinstance(trial, str):
        trial = {"id": trial, "config": configs[trial]}
    try:
        guards.check_probe(store, study["driver"], node)
        guards.follow_gpu_share(study.get("gpu", 0.0), node)
        if "members" in trial:                 # a pack: one vectorised run of its members
            run_pack([_local(m["config"], study) for m in trial["members"]], store,
                     report=tune.report, trial_ids=[m["id"] for m in trial["members"]],
                     node=node, name=trial["id"])
        else:
            run_trial(_local(trial["config"], study), store, report=tune.report,
                      trial_id=trial["id"], node=node)
    except FatalTrialError as e:
        print(f"[{trial['id']}] {e}", flush=True)
        tune.report({"fatal": str(e)})


def _local(d: dict, study: dict) -> TrialConfig:
    """The trial's config with this worker's thread count and the driver's data path."""
    cfg = TrialConfig.from_dict(d)
    threads = cfg.train.threads or max(1, int(study["cpu"]))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
    path = cfg.dataset.path
    if path and "://" not in path and not os.path.isabs(path):   # as the driver saw it
        path = os.path.join(study.get("cwd", "."), path)
        cfg = dataclasses.replace(cfg, dataset=dataclasses.replace(cfg.dataset, path=path))
    return cfg
