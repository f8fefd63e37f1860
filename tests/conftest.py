import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
# the real MNIST test set when it is there; else the first 1,000 of its images, shipped here
SLICE = ROOT / "tests" / "data" / "mnist"
MNIST = Path(os.environ.get("VAESTUDY_MNIST", SHARED / "data" / "mnist"))
GPU = torch.cuda.is_available()
# VAESTUDY_GPU_DRY_RUN=1 runs the `gpu` tests on the CPU (bench/gpu_check.sh --cpu-dry-run)
GPU_DRY_RUN = os.environ.get("VAESTUDY_GPU_DRY_RUN") == "1" and not GPU


@pytest.fixture(autouse=True)
def _tune_dir(tmp_path, monkeypatch):
    """Tune's folder under the test's tmp path, not the user's ~/ray_results."""
    monkeypatch.setenv("VAESTUDY_TUNE_DIR", str(tmp_path / "tune"))


@pytest.fixture
def mnist_dir():
    if (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        return MNIST
    return SLICE


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run whenever a GPU is visible, and are skipped (saying so) where none is."""
    skip = pytest.mark.skip(reason="no GPU visible (torch.cuda.is_available() is false)")
    for item in items:
        if "gpu" in item.keywords and not (GPU or GPU_DRY_RUN):
            item.add_marker(skip)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def moto_server():
    """One moto S3 server on 127.0.0.1 per test module (no credentials of anyone's): its
    'host:port'; the test credentials are set in the environment while it runs."""
    from moto.server import ThreadedMotoServer

    old = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield "%s:%d" % server.get_host_and_port()
    finally:
        server.stop()
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def tiny(**over):
    """A trial config small enough to train in about a second on one core, on the CPU
    (results are compared exactly, and a GPU's kernels need not match the CPU's)."""
    base = {"dataset.name": "intrinsic", "dataset.n": 400, "dataset.factors": 2,
            "model.latent_dim": 4, "train.epochs": 2, "train.threads": 1,
            "eval.traversals": False, "checkpoint.every": 1, "train.device": "cpu"}
    base.update(over)
    return base


class Interrupt(Exception):
    """Raised from a trial's report callback to stop it as a killed process would."""


def stop_at(epoch: int):
    """A report callback that interrupts the trial when it reports `epoch`."""
    def report(m):
        if m["epoch"] == epoch:
            raise Interrupt
    return report
