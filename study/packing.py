"""Packs: a grid's trials grouped so that one Tune trial trains several (trainables/pack.py).

Trials that share everything but beta, sigma2, seed and learning rate (the data,
architecture, latent size, epochs, batch size, noise kind, evaluation and
checkpoint cadence) can train in one vectorised step. `partition` groups the
grid by what members must share, in grid order, and cuts each group into packs
of at most `size` members of near-equal sizes; `auto` is at most AUTO_MAX.
Packs are named by the hash of their members' ids, so the same grid gives the
same packs on every run and resume: a resumed study partitions the whole grid, its
finished trials included, and runs each pack's unfinished members under the pack's
first name (`pack_space(..., todo)`), never a new cut of what is left.
"""
from __future__ import annotations

import math

from trainables.config import TrialConfig
from trainables.pack_run import pack_id, shared_key

AUTO_MAX = 32          # members per pack with `pack: auto`: fills a GPU with App. D models


Trial = tuple[str, TrialConfig]          # (trial id as study.json records it, config)


def partition(trials: list[Trial], size: int | str) -> list[list[Trial]]:
    """Trials -> packs: same shared key, at most `size` (or AUTO_MAX) members each."""
    cap = AUTO_MAX if size == "auto" else int(size)
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        groups.setdefault(shared_key(t[1]), []).append(t)
    packs = []
    for group in groups.values():
        n = math.ceil(len(group) / cap)
        bounds = [round(i * len(group) / n) for i in range(n + 1)]
        packs += [group[a:b] for a, b in zip(bounds, bounds[1:])]
    return packs


def describe(packs: list[list[Trial]]) -> str:
    sizes = sorted({len(p) for p in packs})
    trials = sum(len(p) for p in packs)
    return (f"{trials} trials in {len(packs)} pack{'s' if len(packs) != 1 else ''} of "
            f"{'-'.join(map(str, (sizes[0], sizes[-1]) if len(sizes) > 1 else sizes))}")


def pack_space(packs: list[list[Trial]], todo: set[str] | None = None) -> list[dict]:
    """Tune's grid: one entry per pack with unfinished members (all with todo None), named
    by all its members' ids, listing the ids and configs of those in `todo`."""
    out = []
    for p in packs:
        members = [{"id": tid, "config": c.to_dict()} for tid, c in p
                   if todo is None or tid in todo]
        if members:
            out.append({"id": pack_id([tid for tid, _ in p]), "members": members})
    return out
