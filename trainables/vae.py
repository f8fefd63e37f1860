"""The VAE: one ELBO with a beta on the KL term (Eq. 1, Eq. 11).

The noise model supplies log p(x|z); everything else is written once here.
"""
from __future__ import annotations

import torch
from torch import nn

from trainables import models, noise
from trainables.config import TrialConfig


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, s2) || N(0, 1)) per factor, [B, H] -> [B, H]."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


class VAE(nn.Module):
    def __init__(self, shape: tuple[int, int, int], cfg: TrialConfig):
        super().__init__()
        self.shape = shape
        self.beta = cfg.noise.beta
        self.encoder, self.decoder = models.build(cfg.model.arch, shape, cfg.model.latent_dim)
        self.noise = noise.build(cfg.noise)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """One-sample SGVB terms: (log p(x|z) per point [B], KL per point [B], G(z))."""
        mu, logvar = self.encoder(x)                      # [B, H]
        z = mu + (0.5 * logvar).exp() * eps               # reparameterisation, L = 1
        xhat = self.decoder(z)                            # [B, C, H, W]
        kl = kl_to_prior(mu, logvar).sum(1)               # [B]
        return xhat, kl

    def loss(self, x: torch.Tensor, eps: torch.Tensor,
             beta: torch.Tensor | float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative beta-ELBO (Eq. 11) averaged over the minibatch, and G(z) for updates.

        `beta` overrides the configured one (a pack passes each member's as a tensor)."""
        beta = self.beta if beta is None else beta
        xhat, kl = self(x, eps)
        rec = self.noise.train_log_lik(x, xhat.to(x.dtype))   # [B]; noise math at x's precision
        return (beta * kl.to(x.dtype) - rec).mean(), xhat

    @torch.no_grad()
    def evlb_terms(self, x: torch.Tensor, eps: torch.Tensor):
        """Eq. 13's single-sample bound per point (beta = 1) with its pieces."""
        mu, logvar = self.encoder(x)
        z = mu + (0.5 * logvar).exp() * eps
        log_lik = self.noise.log_lik(x, self.decoder(z))  # [B]
        recon = self.decoder(mu)                          # decoded posterior mean
        mse = (x - recon).flatten(1).pow(2).mean(1)       # [B] per pixel
        return mu, logvar, log_lik, mse
