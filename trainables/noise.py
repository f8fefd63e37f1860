"""Noise models: what p(x|z) is, and how its own parameters are updated.

Each model owns log p(x|z) and its parameter updates; the VAE owns the ELBO
once (trainables/vae.py). The registry at the bottom is the only place that
maps a `noise.kind` to a class.

  specified  p(x|z) = N(x | G(z), sigma2 I), sigma2 fixed         (Sec. 7.2.1)
  learned    sigma2 learned: closed form after each step, or a    (App. A.1)
             gradient on log sigma2
  mog        per-pixel zero-mean K-mixture, EM inside each step   (App. A.2)
"""
from __future__ import annotations

import math

import torch
from torch import nn

from trainables.config import NoiseConfig

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_lik(r2: torch.Tensor, sigma2: torch.Tensor | float) -> torch.Tensor:
    """log N(x | G, sigma2 I) summed over pixels from squared residuals r2 [B, D] -> [B]."""
    sigma2 = torch.as_tensor(sigma2, dtype=r2.dtype, device=r2.device)
    D = r2.shape[1]
    return -0.5 * r2.sum(1) / sigma2 - 0.5 * D * (LOG_2PI + torch.log(sigma2))


class NoiseModel(nn.Module):
    """Base class. `train_log_lik` is called once per training step (it may run
    an E/M step first); `after_step` runs after the optimiser's step;
    `log_lik` is the exact log p(x|z) used by the EVLB."""

    kind = "base"

    def train_log_lik(self, x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
        return self.log_lik(x, xhat)

    def log_lik(self, x: torch.Tensor, xhat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, x: torch.Tensor, xhat: torch.Tensor) -> None:
        pass

    def summary(self) -> dict[str, float | list[float]]:
        """Parameter values recorded with every result row."""
        raise NotImplementedError


class SpecifiedNoise(NoiseModel):
    kind = "specified"

    def __init__(self, cfg: NoiseConfig):
        super().__init__()
        self.value = cfg.sigma2                             # recorded exactly as configured
        self.register_buffer("sigma2", torch.tensor(cfg.sigma2))

    def log_lik(self, x, xhat):
        return gaussian_log_lik((x - xhat).flatten(1).pow(2), self.sigma2)

    def summary(self):
        return {"sigma2": self.value}


class LearnedNoise(NoiseModel):
    """App. A.1: alternate a network step with sigma2 = mean squared residual
    over the minibatch's M L D terms (closed form), floored; or learn log sigma2
    by gradient with the networks (`noise.update=gradient`)."""

    kind = "learned"

    def __init__(self, cfg: NoiseConfig):
        super().__init__()
        self.floor = cfg.var_floor
        self.gradient = cfg.update == "gradient"
        log_s = torch.tensor(math.log(cfg.sigma2 - cfg.var_floor if self.gradient
                                      and cfg.sigma2 > 2 * cfg.var_floor else cfg.sigma2))
        if self.gradient:
            self.log_sigma2 = nn.Parameter(log_s)
        else:
            self.register_buffer("log_sigma2", log_s)

    def variance(self) -> torch.Tensor:
        if self.gradient:
            return self.floor + self.log_sigma2.exp()
        return self.log_sigma2.exp()

    def log_lik(self, x, xhat):
        return gaussian_log_lik((x - xhat).flatten(1).pow(2), self.variance())

    @torch.no_grad()
    def after_step(self, x, xhat):
        if not self.gradient:
            self.log_sigma2.copy_(closed_form_sigma2(x, xhat, self.floor).log())

    def summary(self):
        return {"sigma2": float(self.variance())}


def closed_form_sigma2(x: torch.Tensor, xhat: torch.Tensor, floor: float) -> torch.Tensor:
    """App. A.1: sigma2 = (1 / (M L D)) sum_{m,l} ||x_m - G(z_{m,l})||^2, floored."""
    return (x - xhat).pow(2).mean().clamp_min(floor)


class MixtureNoise(NoiseModel):
    """App. A.2: eps_d ~ sum_k pi_k N(0, sigma2_k), one EM step per minibatch."""

    kind = "mog"

    def __init__(self, cfg: NoiseConfig):
        super().__init__()
        K = cfg.k
        self.floor = cfg.var_floor
        # components start a decade apart around sigma2, with equal weights
        self.register_buffer("log_pi", torch.full((K,), -math.log(K)))
        self.register_buffer("sigma2_k", cfg.sigma2 * 10.0 ** (torch.arange(K) - (K - 1) / 2))

    def train_log_lik(self, x, xhat):
        r2 = (x - xhat).flatten(1).pow(2)                          # [B, D]
        with torch.no_grad():
            gamma = responsibilities(r2, self.log_pi, self.sigma2_k)   # Eq. 23, old params
            log_pi, sigma2_k = m_step(gamma, r2, self.floor)           # Eq. 26
            self.log_pi.copy_(log_pi)
            self.sigma2_k.copy_(sigma2_k)
        # Eq. 25: sum_{d,k} gamma [-(x-G)^2 / (2 s2_k) - 0.5 log(2 pi s2_k) + log pi_k]
        per_k = -0.5 * r2.unsqueeze(-1) / sigma2_k - 0.5 * (LOG_2PI + sigma2_k.log()) + log_pi
        return (gamma * per_k).sum((1, 2))                         # [B]

    def log_lik(self, x, xhat):
        r2 = (x - xhat).flatten(1).pow(2)                          # [B, D]
        return _component_log_density(r2, self.log_pi, self.sigma2_k).logsumexp(-1).sum(1)

    def summary(self):
        return {"pi": self.log_pi.exp().tolist(), "sigma2_k": self.sigma2_k.tolist(),
                "sigma2": float((self.log_pi.exp() * self.sigma2_k).sum())}


def mixture_variances(pi: list[float], sigma2_k: list[float], floor: float,
                      rtol: float = 1e-3) -> dict[str, float]:
    """The variances a mixture is placed by (Sec. 7.2.1), and how much weight sits on the floor.

    Sec. 7.2.1 weights each squared residual by its precision 1/sigma2, so a mixture's
    equivalent variance is the inverse of its average precision, 1 / sum_k pi_k / sigma2_k
    (`sigma2_precision`); the arithmetic sum_k pi_k sigma2_k is kept as `sigma2_arith`.
    `pi_at_floor` is the weight of components whose variance is within rtol of var_floor
    (stuck there, e.g. MNIST's exactly reconstructed background).
    """
    pi_t, s2 = torch.tensor(pi, dtype=torch.float64), torch.tensor(sigma2_k, dtype=torch.float64)
    return {"sigma2_precision": float(1.0 / (pi_t / s2).sum()),
            "sigma2_arith": float((pi_t * s2).sum()),
            "pi_at_floor": float(pi_t[s2 <= floor * (1 + rtol)].sum())}


def _component_log_density(r2, log_pi, sigma2_k):
    """log pi_k + log N(eps | 0, sigma2_k) for every pixel: [B, D] -> [B, D, K]."""
    return log_pi - 0.5 * (LOG_2PI + sigma2_k.log()) - 0.5 * r2.unsqueeze(-1) / sigma2_k


def responsibilities(r2, log_pi, sigma2_k) -> torch.Tensor:
    """Eq. 23: gamma_{m,d,k} = pi_k N_k / sum_j pi_j N_j, shaped [B, D, K]."""
    return _component_log_density(r2, log_pi, sigma2_k).softmax(-1)


def m_step(gamma, r2, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 26: N_k = sum gamma; pi_k = N_k / N; sigma2_k = sum gamma r2 / N_k."""
    N_k = gamma.sum((0, 1)).clamp_min(1e-12)                       # [K]
    log_pi = (N_k / N_k.sum()).log()
    sigma2_k = ((gamma * r2.unsqueeze(-1)).sum((0, 1)) / N_k).clamp_min(floor)
    return log_pi, sigma2_k


REGISTRY: dict[str, type[NoiseModel]] = {
    "specified": SpecifiedNoise, "learned": LearnedNoise, "mog": MixtureNoise}


def build(cfg: NoiseConfig) -> NoiseModel:
    return REGISTRY[cfg.kind](cfg)
