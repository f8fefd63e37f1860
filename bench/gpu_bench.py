"""Trials per hour on one GPU by layout, and what bounds a packed step: 4 trials at a
0.25 share (4 processes), packs of 32/64/128, the pack of 64 captured as a CUDA graph
(train.cuda_graphs), two packs of 64 at a 0.5 share each (2 processes); then a profile
of the pack of 64 with named ranges per phase (data, forward/backward, Adam, noise
update, evaluation) and the paper's MNIST grid estimated from the best layout,
evaluation included.

    PYTHONPATH=$PWD python3 bench/gpu_bench.py [--steps 100] [--out DIR] [--cpu-dry-run]

Every layout trains the App. D MNIST VAE (conv 32-32, FC 256, H = 128, batch 100,
Adam 1e-3, specified sigma2) for a fixed number of steps after warm-up steps, and
its rate is the images it trained per second of wall time (all trials together),
timed without the profiler. A trial of the paper's MNIST grid is 200 epochs of
42,000 images, so trials per hour = rate * 3600 / 8.4e6; the grid (34 configurations
x 5 seeds = 170 trials) takes the training hours plus its evaluations (one per epoch,
eval.every = 1, of eval.max_points test points, timed on the pack of 64 in vmapped
passes, `pack_eval.evaluate`; the indicators and writes run on the writer's thread
and are not in it). Layouts measured slower before (bf16, torch.compile, the
convolution variants) are left out of the 5-minute run; the pack's convolutions are
"auto" (trainables.pack_conv.pick_conv) and the "conv" column says which ran.
`--cpu-dry-run` runs every layout on the CPU with tiny step counts, to check the
script itself (the captured layout is reported as CUDA-only there). Results go to
DIR (or $OUT) as gpu_bench.json, gpu_bench.txt and gpu_profile.txt. Needs only
torch (no Ray, no Polars).
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
from trainables import pack_eval  # noqa: E402
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
    graphs = kw.pop("graphs", False)
    cudnn_benchmark = kw.pop("cudnn_benchmark", True)
    x, xw = images(device, steps), images(device, warmup)
    runs = [build(config(i, device.type, **kw), (1, 28, 28), device) for i in range(G)]
    torch.backends.cudnn.benchmark = cudnn_benchmark and device.type == "cuda"
    pk = packing.stack(runs, conv=conv, graphs=graphs)
    packing.train_epoch(pk, xw).tolist()
    _sync(device)
    t0 = time.perf_counter()
    packing.train_epoch(pk, x).tolist()
    return G * steps * B / (time.perf_counter() - t0), pk.conv


PHASES = ("data", "forward/backward", "adam", "noise update", "evaluation")


def profile_pack(G: int, device: torch.device, steps: int, warmup: int) -> tuple[str, float]:
    """Where a packed step's time goes, by named range (PHASES): the host's and the GPU's
    ms per step in each (the profiler's overhead is in these, not in the layouts' wall
    figures), operators per step, the top kernels; and one evaluation of every member,
    timed without the profiler. GPU ms near host ms: kernels bound the phase; far
    below: launches do."""
    from torch.profiler import ProfilerActivity, profile

    x, xw = images(device, steps), images(device, warmup)
    runs = [build(config(i, device.type), (1, 28, 28), device) for i in range(G)]
    torch.backends.cudnn.benchmark = device.type == "cuda"
    pk = packing.stack(runs)
    packing.train_epoch(pk, xw).tolist()
    points = 1000 if device.type == "cpu" else 10_000          # App. D: eval.max_points
    test = datasets.Data(images(device, points // B), None, torch.arange(points, device=device))
    eval_s = _time_eval(pk, test, device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    with profile(activities=acts) as prof:
        _phased_steps(pk, x)
        with torch.profiler.record_function("evaluation"):
            pack_eval.evaluate(pk, test, list(range(G)))
        _sync(device)
    rows = _phase_rows(prof, steps)
    ops = sum(1 for e in prof.events() if e.name not in PHASES and (
        e.cpu_parent is None or e.cpu_parent.name in PHASES)) / steps   # under the ranges
    head = [f"pack of {G} ({pk.conv} conv), {steps} steps under the profiler, {ops:.0f} "
            f"top-level operators per step (evaluation included once)",
            f"{'phase':<18}{'host ms/step':>14}{'GPU ms/step':>13}", *rows,
            f"one evaluation of the {G} members on {points:,} test points, unprofiled: "
            f"{eval_s * 1e3:.1f} ms"]
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=60)
    return "\n".join(head) + "\n" + table, eval_s


def _phased_steps(pk, x: torch.Tensor) -> None:
    """`packing.train_epoch`'s steps with a named range around each phase."""
    from torch.profiler import record_function

    B = pk.runs[0].cfg.train.batch_size
    for i in range(0, x.shape[0], B):
        with record_function("data"):
            xb = x[i:i + B].expand(pk.G, *x[i:i + B].shape)        # [G, B, C, h, w]
            eps = packing.noise(pk, xb.shape[1])                   # [G, B, H]
        with record_function("forward/backward"):
            pk.flat.grad = None
            loss, xhat = pk.loss_fn(pk.views(pk.flat), pk.buffers, xb, eps, pk.beta)
            loss.sum().backward()
        with record_function("adam"):
            packing.adam(pk)
        with record_function("noise update"):
            if pk.after_fn is not None:
                with torch.no_grad():
                    pk.after_fn(pk.buffers, xb, xhat.detach())


def _phase_rows(prof, steps: int) -> list[str]:
    by = {e.key: e for e in prof.key_averages() if e.key in PHASES}
    rows = []
    for ph in PHASES:
        e = by.get(ph)
        n = 1 if ph == "evaluation" else steps
        host = e.cpu_time_total / 1e3 / n if e else 0.0
        gpu = getattr(e, "device_time_total", 0.0) / 1e3 / n if e else 0.0
        rows.append(f"{ph + (' (once)' if ph == 'evaluation' else ''):<18}{host:>14.2f}"
                    f"{gpu:>13.2f}")
    return rows


def _time_eval(pk, test, device, reps: int = 3) -> float:
    """Seconds for one vmapped evaluation of every member (median of reps, after one)."""
    pack_eval.evaluate(pk, test, list(range(pk.G)))
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        pack_eval.evaluate(pk, test, list(range(pk.G)))
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _worker(device: str, G: int, steps: int, warmup: int, barrier, q) -> None:
    dev = pick_device(device)
    torch.set_num_threads(1)
    x, xw = images(dev, steps), images(dev, warmup)
    runs = [build(config(os.getpid() % 8 + i, dev.type), (1, 28, 28), dev) for i in range(G)]
    pk = packing.stack(runs) if G > 1 else None
    epoch = (lambda x: train_epoch(runs[0], x)) if pk is None else \
        (lambda x: packing.train_epoch(pk, x).tolist())
    epoch(xw)
    _sync(dev)
    barrier.wait()
    t0 = time.time()
    epoch(x)
    q.put((t0, time.time()))


def time_shared(n: int, device: torch.device, steps: int, warmup: int, G: int = 1) -> float:
    """n processes on the same device at once (a 1/n share each), each training one trial
    (G = 1) or one pack of G."""
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(device.type, G, steps, warmup, barrier, q))
             for _ in range(n)]
    for p in procs:
        p.start()
    spans = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return n * G * steps * B / (end - start)


def layouts(dry: bool) -> list[tuple[str, str, dict]]:
    """Most telling first: a layout the budget cannot reach is reported as not measured."""
    packs = (4, 8, 16) if dry else (32, 64, 128)
    mid = packs[1]
    out = [("4 trials x 0.25 share", "shared", {"n": 4, "G": 1})]
    out += [(f"pack of {g}", "pack", {"G": g}) for g in packs]
    out += [(f"pack of {mid}, captured (cuda_graphs)", "pack", {"G": mid, "graphs": True}),
            (f"2 packs of {mid} x 0.5 share", "shared", {"n": 2, "G": mid})]
    return out


def measure(kind: str, device: torch.device, steps: int, warmup: int,
            args: dict) -> tuple[float, str]:
    if kind == "alone":
        return time_alone(args["G"], device, steps, warmup), "-"
    if kind == "shared":
        return time_shared(args["n"], device, steps, warmup, args.get("G", 1)), "-"
    if args.get("graphs") and device.type != "cuda":
        raise SystemExit("not measured: a CUDA graph needs CUDA (dry run)")
    kw = {k: v for k, v in args.items() if k != "G"}
    return time_pack(args["G"], device, steps, warmup, **kw)


def one_layout(args: argparse.Namespace) -> None:
    """Child mode: measure one layout, print its rate as JSON (isolates compile and OOM)."""
    device = pick_device("cpu" if args.cpu_dry_run else "cuda")
    kind, params = args.layout[0], json.loads(args.layout[1])
    if kind == "profile":
        text, eval_s = profile_pack(params["G"], device, args.steps // 4 or 1, args.warmup)
        print(json.dumps({"profile": text, "eval_s": eval_s, "G": params["G"]}))
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


def grid_estimate(results: list[dict], evaluation: tuple[float, int] | None) -> str:
    """The paper's MNIST grid on one GPU in the best layout: its training hours plus one
    evaluation per trial and epoch at the profiled pack's cost per member."""
    rated = [r for r in results if r["images_per_s"]]
    if not rated:
        return "paper grid: not estimated (no layout measured)"
    best = max(rated, key=lambda r: r["images_per_s"])
    train_h = GRID_TRIALS * TRIAL_IMAGES / best["images_per_s"] / 3600
    if evaluation is None:
        return f"paper grid, best layout ({best['layout']}): {train_h:.2f} h training; " \
               "evaluation not measured"
    eval_s, G = evaluation
    eval_h = GRID_TRIALS * 200 * eval_s / G / 3600          # 200 evaluations per trial
    return (f"paper grid, best layout ({best['layout']}): {train_h:.2f} h training + "
            f"{eval_h:.2f} h evaluation ({eval_s * 1e3:.0f} ms per pack of {G}) = "
            f"{train_h + eval_h:.2f} h (goal: 0.5 h)")


def report(args: argparse.Namespace) -> None:
    dev = "cpu (dry run)" if args.cpu_dry_run else torch.cuda.get_device_name(0)
    lines = [f"device: {dev}; torch {torch.__version__}; {args.steps} timed steps of batch {B} "
             "per layout; App. D MNIST VAE (H = 128)"]
    results, deadline = [], time.time() + args.budget
    big = 8 if args.cpu_dry_run else 64
    todo = layouts(args.cpu_dry_run)
    todo.insert(next(i for i, (_, k, p) in enumerate(todo) if p.get("G") == 2 * big),
                (f"profile of a pack of {big}", "profile", {"G": big}))
    profile, evaluation = "not measured", None
    for name, kind, params in todo:
        left = deadline - time.time()
        if left < 15:
            got, err = None, "not measured: out of --budget"
        else:
            got, err = run_layout(args, kind, params, timeout=min(left, 150.0))
        if kind == "profile":
            profile = got["profile"] if got else f"{name}: {err}"
            evaluation = got and (got["eval_s"], got["G"])
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
                 "34 configs x 5 seeds x 200 epochs of 42,000 images; this column: training steps only")
    lines.append(grid_estimate(results, evaluation))
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
