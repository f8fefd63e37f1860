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

Issue 24, `--adaptive`: seeds added until the verdict is decided (analysis.sequential),
per schedule (`--schedules start:step:max,...`; looks at 3, 5, ..., 15 and at 3, 4, 5
seeds by default), spending function and truth: the sequential rule's false and right
verdicts beside one look at all max seeds of the same codes, each with its one-sided 95%
Clopper-Pearson bound, the mean seeds used, and the coverage of the interval where the
rule stopped (a per-seed-effect quantity whose mean sits on the margin).

  nice .venv/bin/python bench/bench_agreement.py                # 2,000 reps: about 10 min on 1 core
  nice .venv/bin/python bench/bench_agreement.py --adaptive --reps 1000   # about 30 min
  .venv/bin/python bench/bench_agreement.py --smoke-test        # seconds; for CI
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analysis import agreement, calibration  # noqa: E402
from analysis.sequential import Schedule  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--adaptive", action="store_true",
                   help="the sequential rule (seeds until decided) against a fixed design")
    p.add_argument("--schedules", default="3:2:15,3:1:5",
                   help="start:step:max of each schedule measured (--adaptive)")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes, for CI")
    a = p.parse_args()
    reps = 16 if a.smoke_test else a.reps
    if a.adaptive:
        return adaptive(reps, a.seed, ["3:1:4"] if a.smoke_test else a.schedules.split(","))
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


def adaptive(reps: int, seed: int, schedules: list[str]) -> int:
    t = time.perf_counter()
    wrong = {"permutation": "rotation", "boundary": "signed permutation",
             "haar": "(power only)", "unrelated": "any"}
    print(f"{reps} configurations per row; bounds are one-sided 95% Clopper-Pearson (upper "
          "for a false-verdict rate, lower for the right verdict's); 'fixed' is one look at "
          "all max seeds of the same codes\n")
    print("| looks (seeds) | spending | truth | false verdict | sequential false, bound | "
          "fixed false, bound | sequential right, bound | fixed right, bound | mean seeds | "
          "seeds used (count) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = [Schedule(*map(int, text.split(":")), spending)
            for text in schedules for spending in ("obf", "pocock")]
    for s in runs:
        for truth in calibration.TRUTHS:
            r = calibration.sequential_rates(truth, s, reps, seed)
            false = (f"{r['sequential_wrong']:.4f}, {r['sequential_wrong_bound']:.4f} | "
                     f"{r['fixed_wrong']:.4f}, {r['fixed_wrong_bound']:.4f}"
                     if "fixed_wrong" in r else "– | –")
            right = (f"{r['sequential_right']:.4f}, {r['sequential_right_bound']:.4f} | "
                     f"{r['fixed_right']:.4f}, {r['fixed_right_bound']:.4f}"
                     if "fixed_right" in r else "– | –")
            used = ", ".join(f"{n}: {c}" for n, c in enumerate(r["seeds_used"]) if c)
            print(f"| {', '.join(map(str, s.looks()))} | {s.spending} | {truth} | "
                  f"{wrong[truth]} | {false} | {right} | {r['mean_seeds']:.2f} | {used} |",
                  flush=True)
    print("\ncoverage of the interval where the rule stopped, for a pair quantity with a "
          "per-seed effect whose mean sits on the margin:\n")
    print("| looks (seeds) | levels | coverage | mean seeds |")
    print("|---|---|---|---|")
    for s in runs:
        for name, seq in ((f"{s.spending} boundaries", True), ("fixed 95% at every look", False)):
            if not seq and s.spending != "obf":
                continue
            c, m = calibration.coverage_at_stop(agreement.MARGIN, s, reps, seed, sequential=seq)
            print(f"| {', '.join(map(str, s.looks()))} | {name} | {c:.4f} | {m:.2f} |",
                  flush=True)
    print(f"\n{time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
