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

from study.tracker import config_row
from trainables.store import ResultStore, status_row


def config(i: int, epochs: int, H: int) -> dict:
    return {"noise": {"kind": "specified", "beta": 1.0, "sigma2": 0.01 * (1 + i % 10)},
            "train": {"seed": i // 10, "epochs": epochs}, "model": {"latent_dim": H},
            "dataset": {"name": "intrinsic", "factors": 4}}


def rows(study: str, tid: str, cfg: dict, epoch: int, H: int, rng) -> tuple[dict, list[dict]]:
    mi = rng.gamma(0.5, 1.0, H)
    s2 = cfg["noise"]["sigma2"]
    trial = {"study": study, "trial_id": tid, "epoch": epoch, "status": "running",
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
    factors = [{"study": study, "trial_id": tid, "epoch": epoch, "factor": h, "mi": float(mi[h]),
                "post_var": 0.5, "qstar_var": 1.0, "used": bool(mi[h] > 0.5)} for h in range(H)]
    return trial, factors


def code_rows(study: str, tid: str, epoch: int, H: int, n: int, rng) -> list[dict]:
    mu = rng.normal(size=(n, H)).astype(np.float32)
    return [{"study": study, "trial_id": tid, "epoch": epoch, "point": p, "index": p,
             "mu": mu[p].tolist(), "logvar": (mu[p] * 0).tolist(), "truth": None}
            for p in range(n)]


def write_trial(store: ResultStore, i: int, epochs: int = 20, H: int = 128, every: int = 20,
                codes: int = 100, state: str = "completed", upto: int | None = None,
                trial: tuple[str, dict] | None = None) -> dict:
    """Trial i (or `trial`: a real (id, config) pair) through the store; a `running` trial
    stops unfinished after epoch `upto`. Returns its status-table row."""
    rng = np.random.default_rng(i)
    tid, cfg = trial or (f"t{i:06d}", config(i, epochs, H))
    store.set_status(tid, "running", config=cfg, epochs=epochs, attempts=1)
    last = upto if state == "running" else epochs
    buf = {"trials": [], "factors": [], "codes": []}
    first = 1
    for e in range(1, last + 1):
        trial, factors = rows(store.study, tid, cfg, e, H, rng)
        buf["trials"].append(trial)
        buf["factors"] += factors
        if e == epochs and codes:
            buf["codes"] += code_rows(store.study, tid, e, H, codes, rng)
        if e % every == 0 or e == last:
            store.write_segment(tid, buf, first, e)
            buf, first = {"trials": [], "factors": [], "codes": []}, e + 1
    final = {k: trial[k] for k in ("trial_id", "epoch", "evlb", "recon_mse", "mi_xz",
                                   "kl_qz_pz", "n_used_factors", "sigma2")}
    if state != "running":
        store.finish(tid, state, final=final, error="non-finite loss" if state == "diverged" else None)
    return {**config_row(tid, cfg), **status_row(store.status(tid)), "seconds": 60.0 + i % 7,
            "started": 0.0, **({"epoch": last} if state == "running" else {})}


def spread(n: int) -> list[str]:
    """States of n synthetic trials: mostly completed, some diverged, a few running."""
    return ["diverged" if i % 50 == 7 else "running" if i % 97 == 3 else "completed"
            for i in range(n)]
