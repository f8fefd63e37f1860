"""One pack, start to finish: what a packed Ray trial runs.

Each member is an ordinary trial: it is marked running, resumed from its own
latest checkpoint (members may stop at different epochs), evaluated,
checkpointed and finished through the same `trainables.train` functions and
the same result store as an unpacked trial, so its rows, status, checkpoints
and traversal are those of a trial run alone. Only the training epochs are
shared (`trainables.pack`). A member that diverges is finished `diverged` and
masked out; a member that reaches its last epoch is finished `completed` and
masked out; the others go on. Finished members are not retrained.
"""
from __future__ import annotations

import hashlib
import math
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from trainables import pack as packing
from trainables.config import TrialConfig
from resultstore.store import ResultStore
from resultstore.trial import TrialHandle
from trainables.train import (FatalTrialError, Report, Run, _out_of_memory, end_epoch,
                              finish_completed, finish_diverged, load_splits, mark_running,
                              setup_torch, start_run)

# members must agree on everything but these (and the fault-injection hook)
MEMBER_KEYS = ("noise.beta", "noise.sigma2", "train.seed", "train.lr", "train.fault_nan_epoch",
               "train.fault_oom_epoch")


@dataclass
class Member:
    trial: TrialHandle
    run: Run
    last: dict = field(default_factory=dict)
    state: str = "running"


def shared_key(cfg: TrialConfig) -> str:
    """What members of one pack must share: the config without the member keys."""
    flat = {k: v for k, v in cfg.flat().items() if k not in MEMBER_KEYS and k != "train.threads"}
    return repr(sorted(flat.items()))


def pack_id(trial_ids: list[str]) -> str:
    """A short, stable name for a pack: the hash of its members' ids."""
    return "p" + hashlib.sha256(",".join(sorted(trial_ids)).encode()).hexdigest()[:11]


def run_pack(cfgs: list[TrialConfig], store: ResultStore, report: Report | None = None,
             log: Callable[[str], None] = print, trial_ids: list[str] | None = None,
             node: str | None = None, name: str | None = None) -> dict[str, dict]:
    """Train every unfinished member to its end; returns {trial_id: last metrics}."""
    ids = trial_ids or [c.trial_id() for c in cfgs]
    if len({shared_key(c) for c in cfgs}) != 1:
        raise ValueError("a pack's members may differ only in " + ", ".join(MEMBER_KEYS))
    name = name or pack_id(ids)
    finals, todo = {}, []
    for cfg, tid in zip(cfgs, ids):
        done = store.status(tid)
        if done and done["state"] in ("completed", "diverged"):
            log(f"[{tid}] already {done['state']}; nothing to do")
            finals[tid] = done.get("final", {})
        else:
            todo.append((cfg, tid, done))
    if todo:
        try:
            finals.update(_train(todo, store, report, log, node, name))
        except torch.OutOfMemoryError as e:         # the same pack on the same GPU: fail now
            errs = [_out_of_memory(store.trial(tid), node or socket.gethostname(), e)
                    for _, tid, _ in todo if store.status(tid)["state"] == "running"]
            raise errs[0] if errs else FatalTrialError(str(e)) from None
    if report:
        report(summary(finals, finals))
    return finals


def _train(todo, store, report, log, node, name) -> dict[str, dict]:
    cfg0 = todo[0][0]
    trials = [store.trial(tid) for _, tid, _ in todo]
    nodes = [mark_running(cfg, t, node, done, pack=name) for (cfg, _, done), t in zip(todo, trials)]
    device = setup_torch(cfg0)
    train_x, test = load_splits(cfg0, device)
    shape = tuple(train_x.shape[1:])
    members = [Member(t, start_run(cfg, t, n, log, shape, device))
               for (cfg, _, _), t, n in zip(todo, trials, nodes)]
    log(f"[{name}] {len(members)} members: {', '.join(m.trial.id for m in members)}")
    pk = packing.stack([m.run for m in members])
    if pk.conv_ms:
        log(f"[{name}] convolutions {pk.conv}: " + ", ".join(
            f"{c} {ms:.2f} ms" for c, ms in pk.conv_ms.items()) + " per forward and backward pass")
    for g, m in enumerate(members):                  # resumed at its last epoch already
        if m.run.epoch >= m.run.cfg.train.epochs:
            _complete(pk, g, m, test)
    while any(pk.active):
        losses = _epoch(pk, members, train_x)
        ok = packing.finite(pk)
        evaluated = False
        for g, m in enumerate(members):
            if pk.active[g]:
                ok[g] = ok[g] and math.isfinite(losses[g])
                evaluated |= _end_member_epoch(pk, g, m, losses[g], ok[g], test, log)
        if evaluated and report and any(pk.active):
            report(summary({m.trial.id: m.last for m in members},
                           {m.trial.id: m.last for m in members if m.state != "running"}))
    return {m.trial.id: m.last for m in members}


def _epoch(pk: packing.Pack, members: list[Member], train_x) -> list[float]:
    t0 = time.perf_counter()
    for g, m in enumerate(members):
        if pk.active[g] and m.run.cfg.train.fault_oom_epoch == m.run.epoch + 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected by train.fault_oom_epoch)")
        if pk.active[g] and m.run.cfg.train.fault_nan_epoch == m.run.epoch + 1:
            packing.poison(pk, g)                    # a real NaN through the real step
    losses = packing.train_epoch(pk, train_x).tolist()
    dt = time.perf_counter() - t0
    for g, m in enumerate(members):
        if pk.active[g]:
            m.run.epoch += 1
            m.run.wall += dt
    return losses


def _end_member_epoch(pk, g, m: Member, loss, ok, test, log) -> bool:
    """The unpacked trial's end of epoch for member g; True when it was evaluated."""
    run = packing.sync(pk, g)
    if not ok:
        m.last = finish_diverged(run, m.trial, loss, m.last, log)
        pk.active[g], m.state = False, "diverged"
        return False
    m.last, evaluated = end_epoch(run, m.trial, loss, test, m.last)
    if run.epoch >= run.cfg.train.epochs:
        _complete(pk, g, m, test)
    return evaluated


def _complete(pk, g, m: Member, test) -> None:
    m.last = finish_completed(packing.sync(pk, g), m.trial, test, m.last, None)
    pk.active[g], m.state = False, "completed"


def summary(lasts: dict[str, dict], finished: dict[str, dict]) -> dict:
    """What the pack reports to Tune: its furthest epoch, the members' mean EVLB, counts."""
    rows = [r for r in lasts.values() if r]
    evlbs = [r["evlb"] for r in rows if r.get("evlb") is not None]
    return {"epoch": max((r["epoch"] for r in rows), default=0),
            "evlb": sum(evlbs) / len(evlbs) if evlbs else float("nan"),
            "members": len(lasts), "finished": len(finished)}
