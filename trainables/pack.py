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
own residuals. Adam is torch's fused kernel over the members' rows, one call per
learning rate, with the settings `train.build` gave each member's optimizer
(`train.adam_settings`) and each member's own step count (members resumed at
different epochs). A member that leaves (completed, diverged, stopped) is dropped
from every stacked tensor (`leave`): the step then costs what the others cost.
`sync(pack, g)` copies member g back into its `Run` (weights, noise, Adam state in
torch.optim.Adam's format) for checkpoints, so everything after a step is the
unpacked trial's own code; `pack_eval` evaluates the members in vmapped passes.
Under vmap a convolution with [G, ...] weights is one grouped convolution; a pack may
run them instead as im2col + one bmm over members (`conv`), on a GPU whichever its
first passes time faster (`pick_conv`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call, vmap

from trainables.data import as_float
from trainables.pack_conv import CONVS, _matmul_convs, check_matmul, pick_conv  # noqa: F401
from trainables.noise import NoiseModel
from trainables.train import Run, adam_settings, autocast
from trainables.vae import VAE

# Adam's settings a pack implements; the rest must be torch.optim.Adam's defaults
ADAM_PLAIN = {"amsgrad": False, "maximize": False, "differentiable": False,
              "decoupled_weight_decay": False}
ADAM_SHARED = ("betas", "eps", "weight_decay")     # one value for the whole pack


class _Method(nn.Module):
    """Calls `fn(vae, *args)` as forward, so functional_call can swap in a member's state."""

    def __init__(self, vae: VAE, fn):
        super().__init__()
        self.vae, self.fn = vae, fn

    def forward(self, *args):
        return self.fn(self.vae, *args)


def _loss(vae: VAE, x, eps, beta):
    return vae.loss(x, eps, beta)                       # Eq. 11 with this member's beta


def _evlb(vae: VAE, x, eps):
    return vae.evlb_terms(x, eps)                       # Eq. 13's terms, as `train.evaluate`


def _after_step(vae: VAE, x, xhat):
    vae.noise.after_step(x, xhat)                       # App. A.1: updates its buffer in place
    return x.new_zeros(())


@dataclass
class Pack:
    runs: list[Run]                      # the members still training, in row order
    flat: torch.Tensor                   # [G, P] every member's weights in one leaf with a grad
    layout: list[tuple[str, int, torch.Size]]  # (name, offset, shape) of each weight in flat
    buffers: dict[str, torch.Tensor]     # name -> [G, ...] noise parameters updated in place
    m: torch.Tensor                      # Adam's first moments [G, P]
    v: torch.Tensor                      # Adam's second moments [G, P]
    steps: torch.Tensor                  # [G] Adam steps taken (float32, as fused Adam's)
    lr: list[float]                      # [G] each member's learning rate
    beta: torch.Tensor                   # [G] weight of the KL term
    adam: dict                           # betas, eps, weight_decay: shared by the members
    loss_fn: object = None               # vmapped (possibly compiled) member loss
    eval_fn: object = None               # vmapped Eq. 13 terms over members, shared test batch
    conv: str = "grouped"                # how the convolutions run: grouped or matmul
    conv_ms: dict = field(default_factory=dict)  # pick_conv's timings (ms per pass), if any
    after_fn: object = None              # vmapped noise update after the step, or None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    eps: torch.Tensor | None = None      # [G, B, H] the step's noise, drawn in place
    graph: object = None                 # the captured step (pack_graph), when cuda_graphs

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


def stack(runs: list[Run], conv: str = "auto", graphs: bool = False) -> Pack:
    """Stack the members' state; each run keeps its own generator for batches and eps.
    The weights live in one [G, P] tensor, so Adam is one fused call per learning rate
    whatever the number of weight tensors (on a GPU, kernel launches, not flops, bound
    a step of small models). conv: "grouped" (vmap's rule for a convolution with a
    batched weight: one convolution with groups = G), "matmul" (im2col + one bmm over
    members) or "auto": on a GPU the faster of the two for this pack, timed on a few
    forward and backward passes (`pick_conv`); on a CPU "grouped" (matmul is 0.4x there).
    Both compute the same numbers (tests/test_pack.py, float64). graphs: capture the
    step as a CUDA graph (`pack_graph`; train.cuda_graphs)."""
    if conv not in CONVS + ("auto",):
        raise ValueError(f"conv: {conv!r}; allowed: auto, {', '.join(CONVS)}")
    named = [list(r.vae.named_parameters()) for r in runs]
    layout, o = [], 0
    for n, p in named[0]:
        layout.append((n, o, p.shape))
        o += p.numel()
    flat = torch.stack([torch.cat([p.detach().reshape(-1) for _, p in ps]) for ps in named])
    buffers = {n: torch.stack([dict(r.vae.named_buffers())[n].detach() for r in runs])
               for n, _ in runs[0].vae.named_buffers()}
    m, v = (torch.stack([torch.cat([_moment(r, i, key).reshape(-1) for i in range(len(layout))])
                         for r in runs]) for key in ("exp_avg", "exp_avg_sq"))
    dev, dt, cfg = runs[0].device, flat.dtype, runs[0].cfg
    settings = _adam_settings(runs)
    pack = Pack(runs, flat.requires_grad_(), layout, buffers, m, v,
                steps=torch.tensor([_steps(r) for r in runs], dtype=torch.float32, device=dev),
                lr=[s.pop("lr") for s in settings], adam=settings[0],
                beta=torch.tensor([r.cfg.noise.beta for r in runs], dtype=dt, device=dev),
                device=dev)
    with torch.device("meta"):
        template = VAE(runs[0].vae.shape, cfg)
    fns = {c: _loss_fn(template, c) for c in ((conv,) if conv in CONVS else CONVS)}
    if conv == "auto":
        conv, pack.conv_ms = ("grouped", {}) if dev.type == "cpu" else pick_conv(pack, fns)
    pack.conv = conv
    pack.loss_fn = torch.compile(fns[conv]) if cfg.train.compile else fns[conv]
    pack.eval_fn = _eval_fn(template, conv)
    if _updates_after_step(template.noise):
        pack.after_fn = vmap(lambda b, x, xh: functional_call(_Method(template, _after_step),
                                                             _prefix({}, b), (x, xh)))
    if graphs:
        from trainables.pack_graph import CapturedStep
        pack.graph = CapturedStep(pack, eager_step)
    return pack


def _adam_settings(runs: list[Run]) -> list[dict]:
    """Each member's Adam settings as `train.build` made them; refused where the pack's
    Adam would compute something else (amsgrad, maximize...) or where members disagree
    on a setting other than lr."""
    settings = [adam_settings(r.opt) for r in runs]
    for key, want in ADAM_PLAIN.items():
        if settings[0].get(key, want) != want:
            raise ValueError(f"a pack's Adam implements {key}={want}; build made "
                             f"{key}={settings[0][key]}")
    for key in ADAM_SHARED:
        if len({s[key] for s in settings}) != 1:
            raise ValueError(f"a pack's members must share Adam's {key}; got "
                             f"{sorted({s[key] for s in settings})}")
    return [{"lr": s["lr"], **{k: s[k] for k in ADAM_SHARED}} for s in settings]


def _steps(run: Run) -> float:
    """Adam's step count of a resumed member (0 for a fresh one)."""
    st = [run.opt.state.get(p, {}) for p in run.vae.parameters()]
    return float(st[0]["step"]) if st and "step" in st[0] else 0.0


def _loss_fn(template: VAE, conv: str):
    """The members' loss, vmapped over [G, ...] weights, buffers, batches, eps and beta."""
    if conv == "matmul":
        template = _matmul_convs(copy.deepcopy(template))
    return vmap(lambda p, b, x, e, beta: functional_call(_Method(template, _loss),
                                                         _prefix(p, b), (x, e, beta)))


def _eval_fn(template: VAE, conv: str):
    """Eq. 13's terms of every member on one shared test batch (x not stacked)."""
    if conv == "matmul":
        template = _matmul_convs(copy.deepcopy(template))
    return vmap(lambda p, b, x, e: functional_call(_Method(template, _evlb), _prefix(p, b),
                                                   (x, e)), in_dims=(0, 0, None, 0))


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
    perms = torch.stack([torch.randperm(N, generator=r.gen, device=pack.device)
                         for r in pack.runs])                                # [G, N]
    total = torch.zeros(pack.G, dtype=torch.float64, device=pack.device)
    for i in range(0, N, B):
        xb = as_float(x[perms[:, i:i + B]])                                 # [G, B, C, H, W]
        b = xb.shape[1]
        total += step(pack, xb, noise(pack, b)).double() * b
    return total / N


def noise(pack: Pack, b: int) -> torch.Tensor:
    """[G, b, H] each member's eps from its own generator, drawn into one buffer: one draw
    per member, as the unpacked trial draws it (one draw for all would change its numbers)."""
    B, H = pack.runs[0].cfg.train.batch_size, pack.runs[0].cfg.model.latent_dim
    if pack.eps is None or pack.eps.shape[0] != pack.G:
        pack.eps = torch.empty(pack.G, B, H, dtype=pack.flat.dtype, device=pack.device)
    eps = pack.eps if b == B else pack.eps[:, :b]                            # [G, b, H]
    for r, e in zip(pack.runs, eps.unbind(0)):
        torch.randn(b, H, generator=r.gen, device=pack.device, dtype=eps.dtype, out=e)
    return eps


def step(pack: Pack, xb: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """One SGVB step of every member: [G, B, ...] batches -> [G] losses. A captured step
    (train.cuda_graphs) replays on full batches; the last partial batch runs eagerly."""
    if pack.graph is not None and pack.graph.fits(xb):
        return pack.graph.replay(xb, eps)
    return eager_step(pack, xb, eps)


def eager_step(pack: Pack, xb: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    pack.flat.grad = None
    with autocast(pack.runs[0].cfg, pack.device):
        loss, xhat = pack.loss_fn(pack.views(pack.flat), pack.buffers, xb, eps, pack.beta)
    loss.sum().backward()                         # members are independent: grad g = d loss_g
    adam(pack)
    if pack.after_fn is not None:
        with torch.no_grad():
            pack.after_fn(pack.buffers, xb, xhat.detach().to(xb.dtype))
    return loss.detach()


@torch.no_grad()
def adam(pack: Pack) -> None:
    """torch.optim.Adam's update with each member's lr and step count: torch's fused Adam
    kernel (one pass over p, g, m, v) on the members' rows, one call per learning rate."""
    a = pack.adam
    pack.steps += 1                               # fused Adam reads the step after its increment
    rows = [t.unbind(0) for t in (pack.flat.detach(), pack.flat.grad, pack.m, pack.v, pack.steps)]
    for lr, idx in _lr_groups(pack.lr):
        p, g, m, v, s = ([r[i] for i in idx] for r in rows)
        torch._fused_adam_(p, g, m, v, [], s, lr=lr, beta1=a["betas"][0], beta2=a["betas"][1],
                           weight_decay=a["weight_decay"], eps=a["eps"], amsgrad=False,
                           maximize=False)


def _lr_groups(lrs: list[float]) -> list[tuple[float, list[int]]]:
    groups: dict[float, list[int]] = {}
    for i, lr in enumerate(lrs):
        groups.setdefault(lr, []).append(i)
    return list(groups.items())


def leave(pack: Pack, keep: list[int]) -> None:
    """Only members `keep` (row indices) go on: every stacked tensor loses the other rows
    (copies of the kept rows, bit for bit), so a step costs what the remaining members
    cost; a captured step is dropped and captured again for the new shapes."""
    idx = torch.tensor(keep, dtype=torch.long, device=pack.device)
    pack.runs = [pack.runs[i] for i in keep]
    pack.lr = [pack.lr[i] for i in keep]
    pack.flat = pack.flat.detach().index_select(0, idx).requires_grad_()
    pack.m, pack.v, pack.steps, pack.beta = (t.index_select(0, idx) for t in
                                             (pack.m, pack.v, pack.steps, pack.beta))
    pack.buffers = {k: b.index_select(0, idx) for k, b in pack.buffers.items()}
    pack.eps = None
    if pack.graph is not None:
        pack.graph = pack.graph.recapture(pack)


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
    step = float(pack.steps[g])
    for n, p in run.vae.named_parameters():
        p.copy_(params[n][g])
        if step > 0:
            run.opt.state[p] = {"step": torch.tensor(step), "exp_avg": m[n][g].clone(),
                                "exp_avg_sq": v[n][g].clone()}
    for n, b in run.vae.named_buffers():
        b.copy_(pack.buffers[n][g])
    return run
