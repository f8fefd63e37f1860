"""What study.json records about how a study was run: versions, the command, ISO times."""
from __future__ import annotations

import platform
import sys
from datetime import datetime, timezone


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds, e.g. 2026-01-31T12:00:00+00:00."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    """vaestudy (with its git commit), Python, Ray, torch, polars, pyarrow, CUDA and the GPU
    (None where the driver has no GPU; trials may still run on GPU nodes), and the numerics
    the metric values depend on: numpy, scipy, scikit-learn (its `mutual_info_score` and
    classifiers: a suspected cause of drift in published MIG tables)."""
    from importlib.metadata import version

    import polars
    import pyarrow
    import ray
    import torch

    from resultstore.store import code_version

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"vaestudy": code_version(), "python": platform.python_version(),
            "ray": ray.__version__, "torch": torch.__version__, "polars": polars.__version__,
            "pyarrow": pyarrow.__version__, "cuda": torch.version.cuda, "gpu": gpu,
            # by metadata: importing scipy or sklearn would cost the driver a second
            **{k: version(k) for k in ("numpy", "scipy", "scikit-learn")}}


def command() -> list[str]:
    return list(sys.argv)
