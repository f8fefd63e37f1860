"""Study-service overhead: the same N short trials through `study.runner` (Ray Tune,
2 at a time on 2 cores) and as a plain sequential loop of `run_trial` in one process.

    python bench/bench_study.py [--trials 8] [--epochs 6] [--reps 1] [--smoke-test]

Ideal service time = sequential time / concurrency. Overhead per trial =
(service time - ideal) / N, Ray's start-up reported separately. The trials are
the same configs in both arms (different study names), so the work is equal.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time


def spec_dict(name: str, n_trials: int, epochs: int) -> dict:
    return {"name": name, "seeds": list(range(n_trials)),
            "dataset": {"name": "intrinsic", "n": 1500, "factors": 3},
            "model": {"latent_dim": 6}, "train": {"epochs": epochs},
            "eval": {"every": 1, "traversals": False}, "checkpoint": {"every": 2},
            "resources": {"cpu": 1}, "max_concurrent": 2}


def sequential(root: str, n: int, epochs: int) -> float:
    import dataclasses

    from study.spec import parse, trial_configs
    from resultstore.store import ResultStore
    from trainables.train import run_trial

    spec = parse(spec_dict("plain", n, epochs))
    t0 = time.perf_counter()
    for cfg in trial_configs(spec):
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=1))
        run_trial(cfg, ResultStore(root, "plain"), log=lambda s: None)
    return time.perf_counter() - t0


def service(root: str, n: int, epochs: int, name: str) -> float:
    from study import runner
    from study.spec import parse

    spec = parse(spec_dict(name, n, epochs))
    t0 = time.perf_counter()
    out = runner.run(spec, root, log=lambda s: None)
    assert out.counts["completed"] == n, out.counts
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--smoke-test", action="store_true", help="2 trials, 1 epoch")
    a = ap.parse_args()
    if a.smoke_test:
        a.trials, a.epochs, a.reps = 2, 1, 1
    import os
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    from study import runner

    root = tempfile.mkdtemp(prefix="bench-study-")
    try:
        t0 = time.perf_counter()
        runner.start_ray(None, log=lambda s: None)
        ray_start = time.perf_counter() - t0
        seq, svc = [], []
        for r in range(a.reps):
            seq.append(sequential(root, a.trials, a.epochs))
            shutil.rmtree(f"{root}/plain", ignore_errors=True)
            svc.append(service(root, a.trials, a.epochs, f"svc{r}"))
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    s, v = statistics.median(seq), statistics.median(svc)
    ideal = s / 2
    per = (v - ideal) / a.trials
    print(f"\n{a.trials} trials x {a.epochs} epochs, 2 at a time on 2 cores, median of {a.reps}")
    print(f"{'arm':<34}{'seconds':>10}{'per trial':>12}")
    print(f"{'plain sequential run_trial loop':<34}{s:>10.1f}{s / a.trials:>12.2f}")
    print(f"{'ideal with 2 at once (plain / 2)':<34}{ideal:>10.1f}{ideal / a.trials:>12.2f}")
    print(f"{'study service (Ray Tune)':<34}{v:>10.1f}{v / a.trials:>12.2f}")
    print(f"{'ray start (once, not included)':<34}{ray_start:>10.1f}")
    print(f"service overhead per trial: {per:.2f} s  (target < 1 s); service / ideal = {v / ideal:.2f}x")


if __name__ == "__main__":
    main()
