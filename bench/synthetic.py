"""A synthetic study written through the real result store: a generator, no training.

Each trial writes what a real one writes: a running status, its rows in segments
of `every` evaluated epochs (trials, factors; codes at the last), the merge and
the finished status with its final metrics; optionally a status table as the
driver would. Used by bench/bench_scale.py and tests/test_scale.py.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from study.tracker import config_row
from resultstore.format import SCHEMAS, status_row
from resultstore.store import ResultStore


def config(i: int, epochs: int, H: int) -> dict:
    return {"noise": {"kind": "specified", "beta": 1.0, "sigma2": 0.01 * (1 + i % 10)},
            "train": {"seed": i // 10, "epochs": epochs}, "model": {"latent_dim": H},
            "dataset": {"name": "intrinsic", "factors": 4}}


def trial_row(study: str, tid: str, cfg: dict, epoch: int, H: int, mi, rng) -> dict:
    s2 = cfg["noise"]["sigma2"]
    return {"study": study, "trial_id": tid, "epoch": epoch, "status": "running",
            "dataset": "intrinsic", "noise": "specified", "beta": 1.0, "sigma2": s2,
            "equivalent_sigma2": s2, "latent_dim": H, "seed": cfg["train"]["seed"],
            "evlb": float(-100 + epoch + rng.normal()), "recon_mse": float(rng.uniform(0, 0.1)),
            "kl_post_prior": float(mi.sum() + 1), "mi_xz": float(mi.sum()), "kl_qz_pz": 0.1,
            "kl_qstar_pz": 0.2, "n_used_factors": int((mi > 0.5).sum()),
            "n_normal_variance_factors": 0, "train_loss": 1.0, "noise_pi": None,
            "noise_sigma2_k": None, "eval_points": 1000, "used_threshold": 0.5,
            "var_floor": 1e-6, "true_factors": 4, "config": json.dumps(cfg, sort_keys=True),
            "code_version": "synthetic", "host": "bench", "node": "bench",
            "wall_time": float(epoch), "written_at": datetime.now(timezone.utc)}


def factor_table(study: str, tid: str, epochs: list[int], mi: np.ndarray) -> pa.Table:
    """Rows of `epochs` x H factors, built column-wise (mi: [E, H])."""
    E, H = mi.shape
    n = E * H
    return pa.Table.from_pydict({
        "study": pa.array([study] * n), "trial_id": pa.array([tid] * n),
        "epoch": np.repeat(np.array(epochs, np.int64), H), "factor": np.tile(np.arange(H), E),
        "mi": mi.ravel(), "post_var": np.full(n, 0.5), "qstar_var": np.ones(n),
        "used": mi.ravel() > 0.5}, schema=SCHEMAS["factors"])


def code_table(study: str, tid: str, epoch: int, H: int, n: int, rng) -> pa.Table:
    mu = rng.normal(size=(n, H)).astype(np.float32)
    offsets = pa.array(np.arange(0, n * H + 1, H, dtype=np.int32))
    lists = pa.ListArray.from_arrays(offsets, pa.array(mu.ravel()))
    return pa.Table.from_pydict({
        "study": pa.array([study] * n), "trial_id": pa.array([tid] * n),
        "epoch": np.full(n, epoch, np.int64), "point": np.arange(n), "index": np.arange(n),
        "mu": lists, "logvar": lists, "truth": pa.nulls(n, pa.list_(pa.float32()))},
        schema=SCHEMAS["codes"])


def write_trial(store: ResultStore, i: int, epochs: int = 20, H: int = 128, every: int = 20,
                codes: int = 100, state: str = "completed", upto: int | None = None,
                trial: tuple[str, dict] | None = None) -> dict:
    """Trial i (or `trial`: a real (id, config) pair) through the store; a `running` trial
    stops unfinished after epoch `upto`. Returns its status-table row."""
    rng = np.random.default_rng(i)
    tid, cfg = trial or (f"t{i:06d}", config(i, epochs, H))
    store.set_status(tid, "running", config=cfg, epochs=epochs, attempts=1)
    last = upto if state == "running" else epochs
    for first in range(1, last + 1, every):
        seg = list(range(first, min(first + every - 1, last) + 1))
        mi = rng.gamma(0.5, 1.0, (len(seg), H))                          # [E, H]
        trials = [trial_row(store.study, tid, cfg, e, H, m, rng) for e, m in zip(seg, mi)]
        store.trial(tid)._write("trials", pa.Table.from_pylist(trials, schema=SCHEMAS["trials"]),
                           seg[0], seg[-1])
        store.trial(tid)._write("factors", factor_table(store.study, tid, seg, mi), seg[0], seg[-1])
        if seg[-1] == epochs and codes:
            store.trial(tid)._write("codes", code_table(store.study, tid, epochs, H, codes, rng),
                               seg[0], seg[-1])
    row = trials[-1]
    final = {k: row[k] for k in ("trial_id", "epoch", "evlb", "recon_mse", "mi_xz",
                                 "kl_qz_pz", "n_used_factors", "sigma2")}
    if state != "running":
        store.trial(tid).finish(state, final=final, error="non-finite loss" if state == "diverged" else None)
    return {**config_row(tid, cfg), **status_row(store.status(tid)), "seconds": 60.0 + i % 7,
            "started": 0.0, **({"epoch": last} if state == "running" else {})}


def spread(n: int) -> list[str]:
    """States of n synthetic trials: mostly completed, some diverged, a few running."""
    return ["diverged" if i % 50 == 7 else "running" if i % 97 == 3 else "completed"
            for i in range(n)]
