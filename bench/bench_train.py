"""Issue 2's benchmark: the project's training step against a plain PyTorch loop.

Both train the MNIST architecture of App. D (conv 32x4x4, 32x4x4 stride 2,
FC 256; 128 latents) with the `specified` noise model (sigma2 = 0.01),
batch 100 and Adam 1e-3, on the same real MNIST images, one sample of z per
point. The project side is `trainables.train.build` + `train_epoch`; the plain
side is written out below with nothing but torch. Repetitions alternate
(project, plain, project, plain, ...) so that load from other processes on a
shared machine falls on both alike; the table gives medians.

The indicators are timed on 10,000 points x 128 factors and expressed as a
fraction of one epoch of 60,000 images at the project's measured throughput:
`indicators.compute` alone, plus the encoding of the points, and the whole
`train.evaluate` (EVLB, reconstruction MSE and indicators).

Targets (issue 2): project >= 0.95x plain; indicators < 5% of an epoch.
Each figure is given by wall clock and per CPU-second of this process; on a
CPU shared with other work, run with --threads 1 and read the cpu column.

  python bench/bench_train.py                       # 5 reps of 10,000 images each
  python bench/bench_train.py --threads 1 --reps 11 --images 5000
  python bench/bench_train.py --device cuda         # wall column only
  python bench/bench_train.py --smoke-test          # seconds; for CI
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables import data as datasets, indicators, train  # noqa: E402
from trainables.config import DatasetConfig, TrialConfig  # noqa: E402

# the real MNIST test set ($VAESTUDY_MNIST, ../shared), else the 1,000-image slice shipped
# for the tests (a clean clone: the smoke test's figures then come from 1,000 images)
MNIST = next((p for p in (os.environ.get("VAESTUDY_MNIST"), ROOT.parent / "shared" / "data"
                          / "mnist") if p and (Path(p) / "t10k-images-idx3-ubyte.gz").exists()),
             ROOT / "tests" / "data" / "mnist")
EPOCH_IMAGES = 60_000                 # one MNIST epoch, for the indicator fraction
EVAL_POINTS, H = 10_000, 128          # App. D: indicators on up to 10,000 points
SIGMA2, BATCH, LR, SEED = 0.01, 100, 1e-3, 0


# ---- the plain loop -----------------------------------------------------------

def plain_nets(H: int) -> tuple[nn.Module, nn.Module]:
    """App. D's MNIST encoder (-> [mu, logvar]) and decoder, as bare Sequentials."""
    enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),     # [B, 32, 14, 14]
                        nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),    # [B, 32, 7, 7]
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 256), nn.ReLU(),
                        nn.Linear(256, 2 * H))                    # [B, 2H]
    dec = nn.Sequential(nn.Linear(H, 256), nn.ReLU(), nn.Linear(256, 32 * 7 * 7), nn.ReLU(),
                        nn.Unflatten(1, (32, 7, 7)),
                        nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),   # [B, 32, 14, 14]
                        nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid())  # [B, 1, 28, 28]
    return enc, dec


class Plain:
    """Encoder/decoder forward, reparameterisation, Gaussian log-lik + KL, Adam."""

    def __init__(self, device: torch.device):
        torch.manual_seed(SEED)
        self.enc, self.dec = (m.to(device) for m in plain_nets(H))
        self.opt = torch.optim.Adam([*self.enc.parameters(), *self.dec.parameters()], lr=LR)
        self.gen = torch.Generator(device=device).manual_seed(SEED)
        self.device = device

    def epoch(self, x: torch.Tensor) -> float:
        D = x[0].numel()
        const = 0.5 * D * math.log(2 * math.pi * SIGMA2)
        perm = torch.randperm(x.shape[0], generator=self.gen, device=self.device)
        total = torch.zeros((), device=self.device)
        for i in range(0, x.shape[0], BATCH):
            xb = x[perm[i:i + BATCH]]                                    # [B, 1, 28, 28]
            mu, logvar = self.enc(xb).chunk(2, dim=1)                    # [B, H] each
            eps = torch.randn(mu.shape, generator=self.gen, device=self.device)
            z = mu + (0.5 * logvar).exp() * eps
            r2 = (xb - self.dec(z)).flatten(1).pow(2).sum(1)             # [B]
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)    # [B]
            loss = (0.5 * r2 / SIGMA2 + const + kl).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach() * xb.shape[0]
        return float(total) / x.shape[0]                                 # syncs a GPU


# ---- the project's step -------------------------------------------------------

def project_config(device: str) -> TrialConfig:
    return TrialConfig.from_dict({
        "dataset.name": "mnist", "dataset.path": str(MNIST), "model.latent_dim": H,
        "noise.kind": "specified", "noise.sigma2": SIGMA2, "train.batch_size": BATCH,
        "train.lr": LR, "train.seed": SEED, "train.device": device,
        "eval.max_points": EVAL_POINTS})


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def shapes(*modules: nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for m in modules for p in m.parameters())


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_training(run: train.Run, plain: Plain, x: torch.Tensor, reps: int) -> dict:
    """images/s by wall clock and per CPU-second of this process, per rep and side.

    With --threads 1 on a shared CPU the CPU-time rate is the one to trust: time
    spent descheduled while other processes run counts in wall time only (with
    more threads, spinning on a descheduled peer counts as CPU time). On a GPU
    only the wall rate means anything.
    """
    train.train_epoch(run, x[:10 * BATCH])                      # warm-up: allocator, kernels
    plain.epoch(x[:10 * BATCH])
    sides = {"project": lambda: train.train_epoch(run, x), "plain": lambda: plain.epoch(x)}
    rates = {side: {"wall": [], "cpu": []} for side in sides}
    for _ in range(reps):                                        # A, B, A, B, ...
        for side, fn in sides.items():
            for clock, secs in zip(("wall", "cpu"), timed(fn)):
                rates[side][clock].append(x.shape[0] / secs)
    return rates


def bench_indicators(run: train.Run, test: datasets.Data, reps: int) -> dict:
    """Median (wall, CPU) seconds of indicators.compute, encoding + compute, train.evaluate."""
    ev = run.cfg.eval
    enc = run.vae.encoder.eval()
    with torch.no_grad():
        mu, logvar = torch.cat([torch.cat(enc(c), 1) for c in test.x.split(2000)]).chunk(2, 1)
        calls = {"indicators.compute": (indicators.compute, mu, logvar, ev.used_threshold,
                                        ev.normal_var_tol),
                 "encode + indicators": (_encode_and_compute, enc, test.x, ev),
                 "train.evaluate": (train.evaluate, run, test)}
        indicators.compute(mu, logvar)                           # warm-up
        out = {name: [] for name in calls}
        for _ in range(reps):
            for name, (fn, *args) in calls.items():
                out[name].append(timed(fn, *args))
    return {name: tuple(statistics.median(t[i] for t in v) for i in (0, 1))
            for name, v in out.items()}


def _encode_and_compute(enc: nn.Module, x: torch.Tensor, ev) -> indicators.Indicators:
    mu, logvar = (torch.cat(p) for p in zip(*(enc(c) for c in x.split(2000))))  # [M, H]
    return indicators.compute(mu, logvar, ev.used_threshold, ev.normal_var_tol)


# ---- the run --------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5, help="alternating repetitions per side")
    p.add_argument("--images", type=int, default=10_000, help="images per repetition")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--data", default=str(MNIST), help="directory of MNIST IDX files")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    a = p.parse_args(argv)
    if a.smoke_test:
        a.reps, a.images = 1, 1000
    if a.threads:
        torch.set_num_threads(a.threads)
    device = train.pick_device(a.device)

    data = datasets.load_mnist(DatasetConfig(name="mnist", path=a.data))
    data.x = datasets.as_float(data.x)           # both loops get float images in [0, 1]
    x = data.x[:a.images].to(device)                                 # [N, 1, 28, 28]
    if x.shape[0] < a.images:                    # t10k has 10,000: tile for bigger runs
        x = x.repeat(math.ceil(a.images / x.shape[0]), 1, 1, 1)[:a.images]
    n_eval = 1000 if a.smoke_test else EVAL_POINTS
    test = datasets.Data(data.x[:n_eval], None, torch.arange(min(n_eval, len(data)))).to(device)

    cfg = project_config(device.type)
    run = train.build(cfg, tuple(x.shape[1:]), device)
    plain = Plain(device)
    assert shapes(run.vae) == shapes(plain.enc, plain.dec), "the two models differ"

    rates = bench_training(run, plain, x, a.reps)
    ind = bench_indicators(run, test, min(a.reps, 5))
    print_table(a, device, x.shape[0], len(test), rates, ind, n_params(run.vae))
    return 0


def print_table(a, device, n, n_eval, rates, ind, params) -> None:
    med = {side: {c: statistics.median(v) for c, v in r.items()} for side, r in rates.items()}
    epoch = {c: EPOCH_IMAGES / med["project"][c] for c in ("wall", "cpu")}   # seconds
    print(f"MNIST conv2 VAE, {params:,} parameters, H={H}, specified sigma2={SIGMA2}, "
          f"batch {BATCH}, Adam {LR}, real MNIST t10k images")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{a.reps} alternating reps x {n:,} images; medians; cpu = per CPU-second of "
          "this process")
    p, q = med["project"], med["plain"]
    rows = [("plain loop, images/s", q["wall"], q["cpu"], "{:,.0f}", None),
            ("project step, images/s", p["wall"], p["cpu"], "{:,.0f}", None),
            ("project / plain", p["wall"] / q["wall"], p["cpu"] / q["cpu"], "{:.3f}x",
             (">= 0.95x", 0.95, 1)),
            ("  median of per-pair ratios", *(_paired(rates, c) for c in ("wall", "cpu")),
             "{:.3f}x", (">= 0.95x", 0.95, 1)),
            (f"epoch of {EPOCH_IMAGES:,} images, s", epoch["wall"], epoch["cpu"], "{:.1f}", None)]
    for name, (wall, cpu) in ind.items():
        rows.append((f"{name}, s", wall, cpu, "{:.3f}", None))
        rows.append(("  / epoch", 100 * wall / epoch["wall"], 100 * cpu / epoch["cpu"], "{:.2f}%",
                     ("< 5%", 5.0, -1)))
    head = f"measure (indicators on {n_eval:,} x {H})"
    print(f"{head:<40} {'wall':>10} {'cpu':>10}  {'target':>8}  ok (wall, cpu)")
    for name, wall, cpu, fmt, target in rows:
        ok = "" if target is None else ", ".join(_ok(target[2] * (v - target[1]) >= 0)
                                                 for v in (wall, cpu))
        print(f"{name:<40} {fmt.format(wall):>10} {fmt.format(cpu):>10}  "
              f"{target[0] if target else '':>8}  {ok}")
    for side in rates:
        for clock in ("wall", "cpu"):
            print(f"per rep, {side:>7} {clock:>4}: " +
                  ", ".join(f"{r:,.0f}" for r in rates[side][clock]))
    if a.smoke_test:
        print("(--smoke-test: sizes too small for the figures to mean anything)")


def _paired(rates: dict, clock: str) -> float:
    """Median of project/plain over adjacent (A, B) reps: robust to slow drifts in load."""
    return statistics.median(a / b for a, b in zip(rates["project"][clock], rates["plain"][clock]))


def _ok(good: bool) -> str:
    return "yes" if good else "NO"


if __name__ == "__main__":
    sys.exit(main())
