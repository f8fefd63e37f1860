"""Factor equivalence (Theorems 4-5) measured on a study's `codes` table, and App. C.

- across seeds: trials of one configuration that differ only in seed, their used
  factors' posterior means on the same evaluation points aligned by an orthogonal
  Procrustes fit and by the best signed permutation, each fitted on one half of the
  points and scored (R^2) on the other (`agreement.pair_statistic`); per configuration
  the mean Procrustes-minus-permutation difference over seed pairs with a 95% interval
  over seeds, and an equivalence verdict with a margin on both sides whose error rates
  were measured on codes of known truth (`agreement`, `calibration`, docs/analysis.md);
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

from analysis import agreement, align, load, stats
from analysis.higgins import GroundTruth, compute_higgins

PAIR_SCHEMA = {"config_key": pl.String, "trial_a": pl.String, "trial_b": pl.String,
               "seed_a": pl.Int64, "seed_b": pl.Int64, "k_a": pl.Int64, "k_b": pl.Int64,
               "points": pl.Int64, "procrustes_r2": pl.Float64, "permutation_r2": pl.Float64}
AGREEMENT_SCHEMA = {"config_key": pl.String, "seeds": pl.Int64, "pairs": pl.Int64,
                    "procrustes_r2": pl.Float64, "permutation_r2": pl.Float64,
                    "diff_mean": pl.Float64, "diff_low": pl.Float64, "diff_high": pl.Float64,
                    "procrustes_low": pl.Float64, "procrustes_high": pl.Float64,
                    "level": pl.Float64, "verdict": pl.String}
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


def code_arrays(row: dict) -> dict:
    """A trial's codes as arrays, converted once for all its pairs."""
    return {**row, "mu": np.asarray(row["mu"], dtype=np.float64),
            "index": np.asarray(row["index"])}


def common_codes(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Used-factor means of two trials on the evaluation points both hold ([M, Ka], [M, Kb])."""
    _, ia, ib = np.intersect1d(a["index"], b["index"], assume_unique=True, return_indices=True)
    order = np.argsort(ia)                         # in a's point order
    ma, mb = a["mu"][ia[order]], b["mu"][ib[order]]
    return ma[:, a["used_idx"] or []], mb[:, b["used_idx"] or []]


def pair_rng(seed: int, key: str, a: int, b: int) -> np.random.Generator:
    """Each pair's own split of the points: independent across pairs, reproducible."""
    import zlib
    return np.random.default_rng([seed, zlib.crc32(key.encode()), a, b])


def seed_pairs(per_trial: pl.DataFrame, seed: int = 0, max_seeds: int = MAX_SEEDS) -> pl.DataFrame:
    """Held-out Procrustes vs signed-permutation R^2 for every pair of seeds
    of one configuration, among its first `max_seeds` seeds (pairs grow as seeds squared;
    20 seeds give 190 pairs, plenty for the interval over seeds)."""
    rows = []
    for (key,), group in per_trial.group_by("config_key", maintain_order=True):
        first = sorted(set(group["seed"].to_list()))[:max_seeds]
        group = group.filter(pl.col("seed").is_in(first))
        for a, b in combinations([code_arrays(r) for r in group.iter_rows(named=True)], 2):
            if a["seed"] == b["seed"]:
                continue
            za, zb = common_codes(a, b)
            ok = za.shape[1] > 0 and zb.shape[1] > 0 and len(za) >= 8
            scores = agreement.pair_statistic(za, zb, pair_rng(seed, key, a["seed"], b["seed"])) \
                if ok else {}
            rows.append({"config_key": key, "trial_a": a["trial_id"], "trial_b": b["trial_id"],
                         "seed_a": a["seed"], "seed_b": b["seed"], "k_a": za.shape[1],
                         "k_b": zb.shape[1], "points": len(za), **scores})
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def seed_agreement(pairs: pl.DataFrame, levels: dict[str, float] | None = None
                   ) -> pl.DataFrame:
    """Per configuration: n seeds and their pairs, mean held-out R^2 of both alignments, the
    Procrustes-minus-permutation difference (mean over pairs, interval over seeds), the
    Procrustes R^2's interval, their level, and the verdict (`agreement.decide`). Intervals
    are 95%, or a configuration's level in `levels` (a study that added seeds until the
    verdict was decided: the level of its last look, `analysis.sequential`)."""
    rows = []
    levels = levels or {}
    for (key,), g in pairs.drop_nulls("procrustes_r2").group_by("config_key",
                                                                maintain_order=True):
        level = levels.get(key, stats.LEVEL)
        ci = agreement.config_interval(g["procrustes_r2"], g["permutation_r2"],
                                       g["seed_a"].to_numpy(), g["seed_b"].to_numpy(), level)
        rows.append({"config_key": key, "seeds": ci["seeds"], "pairs": g.height,
                     "procrustes_r2": g["procrustes_r2"].mean(),
                     "permutation_r2": g["permutation_r2"].mean(),
                     **{k: ci[k] for k in ("diff_mean", "diff_low", "diff_high",
                                           "procrustes_low", "procrustes_high")},
                     "level": level, "verdict": agreement.decide(ci)})
    return (pl.DataFrame(rows, schema=AGREEMENT_SCHEMA)
            .with_columns(pl.col(pl.Float64).fill_nan(None)))


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
