"""A pack's convolutions: vmap's grouped convolution, or im2col + one bmm over members.

Under vmap a convolution with [G, ...] weights becomes one convolution with groups = G,
which GPUs often run slowly (pytorch/pytorch#70954); the matmul forms below compute the
same numbers (tests/test_pack.py, float64) as one matmul per member, a bmm under vmap.
They read one kernel size, stride and padding, so `check_matmul` refuses a convolution
they cannot express. `pick_conv` times both on a pack's first passes (a GPU's choice).
"""
from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from trainables.train import autocast


class _MatmulConv2d(nn.Conv2d):
    """Conv2d as im2col + one matmul per member: under vmap, one bmm over the members
    instead of the grouped convolution (groups = G) that vmap makes of nn.Conv2d."""

    def forward(self, x):
        B, _, h, w = x.shape
        (k, _), (s, _), (p, _) = self.kernel_size, self.stride, self.padding   # square: checked
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        cols = F.unfold(x, k, padding=p, stride=s)                      # [B, Cin k k, L]
        cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)          # [Cin k k, B L]
        out = self.weight.reshape(self.out_channels, -1) @ cols         # [Cout, B L]
        out = out + self.bias.view(-1, 1)
        return out.view(self.out_channels, B, ho, wo).transpose(0, 1)   # [B, Cout, ho, wo]


class _MatmulConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d as one matmul per member + col2im (F.fold): the adjoint of the above."""

    def forward(self, x):
        B, C, h, w = x.shape
        (k, _), (s, _), (p, _) = self.kernel_size, self.stride, self.padding   # square: checked
        ho = (h - 1) * s - 2 * p + k + self.output_padding[0]
        wo = (w - 1) * s - 2 * p + k + self.output_padding[1]
        cols = self.weight.reshape(C, -1).t() @ x.transpose(0, 1).reshape(C, -1)  # [Cout k k, B L]
        cols = cols.view(cols.shape[0], B, h * w).transpose(0, 1)                 # [B, Cout k k, L]
        out = F.fold(cols, (ho, wo), k, padding=p, stride=s)
        return out + self.bias.view(1, -1, 1, 1)


CONVS = ("grouped", "matmul")
MATMUL = {nn.Conv2d: _MatmulConv2d, nn.ConvTranspose2d: _MatmulConvTranspose2d}


def check_matmul(name: str, conv: nn.Module) -> None:
    """The matmul forms read one kernel size, stride and padding: refuse what they cannot
    express instead of computing another convolution."""
    def square(v):
        return isinstance(v, tuple) and len(set(v)) == 1
    why = [w for w, bad in (
        (f"kernel {conv.kernel_size} not square", not square(conv.kernel_size)),
        (f"stride {conv.stride} differs per dimension", not square(conv.stride)),
        (f"padding {conv.padding!r} differs per dimension or is a mode",
         not square(conv.padding) or isinstance(conv.padding, str)),
        (f"dilation {conv.dilation}", tuple(conv.dilation) != (1, 1)),
        (f"groups {conv.groups}", conv.groups != 1),
        (f"padding_mode {conv.padding_mode!r}", conv.padding_mode != "zeros"),
        ("no bias", conv.bias is None)) if bad]
    if why:
        raise ValueError(f"conv: matmul cannot run {name} ({type(conv).__name__}): "
                         f"{'; '.join(why)}; use conv: grouped")


def _matmul_convs(module: nn.Module, prefix: str = "") -> nn.Module:
    """Swap every convolution of a meta-device template for its matmul form (refusing
    those it cannot express); parameter names stay, so functional_call's state fits."""
    for name, child in module.named_children():
        cls = MATMUL.get(type(child))
        if cls is None:
            _matmul_convs(child, f"{prefix}{name}.")
            continue
        check_matmul(prefix + name, child)
        kw = dict(stride=child.stride, padding=child.padding, device="meta")
        if isinstance(child, nn.ConvTranspose2d):
            kw["output_padding"] = child.output_padding
        setattr(module, name, cls(child.in_channels, child.out_channels, child.kernel_size, **kw))
    return module


def pick_conv(pack: "Pack", fns: dict, warmup: int = 3,  # noqa: F821 (pack imports us)
              reps: int = 5) -> tuple[str, dict]:
    """The convolution layout whose forward and backward pass of this pack is faster:
    (name, {name: median ms}). Timed on constant batches of the pack's shape, on copies of
    its weights and noise parameters: the members' state and generators are untouched.
    As cudnn.benchmark does for algorithms, a GPU run may pick differently from the next;
    the layouts give the same numbers up to rounding."""
    run = pack.runs[0]
    B, H = run.cfg.train.batch_size, run.cfg.model.latent_dim
    x = torch.full((pack.G, B, *run.vae.shape), 0.5, dtype=pack.flat.dtype, device=pack.device)
    eps = torch.zeros(pack.G, B, H, dtype=pack.flat.dtype, device=pack.device)
    flat = pack.flat.detach().clone().requires_grad_()
    ms = {}
    for name, fn in fns.items():
        buffers = {k: b.clone() for k, b in pack.buffers.items()}     # EM updates them in place
        times = []
        try:
            for i in range(warmup + reps):
                _sync(pack.device)
                t0 = time.perf_counter()
                with autocast(run.cfg, pack.device):
                    loss, _ = fn(pack.views(flat), buffers, x, eps, pack.beta)
                loss.sum().backward()
                _sync(pack.device)
                flat.grad = None
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        except torch.OutOfMemoryError:            # this layout does not fit: not a candidate
            loss = flat.grad = None
            times = [math.inf]
            if pack.device.type == "cuda":
                torch.cuda.empty_cache()
        ms[name] = statistics.median(times)
    best = min(ms, key=ms.get)
    if math.isinf(ms[best]):
        raise torch.OutOfMemoryError(f"CUDA out of memory: a pack of {pack.G} fits in neither "
                                     f"convolution layout ({', '.join(ms)})")
    return best, ms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
