"""Benchmark: the analysis on large generated studies.

Part 1, aggregation: 1,000 trials x 50 evaluated epochs x 128 factors (6.4 M factor
rows) in the result store's format (one merged file per trial and table, status
files, 1% of trials with a duplicated epoch left by a crash window); times the
intrinsic-dimension aggregation (Theorem 1's table) with Polars and with pandas
(pyarrow reader, drop_duplicates, merge, groupby), and every table of the report
(`compute_tables`, no Higgins). Target: < 10 s for the Polars steps.

Part 2, the report: 1,000 intrinsic-data trials (5 epochs, 10 factors, codes and a
real checkpoint each); times `build_report` with tables, study-level figures and the
fast Higgins setting in parallel, no per-trial pages (target < 5 min on 2 cores), and
prints the per-trial cost of a per-trial page and of the published Higgins setting
(measured on --full-fraction of its samples and scaled up).

    .venv/bin/python bench/bench_analysis.py [--trials 1000] [--epochs 50] [--factors 128]
    .venv/bin/python bench/bench_analysis.py --smoke-test          # seconds; for CI
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
from resultstore.format import SCHEMAS
from resultstore.store import ResultStore  # noqa: E402

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
            "code_version": ["bench"] * E, "host": ["h"] * E, "node": ["h"] * E,
            "wall_time": np.arange(E) * 1.0,
            "written_at": [T0 + timedelta(seconds=e + skew) for e in range(E)]}
    cols.update({"mi_xz_est": rng.uniform(2, 6, E), "kl_qz_pz_est": rng.uniform(0, 2, E),
                 "tc_est": rng.uniform(0, 1, E), "normal_var_tol": [0.1] * E,
                 "equivalent_sigma2_arith": [cfg.noise.beta * s2] * E})
    for f in SCHEMAS["trials"]:          # columns a later format adds: null, never a KeyError
        cols.setdefault(f.name, [None] * E)
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
    last = last[last["state"].isin(list(load.COUNTED))]
    last["sigma2_cfg"] = last["config"].map(lambda c: json.loads(c)["noise"]["sigma2"])
    last["config_key"] = last["config"].map(load.config_key)
    last["series_key"] = last["config"].map(load.series_key)
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


def report_configs(n: int) -> list[TrialConfig]:
    """Intrinsic data (P = 3): 10 seeds per configuration; specified noise (25 sigma2 x 3
    beta) for three quarters, learned noise (25 beta) for the rest."""
    out = []
    for i in range(n):
        seed, k = i % 10, i // 10
        noise = ({"kind": "specified", "sigma2": 0.001 * (1 + k % 25),
                  "beta": (1.0, 2.0, 4.0)[k // 25 % 3]} if i < 3 * n // 4
                 else {"kind": "learned", "beta": 0.5 + k % 25})
        out.append(TrialConfig.from_dict({
            "dataset": {"name": "intrinsic", "factors": 3, "n": 600}, "noise": noise,
            "model": {"latent_dim": 10}, "train": {"seed": seed, "epochs": 5}}))
    return out


def generate_report_study(root: str, n: int, E: int = 5, points: int = 200) -> None:
    """Trials, factors, codes, status and one real (untrained) checkpoint per trial."""
    import torch

    from trainables.data import intrinsic_phi
    from trainables.vae import VAE

    st, rng = ResultStore(root, STUDY), np.random.default_rng(1)
    cfgs = report_configs(n)
    phi, _ = intrinsic_phi(cfgs[0].dataset)
    shape = tuple(phi(torch.zeros(1, 3)).shape[1:])
    states = {}
    for i, cfg in enumerate(cfgs):
        if cfg.noise.kind not in states:                 # one real VAE per noise kind
            states[cfg.noise.kind] = {"vae": VAE(shape, cfg).state_dict()}
        state = states[cfg.noise.kind]
        tid = f"r{i:05d}"
        t = trial_table(cfg, tid, E, rng)
        t = t.set_column(t.schema.get_field_index("dataset"), "dataset",
                         pa.array(["intrinsic"] * E)).set_column(
            t.schema.get_field_index("latent_dim"), "latent_dim", pa.array([10] * E)).set_column(
            t.schema.get_field_index("true_factors"), "true_factors", pa.array([3] * E))
        truth = rng.standard_normal((points, 3))
        mu = truth @ rng.standard_normal((3, 10)) + 0.1 * rng.standard_normal((points, 10))
        codes = pa.table({"study": [STUDY] * points, "trial_id": [tid] * points,
                          "epoch": [E] * points, "point": np.arange(points),
                          "index": np.arange(points), "mu": mu.astype(np.float32).tolist(),
                          "logvar": np.full((points, 10), -2.0, np.float32).tolist(),
                          "truth": truth.astype(np.float32).tolist()}, schema=SCHEMAS["codes"])
        for table, data in (("trials", t), ("factors", factor_table(tid, E, 10, rng)),
                            ("codes", codes)):
            Path(st.path(table, tid)).mkdir(parents=True, exist_ok=True)
            pq.write_table(data, st.path(table, tid, f"part-000001-{E:06d}.parquet"))
        st.trial(tid).checkpoint(E, state, keep=1)
        st.set_status(tid, "completed")


def report_costs(root: str, a) -> dict[str, float]:
    """Seconds: the report (fast Higgins, no pages); per trial: a page, the published Higgins."""
    from analysis import equivalence, higgins, pages
    from analysis.report import Options, build_report, compute_tables

    out = {}
    t = time.perf_counter()
    build_report(root, STUDY, Options(trial_pages=False, progress=True, rotations=a.rotations))
    out["report"] = time.perf_counter() - t
    tables = compute_tables(root, STUDY, Options(higgins=None))
    k = min(5, tables.get("per_trial").height)
    tables.frames["per_trial"] = tables.get("per_trial").head(k)
    t = time.perf_counter()
    pages.write_trial_pages(root, STUDY, tables)
    out["page"] = (time.perf_counter() - t) / k
    row = tables.get("per_trial").row(0, named=True)
    made = equivalence.trial_truth(root, STUDY, row["trial_id"], row["config"])
    small = {k: max(int(v * a.full_fraction), 1) if k != "batch_size" else v
             for k, v in higgins.PUBLISHED.items()}
    t = time.perf_counter()
    higgins.compute_higgins(*made, np.random.default_rng(0), **small)
    out["higgins_full"] = (time.perf_counter() - t) / a.full_fraction
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--factors", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--report-trials", type=int, default=1000)
    p.add_argument("--rotations", type=int, default=10)
    p.add_argument("--full-fraction", type=float, default=0.05,
                   help="share of the published Higgins setting's samples timed (scaled up)")
    p.add_argument("--skip-aggregation", action="store_true")
    p.add_argument("--skip-report", action="store_true")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    a = p.parse_args()
    if a.smoke_test:
        a.trials, a.epochs, a.factors, a.repeats = 20, 3, 8, 1
        a.report_trials, a.rotations, a.full_fraction = 20, 2, 0.002
    ok = True
    if not a.skip_aggregation:
        ok &= aggregation(a)
    if not a.skip_report:
        ok &= report_bench(a)
    return 0 if ok or a.smoke_test else 1


def aggregation(a) -> bool:
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        generate(root, a.trials, a.epochs, a.factors)
        print(f"generated {a.trials} trials x {a.epochs} epochs x {a.factors} factors = "
              f"{a.trials * a.epochs * a.factors:,} factor rows in {time.perf_counter() - t:.1f} s")
        pl_s, pl_out = timed(lambda: intrinsic.from_study(root, STUDY), a.repeats)
        pd_s, pd_out = timed(lambda: pandas_intrinsic(root), a.repeats)
        opts = report.Options(higgins=None)
        rep_s, tables = timed(lambda: report.compute_tables(root, STUDY, opts), a.repeats)
        assert len(pl_out) == len(pd_out), (len(pl_out), len(pd_out))
        assert int(pl_out["n"].sum()) == int(pd_out["seeds"].sum()) == a.trials
        print(f"\n{'step (median of ' + str(a.repeats) + ')':<44}{'Polars s':>10}{'pandas s':>10}"
              f"{'pandas/Polars':>15}")
        print(f"{'intrinsic-dimension aggregation':<44}{pl_s:>10.2f}{pd_s:>10.2f}"
              f"{pd_s / pl_s:>15.1f}")
        print(f"{'report tables (compute_tables, no Higgins)':<44}{rep_s:>10.2f}{'':>10}{'':>15}")
        print(f"\n{len(pl_out)} configurations; report tables: "
              + ", ".join(f"{k} {v.height}" for k, v in tables.frames.items()))
        ok = pl_s < 10 and rep_s < 10
        print("target < 10 s:", "met" if ok else "MISSED")
        return ok


def report_bench(a) -> bool:
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        generate_report_study(root, a.report_trials)
        print(f"\ngenerated a report study of {a.report_trials} intrinsic-data trials with codes "
              f"and checkpoints in {time.perf_counter() - t:.1f} s")
        c = report_costs(root, a)
        print(f"\n{'step':<60}{'seconds':>10}{'ratio':>8}")
        print(f"{'report: tables, figures, fast Higgins, no trial pages':<60}{c['report']:>10.1f}"
              f"{1.0:>8.2f}")
        per = c["report"] / a.report_trials
        print(f"{'  per trial':<60}{per:>10.3f}{1.0:>8.2f}")
        print(f"{'one per-trial page':<60}{c['page']:>10.3f}{c['page'] / per:>8.2f}")
        print(f"{'published Higgins, one trial (scaled from a fraction)':<60}"
              f"{c['higgins_full']:>10.1f}{c['higgins_full'] / per:>8.0f}")
        ok = c["report"] < 300
        print("target: report < 5 min:", "met" if ok else "MISSED")
        return ok


if __name__ == "__main__":
    sys.exit(main())
