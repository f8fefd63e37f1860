"""Does the Optuna search find a better trade-off than random search on the same budget?

    python bench/bench_search.py [--budget 16] [--seeds 3] [--epochs 5] [--smoke-test]

On the quickstart data, the same search space and trial budget are searched
by the TPE sampler and by Optuna's RandomSampler (the baseline), each with
several search seeds, through the real study service. For each run the
hypervolume of its Pareto front (EVLB up, KL(q(z)||p(z)) down) is computed
against one reference point shared by all runs, on objectives scaled to
[0, 1] by the range seen over all runs; larger is better.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile

import numpy as np


def spec(name: str, sampler: str, seed: int, budget: int, epochs: int) -> dict:
    return {"name": name, "num_samples": budget, "max_concurrent": 2,
            "search": {"optuna": {"sampler": sampler, "seed": seed,
                                  "objectives": {"evlb": "max", "kl_qz_pz": "min"}}},
            "dataset": {"name": "intrinsic", "factors": 4, "n": 2000},
            "model": {"latent_dim": 10},
            "noise": {"kind": {"choice": ["specified", "learned"]},
                      "sigma2": {"loguniform": [0.01, 1.0]}, "beta": {"loguniform": [0.5, 8]}},
            "train": {"epochs": epochs, "lr": 3e-4},
            "eval": {"every": epochs, "traversals": False}, "checkpoint": {"every": epochs}}


def hypervolume_2d(points: np.ndarray) -> float:
    """Area dominated by `points` (both coordinates to minimise) inside [0, 1]^2, ref (1, 1)."""
    pts = points[np.all(points < 1.0, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 0])]
    area, best_y = 0.0, 1.0
    for i, (x, y) in enumerate(pts):
        if y < best_y:
            nxt = 1.0
            area += (nxt - x) * (best_y - y)
            best_y = y
    return area


def front_points(root: str, name: str) -> np.ndarray:
    """(-EVLB, KL) of every completed trial: both to minimise."""
    import polars as pl

    from analysis import load

    rows = load.trials(root, name).filter(pl.col("evlb").is_finite()
                                           & pl.col("kl_qz_pz").is_finite()).collect()
    return np.column_stack([-rows["evlb"].to_numpy(), rows["kl_qz_pz"].to_numpy()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--smoke-test", action="store_true")
    a = ap.parse_args()
    if a.smoke_test:
        a.budget, a.seeds, a.epochs = 4, 1, 1
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    from study import runner
    from study.spec import parse

    root = tempfile.mkdtemp(prefix="bench-search-")
    raw: dict[tuple[str, int], np.ndarray] = {}
    try:
        runner.start_ray(None, log=lambda s: None)
        for seed in range(a.seeds):
            for sampler in ("tpe", "random"):
                name = f"{sampler}-{seed}"
                runner.run(parse(spec(name, sampler, seed, a.budget, a.epochs)), root,
                           log=lambda s: None)
                raw[(sampler, seed)] = front_points(root, name)
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    allp = np.concatenate(list(raw.values()))
    lo, hi = allp.min(0), allp.max(0)
    scale = np.where(hi > lo, hi - lo, 1.0) * 1.1                 # ref point just past the worst
    hv = {k: hypervolume_2d((v - lo) / scale) for k, v in raw.items()}
    print(f"\nbudget {a.budget} trials x {a.epochs} epochs, {a.seeds} search seeds; "
          "hypervolume of (EVLB max, KL(q(z)||p(z)) min), normalised, larger is better")
    print(f"{'search seed':<12}{'TPE':>10}{'random':>10}{'TPE/random':>12}")
    for seed in range(a.seeds):
        t, r = hv[("tpe", seed)], hv[("random", seed)]
        print(f"{seed:<12}{t:>10.4f}{r:>10.4f}{(t / r if r else float('inf')):>12.3f}")
    mt = statistics.median(hv[("tpe", s)] for s in range(a.seeds))
    mr = statistics.median(hv[("random", s)] for s in range(a.seeds))
    print(f"{'median':<12}{mt:>10.4f}{mr:>10.4f}{(mt / mr if mr else float('inf')):>12.3f}")


if __name__ == "__main__":
    main()
