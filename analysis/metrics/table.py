"""analysis/metrics.parquet: one row per usable trial, one column per score.

Codes-based metrics read the trial's codes table at its last evaluation (`mu`,
`truth`); FactorVAE and BetaVAE re-encode rendered images with the trial's latest
checkpoint; UDR compares the trial's codes with its configuration's other seeds' (`mu`
on common evaluation points, no ground truth needed), once per configuration. A metric that cannot be computed for a trial leaves its columns null
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
    """Per usable trial: config, seed, codes mu, truth and evaluation point index at the last
    epoch, used indices."""
    trials = load.trials(root, study).filter(pl.col("state").is_in(load.USABLE))
    used = (load.factors(root, study).filter(pl.col("used")).group_by("trial_id", "epoch")
            .agg(pl.col("factor").sort().alias("used_idx")))
    codes = (load.codes(root, study).sort("point").group_by("trial_id", "epoch")
             .agg("index", "mu", "truth"))
    return (trials.select("trial_id", "epoch", "config_key", "seed", "config")
            .join(codes, on=["trial_id", "epoch"], how="left")
            .join(used, on=["trial_id", "epoch"], how="left")
            .sort("config_key", "seed", "trial_id").collect())


NO_CODES = "no stored codes (eval.codes_points = 0?)"


def _arrays(t: dict) -> tuple[np.ndarray, np.ndarray] | str:
    if not t["mu"]:
        return NO_CODES
    if any(v is None for v in t["truth"]):
        return "no ground-truth factors in the codes table"
    return np.asarray(t["mu"], dtype=np.float64), np.asarray(t["truth"], dtype=np.float64)


def seed_results(inputs: pl.DataFrame, names, seed: int, costs: dict) -> dict:
    """{(name, trial_id): values or why not} of the "seeds" metrics among `names`, computed
    once per configuration over its trials with stored codes; a configuration's cost is
    shared equally by its trials."""
    out = {}
    has_codes = pl.col("mu").list.len().fill_null(0) > 0
    for name in [n for n in names if METRICS[n].kind == "seeds"]:
        m = METRICS[name]
        for _, group in inputs.group_by("config_key", maintain_order=True):
            coded, bare = group.filter(has_codes), group.filter(~has_codes)
            out.update({(name, tid): NO_CODES for tid in bare["trial_id"]})
            t0 = time.perf_counter()
            got = m.fn(list(coded.iter_rows(named=True)), stream(seed, name), **m.hparams)
            share = (time.perf_counter() - t0) / max(coded.height, 1)
            costs.setdefault(name, []).extend([share] * coded.height)
            out.update({(name, tid): r for tid, r in zip(coded["trial_id"], got)})
    return out


def run_metric(name: str, t: dict, codes, made, seed: int) -> dict | str:
    """One codes or render metric's values for one trial, or why it does not apply."""
    m = METRICS[name]
    rng = stream(seed, name)
    if m.kind == "codes":
        return codes if isinstance(codes, str) else m.fn(*codes, rng, **m.hparams)
    return made if isinstance(made, str) else m.fn(*made, rng, **m.hparams)


def trial_row(root: str, study: str, t: dict, names, seed: int, costs: dict,
              seeds: dict) -> dict:
    """The trial's row: its codes and render metrics computed here, its seeds metrics taken
    from `seeds` (`seed_results`)."""
    codes = _arrays(t)
    needs_render = any(METRICS[n].kind == "render" for n in names)
    made = renderer_and_encoder(load.store(root, study), t["trial_id"], t["config"]) \
        if needs_render else None
    row = {"trial_id": t["trial_id"], "config_key": t["config_key"], "seed": t["seed"],
           "points": len(t["mu"]) if t["mu"] else None}
    missing = []
    for name in names:
        t0 = time.perf_counter()
        if METRICS[name].kind == "seeds":
            out = seeds[name, t["trial_id"]]
        else:
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
    inputs = trial_inputs(root, study)
    seeds = seed_results(inputs, names, seed, costs)
    rows = []
    for t in inputs.iter_rows(named=True):
        rows.append(trial_row(root, study, t, names, seed, costs, seeds))
        if log:
            log(f"metrics: {len(rows)} trials")
    return pl.DataFrame(rows, schema=SCHEMA)


def cost_lines(costs: dict) -> list[str]:
    """'mig: 0.41 s per trial (median of 12)' per metric."""
    return [f"{n}: {np.median(v):.2f} s per trial (median of {len(v)})" for n, v in costs.items()]
