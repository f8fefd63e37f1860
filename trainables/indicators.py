"""The paper's indicators (Sec. 6.2, App. B.1) as pure functions of encoder outputs.

Every function takes `mu, logvar` of q(z|x_m) for M evaluation points,
shaped [M, H], and is vectorised over points and factors. q*(z) is the
factorised zero-mean Gaussian fitted to the aggregate posterior; Eq. 10's
exact minimiser is v_h = mean_m (mu_{m,h}^2 + s2_{m,h}).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def qstar_var(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 10: argmin_v (1/M) sum_m KL(q(z|x_m) || N(0, diag v)), in closed form. [H]"""
    return (mu.pow(2) + logvar.exp()).mean(0)


def kl_to_zero_mean(mu, logvar, v) -> torch.Tensor:
    """KL(N(mu, s2) || N(0, v)) per point and factor, [M, H]."""
    return 0.5 * ((mu.pow(2) + logvar.exp()) / v - 1.0 - logvar + v.log())


def kl_post_prior(mu, logvar) -> torch.Tensor:
    """Def. 1: mean_m KL(q(z|x_m) || p(z)), an upper bound of I(x;z) + KL(q(z)||p(z))."""
    return kl_to_zero_mean(mu, logvar, torch.ones_like(mu[0])).sum(1).mean()


def mi_per_factor(mu, logvar) -> torch.Tensor:
    """Def. 3: mi_h = mean_m KL(q(z_h|x_m) || q*(z_h)). [H]"""
    return kl_to_zero_mean(mu, logvar, qstar_var(mu, logvar)).mean(0)


def mi_xz(mu, logvar) -> torch.Tensor:
    """Def. 2: mean_m KL(q(z|x_m) || q*(z)) = I_encoder(x; z)."""
    return kl_to_zero_mean(mu, logvar, qstar_var(mu, logvar)).sum(1).mean()


def kl_qz_pz(mu, logvar) -> torch.Tensor:
    """Def. 4: Def. 1 - Def. 2, an estimate of KL(q(z) || p(z))."""
    return kl_post_prior(mu, logvar) - mi_xz(mu, logvar)


def kl_qstar_pz(mu, logvar) -> torch.Tensor:
    """Def. 5: KL(q*(z) || p(z)) = sum_h 0.5 (v_h - 1 - log v_h)."""
    v = qstar_var(mu, logvar)
    return 0.5 * (v - 1.0 - v.log()).sum()


def mi_xz_def6(mu, logvar) -> torch.Tensor:
    """Def. 6: -KL(q*||p) + mean_m KL(q(z|x_m)||p); equals Def. 2 with the exact q*."""
    return kl_post_prior(mu, logvar) - kl_qstar_pz(mu, logvar)


def mi_per_factor_def7(mu, logvar) -> torch.Tensor:
    """Def. 7: per factor, -KL(q*_h||p_h) + mean_m KL(q(z_h|x_m)||p_h). [H]"""
    v = qstar_var(mu, logvar)
    prior = kl_to_zero_mean(mu, logvar, torch.ones_like(v)).mean(0)
    return prior - 0.5 * (v - 1.0 - v.log())


def post_var(mu, logvar) -> torch.Tensor:
    """Mean posterior variance per factor (Fig. 2's reverse pulses). [H]"""
    return logvar.exp().mean(0)


SCALARS = {"kl_post_prior": kl_post_prior, "mi_xz": mi_xz, "kl_qz_pz": kl_qz_pz,
           "kl_qstar_pz": kl_qstar_pz}
FACTORS = {"mi": mi_per_factor, "post_var": post_var, "qstar_var": qstar_var}


@dataclass
class Indicators:
    scalars: dict[str, float]          # Def. 1, 2, 4, 5 and the two counts
    factors: dict[str, torch.Tensor]   # per factor: mi, post_var, qstar_var, used


def compute(mu: torch.Tensor, logvar: torch.Tensor, used_threshold: float = 0.5,
            normal_var_tol: float = 0.1) -> Indicators:
    """All indicators of one evaluation, in float64 for exact identities."""
    if mu.shape != logvar.shape or mu.dim() != 2:
        raise ValueError(f"mu and logvar must both be [M, H]; got {tuple(mu.shape)}, "
                         f"{tuple(logvar.shape)}")
    mu, logvar = mu.double(), logvar.double()
    scalars = {name: float(f(mu, logvar)) for name, f in SCALARS.items()}
    factors = {name: f(mu, logvar).cpu() for name, f in FACTORS.items()}
    factors["used"] = factors["mi"] > used_threshold                # App. E: 0.5 nats
    normal = (factors["post_var"] - 1.0).abs() < normal_var_tol     # Fig. 5b
    scalars["n_used_factors"] = int(factors["used"].sum())
    scalars["n_normal_variance_factors"] = int(normal.sum())
    return Indicators(scalars, factors)
