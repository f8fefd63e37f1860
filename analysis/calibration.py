"""The seed-agreement verdict on codes of known truth: its error rates (docs/analysis.md's
calibration table, `bench/bench_agreement.py`; the suite's `test_agreement_calibration`).

Noise model. Base codes y [M, K] of M = 1,000 points, N(0, diag(sd^2)): isotropic
(sd = 1) or anisotropic (sd from 1 down to 0.2, geometric). Seed s holds
z_s = y T_s + sigma e_s, e_s ~ N(0, I), sigma in {0.1, 0.3}; the truths:
- "permutation": T_s a uniformly random signed permutation (a verdict "rotation" is false);
- "boundary": T_s = P_s expm(phi A_s), P_s a random signed permutation, A_s a random
  skew-symmetric direction, phi the smallest angle at which every pair of seeds is at
  least D_MIN from every signed permutation (`pair_distance`); the hardest rotations of
  the alternative (a verdict "signed permutation" is false);
- "haar": T_s Haar-random rotations (power: the rate of the verdict "rotation");
- "unrelated": independent base codes per seed (any verdict is false).
`pair_distance(Q, sd)` is the R^2 that the best signed permutation loses against Q
itself, noise-free, both directions averaged: for isotropic codes
2 (1 - max_W tr(W^T Q) / K), so D_MIN = 0.10 is an RMS angle of arccos(0.95) = 18 degrees.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.optimize import linear_sum_assignment

from analysis import agreement, align, stats

TRUTHS = ("permutation", "boundary", "haar", "unrelated")
SHAPES = ("isotropic", "anisotropic")
D_MIN = 0.10                # = 2 x MARGIN: the alternative starts this far from the null


def scales(k: int, shape: str) -> np.ndarray:
    return np.ones(k) if shape == "isotropic" else np.geomspace(1.0, 0.2, k)


def signed_permutation(k: int, rng: np.random.Generator) -> np.ndarray:
    return np.eye(k)[rng.permutation(k)] * rng.choice([-1.0, 1.0], k)


def pair_distance(ta: np.ndarray, tb: np.ndarray, sd: np.ndarray) -> float:
    """Noise-free R^2 lost by the best signed permutation between seeds y T_a and y T_b."""
    var, q = sd ** 2, ta.T @ tb                                         # z_b = z_a q
    return 0.5 * (_frame_deficit(ta, q, var) + _frame_deficit(tb, q.T, var))


def _frame_deficit(t: np.ndarray, q: np.ndarray, var: np.ndarray) -> float:
    """R^2 lost predicting z q from z = y t by the best signed permutation (noise-free)."""
    s = t.T @ (var[:, None] * t)                                        # cov of z [K, K]
    cross = s @ q
    rows, cols = linear_sum_assignment(-np.abs(cross))
    w = np.zeros_like(q)
    w[rows, cols] = np.sign(cross[rows, cols])
    d = q - w
    return float(np.trace(d.T @ s @ d) / np.trace(s))


def _rotations(gens: list[np.ndarray]):
    """phi -> [expm(phi A) for A in gens], through one eigendecomposition of each
    skew-symmetric A (A = V diag(i w) V^H)."""
    eig = [np.linalg.eig(a) for a in gens]
    return lambda phi: [((v * np.exp(phi * w)) @ np.linalg.inv(v)).real for w, v in eig]


def boundary_transforms(seeds: int, k: int, sd: np.ndarray,
                        rng: np.random.Generator) -> list[np.ndarray]:
    """Signed permutations times expm(phi A_s), phi bisected so that the closest pair of
    seeds is D_MIN to 1.02 D_MIN from every signed permutation."""
    perms = [signed_permutation(k, rng) for _ in range(seeds)]
    gens = []
    for _ in range(seeds):
        g = rng.standard_normal((k, k))
        a = g - g.T
        gens.append(a / np.linalg.norm(a) * np.sqrt(2 * k))             # unit RMS angle
    rot = _rotations(gens)

    def make(phi):
        return [p @ r for p, r in zip(perms, rot(phi))]

    def closest(phi):
        return min(pair_distance(x, y, sd) for x, y in combinations(make(phi), 2))

    lo, hi = 0.0, 0.25
    while closest(hi) < D_MIN and hi < 3.0:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        d = closest(mid)
        if D_MIN <= d <= 1.02 * D_MIN:
            return make(mid)
        lo, hi = (mid, hi) if d < D_MIN else (lo, mid)
    return make(hi)


def seed_codes(truth: str, seeds: int, k: int, shape: str, sigma: float,
               rng: np.random.Generator, points: int = 1000) -> list[np.ndarray]:
    """The codes [points, k] of each seed of one simulated configuration."""
    sd = scales(k, shape)
    y = rng.standard_normal((points, k)) * sd                           # [M, K]
    if truth == "unrelated":
        return [rng.standard_normal((points, k)) * sd + sigma * rng.standard_normal((points, k))
                for _ in range(seeds)]
    if truth == "permutation":
        ts = [signed_permutation(k, rng) for _ in range(seeds)]
    elif truth == "haar":
        ts = [align.random_rotation(k, rng) for _ in range(seeds)]
    elif truth == "boundary":
        ts = boundary_transforms(seeds, k, sd, rng)
    else:
        raise ValueError(f"truth: got {truth!r}; allowed: {', '.join(TRUTHS)}")
    return [y @ t + sigma * rng.standard_normal((points, k)) for t in ts]


def verdict(codes: list[np.ndarray], rng: np.random.Generator) -> str:
    """The configuration's verdict from its seeds' codes (every pair, as the report)."""
    a, b, p, q = [], [], [], []
    for i, j in combinations(range(len(codes)), 2):
        s = agreement.pair_statistic(codes[i], codes[j], rng)
        a.append(i), b.append(j), p.append(s["procrustes_r2"]), q.append(s["permutation_r2"])
    return agreement.decide(agreement.config_interval(p, q, a, b))


def rates(truth: str, seeds: int, reps: int, seed: int = 0, ks=(4, 8, 16, 32),
          shapes=SHAPES, sigmas=(0.1, 0.3)) -> dict:
    """{verdict: share of reps} for one truth and seed count; the cells (k, shape, sigma)
    are cycled over the replicates."""
    rng = np.random.default_rng([seed, TRUTHS.index(truth), seeds])
    cells = [(k, s, g) for k in ks for s in shapes for g in sigmas]
    counts = {agreement.ROTATION: 0, agreement.PERMUTATION: 0, "": 0}
    for r in range(reps):
        k, shape, sigma = cells[r % len(cells)]
        counts[verdict(seed_codes(truth, seeds, k, shape, sigma, rng), rng)] += 1
    return {v: c / reps for v, c in counts.items()}


def cp_upper(count: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen `count` times in n."""
    from scipy.stats import beta
    return 1.0 if count >= n else float(beta.ppf(level, count + 1, n - count))


def cp_lower(count: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound of a rate seen `count` times in n."""
    from scipy.stats import beta
    return 0.0 if count <= 0 else float(beta.ppf(1 - level, count, n - count + 1))


def table(seed_counts=(3, 5, 10), reps: int = 2000, seed: int = 0) -> list[dict]:
    """Per (truth, seeds): the share of each verdict over `reps` configurations, and the
    rate that matters for the truth with its one-sided 95% Clopper-Pearson bound (upper for
    an error rate, lower for power)."""
    wanted = {"permutation": agreement.ROTATION, "boundary": agreement.PERMUTATION,
              "haar": agreement.ROTATION, "unrelated": None}
    rows = []
    for s in seed_counts:
        for truth in TRUTHS:
            r = rates(truth, s, reps, seed)
            bad = (r[agreement.ROTATION] + r[agreement.PERMUTATION] if wanted[truth] is None
                   else r[wanted[truth]])
            rows.append({"truth": truth, "seeds": s, "reps": reps,
                         "rotation": r[agreement.ROTATION],
                         "permutation": r[agreement.PERMUTATION], "none": r[""],
                         "rate": bad, "bound": (cp_lower if truth == "haar" else cp_upper)(
                             round(bad * reps), reps)})
    return rows


# ---- seeds until the verdict is decided (issue 24, analysis.sequential) ----------------

WANTED = {"permutation": agreement.PERMUTATION, "boundary": agreement.ROTATION,
          "haar": agreement.ROTATION, "unrelated": ""}       # the right verdict per truth
WRONG = {"permutation": (agreement.ROTATION,), "boundary": (agreement.PERMUTATION,),
         "haar": (),                     # a Haar rotation may lie near a signed permutation
         "unrelated": (agreement.ROTATION, agreement.PERMUTATION)}


class _Pairs:
    """One simulated configuration's pair statistics, computed when a look first needs them
    and shared by every look and by the fixed design (a paired comparison)."""

    def __init__(self, codes: list[np.ndarray], rng: np.random.Generator):
        self.codes, self.rng, self.done = codes, rng, {}

    def interval(self, n: int, level: float) -> dict:
        pairs = list(combinations(range(n), 2))
        for i, j in pairs:
            if (i, j) not in self.done:
                s = agreement.pair_statistic(self.codes[i], self.codes[j], self.rng)
                self.done[i, j] = (s["procrustes_r2"], s["permutation_r2"])
        p, q = zip(*(self.done[x] for x in pairs))
        a, b = zip(*pairs)
        return agreement.config_interval(p, q, a, b, level)


def sequential_run(codes: list[np.ndarray], schedule, rng: np.random.Generator,
                   fixed: bool = True) -> dict:
    """The sequential rule on one configuration whose seeds hold `codes` (max of them):
    its verdict, seeds used and interval where it stopped; with `fixed`, also the verdict
    of one look at all max seeds at the fixed level (stats.LEVEL)."""
    pairs = _Pairs(codes, rng)
    for n in schedule.looks():
        ci = pairs.interval(n, schedule.level(n))
        verdict = agreement.decide(ci)
        if verdict:
            break
    out = {"verdict": verdict, "seeds": n, "diff_low": ci["diff_low"],
           "diff_high": ci["diff_high"]}
    if fixed:
        out["fixed"] = agreement.decide(pairs.interval(schedule.max, stats.LEVEL))
    return out


def sequential_rates(truth: str, schedule, reps: int, seed: int = 0, ks=(4, 8, 16, 32),
                     shapes=SHAPES, sigmas=(0.1, 0.3), fixed: bool = True) -> dict:
    """Over `reps` simulated configurations of one truth: how often the sequential rule and
    the fixed design at max seeds give the wrong and the right verdict, with one-sided 95%
    Clopper-Pearson bounds (upper for the wrong, lower for the right), and the seeds used."""
    rng = np.random.default_rng([seed, TRUTHS.index(truth), schedule.max, 24])
    cells = [(k, s, g) for k in ks for s in shapes for g in sigmas]
    runs = []
    for r in range(reps):
        k, shape, sigma = cells[r % len(cells)]
        codes = seed_codes(truth, schedule.max, k, shape, sigma, rng)
        runs.append(sequential_run(codes, schedule, rng, fixed))
    out = {"truth": truth, "reps": reps,
           "mean_seeds": float(np.mean([x["seeds"] for x in runs])),
           "seeds_used": np.bincount([x["seeds"] for x in runs]).tolist()}
    for design in ("verdict", "fixed") if fixed else ("verdict",):
        wrong = sum(x[design] in WRONG[truth] for x in runs)
        right = sum(x[design] == WANTED[truth] for x in runs) if WANTED[truth] else None
        name = "sequential" if design == "verdict" else "fixed"
        if WRONG[truth]:
            out[f"{name}_wrong"], out[f"{name}_wrong_bound"] = wrong / reps, cp_upper(wrong,
                                                                                      reps)
        if right is not None:
            out[f"{name}_right"], out[f"{name}_right_bound"] = right / reps, cp_lower(right, reps)
    return out


def coverage_at_stop(mu: float, schedule, reps: int, seed: int = 0,
                     sequential: bool = True) -> tuple[float, float]:
    """(share of configurations whose interval at the stop holds mu, mean seeds used) for a
    pair quantity with a per-seed effect, d_ab = mu + u_a + u_b + 0.5 e_ab (u, e ~ N(0, 1)),
    stopped at the first look whose interval excludes agreement.MARGIN. `sequential`: the
    looks' levels from `schedule`; else every look at the fixed 95% (looking repeatedly at a
    fixed-level interval, the stopped interval's coverage falls below 95%)."""
    rng = np.random.default_rng([seed, 2024])
    ij = np.array(list(combinations(range(schedule.max), 2)))              # [pairs, 2]
    hits, used = 0, []
    for _ in range(reps):
        u = rng.standard_normal(schedule.max)
        d = mu + u[ij[:, 0]] + u[ij[:, 1]] + 0.5 * rng.standard_normal(len(ij))
        for n in schedule.looks():
            keep = ij[:, 1] < n
            level = schedule.level(n) if sequential else stats.LEVEL
            _, lo, hi, _ = stats.pair_interval(d[keep], ij[keep, 0], ij[keep, 1], level)
            if lo > agreement.MARGIN or hi < agreement.MARGIN:
                break
        hits += lo <= mu <= hi
        used.append(n)
    return hits / reps, float(np.mean(used))
