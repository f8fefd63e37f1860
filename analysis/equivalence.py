"""Factor equivalence (Theorems 4-5) measured on a study's `codes` table, and App. C.

- across seeds: trials of one configuration that differ only in seed, their used
  factors' posterior means on the same evaluation points aligned by an orthogonal
  Procrustes fit and by the best signed permutation, each fitted on one half of the
  points and scored (R^2) on the other; the same on row-shuffled pairs (the null:
  unrelated codes); per configuration the mean Procrustes-minus-permutation
  difference over seed pairs with a 95% interval over seeds (pairs sharing a seed
  are not independent: a leave-one-seed-out jackknife, `stats.pair_interval`), and
  a verdict only where the interval of its excess over the null excludes 0 (`seed_agreement`);
- against ground truth (data with known factors): R^2 of the best linear map from
  the used factors to the true ones, and the axis alignment of the fitted rotation;
- the Higgins et al. metric per trial, and under random rotations of its used
  factors (App. C), re-encoding generated pairs with the trial's checkpoint.
"""
from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import polars as pl

from analysis import align, load, stats
from analysis.higgins import GroundTruth, compute_higgins

PAIR_SCHEMA = {"config_key": pl.String, "trial_a": pl.String, "trial_b": pl.String,
               "seed_a": pl.Int64, "seed_b": pl.Int64, "k_a": pl.Int64, "k_b": pl.Int64,
               "points": pl.Int64, "procrustes_r2": pl.Float64, "permutation_r2": pl.Float64,
               "null_procrustes_r2": pl.Float64, "null_permutation_r2": pl.Float64}
TRUTH_SCHEMA = {"trial_id": pl.String, "config_key": pl.String, "seed": pl.Int64,
                "n_used": pl.Int64, "true_factors": pl.Int64, "linear_r2": pl.Float64,
                "axis_alignment": pl.Float64}
HIGGINS_SCHEMA = {"trial_id": pl.String, "config_key": pl.String, "seed": pl.Int64,
                  "n_used": pl.Int64, "true_factors": pl.Int64, "setting": pl.String,
                  "train_accuracy": pl.Float64, "higgins": pl.Float64,
                  "rotated": pl.List(pl.Float64)}


def used_factors(factors: pl.LazyFrame) -> pl.LazyFrame:
    """(trial_id, epoch, used: list of used factor indices) from the factors table."""
    return (factors.filter(pl.col("used")).unique(["trial_id", "epoch", "factor"])
            .group_by("trial_id", "epoch")
            .agg(pl.col("factor").sort().alias("used_idx")))


def trial_codes(rows: pl.LazyFrame, factors: pl.LazyFrame, codes: pl.LazyFrame) -> pl.DataFrame:
    """Per counted trial (`load.counted`) with codes at its epoch: config, seed, used
    indices, mu, truth."""
    meta = rows.select("trial_id", "epoch", "config_key", "seed", "true_factors")
    per_trial = codes.sort("point").group_by("trial_id", "epoch").agg("index", "mu", "truth")
    return (meta.join(per_trial, on=["trial_id", "epoch"], how="inner")
            .join(used_factors(factors), on=["trial_id", "epoch"], how="left")
            .sort("config_key", "seed").collect())


def _matrix(lists: list) -> np.ndarray:
    return np.asarray(lists, dtype=np.float64)


MAX_SEEDS = 20          # seed pairs per configuration: among its first 20 seeds (190 pairs)


def _arrays(row: dict) -> dict:
    """A trial's codes as arrays, converted once for all its pairs."""
    return {**row, "mu": np.asarray(row["mu"], dtype=np.float64),
            "index": np.asarray(row["index"])}


def _common(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Used-factor means of two trials on the evaluation points both hold ([M, Ka], [M, Kb])."""
    _, ia, ib = np.intersect1d(a["index"], b["index"], assume_unique=True, return_indices=True)
    order = np.argsort(ia)                         # in a's point order
    ma, mb = a["mu"][ia[order]], b["mu"][ib[order]]
    return ma[:, a["used_idx"] or []], mb[:, b["used_idx"] or []]


def pair_scores(za: np.ndarray, zb: np.ndarray, seed: int = 0) -> dict:
    """Held-out R^2 of both alignments for a pair, and for the pair with zb's rows shuffled
    (the null: the same codes, unrelated point by point)."""
    rng = np.random.default_rng(seed)
    shuffled = zb[rng.permutation(len(zb))]
    out = {}
    for prefix, b in (("", zb), ("null_", shuffled)):
        for name, fit in (("procrustes", align.procrustes), ("permutation",
                                                              align.signed_permutation)):
            out[f"{prefix}{name}_r2"] = align.heldout_r2(za, b, fit, np.random.default_rng(seed))
    return out


def seed_pairs(per_trial: pl.DataFrame, seed: int = 0, max_seeds: int = MAX_SEEDS) -> pl.DataFrame:
    """Held-out Procrustes vs signed-permutation R^2 (and the null's) for every pair of seeds
    of one configuration, among its first `max_seeds` seeds (pairs grow as seeds squared;
    20 seeds give 190 pairs, plenty for the interval over seeds)."""
    rows = []
    for (key,), group in per_trial.group_by("config_key", maintain_order=True):
        first = sorted(set(group["seed"].to_list()))[:max_seeds]
        group = group.filter(pl.col("seed").is_in(first))
        for a, b in combinations([_arrays(r) for r in group.iter_rows(named=True)], 2):
            if a["seed"] == b["seed"]:
                continue
            za, zb = _common(a, b)
            ok = za.shape[1] > 0 and zb.shape[1] > 0 and len(za) >= 8
            scores = pair_scores(za, zb, seed) if ok else {}
            rows.append({"config_key": key, "trial_a": a["trial_id"], "trial_b": b["trial_id"],
                         "seed_a": a["seed"], "seed_b": b["seed"], "k_a": za.shape[1],
                         "k_b": zb.shape[1], "points": len(za), **scores})
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def verdict(excess: tuple, perm_excess: tuple) -> str:
    """Theorems 4-5's verdict from the t-intervals (mean, low, high, n) of (a) the
    Procrustes-minus-permutation difference's excess over the null and (b) the
    permutation R^2's excess over the null; '' (no verdict) where neither excludes 0."""
    _, lo, hi, n = excess
    if n < 2 or not np.isfinite(lo):
        return ""
    if lo > 0:
        return "rotation, not a signed permutation"
    if perm_excess[1] > 0 and hi < 0.05:
        return "signed permutation"
    return ""


def seed_agreement(pairs: pl.DataFrame) -> pl.DataFrame:
    """Per configuration: n seeds and their pairs, the held-out Procrustes-minus-permutation
    difference (mean over pairs, 95% interval over seeds: `stats.pair_interval`), the null's
    mean difference, and the verdict."""
    rows = []
    for (key,), g in pairs.drop_nulls("procrustes_r2").group_by("config_key",
                                                                maintain_order=True):
        sa, sb = g["seed_a"].to_numpy(), g["seed_b"].to_numpy()
        diff = (g["procrustes_r2"] - g["permutation_r2"]).to_numpy()
        null = (g["null_procrustes_r2"] - g["null_permutation_r2"]).to_numpy()
        excess = stats.pair_interval(diff - null, sa, sb)
        perm = stats.pair_interval((g["permutation_r2"] - g["null_permutation_r2"]).to_numpy(),
                                   sa, sb)
        m, lo, hi, n = stats.pair_interval(diff, sa, sb)
        rows.append({"config_key": key, "seeds": n, "pairs": g.height,
                     "procrustes_r2": g["procrustes_r2"].mean(),
                     "permutation_r2": g["permutation_r2"].mean(),
                     "diff_mean": m, "diff_low": lo, "diff_high": hi,
                     "null_diff_mean": float(np.mean(null)),
                     "excess_low": excess[1], "excess_high": excess[2],
                     "verdict": verdict(excess, perm)})
    schema = {"config_key": pl.String, "seeds": pl.Int64, "pairs": pl.Int64,
              "procrustes_r2": pl.Float64, "permutation_r2": pl.Float64,
              "diff_mean": pl.Float64, "diff_low": pl.Float64, "diff_high": pl.Float64,
              "null_diff_mean": pl.Float64, "excess_low": pl.Float64,
              "excess_high": pl.Float64, "verdict": pl.String}
    return pl.DataFrame(rows, schema=schema).with_columns(pl.col(pl.Float64).fill_nan(None))


def ground_truth(per_trial: pl.DataFrame) -> pl.DataFrame:
    """Per trial with known factors: R^2 of the best linear map from the used factors to the
    true ones, and the axis alignment of the fitted rotation."""
    rows = []
    for t in per_trial.filter(pl.col("true_factors").is_not_null()).iter_rows(named=True):
        if any(v is None for v in t["truth"]):
            continue
        z, y = _matrix(t["mu"])[:, t["used_idx"] or []], _matrix(t["truth"])
        ok = z.shape[1] > 0 and len(z) > 2 * (z.shape[1] + 2)      # fitted on half
        rows.append({"trial_id": t["trial_id"], "config_key": t["config_key"], "seed": t["seed"],
                     "n_used": z.shape[1], "true_factors": t["true_factors"],
                     "linear_r2": align.linear_r2(z, y) if ok else None,
                     "axis_alignment": align.axis_alignment(z, y) if ok else None})
    return pl.DataFrame(rows, schema=TRUTH_SCHEMA)


def trial_truth(root: str, study: str, trial_id: str, config: str):
    """(GroundTruth, representation_fn) re-encoding generated data with the trial's checkpoint."""
    import torch

    from trainables.config import TrialConfig
    from trainables.data import intrinsic_phi
    from trainables.vae import VAE

    cfg = TrialConfig.from_dict(json.loads(config))
    state = load.store(root, study).trial(trial_id).load_checkpoint()
    if cfg.dataset.name != "intrinsic" or state is None:
        return None
    phi, _ = intrinsic_phi(cfg.dataset)
    vae = VAE(tuple(phi(torch.zeros(1, cfg.dataset.factors)).shape[1:]), cfg)
    vae.load_state_dict(state["vae"])
    vae.eval()

    @torch.no_grad()
    def encode(x: torch.Tensor) -> np.ndarray:
        return torch.cat([vae.encoder(c)[0] for c in x.split(4096)]).double().numpy()  # [N, H]

    render = lambda y: phi(torch.as_tensor(y, dtype=torch.float32))             # noqa: E731
    return GroundTruth(cfg.dataset.factors, render), encode


def _score_trial(job: tuple) -> dict | None:
    """One trial's Higgins metric (run in a worker process): None without a checkpoint."""
    root, study, t, seed, rotations, hparams = job
    import torch
    torch.set_num_threads(1)
    made = trial_truth(root, study, t["trial_id"], t["config"])
    if made is None:
        return None
    used = np.asarray(t["used_idx"] or [], dtype=int)
    out = compute_higgins(*made, np.random.default_rng(seed), rotations=rotations,
                          rotate_dims=used, **hparams)
    return {"trial_id": t["trial_id"], "config_key": t["config_key"], "seed": t["seed"],
            "n_used": len(used), "true_factors": t["true_factors"],
            "train_accuracy": out["train_accuracy"], "higgins": out["eval_accuracy"],
            "rotated": out["rotated"]}


def higgins_table(root: str, study: str, rows: pl.LazyFrame, factors: pl.LazyFrame,
                  seed: int = 0, rotations: int = 10, setting: str = "fast",
                  workers: int | None = None, progress: bool = False,
                  seeds_per_config: int | None = None, **hparams) -> pl.DataFrame:
    """Per intrinsic-data trial: the Higgins metric (`higgins`: eval accuracy; and the train
    accuracy) in the named setting of `analysis.higgins.SETTINGS`, and its eval accuracy
    under random rotations of the trial's used factors (App. C). Trials are scored in
    parallel worker processes; trials without a checkpoint are left out; with
    `seeds_per_config`, only the lowest that many seeds of each configuration."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from tqdm import tqdm

    from analysis.higgins import SETTINGS
    hp = {**SETTINGS[setting], **hparams}
    meta = (rows.filter(pl.col("dataset") == "intrinsic")
            .join(used_factors(factors), on=["trial_id", "epoch"], how="left")
            .select("trial_id", "config_key", "seed", "true_factors", "config", "used_idx")
            .sort("config_key", "seed").collect())
    if seeds_per_config is not None:
        meta = meta.group_by("config_key", maintain_order=True).head(seeds_per_config)
    jobs = [(root, study, t, seed, rotations, hp) for t in meta.iter_rows(named=True)]
    workers = min(workers or os.cpu_count() or 1, max(len(jobs), 1))
    bar = dict(total=len(jobs), desc=f"Higgins metric ({setting})", disable=not progress,
               unit="trial")
    if workers <= 1 or len(jobs) <= 1:
        rows = [_score_trial(j) for j in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            rows = list(tqdm(pool.map(_score_trial, jobs, chunksize=4), **bar))
    rows = [{**r, "setting": setting} for r in rows if r is not None]
    return pl.DataFrame(rows, schema=HIGGINS_SCHEMA)


def _stats(expr: pl.Expr, name: str) -> list[pl.Expr]:
    return [expr.mean().alias(f"{name}_mean"), expr.std().alias(f"{name}_std"),
            expr.min().alias(f"{name}_min"), expr.max().alias(f"{name}_max")]


def higgins_spread(table: pl.DataFrame) -> pl.DataFrame:
    """Per configuration: the metric's spread across seeds (mean with a 95% t-interval,
    train accuracy beside it) and across rotations (App. C)."""
    rotated = pl.col("rotated").list.explode(keep_nulls=False, empty_as_null=False)
    out = (table.group_by("config_key")
           .agg(pl.len().alias("n"), pl.col("setting").first(),
                (pl.col("n_used") == 0).sum().alias("no_used_factor"),
                pl.col("train_accuracy").mean().alias("train_accuracy_mean"),
                *_stats(pl.col("higgins"), "seeds"), *_stats(rotated, "rotations"))
           .sort("config_key"))
    return out.with_columns(stats.half_width(pl.col("seeds_std"), pl.col("n"))
                            .alias("seeds_half"))
