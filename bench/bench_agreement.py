"""Issue 21: the seed-agreement verdict's error rates on codes of known truth
(`analysis.calibration`), the table in docs/analysis.md.

Per number of seeds (3, 5, 10) and truth, over --reps simulated configurations that
cycle through 4, 8, 16, 32 used factors, isotropic and anisotropic base codes and
noise 0.1 and 0.3 (1,000 points each): the share of each verdict, and the rate that
matters with its one-sided 95% Clopper-Pearson bound (upper for an error
rate, lower for power):
- permutation: seeds agree up to a signed permutation; rate = false "rotation";
- boundary: every pair of seeds a rotation D_MIN from every signed permutation;
  rate = false "signed permutation";
- haar: Haar-random rotations; rate = power (the verdict "rotation");
- unrelated: independent codes; rate = any verdict.

  nice .venv/bin/python bench/bench_agreement.py                # 2,000 reps: about 10 min on 1 core
  .venv/bin/python bench/bench_agreement.py --smoke-test        # seconds; for CI
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import agreement, calibration  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    a = p.parse_args()
    reps = 16 if a.smoke_test else a.reps
    t = time.perf_counter()
    print(f"margin {agreement.MARGIN}, alternative at D_MIN = {calibration.D_MIN}; {reps} "
          "configurations per row\n")
    print("| seeds | truth | rotation | signed permutation | no verdict | rate | CP 95% bound |")
    print("|---|---|---|---|---|---|---|")
    names = {"permutation": "signed permutation (false rotation)",
             "boundary": "rotation at D_MIN (false signed permutation)",
             "haar": "Haar rotation (power)", "unrelated": "unrelated (any verdict)"}
    for r in calibration.table(reps=reps, seed=a.seed):
        print(f"| {r['seeds']} | {names[r['truth']]} | {r['rotation']:.4f} | "
              f"{r['permutation']:.4f} | {r['none']:.4f} | {r['rate']:.4f} | "
              f"{r['bound']:.4f} |", flush=True)
    print(f"\n{time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
