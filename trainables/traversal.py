"""Latent traversals (Fig. 12-16): each used factor swept over [-3, 3] in 10
steps around the inferred code of a few fixed test images, others held."""
from __future__ import annotations

import io

import torch

STEPS = torch.linspace(-3, 3, 10)


def pick_factors(mi: torch.Tensor, threshold: float, max_factors: int = 16) -> list[int]:
    """Used factors (MI > threshold, App. E) by MI, largest first; the top one if none is used."""
    order = torch.argsort(mi, descending=True).tolist()
    used = [h for h in order if mi[h] > threshold]
    return (used or order[:1])[:max_factors]


@torch.no_grad()
def montage(vae, images: torch.Tensor, factors: list[int]) -> bytes:
    """PNG bytes: one block per factor, one row per seed image, 10 columns of values."""
    from PIL import Image
    from torchvision.utils import make_grid

    vae.eval()
    mu, _ = vae.encoder(images)                                       # [S, H]
    rows = []
    for h in factors:
        for s in range(images.shape[0]):
            z = mu[s].repeat(len(STEPS), 1)                           # [10, H]
            z[:, h] = STEPS.to(z)
            rows.append(vae.decoder(z))                               # [10, C, H, W]
    grid = make_grid(torch.cat(rows).float().cpu(), nrow=len(STEPS), padding=1, pad_value=0.5)
    arr = (grid.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()    # [H', W', 3]
    img = Image.fromarray(arr[..., 0] if images.shape[1] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
