from __future__ import annotations

import math

import numpy as np
import pytest

from turbofan.metrics import evaluate, nasa_score, rmse


def test_rmse_is_the_root_of_the_mean_squared_error():
    assert rmse(np.array([1.0, 2.0]), np.array([1.0, 4.0])) == pytest.approx(math.sqrt(2))


def test_the_nasa_score_is_zero_for_perfect_predictions():
    assert nasa_score(np.array([50.0, 7.0]), np.array([50.0, 7.0])) == 0


def test_the_nasa_score_punishes_late_predictions_more_than_early_ones():
    true = np.array([100.0])

    late = nasa_score(true + 10, true)
    early = nasa_score(true - 10, true)

    assert late == pytest.approx(math.e - 1)  # exp(10/10) - 1
    assert early == pytest.approx(math.exp(10 / 13) - 1)
    assert late > early


def test_the_nasa_score_sums_over_engines():
    predicted, true = np.array([87.0, 120.0]), np.array([100.0, 100.0])  # d = -13, +20

    assert nasa_score(predicted, true) == pytest.approx((math.e - 1) + (math.exp(2) - 1))


def test_evaluate_reports_the_literature_and_the_strict_variant_side_by_side():
    predicted, true = np.array([125.0, 10.0]), np.array([145.0, 10.0])

    scores = evaluate(predicted, true, cap=125)

    assert scores["literature"]["rmse"] == 0  # 145 is capped to 125 as in training
    assert scores["literature"]["true_rul_cap"] == 125
    assert scores["strict"]["rmse"] == pytest.approx(math.sqrt(20**2 / 2))
    assert scores["strict"]["score"] == pytest.approx(math.exp(20 / 13) - 1)
