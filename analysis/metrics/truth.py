"""Fresh observations for chosen factor values: what FactorVAE and BetaVAE need.

Both metrics draw factors y, fix one of them across a batch, render images and
encode them, so they apply only where images can be made for any factor values:
- `intrinsic`: x = phi(y), y ~ N(0, I_P), phi rebuilt from the data set's seed;
- `npz` whose `factors` rows form a full grid (every combination of the distinct
  values once, as dSprites and Shapes3D ship): y_k ~ N(0, 1) picks grid value
  floor(Phi(y_k) n_k) of factor k, so equal y_k pick equal values and each value
  is equally likely, and the image is the grid cell's.
Anything else gets a reason instead (`ground_truth` returns a string).
"""
from __future__ import annotations

import json

import numpy as np
from scipy.stats import norm

from analysis.higgins import GroundTruth


def grid_lookup(factors: np.ndarray) -> tuple[np.ndarray, list[int]] | str:
    """(row of each grid cell [n_1, ..., n_P], [n_k]) or why the factors are not a full grid."""
    idx = np.stack([np.unique(factors[:, k], return_inverse=True)[1].ravel()
                    for k in range(factors.shape[1])], axis=1)             # [N, P]
    sizes = [int(idx[:, k].max()) + 1 for k in range(idx.shape[1])]
    cells = int(np.prod(sizes, dtype=np.float64))
    grid = np.full(sizes, -1, dtype=np.int64)
    grid[tuple(idx.T)] = np.arange(len(idx))
    if cells != len(idx) or (grid < 0).any():
        return (f"npz factors are not a full grid ({len(idx)} rows for {cells} combinations of "
                f"{' x '.join(map(str, sizes))} distinct values)")
    return grid, sizes


def grid_truth(x, factors: np.ndarray) -> GroundTruth | str:
    made = grid_lookup(factors)
    if isinstance(made, str):
        return made
    grid, sizes = made
    n = np.asarray(sizes)

    def render(y: np.ndarray):
        cell = np.minimum((norm.cdf(y) * n).astype(np.int64), n - 1)      # [N, P]
        return x[grid[tuple(cell.T)]]
    return GroundTruth(len(sizes), render)


def ground_truth(cfg) -> GroundTruth | str:
    """The renderer of a trial's data set (a `TrialConfig`), or why there is none."""
    import torch

    from trainables import data

    if cfg.dataset.name == "intrinsic":
        phi, _ = data.intrinsic_phi(cfg.dataset)
        return GroundTruth(cfg.dataset.factors,
                           lambda y: phi(torch.as_tensor(np.asarray(y), dtype=torch.float32)))
    if cfg.dataset.name != "npz":
        return f"{cfg.dataset.name} data have no ground-truth factors"
    d = data.load(cfg.dataset)
    if d.factors is None:
        return "the npz file has no 'factors' array"
    return grid_truth(d.x, d.factors.numpy())


def encoder(store, trial_id: str, cfg, shape: tuple[int, ...]):
    """Posterior means [N, H] of images [N, C, H, W] under the trial's latest checkpoint,
    or None when it has none."""
    import torch

    from trainables.data import as_float
    from trainables.vae import VAE

    state = store.trial(trial_id).load_checkpoint()
    if state is None:
        return None
    vae = VAE(shape, cfg)
    vae.load_state_dict(state["vae"])
    vae.eval()

    @torch.no_grad()
    def encode(x) -> np.ndarray:
        x = as_float(torch.as_tensor(x)).float()          # uint8 pixels -> [0, 1]
        return torch.cat([vae.encoder(c)[0] for c in x.split(4096)]).double().numpy()
    return encode


def renderer_and_encoder(store, trial_id: str, config: str):
    """(GroundTruth, representation_fn) for a trial, or a reason string."""
    from trainables.config import TrialConfig

    cfg = TrialConfig.from_dict(json.loads(config))
    truth = ground_truth(cfg)
    if isinstance(truth, str):
        return truth
    shape = tuple(truth.render(np.zeros((1, truth.P))).shape[1:])
    encode = encoder(store, trial_id, cfg, shape)
    return (truth, encode) if encode is not None else "the trial has no checkpoint to encode with"
