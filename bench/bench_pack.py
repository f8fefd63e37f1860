"""Packed training on the CPU: G trials one after another vs one pack of G, and whole
studies with and without `pack`.

    PYTHONPATH=$PWD python bench/bench_pack.py [--sizes 4 8 16] [--steps 20] [--reps 3]
                                               [--threads 2] [--study-epochs 2] [--smoke-test]

Throughput: App. D's MNIST VAE (conv 32-32, FC 256, H = 128, batch 100, Adam 1e-3,
specified sigma2), G members that differ in sigma2 and seed; the same number of
steps per trial in both arms; aggregate training images per second, medians of
`--reps` alternating repetitions. Target: a pack of 8 at >= 1.2x.
Whole studies: the same 8-configuration MNIST grid (4 sigma2 x 2 seeds) through
`vaestudy run` (a fresh process, Ray start, training, report) without and with
`pack: 8`, wall time from start to report; resources fill the machine in both.
Cost of a step at batch 2: ms and operators dispatched per step of one unpacked
trial (the baseline) and of packs of G; a pack's operators do not grow with G
(Adam runs on one [G, P] tensor), which is what a GPU's launch-bound step needs.
The GPU layouts are bench/gpu_bench.py (bench/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench import config, images, mnist_dir, time_alone, time_pack  # noqa: E402

from trainables import pack as packing  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.train import build, train_epoch  # noqa: E402

TINY_B = 2                         # batch of the host-cost section: the step is all dispatch


def _ops(fn) -> int:
    """Operators dispatched by fn() (top level of the profiler's tree; on a GPU each
    that does arithmetic is at least one kernel launch)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.cpu_parent is None)


def host_cost(sizes, steps, reps) -> list[tuple[str, float, float]]:
    """ms and operators per step at batch 2, where a step costs its dispatch and Adam's
    pass over the weights, not its convolutions. Operators per step are what bound a GPU
    step of small models (a launch each). Baseline: one unpacked trial."""
    cpu = torch.device("cpu")
    x = images(cpu, 1)[:TINY_B * steps]

    def cfg(i):
        return TrialConfig.from_dict({**config(i, "cpu").flat(), "train.batch_size": TINY_B})

    def alone():
        run = build(cfg(0), (1, 28, 28), cpu)
        return run, (lambda: train_epoch(run, x))

    def pack(G):
        pk = packing.stack([build(cfg(i), (1, 28, 28), cpu) for i in range(G)])
        return pk, (lambda: packing.train_epoch(pk, x).tolist())

    out = []
    for name, make in [("1 trial", alone)] + [(f"pack of {G}", lambda G=G: pack(G))
                                              for G in sizes]:
        _, epoch = make()
        epoch()                                              # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            epoch()
            times.append((time.perf_counter() - t0) / steps * 1e3)
        out.append((name, statistics.median(times), _ops(epoch) / steps))
    return out


def throughput(sizes, steps, reps) -> list[tuple[int, float, float]]:
    cpu, out = torch.device("cpu"), []
    for G in sizes:
        alone, packed = [], []
        for _ in range(reps):
            alone.append(time_alone(G, cpu, steps, warmup=2))
            packed.append(time_pack(G, cpu, steps, warmup=2)[0])
        out.append((G, statistics.median(alone), statistics.median(packed)))
        print(f"  G={G}: {out[-1][1]:.0f} vs {out[-1][2]:.0f} images/s", flush=True)
    return out


def study_spec(name: str, pack: int | None, epochs: int, limit: int, threads: int) -> dict:
    spec = {"name": name, "seeds": [0, 1], "noise": {"sigma2": [0.005, 0.01, 0.02, 0.04]},
            "dataset": {"name": "mnist", "path": mnist_dir(), "limit": limit},
            "model": {"latent_dim": 128}, "train": {"epochs": epochs, "device": "cpu"},
            "eval": {"traversals": False, "max_points": 1000}, "checkpoint": {"every": epochs}}
    if pack:                       # one pack of 8 on the whole machine
        spec.update(pack=pack, resources={"cpu": threads}, max_concurrent=1)
    else:                          # one trial per core
        spec.update(resources={"cpu": 1}, max_concurrent=threads)
    return spec


def whole_study(pack: int | None, epochs: int, limit: int, threads: int, root: str) -> float:
    name = f"s{'p' if pack else 'u'}{time.time_ns() % 10**6}"
    path = Path(root) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study_spec(name, pack, epochs, limit, threads)))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "study.cli", "run", str(path), "--out", root],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--study-epochs", type=int, default=2)
    ap.add_argument("--study-limit", type=int, default=3000, help="MNIST images in the study")
    ap.add_argument("--smoke-test", action="store_true", help="G=2, 2 steps, a 1-epoch study")
    a = ap.parse_args()
    if a.smoke_test:
        a.sizes, a.steps, a.reps, a.study_epochs, a.study_limit = [2], 2, 1, 1, 300
    torch.set_num_threads(a.threads)
    print(f"App. D MNIST VAE, H=128, batch 100, {a.steps} steps per trial, {a.threads} threads, "
          f"median of {a.reps}")
    rows = throughput(a.sizes, a.steps, a.reps)
    print(f"\n{'G':>4}{'one after another':>20}{'one pack':>12}{'pack / alone':>14}")
    for G, alone, packed in rows:
        print(f"{G:>4}{alone:>14,.0f} img/s{packed:>6,.0f} img/s{packed / alone:>13.2f}x")
    print("target: >= 1.2x at G = 8")
    print(f"\ncost of a step at batch {TINY_B}: operator dispatch and Adam's pass over the "
          f"weights, not convolution flops (median of {a.reps}):")
    cost = host_cost(a.sizes, max(a.steps, 10), a.reps)
    print(f"{'':<12}{'ms/step':>9}{'ops/step':>10}{'vs 1 trial':>12}{'per member':>12}")
    base_ms = cost[0][1]
    for name, ms, ops in cost:
        G = int(name.split()[-1]) if name.startswith("pack") else 1
        print(f"{name:<12}{ms:>9.2f}{ops:>10.0f}{ms / base_ms:>11.2f}x{ms / base_ms / G:>11.2f}x")
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as root:
        u = whole_study(None, a.study_epochs, a.study_limit, a.threads, root)
        p = whole_study(8, a.study_epochs, a.study_limit, a.threads, root)
    print(f"\nwhole study, 8 configs (4 sigma2 x 2 seeds), {a.study_epochs} epochs of "
          f"{int(a.study_limit * 0.6)} MNIST images, `vaestudy run` start to report:")
    print(f"  unpacked, {a.threads} trials at once: {u:7.1f} s")
    print(f"  pack: 8, one pack:          {p:7.1f} s   ({u / p:.2f}x)")


if __name__ == "__main__":
    main()
