"""The site's plan core: intervals from held-out errors, when to pull, what a model is worth."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from turbofan.plan import (
    Calibration,
    best_pull,
    engine_costs,
    plan_engine,
    pull_in,
    replay_worth,
)
from turbofan.tycoon import Economics

ECONOMICS = Economics()  # the original's: $300/cycle, $10k + 20, $60k + 60


def calibration(errors: Sequence[float], at: float = 50.0) -> Calibration:
    """Errors all in one band of prediction."""
    values = np.asarray(errors, dtype=float)
    return Calibration(np.full(len(values), at), values, engines=5)


def perfect_predictions(lives: np.ndarray) -> np.ndarray:
    cycles = np.arange(1, lives.max() + 1)
    rul = lives[:, None] - cycles[None, :]
    return np.where(rul >= 0, np.minimum(rul, 125), np.nan).astype(np.float32)


def test_the_interval_is_the_conformal_quantiles_of_the_errors():
    # 39 errors -1..-19, 0, 1..19: at 90 %, the 2nd smallest and the 2nd largest (n+1 = 40).
    errors = list(range(-19, 20))
    low, high = calibration(errors).interval(50.0)
    assert (low, high) == (50.0 - 18, 50.0 + 18)


def test_the_interval_never_goes_below_zero_and_uses_the_band_of_the_prediction():
    near_end = Calibration(
        predicted=np.r_[np.full(40, 5.0), np.full(40, 100.0)],
        errors=np.r_[np.full(40, -8.0), np.full(40, 30.0)],
        engines=4,
    )
    assert near_end.interval(5.0) == (0.0, 0.0)  # 5 - 8 < 0: clipped
    assert near_end.interval(100.0) == (130.0, 130.0)


def test_a_band_with_too_few_errors_falls_back_to_all_of_them():
    sparse = Calibration(
        np.r_[np.full(5, 5.0), np.full(40, 100.0)], np.r_[[1.0] * 5, [3.0] * 40], engines=2
    )
    # Its own 5 errors would give (6, 6); all 45 give the 2nd smallest and largest: 1 and 3.
    assert sparse.interval(5.0) == (6.0, 8.0)


def test_the_chance_of_failing_counts_only_draws_of_an_engine_still_running():
    cal = calibration([-20, -10, 0, 10, 20], at=10.0)  # draws 10 + e: -10, 0, 10, 20, 30
    assert cal.failure_chance(10.0, 0) == 0.0  # pulled now: it cannot fail first
    assert cal.failure_chance(10.0, 15) == pytest.approx(2 / 4)  # of 0, 10, 20, 30
    assert cal.expected_left(10.0, 15) == pytest.approx((0 + 0 + 5 + 15) / 4)


def test_a_threshold_pulls_when_the_prediction_falls_below_it():
    assert pull_in(9.5, 10) == 0
    assert pull_in(10.0, 10) == 1
    assert pull_in(25.4, 10) == 16


def test_a_costlier_failure_pulls_earlier_and_a_cheap_one_runs_to_failure():
    # Errors spread like a normal of 10 cycles (its 200 quantiles).
    spread = np.sort(np.random.default_rng(0).normal(0, 10, 20_000))[50::100]
    cal = calibration(list(spread), at=40.0)
    pulls = [
        best_pull(40.0, 150, cal, Economics(failure_cost=cost))
        for cost in (0, 10_000, 30_000, 600_000)
    ]
    assert pulls[0] is None  # a failure costs no more than a maintenance: run it
    assert pulls[1] is not None and pulls[2] is not None and pulls[3] is not None
    assert pulls[1] > pulls[2] > pulls[3]
    assert pulls[3] < 40 - 2 * 10  # two spreads before the predicted end


def test_the_plan_of_an_engine_prices_its_pull_and_running_it_to_failure():
    cal = calibration([-10, -5, 0, 5, 10], at=20.0)  # true RUL 10, 15, 20, 25 or 30
    maintenance, failure = engine_costs(ECONOMICS)
    assert (maintenance, failure) == (16_000, 78_000)
    planned = plan_engine(20.0, 100, cal, ECONOMICS, horizon=30, threshold=8)
    assert planned.pull_in == 13
    assert planned.fail_chance == pytest.approx(1 / 5)  # RUL 10 < 13
    assert planned.plan_cost == pytest.approx(0.2 * failure + 0.8 * maintenance)
    assert planned.run_cost == pytest.approx(failure * 4 / 5)  # all but 30 fail in 30 cycles
    later = plan_engine(20.0, 100, cal, ECONOMICS, horizon=10, threshold=8)
    assert later.pull_in is None and later.plan_cost == later.run_cost
    assert math.isnan(later.life_left_at_pull)


def test_a_better_model_is_worth_money_with_an_interval_and_the_same_one_nothing():
    lives = np.array([150, 180, 200, 220, 250, 170])
    good = perfect_predictions(lives)
    late = good + np.float32(15)  # predicts 15 cycles too many: fails
    worth = replay_worth(
        lives, {"good": good, "late": late}, ECONOMICS, thresholds={"good": 5, "late": 5}
    )
    assert worth.difference > 0 and worth.low > 0 and worth.low <= worth.difference <= worth.high
    assert worth.engines == 6 and worth.level == 0.9
    same = replay_worth(lives, {"a": good, "b": good}, ECONOMICS, thresholds={"a": 5, "b": 5})
    assert same.difference == same.low == same.high == 0


def test_worth_compares_exactly_two_models():
    lives = np.array([150, 200])
    with pytest.raises(ValueError, match="exactly two"):
        replay_worth(lives, {"a": perfect_predictions(lives)}, ECONOMICS, thresholds={"a": 5})
