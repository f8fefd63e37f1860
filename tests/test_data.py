"""Data loaders on good and bad input: each bad case names the file and the problem."""
import gzip
import struct

import numpy as np
import pytest
import torch

from trainables import data as datasets
from trainables.config import DatasetConfig


def test_mnist_pools_the_idx_files_as_uint8_and_batches_scale_to_unit_interval(mnist_dir):
    d = datasets.load(DatasetConfig(name="mnist", path=str(mnist_dir)))
    assert d.x.shape[1:] == (1, 28, 28) and d.x.dtype == torch.uint8
    assert len(d) in (10_000, 1_000)        # the test set, or the slice in tests/data
    xb = datasets.as_float(d.x[:500])
    assert xb.dtype == torch.float32 and xb.min() == 0 and xb.max() == 1 and d.factors is None


def test_split_is_random_by_seed_and_partitions_the_data(mnist_dir):
    d = datasets.load(DatasetConfig(name="mnist", path=str(mnist_dir), limit=1000))
    s = datasets.split(d, (0.6, 0.2, 0.2), seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (600, 200, 200)
    idx = torch.cat([s.train.index, s.val.index, s.test.index])
    assert sorted(idx.tolist()) == list(range(1000))
    assert not torch.equal(s.train.index[:50], torch.arange(50))
    assert torch.equal(datasets.split(d, (0.6, 0.2, 0.2), 0).test.index, s.test.index)
    assert not torch.equal(datasets.split(d, (0.6, 0.2, 0.2), 1).test.index, s.test.index)


def _idx(path, n=5, rows=28, cols=28, cut=0, magic=2051, gz=True):
    raw = struct.pack(">IIII", magic, n, rows, cols) + bytes(n * rows * cols)
    raw = raw[:len(raw) - cut]
    (gzip.open if gz else open)(path, "wb").write(raw)


@pytest.mark.parametrize("case,msg", [
    (dict(cut=100), "truncated IDX file"),
    (dict(magic=2049), "not an IDX3 image file"),
    (dict(n=0, cut=0), "0 examples"),
])
def test_bad_idx_files_are_refused_naming_the_file(tmp_path, case, msg):
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", **case)
    with pytest.raises(datasets.DataError, match=msg) as e:
        datasets.load(DatasetConfig(name="mnist", path=str(tmp_path)))
    assert str(tmp_path) in str(e.value)


def test_uncompressed_idx_is_read(tmp_path):
    _idx(tmp_path / "train-images-idx3-ubyte", n=7, gz=False)
    assert len(datasets.load(DatasetConfig(name="mnist", path=str(tmp_path)))) == 7


def test_missing_mnist_folder_says_how_to_download(tmp_path):
    with pytest.raises(datasets.DataError, match="dataset.download=true"):
        datasets.load(DatasetConfig(name="mnist", path=str(tmp_path)))


def test_intrinsic_is_deterministic_and_keeps_its_ground_truth():
    cfg = DatasetConfig(name="intrinsic", n=50, factors=3)
    a, b = datasets.load(cfg), datasets.load(cfg)
    assert torch.equal(a.x, b.x) and a.factors.shape == (50, 3)
    assert a.x.shape == (50, 1, 28, 28) and 0 < a.x.min() and a.x.max() < 1
    big = datasets.load(DatasetConfig(name="intrinsic", n=5, image_size=64))
    assert big.x.shape == (5, 1, 64, 64)
    phi, _ = datasets.intrinsic_phi(cfg)
    torch.testing.assert_close(phi(a.factors), a.x)


def test_intrinsic_phi_is_injective_on_samples():
    phi, _ = datasets.intrinsic_phi(DatasetConfig(name="intrinsic", factors=4))
    y = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    x = phi(y).flatten(1)
    dx = torch.cdist(x, x) + torch.eye(200)
    assert dx.min() > 1e-3


def test_npz_good_input_with_factors(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.random.default_rng(0).integers(0, 256, (20, 3, 16, 16), dtype=np.uint8),
             factors=np.zeros((20, 2)))
    d = datasets.load(DatasetConfig(name="npz", path=str(p)))
    assert d.x.shape == (20, 3, 16, 16) and d.x.dtype == torch.uint8 and d.factors.shape == (20, 2)


@pytest.mark.parametrize("arrays,msg", [
    (dict(y=np.zeros((4, 8, 8))), "no array named 'x'"),
    (dict(x=np.full((4, 8, 8), np.nan)), "NaN"),
    (dict(x=np.full((4, 8, 8), 2.0)), r"allowed: \[0, 1\]"),
    (dict(x=np.zeros((4, 8))), "shape"),
    (dict(x=np.zeros((4, 8, 8)), factors=np.zeros((3, 2))), "factors"),
    (dict(x=np.zeros((4, 8, 8), dtype=np.int64)), "dtype"),
])
def test_bad_npz_is_refused_naming_the_file(tmp_path, arrays, msg):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(datasets.DataError, match=msg) as e:
        datasets.load(DatasetConfig(name="npz", path=str(p)))
    assert "bad.npz" in str(e.value)


def test_image_folder_good_mixed_and_empty(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setenv("VAESTUDY_CACHE", str(tmp_path / "cache"))
    good = tmp_path / "good"
    good.mkdir()
    for i in range(4):
        Image.fromarray(np.full((20, 30, 3), i * 40, np.uint8)).save(good / f"{i}.png")
    d = datasets.load(DatasetConfig(name="image_folder", path=str(good)))
    assert d.x.shape == (4, 3, 20, 30)
    d64 = datasets.load(DatasetConfig(name="image_folder", path=str(good), image_size=64))
    assert d64.x.shape == (4, 3, 64, 64)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(good / "odd.png")
    with pytest.raises(datasets.DataError, match="mixed sizes"):
        datasets.load(DatasetConfig(name="image_folder", path=str(good)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(datasets.DataError, match="no images"):
        datasets.load(DatasetConfig(name="image_folder", path=str(tmp_path / "empty")))


def test_image_folder_is_a_uint8_cache_built_once_and_split_without_copies(tmp_path, monkeypatch):
    from PIL import Image

    from trainables import imagecache
    monkeypatch.setenv("VAESTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(imagecache, "CHUNK_BYTES", 3 * 8 * 8 * 7)    # several chunks
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    cfg = DatasetConfig(name="image_folder", path=str(folder))
    datasets.check(cfg)                                   # headers only: no cache yet
    assert not list((tmp_path / "cache").glob("*.npy"))
    d = datasets.load(cfg)
    assert d.x.dtype == torch.uint8 and d.x.shape == (30, 3, 8, 8)
    assert np.array_equal(d.x.numpy(), imgs.transpose(0, 3, 1, 2))
    cache = list((tmp_path / "cache").glob("*.npy"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    again = datasets.load(cfg)                            # the same cache, not rebuilt
    assert cache[0].stat().st_mtime_ns == stamp and torch.equal(again.x, d.x)
    s = datasets.split(d, (0.6, 0.2, 0.2), 3)
    plain = datasets.split(datasets.Data(d.x.clone(), None, d.index), (0.6, 0.2, 0.2), 3)
    for a, b in ((s.train, plain.train), (s.val, plain.val), (s.test, plain.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.index, b.index)
    Image.fromarray(imgs[0]).save(folder / "030.png")     # content changed: a new cache
    assert len(datasets.load(cfg)) == 31 and len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_driver_check_of_an_image_folder_reads_headers_only(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setenv("VAESTUDY_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(np.zeros((7, 6), np.uint8)).save(folder / "odd.png")
    with pytest.raises(datasets.DataError, match="mixed sizes"):
        datasets.check(DatasetConfig(name="image_folder", path=str(folder)))
    datasets.check(DatasetConfig(name="image_folder", path=str(folder), image_size=4))
    (folder / "bad.png").write_bytes(b"not an image")
    with pytest.raises(datasets.DataError, match="bad.png: unreadable"):
        datasets.check(DatasetConfig(name="image_folder", path=str(folder), image_size=4))
