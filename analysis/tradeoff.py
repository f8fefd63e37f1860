"""Reconstruction against disentanglement, with the Pareto-optimal trials marked.

Sec. 8: raising the (equivalent) noise variance lowers kl_qz_pz (Def. 4, how far
the aggregate posterior is from the prior) and the used-factor count, at the
price of reconstruction (EVLB, Eq. 13; recon_mse). A trial is Pareto-optimal
when no other trial is at least as good on every objective and better on one.
`pareto_mask` is the one implementation, shared with the Optuna search.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from analysis import load

Direction = Literal["max", "min"]
OBJECTIVES: dict[str, Direction] = {"evlb": "max", "kl_qz_pz": "min"}
COLUMNS = ["trial_id", "config_key", "state", "dataset", "noise", "beta", "sigma2",
           "equivalent_sigma2", "latent_dim", "seed", "epoch", "evlb", "recon_mse", "mi_xz",
           "kl_qz_pz", "n_used_factors"]


def _costs(frame: pl.DataFrame, objectives: dict[str, Direction]) -> np.ndarray:
    """Objectives as costs to minimise [N, K]; a missing or NaN value is +inf."""
    cols = []
    for name, direction in objectives.items():
        if direction not in ("max", "min"):
            raise ValueError(f"pareto_mask: objective {name!r} has direction {direction!r}; "
                             "allowed: 'max' or 'min'")
        if name not in frame.columns:
            raise ValueError(f"pareto_mask: no column {name!r}; columns: "
                             f"{', '.join(frame.columns)}")
        v = frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy().copy()
        cols.append(-v if direction == "max" else v)
    c = np.column_stack(cols) if cols else np.zeros((frame.height, 0))
    c[~np.isfinite(c)] = np.inf
    return c


def pareto_mask(frame: pl.DataFrame | pl.LazyFrame, objectives: dict[str, Direction],
                chunk: int = 1024) -> pl.Series:
    """Boolean Series, True for the rows no other row dominates on `objectives`.

    `objectives` maps a column to 'max' or 'min'. Rows with a missing or non-finite
    objective are never optimal; ties (equal on every objective) are all kept.
    """
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    c = _costs(frame, objectives)                                    # [N, K]
    finite = np.isfinite(c).all(1)
    keep = finite.copy()
    cf = c[finite]
    for start in range(0, len(cf), chunk):
        block = cf[start:start + chunk, None, :]                     # [B, 1, K]
        dominated = ((cf[None] <= block).all(2) & (cf[None] < block).any(2)).any(1)
        keep[np.flatnonzero(finite)[start:start + chunk]] = ~dominated
    return pl.Series("pareto", keep)


def tradeoff(trials: pl.LazyFrame, objectives: dict[str, Direction] | None = None,
             states: tuple[str, ...] = load.USABLE) -> pl.DataFrame:
    """Per usable trial (last epoch): reconstruction and disentanglement, `pareto` flagged."""
    frame = (trials.filter(pl.col("state").is_in(states)).select(COLUMNS)
             .sort("evlb", descending=True, nulls_last=True).collect())
    return frame.with_columns(pareto_mask(frame, objectives or OBJECTIVES))
