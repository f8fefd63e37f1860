"""Benchmark: the analysis on a large generated study, Polars (lazy) against pandas.

Generates 1,000 trials x 50 evaluated epochs x 128 factors (6.4 M factor rows) in
the result store's format (one merged file per trial and table, status files, and
1% of trials with a duplicated epoch left by a crash window), then times

  - the intrinsic-dimension aggregation (Theorem 1's table) with Polars,
  - the same aggregation with pandas (pyarrow reader, drop_duplicates, merge, groupby),
  - every table of the report (`compute_tables`, no Higgins: it needs checkpoints),

and prints medians and the pandas/Polars ratio. Target: < 10 s for the Polars steps.

    .venv/bin/python bench/bench_analysis.py [--trials 1000] [--epochs 50] [--factors 128]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import intrinsic, load, report  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.store import SCHEMAS, ResultStore  # noqa: E402

STUDY = "bench"
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def configs(n: int) -> list[TrialConfig]:
    """Half specified noise (sigma2 x beta grid), half learned (beta grid); 10 seeds each."""
    out = []
    for i in range(n):
        seed, k = i % 10, i // 10
        noise = ({"kind": "specified", "sigma2": 0.0005 * (1 + k % 25), "beta": 1.0 + k // 25 % 2}
                 if i < n // 2 else {"kind": "learned", "beta": 0.5 + k % 50})
        out.append(TrialConfig.from_dict({"noise": noise, "train": {"seed": seed, "epochs": 50},
                                          "model": {"latent_dim": 128}}))
    return out


def trial_table(cfg: TrialConfig, tid: str, E: int, rng, skew: float = 0.0) -> pa.Table:
    s2 = cfg.noise.sigma2 * (rng.uniform(0.5, 2) if cfg.noise.kind == "learned" else 1)
    used = rng.integers(5, 40, E)
    cols = {"study": [STUDY] * E, "trial_id": [tid] * E, "epoch": np.arange(1, E + 1),
            "status": ["running"] * (E - 1) + ["completed"], "dataset": ["mnist"] * E,
            "noise": [cfg.noise.kind] * E, "beta": [cfg.noise.beta] * E, "sigma2": [s2] * E,
            "equivalent_sigma2": [cfg.noise.beta * s2] * E, "latent_dim": [128] * E,
            "seed": [cfg.train.seed] * E, "evlb": rng.normal(500, 50, E),
            "recon_mse": rng.uniform(0.01, 0.05, E), "kl_post_prior": rng.uniform(10, 30, E),
            "mi_xz": rng.uniform(5, 25, E), "kl_qz_pz": rng.uniform(0, 3, E),
            "kl_qstar_pz": rng.uniform(0, 3, E), "n_used_factors": used,
            "n_normal_variance_factors": 128 - used, "train_loss": rng.normal(-500, 10, E),
            "noise_pi": [None] * E, "noise_sigma2_k": [None] * E, "eval_points": [10000] * E,
            "used_threshold": [0.5] * E, "var_floor": [1e-6] * E, "true_factors": [None] * E,
            "config": [json.dumps(cfg.to_dict(), sort_keys=True)] * E,
            "code_version": ["bench"] * E, "host": ["h"] * E, "wall_time": np.arange(E) * 1.0,
            "written_at": [T0 + timedelta(seconds=e + skew) for e in range(E)]}
    return pa.table(cols, schema=SCHEMAS["trials"])


def factor_table(tid: str, E: int, H: int, rng) -> pa.Table:
    n = E * H
    mi = rng.exponential(0.4, n)
    return pa.table({"study": [STUDY] * n, "trial_id": [tid] * n,
                     "epoch": np.repeat(np.arange(1, E + 1), H), "factor": np.tile(np.arange(H), E),
                     "mi": mi, "post_var": rng.uniform(0, 1.05, n),
                     "qstar_var": rng.uniform(0, 2, n), "used": mi > 0.5},
                    schema=SCHEMAS["factors"])


def generate(root: str, n: int, E: int, H: int) -> None:
    st, rng = ResultStore(root, STUDY), np.random.default_rng(0)
    for i, cfg in enumerate(configs(n)):
        tid = f"t{i:05d}"
        for table, t in (("trials", trial_table(cfg, tid, E, rng)),
                         ("factors", factor_table(tid, E, H, rng))):
            Path(st.path(table, tid)).mkdir(parents=True, exist_ok=True)
            pq.write_table(t, st.path(table, tid, f"part-000001-{E:06d}.parquet"),
                           compression="zstd")
        if i % 100 == 7:                      # a crash window: the last epoch in a second file
            pq.write_table(trial_table(cfg, tid, E, rng, skew=-60).slice(E - 1),
                           st.path("trials", tid, f"part-{E:06d}-{E:06d}.parquet"))
        st.set_status(tid, "completed")


def pandas_intrinsic(root: str):
    """The same aggregation as `intrinsic.from_study`, in pandas."""
    import pandas as pd

    st = ResultStore(root, STUDY)
    trials = pq.read_table(st.path("trials")).to_pandas()
    trials = trials.sort_values("written_at").drop_duplicates(["trial_id", "epoch"], keep="last")
    last = trials[trials["epoch"] == trials.groupby("trial_id")["epoch"].transform("max")].copy()
    status = pd.DataFrame(st.all_status())[["trial_id", "state"]]
    last = last.merge(status, on="trial_id", how="left")
    last = last[last["state"].isin(["completed", "running"])]
    last["sigma2_cfg"] = last["config"].map(lambda c: json.loads(c)["noise"]["sigma2"])
    last["config_key"] = last["config"].map(load.config_key)
    f = pq.read_table(st.path("factors")).to_pandas()
    f = f.merge(last[["trial_id", "epoch"]], on=["trial_id", "epoch"])
    f = f.drop_duplicates(["trial_id", "epoch", "factor"])
    f["normal"] = (f["post_var"] - 1).abs() < 0.1
    counts = f.groupby(["trial_id", "epoch"]).agg(n_used=("used", "sum"),
                                                  n_normal=("normal", "sum")).reset_index()
    rows = last.merge(counts, on=["trial_id", "epoch"], how="left")
    return rows.groupby(intrinsic.GROUP, dropna=False).agg(
        seeds=("seed", "nunique"), equivalent_sigma2=("equivalent_sigma2", "mean"),
        n_used_mean=("n_used", "mean"), n_used_std=("n_used", "std"),
        n_used_min=("n_used", "min"), n_used_max=("n_used", "max"),
        n_normal_mean=("n_normal", "mean"), mi_xz_mean=("mi_xz", "mean"),
        kl_qz_pz_mean=("kl_qz_pz", "mean"), evlb_mean=("evlb", "mean")).reset_index()


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--factors", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        generate(root, a.trials, a.epochs, a.factors)
        print(f"generated {a.trials} trials x {a.epochs} epochs x {a.factors} factors = "
              f"{a.trials * a.epochs * a.factors:,} factor rows in {time.perf_counter() - t:.1f} s")
        pl_s, pl_out = timed(lambda: intrinsic.from_study(root, STUDY), a.repeats)
        pd_s, pd_out = timed(lambda: pandas_intrinsic(root), a.repeats)
        rep_s, tables = timed(lambda: report.compute_tables(root, STUDY, higgins=False), a.repeats)
        assert len(pl_out) == len(pd_out), (len(pl_out), len(pd_out))
        assert int(pl_out["seeds"].sum()) == int(pd_out["seeds"].sum()) == a.trials
        print(f"\n{'step (median of ' + str(a.repeats) + ')':<44}{'Polars s':>10}{'pandas s':>10}"
              f"{'pandas/Polars':>15}")
        print(f"{'intrinsic-dimension aggregation':<44}{pl_s:>10.2f}{pd_s:>10.2f}"
              f"{pd_s / pl_s:>15.1f}")
        print(f"{'report tables (compute_tables, no Higgins)':<44}{rep_s:>10.2f}{'':>10}{'':>15}")
        print(f"\n{len(pl_out)} configurations; report tables: "
              + ", ".join(f"{k} {v.height}" for k, v in tables.frames.items()))
        ok = pl_s < 10 and rep_s < 10
        print("target < 10 s:", "met" if ok else "MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
