"""An image folder as one uint8 .npy file, decoded once and memory-mapped after.

The cache lives in $VAESTUDY_CACHE (default ~/.cache/vaestudy/images), one file
per data set named by a hash of its content listing: every image's relative
path, size and modification time, plus image_size. A changed, added or removed
image names a new cache. The first trial on a machine decodes the folder (the
others wait on a file lock) and writes the array with plain writes; every trial
then maps it read-only, and splits are gathered with chunked file reads, so a
trial holds its data once, as uint8 ([N, C, S, S], a quarter of float32).

The driver checks headers only (`check_folder`): sizes and modes from each
file's header, no pixel decoded.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import numpy as np

from trainables.config import DatasetConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".gif")


class DataError(ValueError):
    """Unusable data: the message names the file and what is wrong with it."""


CACHE_VERSION = 1
CHUNK_BYTES = 32 << 20             # file reads while gathering a split


def cache_dir() -> Path:
    return Path(os.environ.get("VAESTUDY_CACHE", Path.home() / ".cache" / "vaestudy" / "images"))


def image_files(root: Path) -> list[Path]:

    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


def content_key(root: Path, files: list[Path], side: int | None) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION} side={side}\n".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def cache_path(cfg: DatasetConfig) -> tuple[Path, list[Path]]:
    root = Path(cfg.path)
    files = image_files(root)
    return cache_dir() / f"{content_key(root, files, cfg.image_size)}.npy", files


def check_folder(cfg: DatasetConfig) -> int:
    """The number of images, from the cache's header or from each image's header."""
    from PIL import Image


    path, files = cache_path(cfg)
    if path.exists():
        return int(np.load(path, mmap_mode="r").shape[0])
    shapes = set()
    for p in files:
        try:
            with Image.open(p) as im:               # reads the header, decodes nothing
                channels = 1 if im.mode in ("L", "I", "I;16", "1", "P") else 3
                shapes.add((cfg.image_size, cfg.image_size, channels) if cfg.image_size
                           else (im.size[1], im.size[0], channels))
        except OSError as e:
            raise DataError(f"{p}: unreadable image ({e})") from None
    if len(shapes) > 1:
        raise DataError(f"{cfg.path}: images of mixed sizes/channels {sorted(shapes)[:3]}...; "
                        "set dataset.image_size (e.g. 64) to resize them all")
    return len(files)


def cached(cfg: DatasetConfig) -> np.ndarray:
    """The folder as a read-only uint8 memory map [N, C, S, S]; built on first use."""
    path, files = cache_path(cfg)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)           # one builder per machine
            if not path.exists():
                build(files, cfg, path)
    return np.load(path, mmap_mode="c")    # copy-on-write: writable for torch, never written


def build(files: list[Path], cfg: DatasetConfig, path: Path) -> None:
    """Decode every image in order and write them as one .npy, atomically."""

    first = _chw(decode(files[0], cfg.image_size))
    shape = (len(files), *first.shape)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for p in files:
            img = _chw(decode(p, cfg.image_size))
            if img.shape != first.shape:
                tmp.unlink()
                raise DataError(f"{cfg.path}: images of mixed sizes/channels ({files[0].name} "
                                f"{first.shape}, {p.name} {img.shape}); set dataset.image_size "
                                "(e.g. 64) to resize them all")
            f.write(img.tobytes())
    os.replace(tmp, path)


def _chw(img: np.ndarray) -> np.ndarray:
    return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)     # [C, H, W]


def gather(mm: np.ndarray, parts: list[np.ndarray]) -> list[np.ndarray]:
    """mm[idx] for each idx in `parts`, read in chunks with plain file reads, so no page of
    the map stays resident: a trial holds each row once, in its split."""
    row = int(np.prod(mm.shape[1:]))
    outs = [np.empty((len(i), *mm.shape[1:]), np.uint8) for i in parts]
    rows = max(1, CHUNK_BYTES // row)
    with open(mm.filename, "rb") as f:
        for lo in range(0, mm.shape[0], rows):
            hi = min(lo + rows, mm.shape[0])
            f.seek(mm.offset + lo * row)
            block = np.fromfile(f, np.uint8, (hi - lo) * row).reshape(hi - lo, *mm.shape[1:])
            for out, idx in zip(outs, parts):
                sel = np.nonzero((idx >= lo) & (idx < hi))[0]
                out[sel] = block[idx[sel] - lo]
    return outs


def decode(p: Path, side: int | None) -> np.ndarray:
    """One image as uint8 [H, W] or [H, W, 3], squared and resized when `side` is set."""
    from PIL import Image  # torchvision's dependency

    try:
        with Image.open(p) as im:
            im = im.convert("L" if im.mode in ("L", "I", "I;16", "1", "P") else "RGB")
            if side:
                im = _square(im).resize((side, side), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{p}: unreadable image ({e})") from None


def _square(im):
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))
