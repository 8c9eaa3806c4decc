"""Per-regime sensor moments: the setup round that fits the federation's scaling sums
each site's per-regime counts, sums and sums of squares of every sensor."""

from __future__ import annotations

import numpy as np
import pandas as pd

from federation.core.analytics.scaling import (
    SENSOR_CENTRE,
    SENSOR_HALF_WIDTH,
    AnalyticsError,
    centred_sums,
    check_counts,
    check_scale,
    check_sensors,
    join_limbs,
    split_limbs,
    whole_counts,
)
from turbofan.data.features import RegimeModel, SensorMoments
from turbofan.data.files import SENSOR_COLUMNS, SETTING_COLUMNS

N_SENSORS = len(SENSOR_COLUMNS)


def moments_length(n_regimes: int) -> int:
    """Entries of a moments vector: per regime a count, 21 flags, and sums and sums of
    squares of 21 sensors in two limbs each."""
    return n_regimes * (1 + N_SENSORS + 4 * N_SENSORS)


def encode_moments(frame: pd.DataFrame, regimes: RegimeModel, *, scale: float) -> np.ndarray:
    """A site's moments vector, from its rows under the federation's regimes.

    Layout: per-regime counts / ``scale``, the "varies" flags of
    :class:`SensorMoments` as 0/1 (regimes x 21), then the two limbs of
    ``sum((x - c) / r) / scale`` and ``sum(((x - c) / r)**2) / scale`` (regimes x 21
    each), with ``c`` and ``r`` from :data:`SENSOR_ENVELOPE`. The sums are taken about
    ``c`` here, from the rows: sums of raw squares (as :class:`SensorMoments` keeps them)
    would lose five digits of the variance of a sensor such as s_8 (2388 +- 0.07).
    """
    check_scale(scale)
    regime = regimes.assign(frame[SETTING_COLUMNS].to_numpy())
    moments = SensorMoments.of(frame, regime, regimes.n_regimes)
    check_counts(int(moments.counts.max(initial=0)), scale)
    values = frame[SENSOR_COLUMNS].to_numpy(dtype=np.float64)
    first, second = centred_sums(values, SENSOR_COLUMNS, regime, regimes.n_regimes, 2)
    check_sensors(np.concatenate([first, second]) / scale, SENSOR_COLUMNS, scale)
    return np.concatenate(
        [
            moments.counts / scale,
            moments.varied.astype(np.float64).ravel(),
            split_limbs(np.concatenate([first.ravel(), second.ravel()]) / scale),
        ]
    )


def decode_moments(summed: np.ndarray, *, n_regimes: int, scale: float) -> SensorMoments:
    """The federation's :class:`SensorMoments` (the sum of the sites') from the summed vector.

    Counts are exact; sums and sums of squares are as precise as float64 sums (the two
    limbs); a sensor varies in a regime when it varies there at any site.
    """
    summed = np.asarray(summed, dtype=np.float64)
    if len(summed) != moments_length(n_regimes):
        raise AnalyticsError(
            f"a moments vector for {n_regimes} regimes has {moments_length(n_regimes)} "
            f"entries, got {len(summed)}"
        )
    shape = (n_regimes, N_SENSORS)
    counts = whole_counts(summed[:n_regimes], scale)
    flags_end = n_regimes + n_regimes * N_SENSORS
    varied = summed[n_regimes:flags_end].reshape(shape) > 0.5
    first, second = np.split(join_limbs(summed[flags_end:]) * scale, 2)
    n, c, r = counts[:, None].astype(np.float64), SENSOR_CENTRE, SENSOR_HALF_WIDTH
    centred = first.reshape(shape) * r  # sum(x - c)
    squares = second.reshape(shape) * r**2  # sum((x - c)**2)
    return SensorMoments(
        counts=counts,
        sums=centred + n * c,
        squares=squares + 2 * c * centred + n * c**2,
        varied=varied,
    )
