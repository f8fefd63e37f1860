"""Data sets as in-memory tensors: mnist, intrinsic, npz, image_folder.

Every loader returns a `Data` (images as one tensor, optional ground-truth
factors) and refuses bad input with a `DataError` that names the file and the
problem. A data set lives as one tensor on the training device: batches are
index slices, no worker processes. Pixel sources (mnist, uint8 npz,
image_folder) stay uint8 there, a quarter of float32, and `as_float` turns
each batch into [0, 1]; float sources (intrinsic, float npz) stay float.
An image folder is decoded once into a memory-mapped .npy cache (`imagecache`).
"""
from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainables.config import DatasetConfig
from trainables import imagecache
from trainables.imagecache import DataError



@dataclass
class Data:
    x: torch.Tensor                   # [N, C, H, W] uint8 in 0..255, or float32 in [0, 1]
    factors: torch.Tensor | None      # [N, P] ground truth, when known
    index: torch.Tensor               # [N] position in the pooled data set
    mapped: np.ndarray | None = None  # the memory map x views (an image-folder cache)

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, idx: torch.Tensor) -> "Data":
        f = None if self.factors is None else self.factors[idx]
        return Data(self.x[idx], f, self.index[idx])

    def to(self, device: torch.device) -> "Data":
        f = None if self.factors is None else self.factors.to(device)
        return Data(self.x.to(device), f, self.index.to(device))


@dataclass
class Splits:
    train: Data
    val: Data
    test: Data


def as_float(x: torch.Tensor) -> torch.Tensor:
    """A batch in [0, 1] as float32: uint8 pixels / 255, float data as it is."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def check(cfg: DatasetConfig) -> None:
    """What the driver checks before a study starts, without decoding a big image folder."""
    if cfg.name == "image_folder":

        n = imagecache.check_folder(cfg)
        if n < 3:
            raise DataError(f"{cfg.path}: {n} examples; need at least 3 to split")
        return
    load(cfg)


def load(cfg: DatasetConfig) -> Data:
    loader = LOADERS[cfg.name]
    data = loader(cfg)
    if cfg.limit is not None:
        data = data.subset(torch.arange(min(cfg.limit, len(data))))
    if len(data) < 3:
        raise DataError(f"{cfg.path or cfg.name}: {len(data)} examples; need at least 3 to split")
    return data


def split(data: Data, fractions: tuple[float, float, float], seed: int) -> Splits:
    """Random split by `seed` (App. D: the paper re-splits the pooled data at random)."""
    n = len(data)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_train = max(1, int(round(fractions[0] * n)))
    n_val = int(round(fractions[1] * n))
    n_val = min(n_val, n - n_train - 1)
    parts = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
    if data.mapped is not None:               # read the rows, leave the map unresident

        xs = imagecache.gather(data.mapped, [p.numpy() for p in parts])
        return Splits(*(Data(torch.from_numpy(x), None, data.index[p]) for x, p in zip(xs, parts)))
    return Splits(*(data.subset(p) for p in parts))


# ---- mnist ------------------------------------------------------------------

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load_mnist(cfg: DatasetConfig) -> Data:
    """Pool whichever of the train and t10k IDX image files are present (gz or not)."""
    root = Path(cfg.path)
    found = [p for part in MNIST_FILES.values() if (p := _find_idx(root, part[0]))]
    if not found and cfg.download:
        _download_mnist(root)
        found = [p for part in MNIST_FILES.values() if (p := _find_idx(root, part[0]))]
    if not found:
        raise DataError(f"{root}: no MNIST image file (train-images-idx3-ubyte[.gz] or "
                        "t10k-images-idx3-ubyte[.gz]); set dataset.download=true to fetch it")
    images = np.concatenate([read_idx_images(p) for p in found])
    x = torch.from_numpy(images).unsqueeze(1)                        # [N, 1, 28, 28] uint8
    return Data(x, None, torch.arange(len(x)))


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def read_idx_images(path: Path) -> np.ndarray:
    """Read an IDX3 ubyte image file; refuse anything truncated or malformed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    if len(raw) < 16:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes, need 16)")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise DataError(f"{path}: not an IDX3 image file (magic {magic}, expected 2051)")
    need = 16 + n * rows * cols
    if len(raw) < need:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, header says {need})")
    return np.frombuffer(raw, np.uint8, n * rows * cols, 16).reshape(n, rows, cols)


def _download_mnist(root: Path) -> None:
    import torchvision  # only users who ask for a download need it here

    root.mkdir(parents=True, exist_ok=True)
    ds = torchvision.datasets.MNIST(str(root), train=True, download=True)
    raw = Path(ds.raw_folder)
    for f in raw.iterdir():
        target = root / f.name
        if not target.exists():
            target.symlink_to(f)


# ---- intrinsic ----------------------------------------------------------------

def load_intrinsic(cfg: DatasetConfig) -> Data:
    """x = phi(y), y ~ N(0, I_P): Theorem 1's setting with a known intrinsic dimension P.

    The same seed gives the same phi and the same y; the ground-truth y is kept
    with each image as its `factors`.
    """
    phi, g = intrinsic_phi(cfg)
    y = torch.randn(cfg.n, cfg.factors, generator=g)                 # [N, P]
    return Data(phi(y), y, torch.arange(cfg.n))


def intrinsic_phi(cfg: DatasetConfig):
    """(phi, generator): phi(y) = sigmoid(1.5 A y + b), y [N, P] -> images [N, 1, S, S].

    A's P columns are smooth random images (sums of Gaussian bumps), linearly
    independent, so y -> A y is injective and the elementwise sigmoid keeps it
    so; phi is continuous. The generator, advanced past phi's draws, is the one
    that then draws y, so analysis code can render new images of known y.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    side = cfg.image_size or 28
    A = _smooth_patterns(cfg.factors, side, g)                      # [P, D]
    b = -1.5 + 0.5 * _smooth_patterns(1, side, g)[0]                # [D] dark background

    def phi(y: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(y.float() @ A * 1.5 + b)                  # [N, D]
        return x.reshape(y.shape[0], 1, side, side).contiguous()

    return phi, g


def _smooth_patterns(P: int, side: int, g: torch.Generator) -> torch.Tensor:
    grid = torch.linspace(-1, 1, side)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")              # [S, S]
    pats = []
    for _ in range(P):
        centres = torch.rand(3, 2, generator=g) * 1.6 - 0.8
        widths = 0.15 + 0.25 * torch.rand(3, generator=g)
        signs = torch.randn(3, generator=g)
        img = sum(s * torch.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * w ** 2))
                  for c, w, s in zip(centres, widths, signs))
        pats.append(img.flatten() / img.flatten().abs().max())
    return torch.stack(pats)                                         # [P, S*S]


# ---- npz ----------------------------------------------------------------------

def load_npz(cfg: DatasetConfig) -> Data:
    """`x` shaped (N, H, W) or (N, C, H, W), uint8 or float in [0, 1]; optional `factors` (N, P)."""
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found: {', '.join(arrays.files) or 'none'})")
    x = arrays["x"]
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: 'x' has shape {arrays['x'].shape}; allowed: (N, H, W) or (N, C, H, W)")
    if x.dtype == np.uint8:
        pass                                                         # stays uint8
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{path}: 'x' holds NaN or inf values")
        if x.min() < 0 or x.max() > 1:
            raise DataError(f"{path}: float 'x' spans [{x.min():.3g}, {x.max():.3g}]; allowed: [0, 1]")
    else:
        raise DataError(f"{path}: 'x' has dtype {x.dtype}; allowed: uint8 or float in [0, 1]")
    factors = None
    if "factors" in arrays:
        f = arrays["factors"]
        if f.ndim != 2 or f.shape[0] != x.shape[0] or not np.isfinite(f).all():
            raise DataError(f"{path}: 'factors' must be finite and shaped (N={x.shape[0]}, P); "
                            f"got {f.shape}")
        factors = torch.from_numpy(f.astype(np.float32))
    dtype = np.uint8 if x.dtype == np.uint8 else np.float32
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))
    return Data(xt, factors, torch.arange(len(xt)))


# ---- image_folder ---------------------------------------------------------------

def load_image_folder(cfg: DatasetConfig) -> Data:
    """Every image under `path`, centre-cropped to a square and resized to image_size, as
    uint8 from the folder's memory-mapped cache (built on first use; see `imagecache`).

    CelebA is used at image_size=64 (App. D); Yale B at 192x168 is kept at its
    own size when image_size is unset, which needs every image to share one size.
    """

    x = imagecache.cached(cfg)                                       # [N, C, S, S] uint8 mmap
    return Data(torch.from_numpy(x), None, torch.arange(x.shape[0]), mapped=x)


LOADERS = {"mnist": load_mnist, "intrinsic": load_intrinsic, "npz": load_npz,
           "image_folder": load_image_folder}

