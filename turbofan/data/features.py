"""From parsed C-MAPSS rows to model inputs: labels, regimes, scaling, windows.

Everything that is fitted (operating regimes, kept sensors, scaling) is fitted on
training rows only and kept in a :class:`FeaturePipeline`, which turns into a
plain dict and back so a saved model carries its own preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from turbofan.data.files import SENSOR_COLUMNS, SETTING_COLUMNS

DEFAULT_RUL_CAP = 125
DEFAULT_WINDOW = 30
# FD002 and FD004 were flown in six operating conditions, FD001 and FD003 in one.
REGIMES_BY_SUBSET = {"FD001": 1, "FD002": 6, "FD003": 1, "FD004": 6}


def rul_labels(
    frame: pd.DataFrame, cap: float | None = DEFAULT_RUL_CAP, final_rul: np.ndarray | None = None
) -> np.ndarray:
    """Piecewise-linear remaining useful life of every row.

    Parameters
    ----------
    frame : rows of a train or test file
    cap : labels above it are set to it (the flat start of the piecewise-linear
        target); None for the plain linear RUL
    final_rul : for a test file, the true RUL after each unit's last cycle (the
        RUL file, in unit order); None for a training file, whose units ran to
        failure (RUL 0 at the last cycle)

    Returns
    -------
    float32 array, one label per row.
    """
    last = frame.groupby("unit", sort=False)["cycle"].transform("max").to_numpy()
    rul = (last - frame["cycle"].to_numpy()).astype(np.float64)
    if final_rul is not None:
        units = frame["unit"].drop_duplicates().to_numpy()
        if len(final_rul) != len(units):
            raise ValueError(f"{len(final_rul)} final RUL values for {len(units)} units")
        offset = pd.Series(np.asarray(final_rul, dtype=np.float64), index=units)
        rul += offset.reindex(frame["unit"]).to_numpy()
    if cap is not None:
        rul = np.minimum(rul, cap)
    return rul.astype(np.float32)


@dataclass
class RegimeModel:
    """Operating regimes: clusters of the three settings, nearest-centre assignment.

    Fitted with k-means on the settings scaled to unit range; regimes are numbered
    in lexicographic order of their centres, so the numbering does not depend on
    the clustering's random start.
    """

    centres: np.ndarray  # (n_regimes, 3), in scaled units
    scale: np.ndarray  # (3,) divisor that scales each setting

    @classmethod
    def fit(cls, settings: np.ndarray, n_regimes: int, seed: int = 0) -> RegimeModel:
        settings = np.asarray(settings, dtype=np.float64)
        scale = np.ptp(settings, axis=0)
        scale[scale == 0] = 1.0
        if n_regimes == 1:
            return cls(centres=(settings / scale).mean(axis=0, keepdims=True), scale=scale)
        from sklearn.cluster import KMeans  # only fitting needs scikit-learn

        # The settings sit at a handful of set points plus tiny noise: clustering the
        # distinct points on a 0.01 grid, weighted by their counts, gives the same
        # centres as clustering every row, in milliseconds instead of seconds.
        points, counts = np.unique(np.round(settings / scale, 2), axis=0, return_counts=True)
        if len(points) < n_regimes:
            raise ValueError(
                f"cannot find {n_regimes} operating regimes in settings that take only "
                f"{len(points)} distinct values"
            )
        kmeans = KMeans(n_clusters=n_regimes, n_init=10, random_state=seed)
        kmeans.fit(points, sample_weight=counts)
        centres = kmeans.cluster_centers_
        order = np.lexsort(centres.T[::-1])
        return cls(centres=centres[order], scale=scale)

    @property
    def n_regimes(self) -> int:
        return len(self.centres)

    def assign(self, settings: np.ndarray) -> np.ndarray:
        scaled = np.asarray(settings, dtype=np.float64) / self.scale
        distances = ((scaled[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        return distances.argmin(axis=1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {"centres": self.centres.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegimeModel:
        return cls(centres=np.array(data["centres"]), scale=np.array(data["scale"]))


def informative_sensors(frame: pd.DataFrame, regimes: np.ndarray, min_levels: int = 3) -> list[str]:
    """Sensors that vary within an operating regime.

    A sensor whose readings take fewer than ``min_levels`` distinct values inside
    every regime is constant up to quantisation (in FD001: s1, s5, s6, s10, s16,
    s18, s19) and carries no degradation signal; it is dropped.
    """
    kept = []
    for name in SENSOR_COLUMNS:
        levels = frame.groupby(regimes, sort=False)[name].nunique()
        if (levels >= min_levels).any():
            kept.append(name)
    return kept


@dataclass
class FeaturePipeline:
    """Regimes, sensor selection and per-regime standardisation, fitted on training rows.

    Parameters
    ----------
    n_regimes : operating regimes to find in the settings (1 turns regimes off)
    window : length of the input windows in cycles
    rul_cap : cap of the piecewise-linear training label
    """

    n_regimes: int = 1
    window: int = DEFAULT_WINDOW
    rul_cap: float | None = DEFAULT_RUL_CAP
    regimes: RegimeModel | None = None
    sensors: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None  # (n_regimes, n_sensors)
    std: np.ndarray | None = None

    @classmethod
    def for_subset(cls, subset: str, **kwargs: Any) -> FeaturePipeline:
        return cls(n_regimes=REGIMES_BY_SUBSET.get(subset.upper(), 1), **kwargs)

    def fit(self, frame: pd.DataFrame) -> FeaturePipeline:
        settings = frame[SETTING_COLUMNS].to_numpy()
        self.regimes = RegimeModel.fit(settings, self.n_regimes)
        regime = self.regimes.assign(settings)
        self.sensors = informative_sensors(frame, regime)
        values = frame[self.sensors].to_numpy(dtype=np.float64)
        counts = np.bincount(regime, minlength=self.n_regimes)[:, None]
        sums = np.zeros((self.n_regimes, len(self.sensors)))
        np.add.at(sums, regime, values)
        self.mean = sums / np.maximum(counts, 1)
        squares = np.zeros_like(sums)
        np.add.at(squares, regime, (values - self.mean[regime]) ** 2)
        std = np.sqrt(squares / np.maximum(counts, 1))
        # A sensor flat within one regime would divide by zero: leave it unscaled.
        self.std = np.where(std > 1e-12, std, 1.0)
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Standardised sensors of each row, float32 (rows, sensors)."""
        if self.regimes is None or self.mean is None or self.std is None:
            raise RuntimeError("FeaturePipeline.fit() must run before transform()")
        regime = self.regimes.assign(frame[SETTING_COLUMNS].to_numpy())
        values = frame[self.sensors].to_numpy(dtype=np.float64)
        return ((values - self.mean[regime]) / self.std[regime]).astype(np.float32)

    def training_windows(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Every full window of every unit and the capped RUL at its last cycle."""
        features = self.transform(frame)
        x, ends = windows(features, frame["unit"].to_numpy(), self.window)
        return x, rul_labels(frame, self.rul_cap)[ends]

    def last_windows(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """One window per unit, ending at its last cycle, padded if the unit is short.

        Returns the windows and the unit ids in file order.
        """
        features = self.transform(frame)
        units = frame["unit"].to_numpy()
        x, ends = windows(features, units, self.window, last_only=True, pad=True)
        return x, units[ends]

    def to_dict(self) -> dict[str, Any]:
        if self.regimes is None or self.mean is None or self.std is None:
            raise RuntimeError("only a fitted FeaturePipeline can be saved")
        return {
            "n_regimes": self.n_regimes,
            "window": self.window,
            "rul_cap": self.rul_cap,
            "regimes": self.regimes.to_dict(),
            "sensors": list(self.sensors),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturePipeline:
        return cls(
            n_regimes=data["n_regimes"],
            window=data["window"],
            rul_cap=data["rul_cap"],
            regimes=RegimeModel.from_dict(data["regimes"]),
            sensors=list(data["sensors"]),
            mean=np.array(data["mean"]),
            std=np.array(data["std"]),
        )


def windows(
    features: np.ndarray,
    units: np.ndarray,
    window: int,
    *,
    last_only: bool = False,
    pad: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows over each unit's rows, built by one gather (no Python loop).

    Parameters
    ----------
    features : (rows, features), rows of each unit contiguous and in cycle order
    units : (rows,) unit id of each row
    window : window length in cycles
    last_only : one window per unit, ending at its last row
    pad : also give windows to rows with fewer than ``window`` rows of history,
        filled at the front with the unit's first row (so a test engine shorter
        than the window is predicted, not dropped)

    Returns
    -------
    windows : (n, window, features)
    ends : (n,) row index of each window's last row
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    units = np.asarray(units)
    n = len(units)
    new_unit = np.r_[True, units[1:] != units[:-1]]
    start = np.maximum.accumulate(np.where(new_unit, np.arange(n), 0))
    if last_only:
        ends = np.flatnonzero(np.r_[new_unit[1:], True])
    else:
        ends = np.arange(n)
    if not pad:
        ends = ends[ends - start[ends] + 1 >= window]
    index = ends[:, None] - (window - 1) + np.arange(window)[None, :]
    index = np.maximum(index, start[ends][:, None])
    return features[index], ends
