"""Seeds until the verdict is decided (issue 24): the seed-agreement verdict of
`analysis.agreement` looked at after each round of seeds, with its error spent across the
looks so that looking often does not inflate it.

A study's spec says `seeds: {adaptive: {start: 3, step: 2, max: 15}}`. Each configuration
starts with seeds 0..start-1; after each round, a configuration whose verdict is still
undecided gets `step` more seeds (the next numbers), until it is decided or has `max`.
The looks are at n_1 = start, n_2 = start + step, ..., n_K = max seeds, and each look k
gets its share alpha_k of the error ALPHA that one fixed-size look would have, by a
Lan-DeMets spending function A(t) of the information fraction t_k = n_k / max (the
jackknife's variance falls as 1/seeds):

    O'Brien-Fleming type (`obf`, the default): A(t) = 2 - 2 Phi(z_{1 - ALPHA/2} / sqrt(t))
    Pocock type (`pocock`):                    A(t) = ALPHA ln(1 + (e - 1) t)
    alpha_k = A(t_k) - A(t_{k-1}),  A(t_0) = 0,  sum_k alpha_k = A(1) = ALPHA.

Each kind of verdict is a one-sided test. Look k's test runs at the nominal level
alpha'_k of the exact group-sequential boundary (Lan & DeMets 1983; Jennison & Turnbull
2000, ch. 7): under the canonical joint distribution of the looks' statistics (Z_k with
corr(Z_j, Z_k) = sqrt(t_j / t_k), the large-sample law of nested samples), the first
crossing happens at look k with probability alpha_k, so P(a false verdict of a kind at
any look) = sum_k alpha_k = ALPHA = 2.5% (`nominal`: the standard recursive numerical
integration, Armitage, McPherson & Rowe 1969). A look's intervals are the two-sided
1 - 2 alpha'_k intervals of `agreement.config_interval` (`Schedule.level`), with Student's
t on s - 1 degrees of freedom where the canonical law is normal: the small-sample part,
which the simulation checks (`analysis.calibration.sequential_rates`, `coverage_at_stop`).
The looks share most of their seeds, so alpha'_k is well above alpha_k (with the union
bound alone, sum_k alpha'_k <= ALPHA, the last look kept a third as much and lost up to
24 points of power at 5 seeds). The same boundaries make the intervals of every look hold
their parameter together with probability 1 - 2 ALPHA (repeated confidence intervals,
Jennison & Turnbull 1989), so the interval reported where a configuration stopped keeps
95% coverage although the stop depended on it.

`bench/bench_agreement.py --adaptive` measures the rule on codes of known truth (false
verdicts, power, seeds used) beside the fixed design at `max` seeds; docs/analysis.md
holds its table and the suite's `test_adaptive_*` reruns it at 400 configurations.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

ALPHA = 0.025                       # one-sided error per kind of verdict: (1 - stats.LEVEL) / 2,
                                    # as one fixed look (not imported: the driver parses specs
                                    # with this module and stays light)
SPENDING = ("obf", "pocock")
MAX_SEEDS = 20                      # the report's pairs are among a configuration's first 20


def spent(t: float, kind: str = "obf", alpha: float = ALPHA) -> float:
    """A(t): the error spent by information fraction t in [0, 1] (module docstring)."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if kind == "obf":
        from scipy.stats import norm
        return float(2 - 2 * norm.cdf(norm.ppf(1 - alpha / 2) / math.sqrt(t)))
    if kind == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    raise ValueError(f"spending: got {kind!r}; allowed: {', '.join(SPENDING)}")


@dataclass(frozen=True)
class Schedule:
    """When a configuration is looked at (seeds per look) and at which level."""
    start: int = 3
    step: int = 2
    max: int = 15
    spending: str = "obf"

    def looks(self) -> list[int]:
        """Seeds at each look: start, start + step, ..., max (the last one capped at max)."""
        out = list(range(self.start, self.max, self.step))
        return out + [self.max]

    def alphas(self) -> list[float]:
        """alpha_k per look: what each look may spend of ALPHA, per kind of verdict."""
        a = [spent(n / self.max, self.spending) for n in self.looks()]
        return [x - y for x, y in zip(a, [0.0] + a[:-1])]

    def look(self, seeds: int) -> int:
        """The index of the look at which a configuration with `seeds` seeds is judged: the
        last look with at most that many (a configuration short of `start`: the first)."""
        return max(0, sum(n <= seeds for n in self.looks()) - 1)

    def level(self, seeds: int) -> float:
        """The two-sided level of the intervals at the look for `seeds` seeds: 1 - 2 alpha'_k."""
        return 1 - 2 * nominal(self)[self.look(seeds)]

    def next_seeds(self, seeds: int) -> int:
        """How many seeds an undecided configuration with `seeds` has after the next round:
        the next look's."""
        return next((n for n in self.looks() if n > seeds), self.max)

    def to_dict(self) -> dict:
        return {"start": self.start, "step": self.step, "max": self.max,
                "spending": self.spending, "alpha": ALPHA}


@functools.lru_cache(maxsize=64)
def nominal(schedule: Schedule, grid: int = 8001, width: float = 10.0) -> tuple[float, ...]:
    """alpha'_k: the one-sided nominal level of each look's exact boundary, so that under
    the canonical joint distribution the first crossing is at look k with probability
    alpha_k (the spending function's increment). S_k = Z_k sqrt(t_k) has independent
    normal increments of variance t_k - t_{k-1}; its density on the paths not stopped yet is
    carried from look to look on one grid of S (+-`width`; t_k <= 1), convolved with each
    increment's density, and cut at the boundary whose upper tail holds alpha_k."""
    import numpy as np
    from scipy.signal import fftconvolve
    from scipy.stats import norm

    s = np.linspace(-width, width, grid)                                  # [grid] values of S
    ds = s[1] - s[0]
    out, f, before = [], None, 0.0
    for a, tk in zip(schedule.alphas(), (n / schedule.max for n in schedule.looks())):
        sd = math.sqrt(tk - before)
        if f is None:
            g = norm.pdf(s, scale=sd)
        else:
            g = fftconvolve(f, norm.pdf(s, scale=sd), mode="same") * ds     # [grid]
        if f is None:                                                     # exact at look 1
            cut = math.sqrt(tk) * float(norm.isf(a))
        else:
            tail = (np.cumsum(g[::-1])[::-1] - g / 2) * ds          # P(S_k >= s), trapezoid
            cut = float(np.interp(a, tail[::-1], s[::-1]))
        out.append(float(norm.sf(cut / math.sqrt(tk))))
        f, before = np.where(s > cut, 0.0, np.maximum(g, 0.0)), tk
    return tuple(out)


def stop_reason(verdict: str, seeds: int, schedule: Schedule) -> str:
    """Why a configuration gets no more seeds: decided, at max, or '' (it gets more)."""
    if verdict:
        return f"decided at {seeds} seeds"
    if seeds >= schedule.max:
        return f"undecided at max ({schedule.max} seeds)"
    return ""
