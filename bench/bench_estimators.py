"""Issue 21: the Monte-Carlo estimates of `trainables.indicators.estimates` against closed
forms, the estimator table in docs/analysis.md.

Factorised Gaussian codes with q(z) = N(0, I) exactly: H = 10 factors, posterior
variance s2 = exp(-2 I / H), means mu ~ N(0, (1 - s2) I), so I(x;z) = I nats and the
true KL(q(z)||p(z)) and total correlation are 0. Per I and number of points N in the
aggregate posterior: the I(x;z) lower bound, the KL and TC estimates as computed
(margin -inf) and as reported (None within SATURATION_MARGIN of log N), and the time.

  nice .venv/bin/python bench/bench_estimators.py             # N = 1,000 and 4,000
  .venv/bin/python bench/bench_estimators.py --smoke-test     # seconds; for CI
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables import indicators  # noqa: E402


def codes(I: float, N: int, H: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s2 = math.exp(-2 * I / H)
    mu = torch.randn(N, H, generator=g, dtype=torch.float64) * math.sqrt(1 - s2)   # [N, H]
    return mu, torch.full((N, H), math.log(s2), dtype=torch.float64)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", default="1000,4000")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    a = p.parse_args()
    sizes = [200] if a.smoke_test else [int(n) for n in a.points.split(",")]
    levels = (4.0, 20.0) if a.smoke_test else (2.0, 4.0, 6.0, 8.0, 10.0, 20.0)
    torch.set_num_threads(1)
    print(f"margin {indicators.SATURATION_MARGIN} nats below log N; true KL = TC = 0\n")
    print("| true I | N | log N | I lower bound | KL est. (raw) | TC est. (raw) | "
          "KL reported | TC reported | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for I in levels:
        for N in sizes:
            mu, logvar = codes(I, N)
            t = time.perf_counter()
            raw = indicators.estimates(mu, logvar, torch.Generator().manual_seed(1), points=N,
                                       margin=-math.inf)
            s = time.perf_counter() - t
            shown = indicators.estimates(mu, logvar, torch.Generator().manual_seed(1), points=N)
            fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
            print(f"| {I:g} | {N:,} | {math.log(N):.2f} | {raw['mi_xz_est']:.2f} | "
                  f"{raw['kl_qz_pz_est']:.2f} | {raw['tc_est']:.2f} | "
                  f"{fmt(shown['kl_qz_pz_est'])} | {fmt(shown['tc_est'])} | {s:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
