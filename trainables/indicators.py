"""The paper's indicators (Sec. 6.2, App. B.1) as pure functions of encoder outputs.

Every function takes `mu, logvar` of q(z|x_m) for M evaluation points,
shaped [M, H], and is vectorised over points and factors. q*(z) is the
factorised zero-mean Gaussian fitted to the aggregate posterior; Eq. 10's
exact minimiser is v_h = mean_m (mu_{m,h}^2 + s2_{m,h}).

The paper's indicators are bounds: `mi_xz` (Def. 2) = I(x;z) + KL(q(z)||q*(z)) is an
upper bound of the true I(x;z), and `kl_qz_pz` (Def. 4 with the exact q*) =
KL(q*(z)||p(z)) sees only each factor's second moment, so two factors that encode
the same variable count twice in the one and not at all in the other. `estimates`
adds Monte-Carlo estimates of the quantities themselves, with q(z) the aggregate
posterior of the first N = `ESTIMATE_POINTS` evaluation points (the minibatch-weighted
sampling estimator of beta-TCVAE, Chen et al. 2018, with that set as the batch):
- `mi_xz_est`, a lower bound of I(x;z): each point's own density is in the mixture, so
  it is InfoNCE with the encoder as critic (Poole et al. 2019), at most log N (6.9 nats
  at N = 1,000) whatever I(x;z) is;
- `kl_qz_pz_est` = KL(q(z)||p(z)) and `tc_est` = the total correlation
  KL(q(z)||prod_h q(z_h)): the same mixture over-weights each point's own component,
  so the information the MI bound misses lands in them (Def. 1 = I + KL): biased
  upward by about I(x;z) - mi_xz_est. They are None (not estimated) where mi_xz_est
  is within SATURATION_MARGIN (3 nats) of log N: on factorised Gaussian codes with
  true KL = TC = 0 (tests/test_indicators.py, docs/analysis.md's estimator table)
  the bias is about 0.2 nats at that margin and grows to many nats as I(x;z) passes
  log N. No estimator removes the cap: reading I(x;z) = 20 nats needs about e^20
  points. `analysis.intrinsic.per_trial` applies the same rule to rows stored
  before issue 21.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainables.saturation import ESTIMATE_POINTS, SATURATION_MARGIN, saturated  # noqa: F401

LOG_2PI = math.log(2 * math.pi)


def qstar_var(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Eq. 10: argmin_v (1/M) sum_m KL(q(z|x_m) || N(0, diag v)), in closed form. [H]"""
    return (mu.pow(2) + logvar.exp()).mean(0)


def kl_to_zero_mean(mu, logvar, v) -> torch.Tensor:
    """KL(N(mu, s2) || N(0, v)) per point and factor, [M, H]."""
    return 0.5 * ((mu.pow(2) + logvar.exp()) / v - 1.0 - logvar + v.log())


def kl_post_prior(mu, logvar) -> torch.Tensor:
    """Def. 1: mean_m KL(q(z|x_m) || p(z)) = I(x;z) + KL(q(z)||p(z)) (Theorem 3)."""
    return kl_to_zero_mean(mu, logvar, torch.ones_like(mu[0])).sum(1).mean()


def mi_per_factor(mu, logvar) -> torch.Tensor:
    """Def. 3: mi_h = mean_m KL(q(z_h|x_m) || q*(z_h)). [H]"""
    return kl_to_zero_mean(mu, logvar, qstar_var(mu, logvar)).mean(0)


def mi_xz(mu, logvar) -> torch.Tensor:
    """Def. 2: mean_m KL(q(z|x_m) || q*(z)) = I(x;z) + KL(q(z)||q*(z)), the paper's upper
    bound of I(x;z) (see `estimates` for I itself)."""
    return kl_to_zero_mean(mu, logvar, qstar_var(mu, logvar)).sum(1).mean()


def kl_qz_pz(mu, logvar) -> torch.Tensor:
    """Def. 4: Def. 1 - Def. 2 = KL(q*(z)||p(z)) with the exact q*: the paper's proxy for
    KL(q(z)||p(z)), blind to dependence between factors (see `estimates`)."""
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


def estimates(mu, logvar, generator: torch.Generator | None = None,
              points: int = ESTIMATE_POINTS, chunk: int = 64,
              margin: float = SATURATION_MARGIN) -> dict[str, float | None]:
    """MC estimates: a lower bound of I(x;z), and KL(q(z)||p(z)) and the total correlation
    (None where the bound is `saturated` within `margin`; -inf keeps them), one z sample
    per point of the first `points` points; q(z) = (1/N) sum_n q(z|x_n) over those points.
    Evaluated in chunks of `chunk` points, so memory is [chunk, N, H] whatever N; in
    float32: those log densities dominate the cost (3x faster than float64), ~ N^2."""
    mu, logvar = mu[:points].float(), logvar[:points].float()          # [N, H]
    N = mu.shape[0]
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * eps.float()                        # [N, H]
    inv_var, const = (-logvar).exp(), LOG_2PI + logvar                 # [N, H]
    log_qzx, log_qz, log_marg = [], [], []
    for i in range(0, N, chunk):
        lq = -0.5 * ((z[i:i + chunk, None] - mu).pow(2) * inv_var + const)   # [c, N, H]
        log_qzx.append(lq[torch.arange(lq.shape[0]), torch.arange(i, i + lq.shape[0])].sum(1))
        log_qz.append(torch.logsumexp(lq.sum(2), 1) - math.log(N))      # log q(z)      [c]
        log_marg.append((torch.logsumexp(lq, 1) - math.log(N)).sum(1))  # sum_h q(z_h)  [c]
    log_qzx, log_qz, log_marg = torch.cat(log_qzx), torch.cat(log_qz), torch.cat(log_marg)
    log_pz = -0.5 * (LOG_2PI + z.pow(2)).sum(1)                         # log N(z | 0, I)
    mi = float((log_qzx - log_qz).double().mean())
    if saturated(mi, N, margin):
        return {"mi_xz_est": mi, "kl_qz_pz_est": None, "tc_est": None}
    return {"mi_xz_est": mi, "kl_qz_pz_est": float((log_qz - log_pz).double().mean()),
            "tc_est": float((log_qz - log_marg).double().mean())}


SCALARS = {"kl_post_prior": kl_post_prior, "mi_xz": mi_xz, "kl_qz_pz": kl_qz_pz,
           "kl_qstar_pz": kl_qstar_pz}
FACTORS = {"mi": mi_per_factor, "post_var": post_var, "qstar_var": qstar_var}


@dataclass
class Indicators:
    scalars: dict[str, float | None]   # Def. 1, 2, 4, 5, the two counts, the MC estimates
    factors: dict[str, torch.Tensor]   # per factor: mi, post_var, qstar_var, used


def compute(mu: torch.Tensor, logvar: torch.Tensor, used_threshold: float = 0.5,
            normal_var_tol: float = 0.1, generator: torch.Generator | None = None) -> Indicators:
    """All indicators of one evaluation, in float64 for exact identities, and the MC
    estimates (`estimates`) drawn with `generator`."""
    if mu.shape != logvar.shape or mu.dim() != 2:
        raise ValueError(f"mu and logvar must both be [M, H]; got {tuple(mu.shape)}, "
                         f"{tuple(logvar.shape)}")
    mu, logvar = mu.double(), logvar.double()
    scalars = {name: float(f(mu, logvar)) for name, f in SCALARS.items()}
    scalars.update(estimates(mu, logvar, generator))
    factors = {name: f(mu, logvar).cpu() for name, f in FACTORS.items()}
    factors["used"] = factors["mi"] > used_threshold                # App. E: 0.5 nats
    normal = (factors["post_var"] - 1.0).abs() < normal_var_tol     # Fig. 5b
    scalars["n_used_factors"] = int(factors["used"].sum())
    scalars["n_normal_variance_factors"] = int(normal.sum())
    return Indicators(scalars, factors)
