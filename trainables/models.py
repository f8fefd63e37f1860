"""Convolutional encoder and decoder of App. D.

MNIST 28x28x1: conv 32x4x4, 32x4x4 (stride 2), FC 256.  CelebA 64x64x3 and
Yale B 192x168x1: conv 32, 32, 64, 64 (4x4, stride 2), FC 256.  ReLU, a linear
latent layer giving mu and log s2 of q(z|x), a decoder of transposed
convolutions mirroring the encoder. Odd sizes (Yale B's 168 -> 84 -> 42 -> 21
-> 10) are mirrored exactly with output_padding.
"""
from __future__ import annotations

import torch
from torch import nn

CHANNELS = {"conv2": (32, 32), "conv4": (32, 32, 64, 64)}
ALIASES = {"mnist": "conv2", "celeba": "conv4", "yaleb": "conv4"}
HIDDEN = 256


def pick_arch(arch: str, shape: tuple[int, int, int]) -> str:
    """The paper's architecture for an input shape (C, H, W) unless one is named."""
    if arch != "auto":
        return ALIASES.get(arch, arch)
    return "conv2" if shape[1:] == (28, 28) else "conv4"


def _sizes(side: int, n: int) -> list[int]:
    out = [side]
    for _ in range(n):
        out.append(out[-1] // 2)                      # k=4, s=2, p=1 halves (floor)
    return out


class Encoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, ...], H: int):
        super().__init__()
        C, h, w = shape
        layers, c_in = [], C
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.ReLU()]
            c_in = c
        self.conv = nn.Sequential(*layers, nn.Flatten())
        hs, ws = _sizes(h, len(channels)), _sizes(w, len(channels))
        flat = c_in * hs[-1] * ws[-1]
        self.fc = nn.Sequential(nn.Linear(flat, HIDDEN), nn.ReLU())
        self.latent = nn.Linear(HIDDEN, 2 * H)         # linear latent layer: [mu, log s2]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.conv(x))                      # [B, 256]
        mu, logvar = self.latent(h).chunk(2, dim=1)    # [B, H] each
        return mu, logvar


class Decoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], channels: tuple[int, ...], H: int):
        super().__init__()
        C, h, w = shape
        hs, ws = _sizes(h, len(channels)), _sizes(w, len(channels))
        self.start = (channels[-1], hs[-1], ws[-1])
        self.fc = nn.Sequential(nn.Linear(H, HIDDEN), nn.ReLU(),
                                nn.Linear(HIDDEN, channels[-1] * hs[-1] * ws[-1]), nn.ReLU())
        outs = list(reversed(channels[:-1])) + [C]
        layers, c_in = [], channels[-1]
        for i, c in enumerate(outs):
            j = len(channels) - i                       # mirror of encoder layer j
            pad = (hs[j - 1] - 2 * hs[j], ws[j - 1] - 2 * ws[j])
            layers.append(nn.ConvTranspose2d(c_in, c, 4, 2, 1, output_padding=pad))
            if i < len(outs) - 1:
                layers.append(nn.ReLU())
            c_in = c
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, *self.start)            # [B, C', h', w']
        return torch.sigmoid(self.deconv(h))            # [B, C, H, W] mean G(z) in [0, 1]


def build(arch: str, shape: tuple[int, int, int], H: int) -> tuple[Encoder, Decoder]:
    name = pick_arch(arch, shape)
    ch = CHANNELS[name]
    if min(shape[1:]) < 2 ** len(ch):
        raise ValueError(f"model.arch: {name} needs images of at least {2 ** len(ch)} pixels "
                         f"a side; got {shape[1]}x{shape[2]}")
    return Encoder(shape, ch, H), Decoder(shape, ch, H)
