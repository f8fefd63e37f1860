"""Trials per hour on one GPU by layout: 1 trial alone, 4 trials at a 0.25 share
(4 processes), packs of 16/32/64/128, and variants of the pack of 64: its convolutions
forced grouped or matmul, cuDNN's algorithm search off, bf16, torch.compile; then a
profile of the pack of 64 (wall and GPU-busy ms per step, operators per step, the top
kernels), which says whether the host (launches) or the GPU (kernels) bounds a step.

    PYTHONPATH=$PWD python3 bench/gpu_bench.py [--steps 100] [--out DIR] [--cpu-dry-run]

Convolutions of a pack: vmap makes each one a grouped convolution (groups = G), which
GPUs often run slowly (pytorch/pytorch#70954); "matmul" runs them as im2col + one bmm
over the members. The trainer's default, "auto", times both on the pack's first passes
and keeps the faster (trainables.pack.pick_conv); the "conv" column says which ran.
cuDNN's per-shape algorithm search (cudnn.benchmark) is on for every CUDA trial.

Every layout trains the App. D MNIST VAE (conv 32-32, FC 256, H = 128, batch 100,
Adam 1e-3, specified sigma2) for a fixed number of steps after warm-up steps, and
its rate is the images it trained per second of wall time (all trials together).
A trial of the paper's MNIST grid is 200 epochs of 42,000 images, so trials per
hour = rate * 3600 / 8.4e6, and the grid (34 configurations x 5 seeds = 170
trials) takes 170 / (trials per hour) hours; evaluation, checkpoints and data
loading are not in this figure. Needs only torch (no Ray, no Polars).
`--cpu-dry-run` runs every layout on the CPU with tiny step counts, to check the
script itself. Results go to DIR (or $OUT) as gpu_bench.json, gpu_bench.txt and
gpu_profile.txt.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainables import data as datasets  # noqa: E402
from trainables import pack as packing  # noqa: E402
from trainables.config import TrialConfig  # noqa: E402
from trainables.train import build, pick_device, train_epoch  # noqa: E402

TRIAL_IMAGES = 200 * 42_000          # paper's MNIST trial: 200 epochs of 42,000 images
GRID_TRIALS = 34 * 5                 # paper's MNIST grid: 34 configurations x 5 seeds
B = 100


def mnist_dir() -> str:
    shared = ROOT.parent / "shared" / "data" / "mnist"
    env = os.environ.get("VAESTUDY_MNIST")
    for p in (env, shared, ROOT / "tests" / "data" / "mnist"):
        if p and (Path(p) / "t10k-images-idx3-ubyte.gz").exists():
            return str(p)
    raise SystemExit("no MNIST test set found (set VAESTUDY_MNIST)")


def config(i: int, device: str, precision: str = "fp32", compile: bool = False) -> TrialConfig:
    """Member i of a grid: App. D's MNIST model, sigma2 and seed varying."""
    return TrialConfig.from_dict({
        "dataset.name": "mnist", "dataset.path": mnist_dir(), "model.latent_dim": 128,
        "noise.kind": "specified", "noise.sigma2": 0.005 * (1 + i % 8), "train.seed": i,
        "train.batch_size": B, "train.device": device, "train.precision": precision,
        "train.compile": compile})


def images(device: torch.device, steps: int) -> torch.Tensor:
    """steps * B MNIST images on the device (the test set repeated as needed)."""
    x = datasets.as_float(datasets.load(config(0, "cpu").dataset).x)   # float [0, 1], as before
    reps = -(-steps * B // len(x))
    return x.repeat(reps, 1, 1, 1)[:steps * B].to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_alone(G: int, device: torch.device, steps: int, warmup: int, **kw) -> float:
    """G trials one after another, each `steps` steps: images per second."""
    x, xw = images(device, steps), images(device, warmup)
    runs = [build(config(i, device.type, **kw), (1, 28, 28), device) for i in range(G)]
    for r in runs:
        train_epoch(r, xw)
    _sync(device)
    t0 = time.perf_counter()
    for r in runs:
        train_epoch(r, x)                      # ends with a host sync (float of the loss)
    return G * steps * B / (time.perf_counter() - t0)


def time_pack(G: int, device: torch.device, steps: int, warmup: int, **kw) -> tuple[float, str]:
    """One pack of G trials, `steps` vectorised steps: (images per second, all members;
    the convolution layout it ran). conv: auto (the trainer's default), grouped or matmul;
    cudnn_benchmark=False turns off cuDNN's per-shape algorithm search (on by default)."""
    conv = kw.pop("conv", "auto")
    cudnn_benchmark = kw.pop("cudnn_benchmark", True)
    x, xw = images(device, steps), images(device, warmup)
    runs = [build(config(i, device.type, **kw), (1, 28, 28), device) for i in range(G)]
    torch.backends.cudnn.benchmark = cudnn_benchmark and device.type == "cuda"
    pk = packing.stack(runs, conv=conv)
    packing.train_epoch(pk, xw).tolist()
    _sync(device)
    t0 = time.perf_counter()
    packing.train_epoch(pk, x).tolist()
    return G * steps * B / (time.perf_counter() - t0), pk.conv


def profile_pack(G: int, device: torch.device, steps: int, warmup: int) -> str:
    """Where a packed step's time goes: wall ms per step, the GPU's busy ms per step
    (kernel time, summed as torch.profiler's table sums it), operators per step and the
    kernels that take the most time. Busy near wall: the GPU is the bound (kernels to
    speed up); busy far below wall: the host is (launches to cut)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    x, xw = images(device, steps), images(device, warmup)
    runs = [build(config(i, device.type), (1, 28, 28), device) for i in range(G)]
    torch.backends.cudnn.benchmark = device.type == "cuda"
    pk = packing.stack(runs)
    packing.train_epoch(pk, xw).tolist()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        packing.train_epoch(pk, x).tolist()
        wall = (time.perf_counter() - t0) / steps * 1e3
    ka = prof.key_averages()
    busy = sum(e.self_device_time_total for e in ka if e.device_type == DeviceType.CUDA
               and not e.is_user_annotation) / steps / 1e3
    ops = sum(1 for e in prof.events() if e.cpu_parent is None
              and e.device_type == DeviceType.CPU) / steps
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    head = (f"pack of {G} ({pk.conv} conv; {pk.conv_ms or 'untimed'}), {steps} steps under the "
            f"profiler: wall {wall:.2f} ms/step (profiler overhead included), GPU busy "
            f"{busy:.2f} ms/step ({busy / wall:.0%}), {ops:.0f} operators/step")
    return head + "\n" + ka.table(sort_by=sort, row_limit=15, max_name_column_width=60)


def _worker(device: str, steps: int, warmup: int, barrier, q) -> None:
    dev = pick_device(device)
    torch.set_num_threads(1)
    x, xw = images(dev, steps), images(dev, warmup)
    run = build(config(os.getpid() % 8, dev.type), (1, 28, 28), dev)
    train_epoch(run, xw)
    _sync(dev)
    barrier.wait()
    t0 = time.time()
    train_epoch(run, x)
    q.put((t0, time.time()))


def time_shared(n: int, device: torch.device, steps: int, warmup: int) -> float:
    """n processes each training one trial on the same device at once (a 1/n share)."""
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(device.type, steps, warmup, barrier, q))
             for _ in range(n)]
    for p in procs:
        p.start()
    spans = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return n * steps * B / (end - start)


def layouts(dry: bool) -> list[tuple[str, str, dict]]:
    """Most telling first: a layout the budget cannot reach is reported as not measured."""
    packs = (4, 8) if dry else (16, 32, 64)
    big = packs[-1]
    out = [("1 trial alone", "alone", {"G": 1}),
           ("4 trials x 0.25 share", "shared", {"n": 4})]
    out += [(f"pack of {g}", "pack", {"G": g}) for g in packs]
    out += [(f"pack of {big}, grouped conv", "pack", {"G": big, "conv": "grouped"}),
            (f"pack of {big}, matmul conv", "pack", {"G": big, "conv": "matmul"}),
            (f"pack of {big}, grouped, no cudnn.bm", "pack",
             {"G": big, "conv": "grouped", "cudnn_benchmark": False}),
            (f"pack of {2 * big}", "pack", {"G": 2 * big}),
            (f"pack of {big}, bf16", "pack", {"G": big, "precision": "bf16"}),
            (f"pack of {big}, compile", "pack", {"G": big, "compile": True})]
    return out


def measure(kind: str, device: torch.device, steps: int, warmup: int,
            args: dict) -> tuple[float, str]:
    if kind == "alone":
        return time_alone(args["G"], device, steps, warmup), "-"
    if kind == "shared":
        return time_shared(args["n"], device, steps, warmup), "-"
    kw = {k: v for k, v in args.items() if k != "G"}
    return time_pack(args["G"], device, steps, warmup, **kw)


def one_layout(args: argparse.Namespace) -> None:
    """Child mode: measure one layout, print its rate as JSON (isolates compile and OOM)."""
    device = pick_device("cpu" if args.cpu_dry_run else "cuda")
    kind, params = args.layout[0], json.loads(args.layout[1])
    if kind == "profile":
        print(json.dumps({"profile": profile_pack(params["G"], device, args.steps // 4 or 1,
                                                  args.warmup)}))
        return
    got = [measure(kind, device, args.steps, args.warmup, params) for _ in range(args.reps)]
    print(json.dumps({"rate": statistics.median(r for r, _ in got), "conv": got[-1][1]}))


def run_layout(args, kind: str, params: dict, timeout: float) -> tuple[dict | None, str]:
    cmd = [sys.executable, __file__, "--layout", kind, json.dumps(params),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--reps", str(args.reps)]
    cmd += ["--cpu-dry-run"] if args.cpu_dry_run else []
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    if out.returncode != 0:
        return None, (out.stderr.strip().splitlines() or ["failed"])[-1][:120]
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="timed steps per layout")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--budget", type=float, default=200.0, help="seconds for all layouts")
    ap.add_argument("--out", default=os.environ.get("OUT"))
    ap.add_argument("--cpu-dry-run", action="store_true", help="every layout on the CPU, tiny")
    ap.add_argument("--layout", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cpu_dry_run and args.layout is None:
        args.steps, args.warmup = 2, 1
    if args.layout:
        return one_layout(args)
    if not args.cpu_dry_run and not torch.cuda.is_available():
        raise SystemExit("no GPU visible; use --cpu-dry-run to check the script on a CPU")
    report(args)


def report(args: argparse.Namespace) -> None:
    dev = "cpu (dry run)" if args.cpu_dry_run else torch.cuda.get_device_name(0)
    lines = [f"device: {dev}; torch {torch.__version__}; {args.steps} timed steps of batch {B} "
             "per layout; App. D MNIST VAE (H = 128)"]
    results, deadline = [], time.time() + args.budget
    big = 8 if args.cpu_dry_run else 64
    todo = layouts(args.cpu_dry_run)
    todo.insert(next(i for i, (_, k, p) in enumerate(todo) if p.get("G") == 2 * big),
                (f"profile of a pack of {big}", "profile", {"G": big}))
    profile = "not measured"
    for name, kind, params in todo:
        left = deadline - time.time()
        if left < 15:
            got, err = None, "not measured: out of --budget"
        else:
            got, err = run_layout(args, kind, params, timeout=min(left, 150.0))
        if kind == "profile":
            profile = got["profile"] if got else f"{name}: {err}"
            print(f"  {name}: {'done' if got else err}", flush=True)
            continue
        rate = got and got["rate"]
        results.append({"layout": name, "images_per_s": rate, "conv": got and got["conv"],
                        "error": err or None})
        print(f"  measured {name}: {rate and round(rate)} images/s {err}", flush=True)
    base = next(r["images_per_s"] for r in results if r["layout"].startswith("4 trials"))
    lines.append(f"{'layout':<36}{'conv':>8}{'images/s':>10}{'trials/h':>10}{'vs 4x0.25':>11}"
                 f"{'paper grid':>12}")
    for r in results:
        rate = r["images_per_s"]
        if rate is None:
            lines.append(f"{r['layout']:<36}  {r['error']}")
            continue
        per_h = rate * 3600 / TRIAL_IMAGES
        r.update(trials_per_hour=per_h, ratio=rate / base if base else None,
                 grid_hours=GRID_TRIALS / per_h)
        ratio = f"{rate / base:.2f}x" if base else "-"
        lines.append(f"{r['layout']:<36}{r['conv']:>8}{rate:>10,.0f}{per_h:>10.2f}{ratio:>11}"
                     f"{GRID_TRIALS / per_h:>10.1f} h")
    lines.append("target: best pack >= 5x the 4 x 0.25 layout (goal 15x); paper grid = "
                 "34 configs x 5 seeds x 200 epochs of 42,000 images, training steps only")
    text = "\n".join(lines)
    print(text)
    print("\n" + profile)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_bench.txt").write_text(text + "\n")
        (Path(args.out) / "gpu_profile.txt").write_text(profile + "\n")
        (Path(args.out) / "gpu_bench.json").write_text(json.dumps(
            {"device": dev, "steps": args.steps, "results": results}, indent=1))


if __name__ == "__main__":
    main()
