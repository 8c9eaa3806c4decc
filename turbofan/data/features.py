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
# The cycle channel is cycle / CYCLE_SCALE: of order one over a typical engine life.
CYCLE_SCALE = 200.0
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


def setting_points(settings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct operating points (settings rounded to 0.01) and how many rows sit at each.

    This is what a site shares to find regimes: set points and counts, no sensor data.
    """
    return np.unique(
        np.round(np.asarray(settings, dtype=np.float64), 2), axis=0, return_counts=True
    )


@dataclass
class RegimeModel:
    """Operating regimes: clusters of the three settings, nearest-centre assignment.

    Fitted with k-means on the distinct operating points (scaled to unit range and
    weighted by their counts: the settings sit at a few set points plus tiny
    noise, so this equals clustering every row, in milliseconds); regimes are
    numbered in lexicographic order of their centres, so the numbering does not
    depend on the clustering's random start.
    """

    centres: np.ndarray  # (n_regimes, 3), in scaled units
    scale: np.ndarray  # (3,) divisor that scales each setting

    @classmethod
    def fit(cls, settings: np.ndarray, n_regimes: int, seed: int = 0) -> RegimeModel:
        points, counts = setting_points(settings)
        return cls.fit_points(points, counts, n_regimes, seed)

    @classmethod
    def fit_points(
        cls, points: np.ndarray, counts: np.ndarray, n_regimes: int, seed: int = 0
    ) -> RegimeModel:
        """Fit from operating points and counts, e.g. merged from several sites."""
        points, counts = np.asarray(points, dtype=np.float64), np.asarray(counts)
        scale = np.ptp(points, axis=0)
        scale[scale == 0] = 1.0
        if n_regimes == 1:
            centre = np.average(points / scale, axis=0, weights=counts)[None, :]
            return cls(centres=centre, scale=scale)
        if len(points) < n_regimes:
            raise ValueError(
                f"cannot find {n_regimes} operating regimes in settings that take only "
                f"{len(points)} distinct values"
            )
        from sklearn.cluster import KMeans  # only fitting needs scikit-learn

        kmeans = KMeans(n_clusters=n_regimes, n_init=10, random_state=seed)
        kmeans.fit(points / scale, sample_weight=counts)
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


@dataclass
class SensorMoments:
    """Per-regime counts, sums and sums of squares of every sensor, and which vary.

    All a pipeline needs to be fitted, in a form that adds up across sites: the
    coordinator can fit one pipeline for a federation from each site's moments,
    without any site's rows. A sensor "varies" in a regime when it takes at least
    ``min_levels`` distinct values there; one that varies nowhere is constant up
    to quantisation (in FD001: s1, s5, s6, s10, s16, s18, s19) and is dropped.
    """

    counts: np.ndarray  # (regimes,)
    sums: np.ndarray  # (regimes, 21)
    squares: np.ndarray  # (regimes, 21)
    varied: np.ndarray  # (regimes, 21) bool

    @classmethod
    def of(
        cls, frame: pd.DataFrame, regime: np.ndarray, n_regimes: int, min_levels: int = 3
    ) -> SensorMoments:
        """Moments of ``frame``'s rows, whose regimes (0..n_regimes-1) are ``regime``."""
        regime = np.asarray(regime)
        values = frame[SENSOR_COLUMNS].to_numpy(dtype=np.float64)
        n = n_regimes
        sums, squares = np.zeros((n, values.shape[1])), np.zeros((n, values.shape[1]))
        np.add.at(sums, regime, values)
        np.add.at(squares, regime, values**2)
        levels = frame[SENSOR_COLUMNS].groupby(regime).nunique()
        varied = np.zeros((n, values.shape[1]), dtype=bool)
        varied[levels.index.to_numpy()] = levels.to_numpy() >= min_levels
        return cls(np.bincount(regime, minlength=n), sums, squares, varied)

    def __add__(self, other: SensorMoments) -> SensorMoments:
        return SensorMoments(
            self.counts + other.counts,
            self.sums + other.sums,
            self.squares + other.squares,
            self.varied | other.varied,
        )


def informative_sensors(frame: pd.DataFrame, regime: np.ndarray, min_levels: int = 3) -> list[str]:
    """Sensors that vary within at least one operating regime (see :class:`SensorMoments`)."""
    n_regimes = int(np.max(regime)) + 1 if len(regime) else 1
    varied = np.asarray(SensorMoments.of(frame, regime, n_regimes, min_levels).varied.any(axis=0))
    return [name for name, keep in zip(SENSOR_COLUMNS, varied, strict=True) if keep]


@dataclass
class FeaturePipeline:
    """Regimes, sensor selection and per-regime standardisation, fitted on training rows.

    Parameters
    ----------
    n_regimes : operating regimes to find in the settings (1 turns regimes off)
    window : length of the input windows in cycles
    rul_cap : cap of the piecewise-linear training label
    cycle_channel : add the cycle number (divided by ``CYCLE_SCALE``) as a last input
        channel: an engine's age is known wherever it is predicted
    pad_training : also build training windows for cycles with less history than the
        window, padded like short test engines are (else only full windows)
    """

    n_regimes: int = 1
    window: int = DEFAULT_WINDOW
    rul_cap: float | None = DEFAULT_RUL_CAP
    cycle_channel: bool = False
    pad_training: bool = False
    regimes: RegimeModel | None = None
    sensors: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None  # (n_regimes, n_sensors)
    std: np.ndarray | None = None

    @classmethod
    def for_subset(cls, subset: str, **kwargs: Any) -> FeaturePipeline:
        return cls(n_regimes=REGIMES_BY_SUBSET.get(subset.upper(), 1), **kwargs)

    def unfitted(self) -> FeaturePipeline:
        """A new pipeline with the same settings, to fit on other rows."""
        return FeaturePipeline(
            n_regimes=self.n_regimes,
            window=self.window,
            rul_cap=self.rul_cap,
            cycle_channel=self.cycle_channel,
            pad_training=self.pad_training,
        )

    @property
    def n_features(self) -> int:
        """Input channels per cycle: the kept sensors, and the cycle if asked for."""
        return len(self.sensors) + int(self.cycle_channel)

    def fit(self, frame: pd.DataFrame) -> FeaturePipeline:
        """Fit regimes, sensors and scaling on training rows."""
        regimes = RegimeModel.fit(frame[SETTING_COLUMNS].to_numpy(), self.n_regimes)
        regime = regimes.assign(frame[SETTING_COLUMNS].to_numpy())
        return self.fit_moments(regimes, SensorMoments.of(frame, regime, regimes.n_regimes))

    def fit_moments(self, regimes: RegimeModel, moments: SensorMoments) -> FeaturePipeline:
        """Fit from regimes and (possibly summed) moments instead of rows."""
        keep = np.asarray(moments.varied.any(axis=0))
        self.regimes = regimes
        self.sensors = [name for name, k in zip(SENSOR_COLUMNS, keep, strict=True) if k]
        counts = np.maximum(moments.counts, 1)[:, None]
        self.mean = moments.sums[:, keep] / counts
        variance = np.maximum(moments.squares[:, keep] / counts - self.mean**2, 0.0)
        std = np.sqrt(variance)
        # A sensor flat within one regime would divide by zero: leave it unscaled.
        self.std = np.where(std > 1e-9, std, 1.0)
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Inputs of each row, float32 (rows, n_features): standardised sensors, then the cycle."""
        if self.regimes is None or self.mean is None or self.std is None:
            raise RuntimeError("FeaturePipeline.fit() must run before transform()")
        regime = self.regimes.assign(frame[SETTING_COLUMNS].to_numpy())
        values = frame[self.sensors].to_numpy(dtype=np.float64)
        scaled = (values - self.mean[regime]) / self.std[regime]
        if self.cycle_channel:
            cycles = frame["cycle"].to_numpy(dtype=np.float64)[:, None] / CYCLE_SCALE
            scaled = np.concatenate([scaled, cycles], axis=1)
        return scaled.astype(np.float32)

    def training_windows(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Every window of every unit and the capped RUL at its last cycle.

        Full windows only, unless ``pad_training``: then one window per cycle.
        """
        features = self.transform(frame)
        x, ends = windows(features, frame["unit"].to_numpy(), self.window, pad=self.pad_training)
        return x, rul_labels(frame, self.rul_cap)[ends]

    def window_units(self, frame: pd.DataFrame) -> np.ndarray:
        """The unit of each of :meth:`training_windows`' windows, in the same order."""
        units = frame["unit"].to_numpy()
        n = len(units)
        if self.pad_training or not n:
            return units
        new_unit = np.r_[True, units[1:] != units[:-1]]
        start = np.maximum.accumulate(np.where(new_unit, np.arange(n), 0))
        ends = np.arange(n)
        return units[ends[ends - start + 1 >= self.window]]

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
            "cycle_channel": self.cycle_channel,
            "pad_training": self.pad_training,
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
            cycle_channel=data.get("cycle_channel", False),
            pad_training=data.get("pad_training", False),
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
