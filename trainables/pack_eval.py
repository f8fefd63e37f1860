"""A pack's evaluation and writes: the members' networks evaluated in vmapped passes,
the rest of each member's end of epoch handed to the background writer.

`evaluate` runs `train.evaluate`'s network passes for several members at once (one
vmapped pass per test chunk, the chunk shared, each member's eps drawn from its own
evaluation generator as the unpacked trial draws it). `submit` hands the writer's
thread what follows: the indicators (with the same generator, continued), the
scikit-learn metrics, the rows, the segment and the checkpoint, all through
`train`'s own functions on a snapshot of the member's run, so its rows and
checkpoints are those of the trial run alone (tests/test_pack.py). The member's
`Run` must not change while its job waits: `pack_run` flushes the writer before it
syncs members again, so the jobs of one epoch overlap the training of the next.

A member's storage writes are `write` (through its trial handle), nowhere else.
"""
from __future__ import annotations

import copy

import torch

from trainables import data as datasets
from trainables.pack import Pack
from resultstore.trial import TrialHandle, checkpoint_bytes
from trainables.train import Run, eval_generator, evaluation_rows, state_dict, with_indicators
from trainables.vae import kl_to_prior


@torch.no_grad()
def evaluate(pack: Pack, test: datasets.Data, rows: list[int], chunk: int = 500) -> list[dict]:
    """Members `rows` (row indices) evaluated together: [len(rows)] ev dicts as
    `train.evaluate` returns them before its indicators, with their generator ("gen")."""
    runs = [pack.runs[g] for g in rows]
    n, H = min(runs[0].cfg.eval.max_points, len(test)), runs[0].cfg.model.latent_dim
    params, buffers = _rows(pack, rows)
    gens = [eval_generator(r) for r in runs]
    evlb = torch.zeros(len(rows), dtype=torch.float64, device=pack.device)     # [R]
    mse = torch.zeros_like(evlb)                                               # [R]
    mus, logvars = [], []
    for i in range(0, n, chunk):
        xb = datasets.as_float(test.x[i:min(i + chunk, n)])                    # [c, C, h, w]
        eps = torch.stack([torch.randn(xb.shape[0], H, generator=g, device=pack.device)
                           for g in gens])                                     # [R, c, H]
        mu, logvar, log_lik, err = pack.eval_fn(params, buffers, xb, eps)      # [R, c, H], [R, c]
        evlb += (log_lik - kl_to_prior(mu, logvar).sum(2)).sum(1).double()     # Eq. 13, beta = 1
        mse += err.sum(1).double()
        mus.append(mu)
        logvars.append(logvar)
    mu, logvar = torch.cat(mus, 1), torch.cat(logvars, 1)                      # [R, n, H]
    evlb, mse = evlb.tolist(), mse.tolist()
    return [{"evlb": evlb[j] / n, "recon_mse": mse[j] / n, "mu": mu[j], "logvar": logvar[j],
             "eval_points": n, "gen": gens[j]} for j in range(len(rows))]


def _rows(pack: Pack, rows: list[int]) -> tuple[dict, dict]:
    """The weights and noise parameters of members `rows` ([R, ...]; views when all)."""
    if rows == list(range(pack.G)):
        return pack.params, pack.buffers
    idx = torch.tensor(rows, dtype=torch.long, device=pack.device)
    flat = pack.flat.detach().index_select(0, idx)                             # [R, P]
    parts = flat.split([sh.numel() for _, _, sh in pack.layout], dim=1)
    params = {n: part.view(len(rows), *sh) for (n, _, sh), part in zip(pack.layout, parts)}
    return params, {k: b.index_select(0, idx) for k, b in pack.buffers.items()}


def submit(member, loss: float, test: datasets.Data, ev: dict | None) -> None:
    """The member's end of epoch after its evaluation (`train.end_epoch`'s cadence): its
    rows and checkpoint, computed and written on the writer's thread."""
    run: Run = member.run
    cfg = run.cfg
    checkpoint = run.epoch % cfg.checkpoint.every == 0 or run.epoch == cfg.train.epochs
    first = run.flushed + 1
    if ev is not None or checkpoint:
        run.flushed = run.epoch
    state = state_dict(run) if checkpoint else None    # references: serialised by the writer
    if ev is not None or state is not None:
        run.writer.submit(_record, member, copy.copy(run), loss, test, ev, first, state)


def _record(member, snap: Run, loss, test, ev, first, state) -> None:
    """On the writer's thread: indicators, metrics, rows, then the segment and checkpoint."""
    rows = {}
    if ev is not None:
        ev = with_indicators(snap, {k: v for k, v in ev.items() if k != "gen"}, ev["gen"])
        rows, member.last = evaluation_rows(snap, member.trial.store.study, member.trial.id, ev,
                                            loss, test)
        member.run.last_mi = snap.last_mi
    ckpt = None if state is None else (snap.epoch, checkpoint_bytes(state),
                                       snap.cfg.checkpoint.keep)
    write(member.trial, rows, first, snap.epoch, ckpt)


def write(trial: TrialHandle, rows: dict, first: int, last: int, checkpoint: tuple | None
          ) -> None:
    """A member's rows of epochs first..last as one segment of its own trial, and the
    checkpoint taken after them, in the unpacked trial's format: one write, one fence check."""
    if any(rows.values()) or checkpoint is not None:
        trial.append(rows, first, last, checkpoint)
