"""Issue 24 item 2: seeds added until the seed-agreement verdict is decided
(analysis/sequential.py), its error rates on codes of known truth, its intervals'
coverage where it stopped, and a real study that grows by rounds."""
import math

import numpy as np
import pytest
from scipy.stats import norm

from analysis import agreement, calibration
from analysis.sequential import ALPHA, Schedule, spent, stop_reason


def test_spending_functions_are_their_closed_forms_and_spend_alpha_exactly():
    z = norm.ppf(1 - ALPHA / 2)
    assert spent(0.25, "obf") == pytest.approx(2 - 2 * norm.cdf(z / 0.5))
    assert spent(0.25, "pocock") == pytest.approx(ALPHA * math.log(1 + (math.e - 1) / 4))
    for kind in ("obf", "pocock"):
        assert spent(0, kind) == 0 and spent(1, kind) == pytest.approx(ALPHA)
        s = Schedule(3, 2, 15, kind)
        assert s.looks() == [3, 5, 7, 9, 11, 13, 15]
        assert all(a > 0 for a in s.alphas()) and sum(s.alphas()) == pytest.approx(ALPHA)
        assert all(s.level(n) > 1 - 2 * ALPHA for n in s.looks())   # each look is stricter
    with pytest.raises(ValueError, match="spending: got 'x'"):
        spent(0.5, "x")


def test_schedule_looks_and_rounds():
    s = Schedule(3, 4, 9)
    assert s.looks() == [3, 7, 9]
    assert [s.next_seeds(n) for n in (1, 3, 7, 9)] == [3, 7, 9, 9]
    assert [s.look(n) for n in (2, 3, 6, 7, 9, 12)] == [0, 0, 0, 1, 2, 2]
    assert stop_reason(agreement.ROTATION, 7, s) == "decided at 7 seeds"
    assert stop_reason("", 9, s) == "undecided at max (9 seeds)"
    assert stop_reason("", 7, s) == ""


@pytest.mark.parametrize("truth", calibration.TRUTHS)
def test_adaptive_seeds_keep_the_error_rates_and_the_power(truth):
    """400 simulated configurations per truth (analysis.calibration), looks at 3, 5, 7 and 9
    seeds: P(a false verdict at any look) has a Clopper-Pearson upper bound <= 7.5%, and the
    right verdict comes at least as often as with one look at all 9 seeds, minus 5 points."""
    reps = 400
    r = calibration.sequential_rates(truth, Schedule(3, 2, 9), reps, seed=1)
    print(f"{truth}: {r}")
    assert r["sequential_wrong_bound"] <= 0.075
    if truth != "unrelated":
        assert r["sequential_right"] >= r["fixed_right"] - 0.05
        assert r["mean_seeds"] < 9                        # decided configurations stop early
    else:
        assert r["mean_seeds"] == 9                       # never decided: every seed is used


def test_the_interval_where_the_rule_stopped_keeps_its_coverage():
    """A pair quantity with a per-seed effect whose mean sits on the margin, so where the
    rule stops depends on the data: the sequential levels' interval at the stop holds the
    mean in >= 93% of 600 configurations; fixed 95% intervals looked at after every round
    do not (about 87%): the looks inflate the error the spending keeps."""
    s = Schedule(3, 2, 9)
    covered, _ = calibration.coverage_at_stop(agreement.MARGIN, s, 600, seed=1)
    naive, _ = calibration.coverage_at_stop(agreement.MARGIN, s, 600, seed=1, sequential=False)
    assert covered >= 0.93
    assert naive < 0.92 and naive < covered - 0.05
