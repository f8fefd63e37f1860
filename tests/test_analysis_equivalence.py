"""Factor equivalence (Theorems 4-5) and App. C against planted ground truth.

Procrustes recovers a planted rotation where a signed permutation cannot;
axis alignment is 1 for the identity and 1/2 for a 45-degree rotation; the
Higgins et al. metric is ~100% for axis-aligned codes and ~chance at 45 degrees."""
import itertools

import numpy as np
import pytest

from analysis import align
from analysis.higgins import GroundTruth, compute_higgins


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
    aligned = compute_higgins(truth, lambda x: x, np.random.default_rng(0))
    mixed = compute_higgins(truth, lambda x: x @ rotation2(45), np.random.default_rng(0))
    assert aligned["score"] > 0.99
    assert abs(mixed["score"] - 0.5) < 0.1


def test_higgins_metric_moves_with_the_rotation_of_an_equally_good_model():
    truth = GroundTruth(4, lambda y: np.hstack([y, np.zeros((len(y), 2))]))   # 2 unused dims
    out = compute_higgins(truth, lambda x: x, np.random.default_rng(0), rotations=6,
                          rotate_dims=np.arange(4))
    assert out["score"] > 0.99 and len(out["rotated"]) == 6
    assert min(out["rotated"]) < out["score"] - 0.05                     # App. C: it depends on Q
    assert all(0.0 <= r <= 1.0 for r in out["rotated"])
