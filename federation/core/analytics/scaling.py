"""Scaling a site's statistics to the fixed point: the sensors' public envelope, checks
that nothing would be clipped, and the two limbs that carry sums beyond 40 bits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from federation.core.fixed_point import CLIP, STEP
from turbofan.data.files import SENSOR_COLUMNS

# The public envelope of each sensor: the range of the public C-MAPSS training and test
# files (all four subsets), rounded outwards. Only a reference for scaling: readings
# outside it are fine up to about 2.8 half-widths beyond the centre.
SENSOR_ENVELOPE: dict[str, tuple[float, float]] = {
    "s_1": (440.0, 520.0),
    "s_2": (530.0, 650.0),
    "s_3": (1240.0, 1620.0),
    "s_4": (1020.0, 1445.0),
    "s_5": (3.9, 14.7),
    "s_6": (5.6, 21.7),
    "s_7": (136.0, 571.0),
    "s_8": (1914.0, 2391.0),
    "s_9": (7980.0, 9250.0),
    "s_10": (0.93, 1.33),
    "s_11": (36.0, 49.0),
    "s_12": (128.0, 538.0),
    "s_13": (2027.0, 2391.0),
    "s_14": (7845.0, 8295.0),
    "s_15": (8.1, 11.1),
    "s_16": (0.02, 0.03),
    "s_17": (300.0, 400.0),
    "s_18": (1915.0, 2388.0),
    "s_19": (84.9, 100.0),
    "s_20": (10.0, 40.0),
    "s_21": (6.0, 24.0),
}
_LOW = np.array([SENSOR_ENVELOPE[s][0] for s in SENSOR_COLUMNS])
_HIGH = np.array([SENSOR_ENVELOPE[s][1] for s in SENSOR_COLUMNS])
SENSOR_CENTRE = (_LOW + _HIGH) / 2
SENSOR_HALF_WIDTH = (_HIGH - _LOW) / 2


class AnalyticsError(ValueError):
    """A site's data or a query that the analytics cannot encode; the message says why."""


def check_scale(scale: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise AnalyticsError(f"the scale must be a positive number of rows, got {scale}")


def check_counts(rows: int, scale: float) -> None:
    if rows > CLIP * scale:
        raise AnalyticsError(
            f"this site's {rows} rows exceed {CLIP:g} x the scale ({scale:g}): the scale "
            f"must be at least {math.ceil(rows / CLIP)} (e.g. the federation's total rows)"
        )


def check_sensors(values: np.ndarray, names: Sequence[str], scale: float) -> None:
    """Refuse sums that the quantiser would clip, naming the sensor."""
    too_far = np.abs(values) > CLIP
    if too_far.any():
        name = names[int(np.flatnonzero(too_far.any(axis=0))[0])]
        low, high = SENSOR_ENVELOPE[name]
        raise AnalyticsError(
            f"sensor {name}'s readings lie too far outside its public envelope "
            f"[{low:g}, {high:g}] for the scale {scale:g}: raise the scale"
        )


def split_limbs(values: np.ndarray) -> np.ndarray:
    """The two limbs of ``values``: ``hi`` on the quantiser's grid, then ``lo`` in steps."""
    hi = np.round(values / STEP) * STEP
    return np.concatenate([hi, (values - hi) / STEP])


def join_limbs(limbs: np.ndarray) -> np.ndarray:
    """The summed values from the summed limbs (see :func:`_split`)."""
    hi, lo = np.split(limbs, 2)
    return hi + lo * STEP


def whole_counts(summed: np.ndarray, scale: float) -> np.ndarray:
    """Whole counts from summed scaled counts; noise can make them negative: none are."""
    return np.maximum(np.rint(summed * scale), 0).astype(np.int64)


def centred_sums(
    values: np.ndarray, names: Sequence[str], group: np.ndarray, n_groups: int, moments: int
) -> list[np.ndarray]:
    """Per group (groups, sensors): sums of ``(x - c) / r``, then of its square, ...
    up to ``moments``, for readings ``values`` (rows, sensors) of the sensors ``names``."""
    selected = [SENSOR_COLUMNS.index(name) for name in names]
    centred = (values - SENSOR_CENTRE[selected]) / SENSOR_HALF_WIDTH[selected]
    sums = [np.zeros((n_groups, len(names))) for _ in range(moments)]
    for g in range(n_groups):
        # one sensor per row, so that numpy sums each by pairwise summation
        rows = np.ascontiguousarray(centred[group == g].T)
        for power in range(1, moments + 1):
            sums[power - 1][g] = (rows**power).sum(axis=1)
    return sums
