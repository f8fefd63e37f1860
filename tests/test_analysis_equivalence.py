"""Factor equivalence (Theorems 4-5) and App. C against planted ground truth.

Procrustes recovers a planted rotation where a signed permutation cannot;
axis alignment is 1 for the identity and 1/2 for a 45-degree rotation; the
Higgins et al. metric is ~100% for axis-aligned codes and ~chance at 45 degrees."""
import itertools

import numpy as np
import pytest

from analysis import align
from analysis.higgins import FAST, GroundTruth, compute_higgins


def rotation2(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@pytest.fixture
def codes():
    return np.random.default_rng(0).standard_normal((1000, 4))          # [M, K]


def test_procrustes_recovers_a_planted_rotation_the_permutation_does_not(codes):
    q = align.random_rotation(4, np.random.default_rng(1))
    rotated = codes @ q + 0.01 * np.random.default_rng(2).standard_normal(codes.shape)
    assert align.procrustes_r2(codes, rotated) > 0.999
    assert align.permutation_r2(codes, rotated) < 0.8


def test_signed_permutation_recovers_a_planted_signed_permutation(codes):
    p = np.eye(4)[[2, 0, 3, 1]] * np.array([1, -1, -1, 1])
    assert align.permutation_r2(codes, codes @ p) == pytest.approx(1.0)
    w = align.signed_permutation(codes, codes @ p)
    np.testing.assert_allclose(w, p)


def test_unequal_factor_counts_count_the_missing_factors_as_unexplained(codes):
    assert align.procrustes_r2(codes[:, :3], codes) == pytest.approx((0.75 + 2 / 3) / 2, abs=0.02)
    assert 0.0 < align.permutation_r2(codes, codes[:, [1, 0]]) < 0.5


def test_procrustes_never_below_the_signed_permutation():
    rng = np.random.default_rng(6)
    for _ in range(50):
        ka, kb = (int(k) for k in rng.integers(1, 6, 2))
        a = rng.standard_normal((60, ka)) * rng.uniform(0.1, 3, ka)
        b = rng.standard_normal((60, kb)) * rng.uniform(0.1, 3, kb)
        b[:, :min(ka, kb)] += a[:, :min(ka, kb)]
        assert align.procrustes_r2(a, b) >= align.permutation_r2(a, b) - 1e-9


def test_assignment_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 5))
        m = int(rng.integers(n, 6))
        cost = rng.standard_normal((n, m))
        cols = align.assignment(cost)
        best = min(sum(cost[i, p[i]] for i in range(n))
                   for p in itertools.permutations(range(m), n))
        assert len(set(cols)) == n
        assert cost[np.arange(n), cols].sum() == pytest.approx(best)


def test_axis_alignment_is_one_for_identity_and_half_at_45_degrees():
    y = np.random.default_rng(4).standard_normal((2000, 2))
    assert align.axis_alignment(y, y) == pytest.approx(1.0)
    assert align.axis_alignment(y @ rotation2(45), y) == pytest.approx(0.5, abs=1e-3)
    assert align.axis_alignment(-y[:, ::-1], y) == pytest.approx(1.0)  # signed permutation


def test_linear_r2_sees_through_a_rotation_and_not_through_noise():
    rng = np.random.default_rng(5)
    y = rng.standard_normal((2000, 3))
    assert align.linear_r2(y @ align.random_rotation(3, rng) * 2.0 + 1.0, y) == pytest.approx(1.0)
    assert align.linear_r2(rng.standard_normal((2000, 3)), y) < 0.01


def test_higgins_metric_is_perfect_axis_aligned_and_chance_at_45_degrees():
    """App. C: z_diff_h = (2/sqrt(pi)) sqrt(1 - q_{k,h}^2); at 45 degrees both classes agree."""
    truth = GroundTruth(2, lambda y: y)
    aligned = compute_higgins(truth, lambda x: x, np.random.default_rng(0), **FAST)
    mixed = compute_higgins(truth, lambda x: x @ rotation2(45), np.random.default_rng(0), **FAST)
    assert aligned["eval_accuracy"] > 0.99 and aligned["train_accuracy"] > 0.99
    assert abs(mixed["eval_accuracy"] - 0.5) < 0.1


def test_higgins_metric_moves_with_the_rotation_of_an_equally_good_model():
    truth = GroundTruth(4, lambda y: np.hstack([y, np.zeros((len(y), 2))]))   # 2 unused dims
    out = compute_higgins(truth, lambda x: x, np.random.default_rng(0), rotations=6,
                          rotate_dims=np.arange(4), **FAST)
    assert out["eval_accuracy"] > 0.99 and len(out["rotated"]) == 6
    assert min(out["rotated"]) < out["eval_accuracy"] - 0.05                    # App. C: it depends on Q
    assert all(0.0 <= r <= 1.0 for r in out["rotated"])


def _trials(codes_by_seed: list[np.ndarray], key: str = "c1") -> "pl.DataFrame":
    import polars as pl
    return pl.DataFrame([{"config_key": key, "trial_id": f"t{s}", "seed": s,
                          "index": list(range(len(z))), "mu": z.tolist(),
                          "used_idx": list(range(z.shape[1]))}
                         for s, z in enumerate(codes_by_seed)])


def test_heldout_procrustes_can_lose_to_the_permutation_on_unrelated_codes():
    """In-sample, Procrustes always wins; held out, unrelated codes give it no edge."""
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((1000, 10)), rng.standard_normal((1000, 10))
    assert align.procrustes_r2(a, b) > align.permutation_r2(a, b) + 0.02       # in-sample edge
    rot = align.heldout_r2(a, b, align.procrustes, np.random.default_rng(0))
    perm = align.heldout_r2(a, b, align.signed_permutation, np.random.default_rng(0))
    assert rot < 0 and perm < 0 and rot < perm + 0.02                        # no edge


def test_rotated_seeds_get_a_rotation_verdict():
    from analysis import equivalence
    rng = np.random.default_rng(8)
    y = rng.standard_normal((600, 4))
    seeds = [y @ align.random_rotation(4, rng) + 0.05 * rng.standard_normal(y.shape)
             for _ in range(4)]
    pairs = equivalence.seed_pairs(_trials(seeds))
    table = equivalence.seed_agreement(pairs)
    row = table.row(0, named=True)
    assert row["pairs"] == 6 and row["procrustes_r2"] > 0.98
    assert row["diff_low"] > 0.1 and row["verdict"].startswith("rotation")


def test_unrelated_seeds_get_no_verdict():
    from analysis import equivalence
    rng = np.random.default_rng(9)
    seeds = [rng.standard_normal((600, 4)) for _ in range(4)]
    row = equivalence.seed_agreement(equivalence.seed_pairs(_trials(seeds))).row(0, named=True)
    assert row["procrustes_high"] < 0                      # unrelated: held-out R^2 below 0
    assert row["verdict"] == ""


def test_permuted_seeds_get_a_permutation_verdict():
    from analysis import equivalence
    rng = np.random.default_rng(10)
    y = rng.standard_normal((600, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
    seeds = [y[:, rng.permutation(4)] * rng.choice([-1, 1], 4)
             + 0.05 * rng.standard_normal(y.shape) for _ in range(4)]
    row = equivalence.seed_agreement(equivalence.seed_pairs(_trials(seeds))).row(0, named=True)
    assert row["verdict"] == "signed permutation"


def test_pair_interval_covers_at_its_level_where_the_interval_over_pairs_does_not():
    """A quantity on pairs of seeds with a per-seed effect (as a seed's bad run spoils all
    its pairs): d_ab = u_a + u_b + e_ab, true mean 0. Over 600 configurations of 6 seeds
    (15 pairs), the t-interval over pairs treats them as independent and misses often;
    the jackknife over seeds covers about 95%."""
    from analysis import stats
    rng = np.random.default_rng(12)
    seeds, hits_pairs, hits_seeds, reps = 6, 0, 0, 600
    a, b = np.array(list(itertools.combinations(range(seeds), 2))).T
    for _ in range(reps):
        u = rng.standard_normal(seeds)
        d = u[a] + u[b] + 0.5 * rng.standard_normal(len(a))
        _, lo, hi, n = stats.t_interval(d)
        hits_pairs += lo <= 0 <= hi
        _, lo, hi, n = stats.pair_interval(d, a, b)
        assert n == seeds
        hits_seeds += lo <= 0 <= hi
    assert hits_pairs / reps < 0.75                 # the naive interval: far below 95%
    assert 0.91 <= hits_seeds / reps <= 0.99


def test_pair_interval_needs_three_seeds():
    from analysis import stats
    m, lo, hi, n = stats.pair_interval([0.3], [0], [1])
    assert (m, n) == (0.3, 2) and np.isnan(lo) and np.isnan(hi)
    m, lo, hi, n = stats.pair_interval([0.1, 0.2, 0.6], [0, 0, 1], [1, 2, 2])
    assert n == 3 and lo < m < hi


def test_seed_pairs_are_taken_among_the_first_seeds():
    from analysis import equivalence
    rng = np.random.default_rng(13)
    seeds = [rng.standard_normal((60, 2)) for _ in range(6)]
    pairs = equivalence.seed_pairs(_trials(seeds), max_seeds=4)
    assert pairs.height == 6 and set(pairs["seed_a"]) | set(pairs["seed_b"]) == {0, 1, 2, 3}
    row = equivalence.seed_agreement(pairs).row(0, named=True)
    assert (row["seeds"], row["pairs"]) == (4, 6)


def test_one_seed_pair_has_no_interval_and_no_verdict():
    from analysis import equivalence
    rng = np.random.default_rng(11)
    y = rng.standard_normal((300, 3))
    seeds = [y, y @ align.random_rotation(3, rng)]
    row = equivalence.seed_agreement(equivalence.seed_pairs(_trials(seeds))).row(0, named=True)
    assert (row["seeds"], row["pairs"]) == (2, 1)
    assert row["diff_low"] is None and row["verdict"] == ""


def test_higgins_defaults_are_disentanglement_libs():
    import inspect
    sig = inspect.signature(compute_higgins)
    assert list(sig.parameters)[:3] == ["truth", "representation_fn", "random_state"]
    assert {k: sig.parameters[k].default for k in ("batch_size", "num_train", "num_eval")} == \
        {"batch_size": 64, "num_train": 10000, "num_eval": 5000}


def test_a_constant_representation_scores_chance():
    truth = GroundTruth(4, lambda y: y)
    out = compute_higgins(truth, lambda x: np.zeros((len(x), 3)), np.random.default_rng(0),
                          **FAST)
    assert out["eval_accuracy"] < 0.4


def test_every_pair_gets_its_own_split_of_the_points():
    """Issue 21: one shared draw for every pair made its error common to all pairs."""
    from analysis import equivalence
    a, b = equivalence.pair_rng(0, "c1", 0, 1), equivalence.pair_rng(0, "c1", 0, 2)
    assert not np.array_equal(a.permutation(100), b.permutation(100))
    assert np.array_equal(equivalence.pair_rng(0, "c1", 0, 1).permutation(100),
                          equivalence.pair_rng(0, "c1", 0, 1).permutation(100))


def test_seeds_equal_up_to_a_signed_permutation_are_never_called_rotation():
    """Issue 21's failing case: near-identical codes, difference 0.0000 [-0.0001, 0.0000]."""
    from analysis import equivalence
    rng = np.random.default_rng(14)
    y = rng.standard_normal((1000, 6)) * np.geomspace(1, 0.2, 6)
    for trial in range(5):
        seeds = [y[:, rng.permutation(6)] * rng.choice([-1, 1], 6)
                 + 1e-4 * rng.standard_normal(y.shape) for _ in range(5)]
        row = equivalence.seed_agreement(equivalence.seed_pairs(_trials(seeds), seed=trial)) \
            .row(0, named=True)
        assert row["verdict"] == "signed permutation", row


def test_agreement_calibration():
    """The verdict's error rates on codes of known truth (analysis.calibration; 400
    configurations of 5 seeds each, cycling 4-32 factors, both base shapes and noise
    levels): false "rotation" under signed permutations and false "signed permutation"
    under rotations D_MIN away, each with a one-sided 95% Clopper-Pearson upper bound at
    most 7.5%; power against Haar rotations at least 80%."""
    from analysis import agreement, calibration
    reps = 400
    perm = calibration.rates("permutation", 5, reps, seed=1)
    near = calibration.rates("boundary", 5, reps, seed=1)
    haar = calibration.rates("haar", 5, reps, seed=1)
    assert calibration.cp_upper(round(perm[agreement.ROTATION] * reps), reps) <= 0.075
    assert calibration.cp_upper(round(near[agreement.PERMUTATION] * reps), reps) <= 0.075
    assert haar[agreement.ROTATION] >= 0.80
    assert perm[agreement.PERMUTATION] >= 0.80                 # the verdict is also given


def test_clopper_pearson_bounds_match_closed_forms():
    from analysis import calibration
    assert calibration.cp_upper(0, 400) == pytest.approx(1 - 0.05 ** (1 / 400))
    assert calibration.cp_lower(400, 400) == pytest.approx(0.05 ** (1 / 400))
