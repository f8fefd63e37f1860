"""analysis/metrics.parquet: one row per trial with ground-truth factors, one column per score.

Codes-based metrics read the trial's codes table at its last evaluation (`mu`,
`truth`); FactorVAE and BetaVAE re-encode rendered images with the trial's latest
checkpoint. A metric that cannot be computed for a trial leaves its columns null
and says why in `not_applicable` ("factorvae: mnist data have no ground-truth
factors"). Every metric takes its own generator seeded from `seed`, so adding or
dropping one leaves the others' values unchanged.
"""
from __future__ import annotations

import time

import numpy as np
import polars as pl

from analysis import load
from analysis.metrics import METRICS, stream
from analysis.metrics.truth import renderer_and_encoder

COLUMNS = tuple(c for m in METRICS.values() for c in m.columns)      # each metric its own
SCHEMA = {"trial_id": pl.String, "config_key": pl.String, "seed": pl.Int64,
          "points": pl.Int64, **{c: pl.Float64 for c in COLUMNS}, "not_applicable": pl.String}


def trial_inputs(root: str, study: str) -> pl.DataFrame:
    """Per usable trial: config, seed, codes mu and truth at the last epoch, used indices."""
    trials = load.trials(root, study).filter(pl.col("state").is_in(load.USABLE))
    used = (load.factors(root, study).filter(pl.col("used")).group_by("trial_id", "epoch")
            .agg(pl.col("factor").sort().alias("used_idx")))
    codes = (load.codes(root, study).sort("point").group_by("trial_id", "epoch")
             .agg("mu", "truth"))
    return (trials.select("trial_id", "epoch", "config_key", "seed", "config")
            .join(codes, on=["trial_id", "epoch"], how="left")
            .join(used, on=["trial_id", "epoch"], how="left")
            .sort("config_key", "seed", "trial_id").collect())


def _arrays(t: dict) -> tuple[np.ndarray, np.ndarray] | str:
    if not t["mu"]:
        return "no stored codes (eval.codes_points = 0?)"
    if any(v is None for v in t["truth"]):
        return "no ground-truth factors in the codes table"
    return np.asarray(t["mu"], dtype=np.float64), np.asarray(t["truth"], dtype=np.float64)


def run_metric(name: str, t: dict, codes, made, seed: int) -> dict | str:
    """One metric's values for one trial, or why it does not apply."""
    m = METRICS[name]
    rng = stream(seed, name)
    if m.kind == "codes":
        return codes if isinstance(codes, str) else m.fn(*codes, rng, **m.hparams)
    return made if isinstance(made, str) else m.fn(*made, rng, **m.hparams)


def trial_row(root: str, study: str, t: dict, names, seed: int, costs: dict) -> dict:
    codes = _arrays(t)
    needs_render = any(METRICS[n].kind == "render" for n in names)
    made = renderer_and_encoder(load.store(root, study), t["trial_id"], t["config"]) \
        if needs_render else None
    row = {"trial_id": t["trial_id"], "config_key": t["config_key"], "seed": t["seed"],
           "points": None if isinstance(codes, str) else len(codes[0])}
    missing = []
    for name in names:
        t0 = time.perf_counter()
        out = run_metric(name, t, codes, made, seed)
        costs.setdefault(name, []).append(time.perf_counter() - t0)
        if isinstance(out, str):
            missing.append(f"{name}: {out}")
        else:
            row.update({k: v for k, v in out.items() if k in SCHEMA})
    row["not_applicable"] = "; ".join(missing) or None
    return row


def metrics_table(root: str, study: str, names=None, seed: int = 0,
                  costs: dict | None = None, log=None) -> pl.DataFrame:
    """The table for `names` (default: METRICS' DEFAULT); `costs` collects seconds per metric."""
    from analysis.metrics import ALIASES, DEFAULT

    names = DEFAULT if names is None else tuple(ALIASES.get(n, n) for n in names)
    costs = {} if costs is None else costs
    rows = []
    for t in trial_inputs(root, study).iter_rows(named=True):
        rows.append(trial_row(root, study, t, names, seed, costs))
        if log:
            log(f"metrics: {len(rows)} trials")
    return pl.DataFrame(rows, schema=SCHEMA)


def cost_lines(costs: dict) -> list[str]:
    """'mig: 0.41 s per trial (median of 12)' per metric."""
    return [f"{n}: {np.median(v):.2f} s per trial (median of {len(v)})" for n, v in costs.items()]
