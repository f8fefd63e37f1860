"""Indicators against closed forms and the paper's identities (Defs. 1-7, Thm. 2, Eq. 10)."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from trainables import indicators as ind


def codes(M=500, H=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([2.0, 1.0, 0.5, 0.1, 0.0, 0.0])[:H]
    mu = torch.randn(M, H, generator=g, dtype=torch.float64) * scale
    logvar = torch.randn(M, H, generator=g, dtype=torch.float64) * 0.3 - 1.5 * (scale > 0)
    return mu, logvar


def test_kl_of_known_gaussians_matches_torch_distributions():
    mu, logvar = codes()
    v = torch.rand(mu.shape[1], dtype=torch.float64) + 0.5
    ours = ind.kl_to_zero_mean(mu, logvar, v)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(v), v.sqrt()))
    torch.testing.assert_close(ours, ref)


def test_def1_is_mean_kl_to_prior_computed_as_a_full_covariance_kl():
    mu, logvar = codes(M=50)
    H = mu.shape[1]
    prior = MultivariateNormal(torch.zeros(H, dtype=torch.float64), torch.eye(H, dtype=torch.float64))
    ref = torch.stack([kl_divergence(MultivariateNormal(m, torch.diag(lv.exp())), prior)
                       for m, lv in zip(mu, logvar)]).mean()
    torch.testing.assert_close(ind.kl_post_prior(mu, logvar), ref)


def test_theorem2_per_factor_mi_sums_to_joint_mi_from_full_covariance_kl():
    mu, logvar = codes(M=50)
    v = ind.qstar_var(mu, logvar)
    qstar = MultivariateNormal(torch.zeros_like(v), torch.diag(v))
    joint = torch.stack([kl_divergence(MultivariateNormal(m, torch.diag(lv.exp())), qstar)
                         for m, lv in zip(mu, logvar)]).mean()
    torch.testing.assert_close(ind.mi_xz(mu, logvar), joint)
    torch.testing.assert_close(ind.mi_per_factor(mu, logvar).sum(), joint)


def test_def4_equals_def5_and_def6_7_equal_def2_3_with_exact_qstar():
    for seed in range(3):
        mu, logvar = codes(seed=seed)
        torch.testing.assert_close(ind.kl_qz_pz(mu, logvar), ind.kl_qstar_pz(mu, logvar))
        torch.testing.assert_close(ind.mi_xz_def6(mu, logvar), ind.mi_xz(mu, logvar))
        torch.testing.assert_close(ind.mi_per_factor_def7(mu, logvar), ind.mi_per_factor(mu, logvar))


def test_gradient_descent_on_eq10_reaches_the_closed_form_qstar():
    mu, logvar = codes()
    log_v = torch.zeros(mu.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([log_v], lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        ind.kl_to_zero_mean(mu, logvar, log_v.exp()).sum(1).mean().backward()   # Eq. 10
        opt.step()
    torch.testing.assert_close(log_v.exp().detach(), ind.qstar_var(mu, logvar), rtol=1e-4, atol=1e-6)


def test_unused_factors_sit_at_the_prior_and_counts_follow_thresholds():
    M, H = 2000, 4
    g = torch.Generator().manual_seed(1)
    mu = torch.zeros(M, H, dtype=torch.float64)
    logvar = torch.zeros(M, H, dtype=torch.float64)
    mu[:, :2] = torch.randn(M, 2, generator=g, dtype=torch.float64)   # two informative factors
    logvar[:, :2] = -4.0                                               # s2 = 0.018
    out = ind.compute(mu, logvar, used_threshold=0.5, normal_var_tol=0.1)
    assert out.scalars["n_used_factors"] == 2
    assert out.scalars["n_normal_variance_factors"] == 2
    assert out.factors["used"].tolist() == [True, True, False, False]
    torch.testing.assert_close(out.factors["mi"][2:], torch.zeros(2, dtype=torch.float64))
    # MI of N(m, s2) against q* = N(0, 1 + s2): 0.5 log((1 + s2) / s2) in the large-M limit
    expected = 0.5 * torch.log(torch.tensor((1 + 0.0183) / 0.0183, dtype=torch.float64))
    assert abs(out.factors["mi"][0] - expected) < 0.05
    out2 = ind.compute(mu, logvar, used_threshold=10.0)
    assert out2.scalars["n_used_factors"] == 0


def test_compute_refuses_mismatched_shapes():
    import pytest
    with pytest.raises(ValueError, match=r"\[M, H\]"):
        ind.compute(torch.zeros(3, 2), torch.zeros(3, 3))


# ---- MC estimates beyond the paper's bounds, against Gaussian closed forms ------------------
def gaussian_codes(cov_mu: np.ndarray, s2: float, M: int = 2000, seed: int = 0):
    """mu_m ~ N(0, cov_mu), the same posterior variance s2 for every point and factor:
    q(z) = N(0, C) with C = cov_mu + s2 I, I(x;z) = 0.5 log det C / s2^H."""
    rng = np.random.default_rng(seed)
    mu = rng.multivariate_normal(np.zeros(len(cov_mu)), cov_mu, size=M)
    return (torch.tensor(mu), torch.full(mu.shape, math.log(s2), dtype=torch.float64))


def closed_forms(cov_mu: np.ndarray, s2: float) -> dict[str, float]:
    C = cov_mu + s2 * np.eye(len(cov_mu))
    logdet = np.linalg.slogdet(C)[1]
    return {"mi_xz_est": 0.5 * (logdet - len(C) * math.log(s2)),
            "kl_qz_pz_est": 0.5 * (np.trace(C) - len(C) - logdet),
            "tc_est": 0.5 * (np.log(np.diag(C)).sum() - logdet)}


@pytest.mark.parametrize("case", ["independent", "redundant pair", "correlated pair"])
def test_estimates_match_gaussian_closed_forms(case):
    cov = {"independent": np.diag([1.0, 0.5, 2.0]),
           "redundant pair": np.full((2, 2), 0.75),
           "correlated pair": np.array([[1.0, 0.6], [0.6, 1.0]])}[case]
    mu, logvar = gaussian_codes(cov, 0.25)
    got = ind.estimates(mu, logvar, torch.Generator().manual_seed(0), points=2000)
    for name, want in closed_forms(cov, 0.25).items():
        assert got[name] == pytest.approx(want, abs=0.08), (name, got[name], want)


def test_the_paper_bounds_miss_a_redundant_pair_that_the_estimates_see():
    """Two factors encoding one variable: Def. 2 counts it twice, Def. 4 sees nothing."""
    cov = np.full((2, 2), 0.75)                       # each factor's q* variance is 1
    mu, logvar = gaussian_codes(cov, 0.25)
    want = closed_forms(cov, 0.25)
    assert float(ind.mi_xz(mu, logvar)) == pytest.approx(math.log(4), abs=0.05)     # 1.39
    assert float(ind.kl_qz_pz(mu, logvar)) == pytest.approx(0.0, abs=0.02)
    got = ind.compute(mu, logvar, generator=torch.Generator().manual_seed(0)).scalars
    assert got["mi_xz_est"] < float(ind.mi_xz(mu, logvar)) - 0.3
    assert got["kl_qz_pz_est"] == pytest.approx(want["kl_qz_pz_est"], abs=0.08)     # 0.41
    assert got["tc_est"] > 0.3


def factorised(I: float, H: int = 10, M: int = 1000, seed: int = 0):
    """Factorised Gaussian codes with q(z) = N(0, I) exactly (true KL = TC = 0) and
    I(x;z) = I nats: s2 = exp(-2 I / H), mu ~ N(0, (1 - s2) I)."""
    s2 = math.exp(-2 * I / H)
    return gaussian_codes(np.eye(H) * (1 - s2), s2, M, seed)


def test_estimates_at_4_nats_are_within_a_quarter_nat_and_the_mi_is_a_lower_bound():
    mu, logvar = factorised(4.0)
    got = ind.estimates(mu, logvar, torch.Generator().manual_seed(0), points=1000)
    assert 4.0 - 0.3 <= got["mi_xz_est"] <= 4.0                       # a lower bound
    assert abs(got["kl_qz_pz_est"]) <= 0.25 and abs(got["tc_est"]) <= 0.25


@pytest.mark.parametrize("I", [10.0, 20.0])
def test_kl_and_tc_are_not_estimated_where_the_mi_bound_nears_log_n(I):
    """Issue 21: at I = 11.5 and 23 nats they read 4.6 and 16 for a true 0."""
    mu, logvar = factorised(I)
    got = ind.estimates(mu, logvar, torch.Generator().manual_seed(0), points=1000)
    assert got["mi_xz_est"] <= math.log(1000) + 1e-5 < I       # capped (float32), below the truth
    assert ind.saturated(got["mi_xz_est"], 1000)
    assert got["kl_qz_pz_est"] is None and got["tc_est"] is None


def test_estimates_are_the_same_whatever_the_chunk():
    mu, logvar = factorised(4.0, M=300)
    a = ind.estimates(mu, logvar, torch.Generator().manual_seed(1), chunk=7)
    b = ind.estimates(mu, logvar, torch.Generator().manual_seed(1), chunk=300)
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-4)
