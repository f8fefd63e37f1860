"""Packed training: G trials of one shape trained in one vectorised step (torch.func).

Members share the data, architecture, latent size, batch size and noise kind; they
differ in beta, sigma2, seed and learning rate. Each member is an ordinary `Run`
built by `train.build`, so its initial weights, its generator (batch order and
noise eps) and its checkpoint format are exactly those of the unpacked trial.
While training, the members' weights and Adam moments live as rows g of [G, P]
tensors (all P weights of a member in one row; `Pack.views` gives the [G, ...]
tensor of each weight without a copy), the noise parameters as [G, ...] stacks, and
one step is `vmap` over members of `functional_call` on a template VAE on the meta
device: the same `VAE.loss` (Eq. 11) and the same noise models' updates
(App. A.1 closed form after the step, App. A.2 EM inside it), on each member's
own residuals. Adam is written over the stacked tensors because members have
their own learning rates and, once resumed at different epochs, their own step
counts. A member that is not `active` (diverged, finished) is masked out of the
loss and of every update. `sync(pack, g)` copies member g back into its `Run`
(weights, noise, Adam state in torch.optim.Adam's format) for evaluation and
checkpoints, so everything after a step is the unpacked trial's own code.
Under vmap a convolution with [G, ...] weights is one grouped convolution; a pack may
run them instead as im2col + one bmm over members (`conv`), on a GPU whichever its
first passes time faster (`pick_conv`).
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from trainables.data import as_float
from trainables.noise import NoiseModel
from trainables.train import Run, autocast
from trainables.vae import VAE

BETAS, EPS = (0.9, 0.999), 1e-8           # torch.optim.Adam's defaults, as `train.build` uses


class _Method(nn.Module):
    """Calls `fn(vae, *args)` as forward, so functional_call can swap in a member's state."""

    def __init__(self, vae: VAE, fn):
        super().__init__()
        self.vae, self.fn = vae, fn

    def forward(self, *args):
        return self.fn(self.vae, *args)


class _MatmulConv2d(nn.Conv2d):
    """Conv2d as im2col + one matmul per member: under vmap, one bmm over the members
    instead of the grouped convolution (groups = G) that vmap makes of nn.Conv2d."""

    def forward(self, x):
        B, _, h, w = x.shape
        (k, _), (s, _), (p, _) = self.kernel_size, self.stride, self.padding
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
        (k, _), (s, _), (p, _) = self.kernel_size, self.stride, self.padding
        ho = (h - 1) * s - 2 * p + k + self.output_padding[0]
        wo = (w - 1) * s - 2 * p + k + self.output_padding[1]
        cols = self.weight.reshape(C, -1).t() @ x.transpose(0, 1).reshape(C, -1)  # [Cout k k, B L]
        cols = cols.view(cols.shape[0], B, h * w).transpose(0, 1)                 # [B, Cout k k, L]
        out = F.fold(cols, (ho, wo), k, padding=p, stride=s)
        return out + self.bias.view(1, -1, 1, 1)


CONVS = ("grouped", "matmul")
MATMUL = {nn.Conv2d: _MatmulConv2d, nn.ConvTranspose2d: _MatmulConvTranspose2d}


def _matmul_convs(module: nn.Module) -> nn.Module:
    """Swap every (square, undilated, ungrouped) convolution of a meta-device template
    for its matmul form; parameter names stay, so functional_call's state fits."""
    for name, child in module.named_children():
        cls = MATMUL.get(type(child))
        if cls is None:
            _matmul_convs(child)
            continue
        kw = dict(stride=child.stride, padding=child.padding, device="meta")
        if isinstance(child, nn.ConvTranspose2d):
            kw["output_padding"] = child.output_padding
        setattr(module, name, cls(child.in_channels, child.out_channels, child.kernel_size, **kw))
    return module


def _loss(vae: VAE, x, eps, beta):
    return vae.loss(x, eps, beta)                       # Eq. 11 with this member's beta


def _after_step(vae: VAE, x, xhat):
    vae.noise.after_step(x, xhat)                       # App. A.1: updates its buffer in place
    return x.new_zeros(())


@dataclass
class Pack:
    runs: list[Run]
    flat: torch.Tensor                   # [G, P] every member's weights in one leaf with a grad
    layout: list[tuple[str, int, torch.Size]]  # (name, offset, shape) of each weight in flat
    buffers: dict[str, torch.Tensor]     # name -> [G, ...] noise parameters updated in place
    m: torch.Tensor                      # Adam's first moments [G, P]
    v: torch.Tensor                      # Adam's second moments [G, P]
    steps: torch.Tensor                  # [G] Adam steps taken (float64)
    lr: torch.Tensor                     # [G] (float64)
    beta: torch.Tensor                   # [G] weight of the KL term
    active: list[bool]
    loss_fn: object = None               # vmapped (possibly compiled) member loss
    conv: str = "grouped"                # how the convolutions run: grouped or matmul
    conv_ms: dict = field(default_factory=dict)  # pick_conv's timings (ms per pass), if any
    after_fn: object = None              # vmapped noise update after the step, or None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _active_t: torch.Tensor | None = None
    _active_key: tuple | None = None

    @property
    def G(self) -> int:
        return len(self.runs)

    def views(self, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> [G, ...] views of a [G, P] tensor (flat, m or v): no copies, no kernels.
        One split, so autograd gathers the weights' gradients into flat.grad with one cat
        (a slice per weight would write a zero-filled [G, P] gradient each)."""
        parts = t.split([sh.numel() for _, _, sh in self.layout], dim=1)
        return {n: part.view(self.G, *sh) for (n, _, sh), part in zip(self.layout, parts)}

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """name -> [G, ...] the members' weights (views of flat, outside autograd)."""
        return self.views(self.flat.detach())


def stack(runs: list[Run], conv: str = "auto") -> Pack:
    """Stack the members' state; each run keeps its own generator for batches and eps.
    The weights live in one [G, P] tensor, so Adam is a dozen whole-pack operations
    whatever the number of weight tensors (on a GPU, kernel launches, not flops, bound
    a step of small models). conv: "grouped" (vmap's rule for a convolution with a
    batched weight: one convolution with groups = G), "matmul" (im2col + one bmm over
    members) or "auto": on a GPU the faster of the two for this pack, timed on a few
    forward and backward passes (`pick_conv`); on a CPU "grouped" (matmul is 0.4x there).
    Both compute the same numbers (tests/test_pack.py, float64)."""
    if conv not in CONVS + ("auto",):
        raise ValueError(f"conv: {conv!r}; allowed: auto, {', '.join(CONVS)}")
    G = len(runs)
    named = [list(r.vae.named_parameters()) for r in runs]
    layout, o = [], 0
    for n, p in named[0]:
        layout.append((n, o, p.shape))
        o += p.numel()
    flat = torch.stack([torch.cat([p.detach().reshape(-1) for _, p in ps]) for ps in named])
    buffers = {n: torch.stack([dict(r.vae.named_buffers())[n].detach() for r in runs])
               for n, _ in runs[0].vae.named_buffers()}
    steps = []
    for r in runs:                               # Adam's state of a resumed member, else zeros
        st = [r.opt.state.get(p, {}) for p in r.vae.parameters()]
        steps.append(float(st[0]["step"]) if st and "step" in st[0] else 0.0)
    m, v = (torch.stack([torch.cat([_moment(r, i, key).reshape(-1) for i in range(len(layout))])
                         for r in runs]) for key in ("exp_avg", "exp_avg_sq"))
    dev, dt = runs[0].device, flat.dtype
    cfg = runs[0].cfg
    pack = Pack(runs, flat.requires_grad_(), layout, buffers, m, v,
                steps=torch.tensor(steps, dtype=torch.float64, device=dev),
                lr=torch.tensor([r.cfg.train.lr for r in runs], dtype=torch.float64, device=dev),
                beta=torch.tensor([r.cfg.noise.beta for r in runs], dtype=dt, device=dev),
                active=[True] * G, device=dev)
    with torch.device("meta"):
        template = VAE(runs[0].vae.shape, cfg)
    fns = {c: _loss_fn(template, c) for c in ((conv,) if conv in CONVS else CONVS)}
    if conv == "auto":
        conv, pack.conv_ms = ("grouped", {}) if dev.type == "cpu" else pick_conv(pack, fns)
    pack.conv = conv
    pack.loss_fn = torch.compile(fns[conv]) if cfg.train.compile else fns[conv]
    if _updates_after_step(template.noise):
        pack.after_fn = vmap(lambda b, x, xh: functional_call(_Method(template, _after_step),
                                                             _prefix({}, b), (x, xh)))
    return pack


def _loss_fn(template: VAE, conv: str):
    """The members' loss, vmapped over [G, ...] weights, buffers, batches, eps and beta."""
    if conv == "matmul":
        template = _matmul_convs(copy.deepcopy(template))
    return vmap(lambda p, b, x, e, beta: functional_call(_Method(template, _loss),
                                                         _prefix(p, b), (x, e, beta)))


def pick_conv(pack: Pack, fns: dict, warmup: int = 3, reps: int = 5) -> tuple[str, dict]:
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


def _moment(run: Run, i: int, key: str) -> torch.Tensor:
    p = list(run.vae.parameters())[i]
    st = run.opt.state.get(p, {})
    return st[key].detach().clone() if key in st else torch.zeros_like(p.detach())


def _prefix(params: dict, buffers: dict) -> dict:
    return {**{f"vae.{k}": t for k, t in params.items()},
            **{f"vae.{k}": t for k, t in buffers.items()}}


def _updates_after_step(noise: NoiseModel) -> bool:
    return type(noise).after_step is not NoiseModel.after_step and \
        not getattr(noise, "gradient", False)


def train_epoch(pack: Pack, x: torch.Tensor) -> torch.Tensor:
    """One pass over the shared training tensor, each member in its own order: [G] mean losses."""
    N, B = x.shape[0], pack.runs[0].cfg.train.batch_size
    H = pack.runs[0].cfg.model.latent_dim
    idle = torch.arange(N, device=pack.device)
    perms = torch.stack([torch.randperm(N, generator=r.gen, device=pack.device) if a else idle
                         for r, a in zip(pack.runs, pack.active)])                  # [G, N]
    total = torch.zeros(pack.G, dtype=torch.float64, device=pack.device)
    for i in range(0, N, B):
        xb = as_float(x[perms[:, i:i + B]])                                 # [G, B, C, H, W]
        b = xb.shape[1]
        eps = torch.stack([torch.randn(b, H, generator=r.gen, device=pack.device)
                           if a else torch.zeros(b, H, device=pack.device)
                           for r, a in zip(pack.runs, pack.active)])                # [G, B, H]
        total += step(pack, xb, eps).double() * b
    return total / N


def step(pack: Pack, xb: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """One SGVB step of every active member: [G, B, ...] batches -> [G] losses."""
    masked = not all(pack.active)
    saved = {k: b.clone() for k, b in pack.buffers.items()} if masked else None
    pack.flat.grad = None
    with autocast(pack.runs[0].cfg, pack.device):
        loss, xhat = pack.loss_fn(pack.views(pack.flat), pack.buffers, xb, eps, pack.beta)
    objective = torch.where(_mask(pack, loss), loss, 0.0) if masked else loss
    objective.sum().backward()                    # members are independent: grad g = d loss_g
    adam(pack)
    if pack.after_fn is not None:
        with torch.no_grad():
            pack.after_fn(pack.buffers, xb, xhat.detach().to(xb.dtype))
    if saved is not None:                          # EM inside the loss ran for every member
        with torch.no_grad():
            for k, b in pack.buffers.items():
                b.copy_(torch.where(_mask(pack, b), b, saved[k]))
    return loss.detach()


def _mask(pack: Pack, like: torch.Tensor) -> torch.Tensor:
    """The active members as a bool tensor shaped to broadcast against `like` [G, ...]."""
    return _active(pack).view(-1, *([1] * (like.dim() - 1)))


def _active(pack: Pack) -> torch.Tensor:
    """`pack.active` on the device [G], copied only when it changes (not every step)."""
    key = tuple(pack.active)
    if pack._active_key != key:
        pack._active_t, pack._active_key = torch.tensor(key, device=pack.device), key
    return pack._active_t


@torch.no_grad()
def adam(pack: Pack) -> None:
    """torch.optim.Adam's update (no weight decay, no amsgrad) with per-member lr and step,
    on the whole [G, P] state at once."""
    b1, b2 = BETAS
    act = _active(pack)
    pack.steps += act.double()
    s = pack.steps.clamp_min(1.0)
    step_size = (pack.lr / (1 - b1 ** s)).to(pack.flat.dtype).view(-1, 1)          # [G, 1]
    bc2_sqrt = (1 - b2 ** s).sqrt().to(pack.flat.dtype).view(-1, 1)                # [G, 1]
    p, g = pack.flat, pack.flat.grad
    if not all(pack.active):
        keep = act.view(-1, 1)
        g = torch.where(keep, g, 0.0)
        m_new, v_new = pack.m.lerp(g, 1 - b1), pack.v.mul(b2).addcmul_(g, g, value=1 - b2)
        p_new = p - m_new / (v_new.sqrt() / bc2_sqrt).add_(EPS) * step_size
        pack.m.copy_(torch.where(keep, m_new, pack.m))
        pack.v.copy_(torch.where(keep, v_new, pack.v))
        p.copy_(torch.where(keep, p_new, p))
        return
    pack.m.lerp_(g, 1 - b1)
    pack.v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = pack.v.sqrt().div_(bc2_sqrt).add_(EPS)                # one [G, P] temporary
    p.sub_(torch.div(pack.m, denom, out=denom).mul_(step_size))   # p - lr_t * m / denom


def finite(pack: Pack) -> list[bool]:
    """Per member: every weight finite."""
    return pack.flat.detach().isfinite().all(1).tolist()


@torch.no_grad()
def poison(pack: Pack, g: int) -> None:
    """Fault injection: member g's first weight becomes NaN (as `train._timed_epoch` does)."""
    pack.flat[g, 0] = float("nan")


@torch.no_grad()
def sync(pack: Pack, g: int) -> Run:
    """Member g's weights, noise parameters and Adam state back into its own Run."""
    run = pack.runs[g]
    params, m, v = pack.params, pack.views(pack.m), pack.views(pack.v)
    for n, p in run.vae.named_parameters():
        p.copy_(params[n][g])
        if pack.steps[g] > 0:
            run.opt.state[p] = {"step": torch.tensor(float(pack.steps[g])),
                                "exp_avg": m[n][g].clone(),
                                "exp_avg_sq": v[n][g].clone()}
    for n, b in run.vae.named_buffers():
        b.copy_(pack.buffers[n][g])
    return run
