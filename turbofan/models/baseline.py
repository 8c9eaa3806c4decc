"""A scikit-learn baseline: gradient boosting on summary features of each window."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor


def window_features(windows: np.ndarray) -> np.ndarray:
    """Last value, mean, standard deviation and least-squares slope of every sensor.

    Parameters
    ----------
    windows : (n, window, sensors)

    Returns
    -------
    (n, 4 * sensors) float32
    """
    n, length, _ = windows.shape
    t = np.arange(length, dtype=np.float32) - (length - 1) / 2
    centred = windows - windows.mean(axis=1, keepdims=True)
    slope = np.einsum("t,nts->ns", t, centred) / max(float((t**2).sum()), 1.0)
    return np.concatenate(
        [windows[:, -1, :], windows.mean(axis=1), windows.std(axis=1), slope], axis=1
    ).astype(np.float32)


def fit_baseline(
    windows: np.ndarray,
    labels: np.ndarray,
    *,
    val_windows: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    seed: int = 0,
) -> HistGradientBoostingRegressor:
    """Gradient boosting, stopped early on validation engines when given.

    Windows of one engine overlap, so a split by row would validate on near
    copies of training rows: the validation set is passed in, split by engine.
    """
    validate = val_windows is not None and val_labels is not None and len(val_windows) > 0
    model = HistGradientBoostingRegressor(
        max_iter=500,
        learning_rate=0.05,
        max_leaf_nodes=31,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=validate,
        n_iter_no_change=30,
        random_state=seed,
    )
    if validate and val_windows is not None:
        return model.fit(
            window_features(windows),
            labels,
            X_val=window_features(val_windows),
            y_val=val_labels,
        )
    return model.fit(window_features(windows), labels)
