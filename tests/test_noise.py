"""Noise models: closed forms (App. A.1), EM (App. A.2), and one contract for all."""
import math

import pytest
import torch

from trainables import noise
from trainables.config import NoiseConfig


def test_gaussian_log_lik_matches_torch_normal():
    g = torch.Generator().manual_seed(0)
    x, xhat = torch.rand(4, 10, generator=g), torch.rand(4, 10, generator=g)
    ref = torch.distributions.Normal(xhat, math.sqrt(0.03)).log_prob(x).sum(1)
    torch.testing.assert_close(noise.gaussian_log_lik((x - xhat) ** 2, 0.03), ref)


def test_learned_closed_form_maximises_the_gaussian_likelihood():
    g = torch.Generator().manual_seed(0)
    x, xhat = torch.rand(100, 1, 28, 28, generator=g), torch.rand(100, 1, 28, 28, generator=g)
    s2 = noise.closed_form_sigma2(x, xhat, 1e-6)
    r2 = (x - xhat).flatten(1) ** 2
    best = noise.gaussian_log_lik(r2, s2).sum()
    for factor in (0.9, 0.99, 1.01, 1.1):
        assert noise.gaussian_log_lik(r2, s2 * factor).sum() < best
    # and the floor holds for perfectly reconstructed pixels
    assert noise.closed_form_sigma2(x, x, 1e-6) == pytest.approx(1e-6)


def test_learned_after_step_sets_sigma2_to_the_closed_form():
    m = noise.LearnedNoise(NoiseConfig(kind="learned", sigma2=0.5))
    x, xhat = torch.zeros(8, 1, 4, 4), torch.full((8, 1, 4, 4), 0.1)
    m.after_step(x, xhat)
    assert m.summary()["sigma2"] == pytest.approx(0.01, rel=1e-5)


def test_em_recovers_a_planted_two_component_mixture():
    g = torch.Generator().manual_seed(0)
    n, pi, s2 = 200_000, torch.tensor([0.7, 0.3]), torch.tensor([0.001, 0.05])
    comp = (torch.rand(n, generator=g) < pi[1]).long()
    eps = torch.randn(n, generator=g) * s2[comp].sqrt()
    r2 = (eps ** 2).view(100, -1)                                       # [M, D]
    log_pi, sigma2_k = torch.log(torch.tensor([0.5, 0.5])), torch.tensor([0.01, 0.1])
    for _ in range(200):
        gamma = noise.responsibilities(r2, log_pi, sigma2_k)
        log_pi, sigma2_k = noise.m_step(gamma, r2, 1e-6)
    order = torch.argsort(sigma2_k)
    torch.testing.assert_close(log_pi.exp()[order], pi, atol=0.01, rtol=0)
    torch.testing.assert_close(sigma2_k[order], s2, rtol=0.05, atol=0)


def test_mog_train_step_updates_the_mixture_and_its_eval_log_lik_is_a_mixture_density():
    m = noise.MixtureNoise(NoiseConfig(kind="mog", sigma2=0.01, k=2))
    g = torch.Generator().manual_seed(0)
    x, xhat = torch.rand(10, 1, 5, 5, generator=g), torch.rand(10, 1, 5, 5, generator=g)
    before = m.summary()
    m.train_log_lik(x, xhat)
    assert m.summary() != before and sum(m.summary()["pi"]) == pytest.approx(1.0)
    pi, s2 = torch.tensor(m.summary()["pi"]), torch.tensor(m.summary()["sigma2_k"])
    e = (x - xhat).flatten(1)
    dens = sum(pi[k] * torch.exp(torch.distributions.Normal(0, s2[k].sqrt()).log_prob(e))
               for k in range(2))
    torch.testing.assert_close(m.log_lik(x, xhat), dens.log().sum(1))


@pytest.mark.parametrize("kind", sorted(noise.REGISTRY))
def test_every_noise_model_gives_finite_per_point_log_lik_and_a_summary(kind):
    m = noise.build(NoiseConfig(kind=kind, sigma2=0.02))
    x = torch.rand(6, 1, 7, 7)
    xhat = torch.rand(6, 1, 7, 7, requires_grad=True)
    ll = m.train_log_lik(x, xhat)
    assert ll.shape == (6,) and torch.isfinite(ll).all()
    ll.sum().backward()
    assert xhat.grad is not None and torch.isfinite(xhat.grad).all()
    assert m.log_lik(x, xhat).shape == (6,)
    assert m.summary()["sigma2"] > 0


def test_mixture_variances_weight_by_precision_and_flag_the_floor():
    """Sec. 7.2.1: 1 / sum_k pi_k / sigma2_k; pi = 0.8 at the floor dominates the precision."""
    from trainables.noise import mixture_variances
    out = mixture_variances([0.8, 0.2], [1e-6, 0.05], floor=1e-6)
    assert out["sigma2_precision"] == pytest.approx(1 / (0.8 / 1e-6 + 0.2 / 0.05))
    assert out["sigma2_arith"] == pytest.approx(0.8e-6 + 0.01)
    assert out["pi_at_floor"] == pytest.approx(0.8)
    one = mixture_variances([1.0], [0.01], floor=1e-6)
    assert one["sigma2_precision"] == pytest.approx(0.01) == one["sigma2_arith"]
    assert one["pi_at_floor"] == 0.0
