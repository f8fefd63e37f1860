import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MNIST = Path(os.environ.get("VAESTUDY_MNIST", SHARED / "data" / "mnist"))


@pytest.fixture(autouse=True)
def _tune_dir(tmp_path, monkeypatch):
    """Tune's folder under the test's tmp path, not the user's ~/ray_results."""
    monkeypatch.setenv("VAESTUDY_TUNE_DIR", str(tmp_path / "tune"))


@pytest.fixture
def mnist_dir():
    if not (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST test set not found at {MNIST} (set VAESTUDY_MNIST)")
    return MNIST


def tiny(**over):
    """A trial config small enough to train in about a second on one core."""
    base = {"dataset.name": "intrinsic", "dataset.n": 400, "dataset.factors": 2,
            "model.latent_dim": 4, "train.epochs": 2, "train.threads": 1,
            "eval.traversals": False, "checkpoint.every": 1}
    base.update(over)
    return base
