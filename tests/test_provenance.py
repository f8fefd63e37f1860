"""study.json's provenance: every version the results depend on, the command, ISO times."""
from datetime import datetime, timezone

import polars
import pyarrow

from study import provenance


def test_versions_name_every_library_the_results_depend_on():
    v = provenance.versions()
    import numpy
    import scipy
    import sklearn

    assert {"vaestudy", "python", "ray", "torch", "polars", "pyarrow", "cuda", "gpu", "numpy",
            "scipy", "scikit-learn"} <= set(v)
    assert v["polars"] == polars.__version__ and v["pyarrow"] == pyarrow.__version__
    assert (v["numpy"], v["scipy"], v["scikit-learn"]) == \
        (numpy.__version__, scipy.__version__, sklearn.__version__)
    assert v["python"].count(".") == 2


def test_times_are_iso_8601_in_utc():
    t = datetime.fromisoformat(provenance.now_iso())
    assert t.tzinfo is not None and abs((datetime.now(timezone.utc) - t).total_seconds()) < 5
