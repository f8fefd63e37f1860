"""Packed training on the CPU: whole studies with and without `pack`, where their time
goes, the step alone, operators per step, and a resumed pack against a fresh one.

    PYTHONPATH=$PWD python bench/bench_pack.py [--sizes 4 8 16] [--steps 20] [--reps 3]
                                               [--threads 2] [--study-epochs 2] [--smoke-test]

The model: App. D's MNIST VAE (conv 32-32, FC 256, H = 128, batch 100, Adam 1e-3,
specified sigma2), members that differ in sigma2 and seed.
Whole studies: one 8-configuration MNIST grid (4 sigma2 x 2 seeds) through `vaestudy
run` (a fresh process, Ray start, training, evaluation, writes, report) unpacked
(one trial per core), with `pack: 4` and with `pack: 8`, wall time start to report,
in one run. Target: >= 1.15x at pack 8.
Where the time goes: the same grid run in this process (no Ray), with each phase's
seconds: training steps, evaluation on the training thread, waiting for the writer
(indicators, metrics, rows and checkpoints are the writer's in a pack), the rest
(data, model, finishing); "outside training" is a study's wall time less the in-process
time: process and Ray start, scheduling, the report.
The step alone: G trials one after another vs one pack of G, the same steps per trial,
images per second, medians of `--reps` alternating repetitions. Target: >= 1.2x at G = 8.
Operators per step at batch 2 (where a step is all dispatch): a pack's operators are
the same at every G but for the noise, one draw per member from its own generator
(a trial's numbers stay its own; see trainables/pack.py `noise`).
A resumed pack: a pack of 2G whose first G members left (`pack.leave`) against a fresh
pack of G, step time; target within 10%.
The GPU layouts are bench/gpu_bench.py (bench/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_bench import config, images, mnist_dir, time_alone, time_pack  # noqa: E402

from study.spec import parse, trial_configs  # noqa: E402
from trainables import pack as packing  # noqa: E402
from trainables import pack_eval, train  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.pack_run import run_pack  # noqa: E402
from resultstore.store import ResultStore  # noqa: E402
from trainables.train import build, train_epoch  # noqa: E402
from trainables.writer import Writer  # noqa: E402

TINY_B = 2                         # batch of the host-cost section: the step is all dispatch


def _ops(fn) -> int:
    """Operators dispatched by fn() (top level of the profiler's tree; on a GPU each
    that does arithmetic is at least one kernel launch)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.cpu_parent is None)


def host_cost(sizes, steps, reps) -> list[tuple[str, int, float, float]]:
    """(name, G, ms, operators) per step at batch 2, where a step costs its dispatch and
    Adam's pass over the weights, not its convolutions. Baseline: one unpacked trial."""
    cpu = torch.device("cpu")
    x = images(cpu, 1)[:TINY_B * steps]

    def cfg(i):
        return TrialConfig.from_dict({**config(i, "cpu").flat(), "train.batch_size": TINY_B})

    def alone():
        run = build(cfg(0), (1, 28, 28), cpu)
        return lambda: train_epoch(run, x)

    def pack(G):
        pk = packing.stack([build(cfg(i), (1, 28, 28), cpu) for i in range(G)])
        return lambda: packing.train_epoch(pk, x).tolist()

    out = []
    for name, G, make in [("1 trial", 1, alone)] + [(f"pack of {G}", G, lambda G=G: pack(G))
                                                    for G in sizes]:
        epoch = make()
        epoch()                                              # warm-up
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            epoch()
            times.append((time.perf_counter() - t0) / steps * 1e3)
        out.append((name, G, statistics.median(times), _ops(epoch) / steps))
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


def resumed_vs_fresh(G: int, steps: int, reps: int) -> tuple[float, float, float, float]:
    """ms and operators per step: a pack of 2G whose first G members left, and a fresh
    pack of G (operators: the same shapes, so the same step, whatever the CPU's load)."""
    cpu = torch.device("cpu")
    x = images(cpu, steps)

    def make(resumed: bool):
        if not resumed:
            return packing.stack([build(config(G + i, "cpu"), (1, 28, 28), cpu) for i in range(G)])
        pk = packing.stack([build(config(i, "cpu"), (1, 28, 28), cpu) for i in range(2 * G)])
        packing.train_epoch(pk, x[:200])                     # the members it had trained with
        packing.leave(pk, list(range(G, 2 * G)))
        return pk

    packs = {r: make(r) for r in (True, False)}
    times = {True: [], False: []}
    for pk in packs.values():
        packing.train_epoch(pk, x[:200])                     # warm-up
    for _ in range(reps):
        for r, pk in packs.items():
            t0 = time.perf_counter()
            packing.train_epoch(pk, x)
            times[r].append((time.perf_counter() - t0) / steps * 1e3)
    ops = {r: _ops(lambda: packing.train_epoch(pk, x[:200])) / 2 for r, pk in packs.items()}
    return statistics.median(times[True]), statistics.median(times[False]), ops[True], ops[False]


def study_spec(name: str, pack: int | None, epochs: int, limit: int, threads: int) -> dict:
    spec = {"name": name, "seeds": [0, 1], "noise": {"sigma2": [0.005, 0.01, 0.02, 0.04]},
            "dataset": {"name": "mnist", "path": mnist_dir(), "limit": limit},
            "model": {"latent_dim": 128}, "train": {"epochs": epochs, "device": "cpu"},
            "eval": {"traversals": False, "max_points": 1000}, "checkpoint": {"every": epochs}}
    if pack:                       # packs one after another, each on the whole machine
        spec.update(pack=pack, resources={"cpu": threads}, max_concurrent=1)
    else:                          # one trial per core
        spec.update(resources={"cpu": 1}, max_concurrent=threads)
    return spec


def whole_study(pack: int | None, epochs: int, limit: int, threads: int, root: str) -> float:
    name = f"s{pack or 'u'}{time.time_ns() % 10**6}"
    path = Path(root) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study_spec(name, pack, epochs, limit, threads)))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "study.cli", "run", str(path), "--out", root],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


class Phases:
    """Seconds spent in named functions, by wrapping them for the length of one run."""

    def __init__(self, targets: list[tuple[object, str, str]]):
        self.targets, self.s, self.saved = targets, defaultdict(float), []

    def __enter__(self) -> "Phases":
        for owner, attr, phase in self.targets:
            fn = getattr(owner, attr)
            self.saved.append((owner, attr, fn))
            setattr(owner, attr, self._timed(fn, phase))
        return self

    def __exit__(self, *exc) -> None:
        for owner, attr, fn in self.saved:
            setattr(owner, attr, fn)

    def _timed(self, fn, phase):
        def timed(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.s[phase] += time.perf_counter() - t0
        return timed


def in_process(pack: int | None, epochs: int, limit: int, threads: int, root: str) -> dict:
    """The study's trials in this process (no Ray): {phase: seconds, "total": seconds}."""
    spec = parse(study_spec(f"i{pack or 'u'}{time.time_ns() % 10**6}", pack, epochs, limit,
                            threads))
    per = threads if pack else 1                 # as the study runs them: a trial per core
    torch.set_num_threads(per)
    cfgs = [TrialConfig.from_dict({**c.flat(), "train.threads": per})
            for c in trial_configs(spec)]
    store = ResultStore(root, spec.name)
    targets = [(Writer, "flush", "waiting for the writer")]
    targets += ([(packing, "train_epoch", "training steps"),
                 (pack_eval, "evaluate", "evaluation")] if pack else
                [(train, "train_epoch", "training steps"), (train, "evaluate", "evaluation")])
    quiet = dict(log=lambda s: None)
    t0 = time.perf_counter()
    with Phases(targets) as ph:
        if pack:
            for i in range(0, len(cfgs), pack):
                run_pack(cfgs[i:i + pack], store, **quiet)
        else:
            for c in cfgs:
                train.run_trial(c, store, **quiet)
    total = time.perf_counter() - t0
    torch.set_num_threads(threads)
    return {**ph.s, "rest (data, model, finishing)": total - sum(ph.s.values()), "total": total}


def studies(a) -> None:
    arms = [None, 4, 8] if not a.smoke_test else [None, 2]
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as root:
        wall = {p: whole_study(p, a.study_epochs, a.study_limit, a.threads, root) for p in arms}
        inner = {p: in_process(p, a.study_epochs, a.study_limit, a.threads, root) for p in arms}
    name = {p: f"pack: {p}" if p else "unpacked" for p in arms}
    print(f"\nwhole study, 8 configs (4 sigma2 x 2 seeds), {a.study_epochs} epochs of "
          f"{int(a.study_limit * 0.6)} MNIST images, `vaestudy run` start to report "
          f"(unpacked: {a.threads} trials at once; packs: one at a time on {a.threads} threads):")
    for p in arms:
        print(f"  {name[p]:<10}{wall[p]:7.1f} s   ({wall[None] / wall[p]:.2f}x unpacked)")
    print("\nwhere the time goes (s; the same trials in this process, one after another, "
          f"as the study runs them: unpacked 1 thread each, packs {a.threads}; 'outside "
          f"training' = study wall - in-process total, / {a.threads} unpacked, whose study "
          f"runs {a.threads} trials at once):")
    phases = [k for k in inner[arms[-1]] if k != "total"]
    print(f"  {'':<32}" + "".join(f"{name[p]:>11}" for p in arms))
    for k in phases + ["total"]:
        print(f"  {k:<32}" + "".join(f"{inner[p].get(k, 0.0):>11.2f}" for p in arms))
    print(f"  {'outside training':<32}" + "".join(
        f"{wall[p] - inner[p]['total'] / (1 if p else a.threads):>11.2f}" for p in arms))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--study-epochs", type=int, default=2)
    ap.add_argument("--study-limit", type=int, default=3000, help="MNIST images in the study")
    ap.add_argument("--step-sizes", type=int, nargs="+", default=[8], help="G of the step alone")
    ap.add_argument("--skip-studies", action="store_true")
    ap.add_argument("--only-studies", action="store_true")
    ap.add_argument("--smoke-test", action="store_true", help="G=2, 2 steps, a 1-epoch study")
    a = ap.parse_args()
    if a.smoke_test:
        a.sizes, a.step_sizes, a.steps, a.reps, a.study_epochs, a.study_limit = \
            [2], [2], 2, 1, 1, 300
    torch.set_num_threads(a.threads)
    print(f"App. D MNIST VAE, H=128, batch 100, {a.steps} steps per trial, {a.threads} threads, "
          f"median of {a.reps}; a shared CPU: figures vary from run to run")
    if a.only_studies:
        return studies(a)
    rows = throughput(a.step_sizes, a.steps, a.reps)
    print(f"\n{'G':>4}{'one after another':>20}{'one pack':>12}{'pack / alone':>14}")
    for G, alone, packed in rows:
        print(f"{G:>4}{alone:>14,.0f} img/s{packed:>6,.0f} img/s{packed / alone:>13.2f}x")
    print("target: >= 1.2x at G = 8")
    print(f"\ncost of a step at batch {TINY_B}: operator dispatch and Adam's pass over the "
          f"weights, not convolution flops (median of {a.reps}):")
    cost = host_cost(a.sizes, max(a.steps, 10), a.reps)
    steps = max(a.steps, 10)
    print(f"{'':<12}{'ms/step':>9}{'ops/step':>10}{'but draws':>11}{'vs 1 trial':>12}"
          f"{'per member':>12}")
    base_ms = cost[0][2]
    for name, G, ms, ops in cost:
        but = ops - G - G / steps      # each member's eps per step and batch order per epoch
        print(f"{name:<12}{ms:>9.2f}{ops:>10.1f}{but:>11.1f}{ms / base_ms:>11.2f}x"
              f"{ms / base_ms / G:>11.2f}x")
    G = a.step_sizes[-1] // 2 or 1
    res, fresh, res_ops, fresh_ops = resumed_vs_fresh(G, a.steps, a.reps)
    print(f"\nresumed pack of {2 * G} with {G} members left vs a fresh pack of {G}: "
          f"{res:.1f} vs {fresh:.1f} ms/step ({res / fresh:.2f}x; target <= 1.10x), "
          f"{res_ops:.1f} vs {fresh_ops:.1f} operators/step")
    if not a.skip_studies:
        studies(a)


if __name__ == "__main__":
    main()
