"""Accuracy of RUL predictions as the C-MAPSS literature reports it."""

from __future__ import annotations

import numpy as np

from turbofan.data.features import DEFAULT_RUL_CAP


def rmse(predicted: np.ndarray, true: np.ndarray) -> float:
    """Root mean squared error in cycles."""
    error = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.sqrt(np.mean(error**2)))


def nasa_score(predicted: np.ndarray, true: np.ndarray) -> float:
    """The PHM08 scoring function: late predictions cost more than early ones.

    ``sum(exp(-d/13) - 1 if d < 0 else exp(d/10) - 1)`` with d = predicted - true.
    """
    d = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.where(d < 0, np.exp(-d / 13) - 1, np.exp(d / 10) - 1).sum())


def evaluate(
    predicted: np.ndarray, true: np.ndarray, cap: float = DEFAULT_RUL_CAP
) -> dict[str, dict[str, float]]:
    """Both ways of scoring a test set, labelled.

    ``literature``: true RUL capped at the training cap, as published figures are
    (with uncapped labels no model capped at 125 can go below about 18 RMSE on
    FD002/FD004). ``strict``: true RUL as given in the RUL file.
    """
    true = np.asarray(true, dtype=np.float64)
    capped = np.minimum(true, cap)
    return {
        "literature": {
            "rmse": rmse(predicted, capped),
            "score": nasa_score(predicted, capped),
            "true_rul_cap": float(cap),
        },
        "strict": {"rmse": rmse(predicted, true), "score": nasa_score(predicted, true)},
    }
