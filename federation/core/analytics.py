"""Federated analytics over the secure sum: what a site encodes, what the coordinator decodes.

Each use has a site-side *encoder* (the site's rows, or statistics of them, to ONE float
vector: what the site puts under masks) and a coordinator-side *decoder* (the SUM of those
vectors and public numbers to a statistic). A decoder takes no per-site input at all, so
nothing it returns can depend on one site other than through the sum.

1. Operating points (:func:`encode_points`, :func:`decode_points`): a histogram of the
   three operating settings on a public grid, so the setup round that finds the operating
   regimes needs no site's points.
2. Sensor moments (:func:`encode_moments`, :func:`decode_moments`): per-regime counts,
   sums and sums of squares of every sensor and which sensors vary, decoded to the
   :class:`~turbofan.data.features.SensorMoments` that the federation's scaling is fitted
   from.
3. Queries (:class:`Query`, :func:`encode_query`, :func:`decode_query`): counts, sums,
   means, variances and histograms of chosen sensors, overall and per regime, and
   quantiles read off the histograms; optionally with differential privacy
   (:class:`QueryPrivacy`, :func:`query_spend`).

Fixed point
-----------
Live rounds quantise every entry of a site's vector, clipped to ``[-8, 8]``, to ``2**40``
levels (modulo ``2**64``): a step of ``2**-36`` (about 1.5e-11), so one entry of the sum
of ``n`` sites is off by at most ``n * 2**-37``. Entries are therefore divided by public
numbers that bring them to order one:

- counts by ``scale``, a public number of rows such as the federation's total reported
  rows: the decoded count is exact after rounding while ``scale * n * 2**-37 < 0.5``
  (``scale`` below 1e10 for 4 sites); a site must hold at most ``8 * scale`` rows;
- sensor sums as ``sum((x - c) / r) / scale`` and sums of squares as
  ``sum(((x - c) / r)**2) / scale``, with ``c`` and ``r`` the centre and half-width of a
  public envelope of each sensor (:data:`SENSOR_ENVELOPE`, that of the public C-MAPSS
  files); a reading inside the envelope adds at most ``1 / scale`` to either entry.

Sums and sums of squares need more than 40 bits: a sensor whose spread within a regime is
a thousandth of its envelope (s_6, s_8 and s_10 in FD002/FD004) would keep only two or
three digits of its variance through one quantised entry. They travel in two *limbs*:
``hi``, the value rounded to a multiple of the quantiser's step (which the quantiser
carries exactly, so the summed ``hi`` is exact), and ``lo = (value - hi) / step`` in
``[-1/2, 1/2]``, whose own quantisation error is ``step`` times smaller: the joined sum
``hi + step * lo`` is off by at most ``n * step**2 / 2`` (about 1e-22), below float64
rounding at the sites, for twice the entries. A quantiser with another step only makes
the ``hi`` limb as coarse as a single entry would be.

Every encoder refuses values that would be clipped, and says what to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from federation.core.privacy import PrivacyError, Spend, clip_and_noise
from federation.core.secagg.aggregate import DEFAULT_CLIP, PRECISE_LEVELS
from turbofan.data.features import RegimeModel, SensorMoments
from turbofan.data.files import SENSOR_COLUMNS, SETTING_COLUMNS

CLIP = DEFAULT_CLIP  # a site's entries must lie in [-CLIP, CLIP]
STEP = 2 * CLIP / PRECISE_LEVELS  # the live quantiser's step: 2**-36

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


# --- fixed point ------------------------------------------------------------------------------


def _check_scale(scale: float) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise AnalyticsError(f"the scale must be a positive number of rows, got {scale}")


def _check_counts(rows: int, scale: float) -> None:
    if rows > CLIP * scale:
        raise AnalyticsError(
            f"this site's {rows} rows exceed {CLIP:g} x the scale ({scale:g}): the scale "
            f"must be at least {math.ceil(rows / CLIP)} (e.g. the federation's total rows)"
        )


def _check_sensors(values: np.ndarray, names: Sequence[str], scale: float) -> None:
    """Refuse sums that the quantiser would clip, naming the sensor."""
    too_far = np.abs(values) > CLIP
    if too_far.any():
        name = names[int(np.flatnonzero(too_far.any(axis=0))[0])]
        low, high = SENSOR_ENVELOPE[name]
        raise AnalyticsError(
            f"sensor {name}'s readings lie too far outside its public envelope "
            f"[{low:g}, {high:g}] for the scale {scale:g}: raise the scale"
        )


def _split(values: np.ndarray) -> np.ndarray:
    """The two limbs of ``values``: ``hi`` on the quantiser's grid, then ``lo`` in steps."""
    hi = np.round(values / STEP) * STEP
    return np.concatenate([hi, (values - hi) / STEP])


def _join(limbs: np.ndarray) -> np.ndarray:
    """The summed values from the summed limbs (see :func:`_split`)."""
    hi, lo = np.split(limbs, 2)
    return hi + lo * STEP


def _counts(summed: np.ndarray, scale: float) -> np.ndarray:
    """Whole counts from summed scaled counts; noise can make them negative: none are."""
    return np.maximum(np.rint(summed * scale), 0).astype(np.int64)


# --- 1. operating points on a public grid ------------------------------------------------------


@dataclass(frozen=True)
class SettingGrid:
    """A public grid of the three operating settings; each row counts in its nearest cell.

    Cell centres are ``origin + i * step`` for ``i`` in ``0..bins-1`` per setting.
    """

    origin: tuple[float, float, float]
    step: tuple[float, float, float]
    bins: tuple[int, int, int]

    @property
    def size(self) -> int:
        return int(np.prod(self.bins))

    def cells(self, settings: np.ndarray) -> np.ndarray:
        """The flat cell index of each row of ``settings`` (rows, 3)."""
        settings = np.asarray(settings, dtype=np.float64).reshape(-1, 3)
        index = np.rint((settings - np.array(self.origin)) / np.array(self.step)).astype(np.int64)
        outside = (index < 0) | (index >= np.array(self.bins))
        if outside.any():
            row, column = np.argwhere(outside)[0]
            low = self.origin[column] - self.step[column] / 2
            high = self.origin[column] + (self.bins[column] - 0.5) * self.step[column]
            raise AnalyticsError(
                f"{SETTING_COLUMNS[column]} = {settings[row, column]:g} lies outside the "
                f"public grid of operating settings [{low:g}, {high:g}]"
            )
        return np.ravel_multi_index(tuple(index.T), self.bins)

    def centres(self, cells: np.ndarray) -> np.ndarray:
        """The settings (cells, 3) at the centre of each flat cell index."""
        index = np.stack(np.unravel_index(np.asarray(cells), self.bins), axis=1)
        return np.array(self.origin) + index * np.array(self.step)


# The C-MAPSS flight envelope: altitude 0-43 kft in steps of 1 kft, Mach 0-0.9 in steps of
# 0.01, throttle resolver angle 20-100 in steps of 10: 36,036 cells. Every set point of
# the six C-MAPSS conditions (0/10/20/25/35/42 kft, Mach 0/0.25/0.62/0.70/0.84, TRA
# 60/100), with its noise, falls well inside one cell, whose centre is within half a step.
DEFAULT_GRID = SettingGrid(origin=(0.0, 0.0, 20.0), step=(1.0, 0.01, 10.0), bins=(44, 91, 9))


def points_length(grid: SettingGrid = DEFAULT_GRID) -> int:
    """Entries of an operating-point vector: one per cell of ``grid``."""
    return grid.size


def encode_points(
    settings: np.ndarray, *, scale: float, grid: SettingGrid = DEFAULT_GRID
) -> np.ndarray:
    """A site's operating-point vector: how many of its rows fall in each cell, / ``scale``.

    Parameters
    ----------
    settings : (rows, 3) the site's operating settings (``SETTING_COLUMNS``)
    scale : public number of rows (e.g. the federation's total); at least rows / 8
    grid : the public grid

    Returns
    -------
    float64 vector of :func:`points_length` entries.
    """
    _check_scale(scale)
    cells = grid.cells(settings)
    _check_counts(len(cells), scale)
    return np.bincount(cells, minlength=grid.size) / scale


def decode_points(
    summed: np.ndarray, *, scale: float, grid: SettingGrid = DEFAULT_GRID
) -> tuple[np.ndarray, np.ndarray]:
    """The federation's operating points and counts from the sum of the sites' vectors.

    Returns
    -------
    points : (occupied cells, 3) the centres of the cells that hold any row
    counts : (occupied cells,) rows in each, exact: what ``RegimeModel.fit_points`` takes
    """
    summed = np.asarray(summed, dtype=np.float64)
    if len(summed) != grid.size:
        raise AnalyticsError(
            f"an operating-point vector has {grid.size} entries, got {len(summed)}"
        )
    counts = _counts(summed, scale)
    occupied = np.flatnonzero(counts)
    return grid.centres(occupied), counts[occupied]


# --- 2. per-regime sensor moments -------------------------------------------------------------

_N_SENSORS = len(SENSOR_COLUMNS)


def moments_length(n_regimes: int) -> int:
    """Entries of a moments vector: per regime a count, 21 flags, and sums and sums of
    squares of 21 sensors in two limbs each."""
    return n_regimes * (1 + _N_SENSORS + 4 * _N_SENSORS)


def encode_moments(frame: pd.DataFrame, regimes: RegimeModel, *, scale: float) -> np.ndarray:
    """A site's moments vector, from its rows under the federation's regimes.

    Layout: per-regime counts / ``scale``, the "varies" flags of
    :class:`SensorMoments` as 0/1 (regimes x 21), then the two limbs of
    ``sum((x - c) / r) / scale`` and ``sum(((x - c) / r)**2) / scale`` (regimes x 21
    each), with ``c`` and ``r`` from :data:`SENSOR_ENVELOPE`. The sums are taken about
    ``c`` here, from the rows: sums of raw squares (as :class:`SensorMoments` keeps them)
    would lose five digits of the variance of a sensor such as s_8 (2388 +- 0.07).
    """
    _check_scale(scale)
    regime = regimes.assign(frame[SETTING_COLUMNS].to_numpy())
    moments = SensorMoments.of(frame, regime, regimes.n_regimes)
    _check_counts(int(moments.counts.max(initial=0)), scale)
    values = frame[SENSOR_COLUMNS].to_numpy(dtype=np.float64)
    first, second = _centred_sums(values, SENSOR_COLUMNS, regime, regimes.n_regimes, 2)
    _check_sensors(np.concatenate([first, second]) / scale, SENSOR_COLUMNS, scale)
    return np.concatenate(
        [
            moments.counts / scale,
            moments.varied.astype(np.float64).ravel(),
            _split(np.concatenate([first.ravel(), second.ravel()]) / scale),
        ]
    )


def _centred_sums(
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
    shape = (n_regimes, _N_SENSORS)
    counts = _counts(summed[:n_regimes], scale)
    flags_end = n_regimes + n_regimes * _N_SENSORS
    varied = summed[n_regimes:flags_end].reshape(shape) > 0.5
    first, second = np.split(_join(summed[flags_end:]) * scale, 2)
    n, c, r = counts[:, None].astype(np.float64), SENSOR_CENTRE, SENSOR_HALF_WIDTH
    centred = first.reshape(shape) * r  # sum(x - c)
    squares = second.reshape(shape) * r**2  # sum((x - c)**2)
    return SensorMoments(
        counts=counts,
        sums=centred + n * c,
        squares=squares + 2 * c * centred + n * c**2,
        varied=varied,
    )


# --- 3. queries -------------------------------------------------------------------------------

COUNT, SUM, MEAN, VARIANCE, STD = "count", "sum", "mean", "variance", "std"
HISTOGRAM, QUANTILES = "histogram", "quantiles"
STATISTICS = (COUNT, SUM, MEAN, VARIANCE, STD, HISTOGRAM, QUANTILES)
DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
MAX_BINS = 5000  # per sensor: 21 sensors x 6 regimes x 5002 stays under 10^6 entries


class QueryError(AnalyticsError):
    """A query that cannot run; the message names the field and what to change."""


@dataclass(frozen=True)
class Bins:
    """A public histogram of one sensor: ``count`` equal bins over ``[low, high]``.

    Readings below ``low`` and above ``high`` are counted apart (``below``, ``above``).
    """

    sensor: str
    low: float
    high: float
    count: int

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.count

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.low, self.high, self.count + 1)

    def index(self, values: np.ndarray) -> np.ndarray:
        """0 below ``low``, ``1..count`` for the bins (the last one closed, as in
        ``np.histogram``), ``count + 1`` above ``high``."""
        index = np.searchsorted(self.edges, values, side="right")
        index[values == self.high] = self.count
        return index

    def to_dict(self) -> dict[str, Any]:
        return {"sensor": self.sensor, "low": self.low, "high": self.high, "count": self.count}


@dataclass(frozen=True)
class Query:
    """What to compute over the federation's rows.

    Parameters
    ----------
    sensors : sensors to describe, e.g. ``("s_2", "s_11")``
    per_regime : also per operating regime (the federation's regimes)
    bins : histograms, one :class:`Bins` per sensor that has one (for ``histogram`` and
        ``quantiles``)
    statistics : which of :data:`STATISTICS`; empty means all that apply (the
        histogram and quantiles only when there are bins)
    quantiles : the levels of the quantiles, in (0, 1)
    """

    sensors: tuple[str, ...]
    per_regime: bool = False
    bins: tuple[Bins, ...] = ()
    statistics: tuple[str, ...] = ()
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensors", tuple(self.sensors))
        object.__setattr__(self, "bins", tuple(self.bins))
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        statistics = tuple(self.statistics)
        if not statistics:  # all that apply
            statistics = (COUNT, SUM, MEAN, VARIANCE, STD)
            if self.bins:
                statistics += (HISTOGRAM, QUANTILES)
        object.__setattr__(self, "statistics", statistics)
        self._validate()

    def _validate(self) -> None:
        if not self.sensors:
            raise QueryError("sensors: choose at least one sensor")
        unknown = [s for s in self.sensors if s not in SENSOR_COLUMNS]
        if unknown:
            raise QueryError(f"sensors: unknown {unknown}; choose from s_1 to s_21")
        if len(set(self.sensors)) < len(self.sensors):
            raise QueryError("sensors: each sensor at most once")
        wrong = [s for s in self.statistics if s not in STATISTICS]
        if wrong:
            raise QueryError(f"statistics: unknown {wrong}; choose from {list(STATISTICS)}")
        for bins in self.bins:
            _validate_bins(bins, self.sensors)
        named = [b.sensor for b in self.bins]
        if len(set(named)) < len(named):
            raise QueryError("bins: at most one histogram per sensor")
        histograms = HISTOGRAM in self.statistics or QUANTILES in self.statistics
        if histograms and not self.bins:
            raise QueryError("bins: the histogram and quantiles need bins for at least one sensor")
        if self.bins and not histograms:
            raise QueryError("bins: given, but neither 'histogram' nor 'quantiles' is asked for")
        if QUANTILES in self.statistics:
            if not self.quantiles:
                raise QueryError("quantiles: give at least one level, e.g. 0.5")
            if not all(0 < q < 1 for q in self.quantiles):
                raise QueryError(f"quantiles: levels must lie in (0, 1), got {self.quantiles}")
            if len({f"{q:g}" for q in self.quantiles}) < len(self.quantiles):
                raise QueryError("quantiles: each level at most once")

    @property
    def moments(self) -> int:
        """How many moments each sensor needs: 0, 1 (sums) or 2 (and sums of squares)."""
        if VARIANCE in self.statistics or STD in self.statistics:
            return 2
        return int(SUM in self.statistics or MEAN in self.statistics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensors": list(self.sensors),
            "per_regime": self.per_regime,
            "bins": [b.to_dict() for b in self.bins],
            "statistics": list(self.statistics),
            "quantiles": list(self.quantiles),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Query:
        """A query from JSON; a wrong field raises :class:`QueryError` naming it."""
        if not isinstance(data, dict):
            raise QueryError("a query is a JSON object")
        unknown = sorted(set(data) - {"sensors", "per_regime", "bins", "statistics", "quantiles"})
        if unknown:
            raise QueryError(f"unknown fields {unknown}")
        sensors = _string_list(data.get("sensors"), "sensors")
        per_regime = data.get("per_regime", False)
        if not isinstance(per_regime, bool):
            raise QueryError("per_regime: true or false")
        statistics = _string_list(data.get("statistics", []), "statistics")
        levels = data.get("quantiles", list(DEFAULT_QUANTILES))
        if not isinstance(levels, list) or not all(_is_number(q) for q in levels):
            raise QueryError("quantiles: a list of numbers in (0, 1)")
        raw_bins = data.get("bins", [])
        if not isinstance(raw_bins, list):
            raise QueryError("bins: a list of {sensor, low, high, count}")
        return cls(
            sensors=tuple(sensors),
            per_regime=per_regime,
            bins=tuple(_bins_from_dict(b) for b in raw_bins),
            statistics=tuple(statistics),
            quantiles=tuple(levels),
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise QueryError(f"{name}: a list of names")
    return value


def _bins_from_dict(data: Any) -> Bins:
    keys = {"sensor", "low", "high", "count"}
    if not isinstance(data, dict) or set(data) != keys:
        raise QueryError("bins: each histogram is {sensor, low, high, count}")
    if not isinstance(data["sensor"], str):
        raise QueryError("bins: sensor is a sensor's name")
    if not (_is_number(data["low"]) and _is_number(data["high"])):
        raise QueryError(f"bins of {data['sensor']}: low and high are numbers")
    if not isinstance(data["count"], int) or isinstance(data["count"], bool):
        raise QueryError(f"bins of {data['sensor']}: count is a whole number")
    return Bins(data["sensor"], float(data["low"]), float(data["high"]), data["count"])


def _validate_bins(bins: Bins, sensors: Sequence[str]) -> None:
    where = f"bins of {bins.sensor}"
    if bins.sensor not in sensors:
        raise QueryError(f"{where}: {bins.sensor} is not one of the chosen sensors")
    if not (math.isfinite(bins.low) and math.isfinite(bins.high) and bins.low < bins.high):
        raise QueryError(f"{where}: need finite low < high, got [{bins.low}, {bins.high}]")
    if not 1 <= bins.count <= MAX_BINS:
        raise QueryError(f"{where}: the number of bins must be 1 to {MAX_BINS}, got {bins.count}")


def _groups(query: Query, n_regimes: int) -> int:
    return n_regimes if query.per_regime else 1


def _plain_length(query: Query, n_regimes: int) -> int:
    groups = _groups(query, n_regimes)
    return groups + groups * sum(b.count + 2 for b in query.bins)


def _precise_length(query: Query, n_regimes: int) -> int:
    return _groups(query, n_regimes) * len(query.sensors) * query.moments


def query_length(query: Query, n_regimes: int = 1) -> int:
    """Entries of a query's vector: per group (each regime, or all rows) a count, the
    histograms with their below and above counts, and two limbs per sensor and moment."""
    return _plain_length(query, n_regimes) + 2 * _precise_length(query, n_regimes)


# --- 3. queries: encoding and decoding --------------------------------------------------------


def encode_query(
    frame: pd.DataFrame,
    query: Query,
    *,
    scale: float,
    regimes: RegimeModel | None = None,
    privacy: QueryPrivacy | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A site's vector for ``query`` from its rows.

    Parameters
    ----------
    frame : the site's rows (with the settings and the chosen sensors)
    query : the query
    scale : public number of rows (e.g. the federation's total); at least rows / 8
    regimes : the federation's operating regimes; needed when ``query.per_regime``
    privacy : clip and add this site's share of the noise (see :class:`QueryPrivacy`)
    rng : the noise's generator (default: seeded from the OS)

    Returns
    -------
    float64 vector of ``query_length(query, regimes.n_regimes or 1)`` entries: per group,
    counts / ``scale`` and histogram counts / ``scale``; then the two limbs of
    ``sum((x - c) / r) / scale`` and ``sum(((x - c) / r)**2) / scale`` per group and sensor.
    """
    _check_scale(scale)
    if query.per_regime and regimes is None:
        raise QueryError("per_regime: the query needs the federation's operating regimes")
    missing = [s for s in query.sensors if s not in frame.columns]
    if missing:
        raise AnalyticsError(f"this site's rows have no column {missing}")
    _check_counts(len(frame), scale)
    n_groups = regimes.n_regimes if query.per_regime and regimes is not None else 1
    if query.per_regime and regimes is not None:
        group = regimes.assign(frame[SETTING_COLUMNS].to_numpy())
    else:
        group = np.zeros(len(frame), dtype=np.int64)
    values = frame[list(query.sensors)].to_numpy(dtype=np.float64)
    plain = [np.bincount(group, minlength=n_groups).astype(np.float64)]
    for bins in query.bins:
        column = values[:, query.sensors.index(bins.sensor)]
        cells = group * (bins.count + 2) + bins.index(column)
        plain.append(np.bincount(cells, minlength=n_groups * (bins.count + 2)).astype(np.float64))
    precise = [
        sums / scale
        for sums in _centred_sums(values, query.sensors, group, n_groups, query.moments)
    ]
    if precise:
        _check_sensors(np.concatenate(precise), query.sensors, scale)
    n_plain = _plain_length(query, n_groups)
    vector = np.concatenate([*plain, *(p.ravel() for p in precise)])
    vector[:n_plain] /= scale
    if privacy is not None:
        vector = clip_and_noise(
            [vector],
            [np.zeros_like(vector)],
            clip=privacy.clip,
            noise_multiplier=privacy.noise_multiplier,
            noise_sites=privacy.noise_sites,
            rng=rng,
        )[0]
        vector = np.clip(vector, -CLIP, CLIP)  # as the quantiser would; the noise may overshoot
    return np.concatenate([vector[:n_plain], _split(vector[n_plain:])])


def histogram_quantiles(
    counts: np.ndarray, low: float, high: float, levels: Sequence[float]
) -> list[float | None]:
    """Quantiles read off a histogram by linear interpolation within the bin.

    Parameters
    ----------
    counts : ``[below, bin 1, ..., bin k, above]`` (negative counts, from noise, as 0)
    low, high : the range of the ``k`` equal bins
    levels : quantile levels in (0, 1)

    Returns
    -------
    One value per level; None where it lies below ``low`` or above ``high`` (or there are
    no rows). Each lies in the same bin as the sample quantile "smallest reading with at
    least that fraction of the rows at or below it" (numpy's ``inverted_cdf``), so within
    one bin width of it.
    """
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    k = len(counts) - 2
    width = (high - low) / k
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    out: list[float | None] = []
    for level in levels:
        target = level * total
        b = int(np.searchsorted(cumulative, target, side="left"))
        if total <= 0 or b == 0 or b > k:
            out.append(None)
            continue
        inside = (target - cumulative[b - 1]) / counts[b]
        out.append(float(low + width * (b - 1 + inside)))
    return out


def decode_query(
    summed: np.ndarray,
    query: Query,
    *,
    scale: float,
    n_regimes: int = 1,
    privacy: QueryPrivacy | None = None,
) -> dict[str, Any]:
    """The query's answer (JSON-able) from the sum of the sites' vectors.

    Parameters
    ----------
    summed : the secure sum of the sites' :func:`encode_query` vectors
    query, scale : as the sites used them
    n_regimes : the federation's regimes (for a per-regime query)
    privacy : as the sites used it: reported beside the answer, with the noise's
        standard deviation in rows

    Returns
    -------
    ``{"count", "overall": {"count", "sensors": {name: stats}}, "regimes": [{"regime",
    "count", "sensors"}] (per regime only), "quantile_error": {name: bin width}, "noise"
    (with privacy only)}``. Stats hold the asked-for ``sum``, ``mean``, ``variance``
    (of the rows, ddof 0), ``std``, ``histogram`` (``low``, ``high``, ``bin_width``,
    ``counts``, ``below``, ``above``) and ``quantiles`` (level as text: value, None
    outside the histogram's range). Without privacy counts and histograms are exact and
    means and variances as precise as float64 sums; none where a group has no rows.
    """
    summed = np.asarray(summed, dtype=np.float64)
    n_groups = _groups(query, n_regimes)
    expected = query_length(query, n_regimes)
    if len(summed) != expected:
        raise AnalyticsError(f"this query's vector has {expected} entries, got {len(summed)}")
    n_plain = _plain_length(query, n_groups)
    plain = summed[:n_plain] * scale
    # (groups, sensors) per moment: sums of (x - c) / r and of their squares, in rows
    shape = (n_groups, len(query.sensors))
    joined = _join(summed[n_plain:]) * scale
    moments = [m.reshape(shape) for m in np.split(joined, query.moments)] if query.moments else []
    counts = plain[:n_groups]
    histograms, start = {}, n_groups
    for bins in query.bins:
        size = n_groups * (bins.count + 2)
        histograms[bins.sensor] = plain[start : start + size].reshape(n_groups, bins.count + 2)
        start += size

    def describe(rows: float, pick: Callable[[np.ndarray], Any]) -> dict[str, Any]:
        count = int(_counts(np.array([rows]), 1.0)[0])
        sensors = {
            name: _sensor_stats(
                query,
                name,
                count,
                [float(pick(m[:, j])) for m in moments],
                pick(histograms[name]) if name in histograms else None,
            )
            for j, name in enumerate(query.sensors)
        }
        return {COUNT: count, "sensors": sensors}

    overall = describe(float(counts.sum()), lambda a: a.sum(axis=0))
    result: dict[str, Any] = {COUNT: overall[COUNT], "overall": overall}
    if query.per_regime:
        result["regimes"] = [
            {"regime": k, **describe(float(counts[k]), lambda a, k=k: a[k])}
            for k in range(n_groups)
        ]
    if QUANTILES in query.statistics:
        result["quantile_error"] = {b.sensor: b.width for b in query.bins}
    if privacy is not None:
        result["noise"] = {**privacy.to_dict(), "count_std": privacy.noise_std * scale}
    return result


def _sensor_stats(
    query: Query, name: str, count: int, sums: list[float], histogram: np.ndarray | None
) -> dict[str, Any]:
    """One sensor's asked-for statistics in one group; ``sums`` of (x - c) / r and squares."""
    j = SENSOR_COLUMNS.index(name)
    c, r = float(SENSOR_CENTRE[j]), float(SENSOR_HALF_WIDTH[j])
    stats: dict[str, Any] = {}
    mean = variance = None
    if count > 0 and sums:
        mean = sums[0] / count  # of (x - c) / r
        if len(sums) > 1:
            variance = max(sums[1] / count - mean**2, 0.0) * r**2
    if SUM in query.statistics:
        stats[SUM] = sums[0] * r + count * c
    if MEAN in query.statistics:
        stats[MEAN] = None if mean is None else c + r * mean
    if VARIANCE in query.statistics:
        stats[VARIANCE] = variance
    if STD in query.statistics:
        stats[STD] = None if variance is None else math.sqrt(variance)
    if histogram is not None:
        bins = next(b for b in query.bins if b.sensor == name)
        whole = _counts(histogram, 1.0)
        if HISTOGRAM in query.statistics:
            stats[HISTOGRAM] = {
                "low": bins.low,
                "high": bins.high,
                "bin_width": bins.width,
                "counts": whole[1:-1].tolist(),
                "below": int(whole[0]),
                "above": int(whole[-1]),
            }
        if QUANTILES in query.statistics:
            values = histogram_quantiles(whole, bins.low, bins.high, query.quantiles)
            stats[QUANTILES] = {f"{q:g}": v for q, v in zip(query.quantiles, values, strict=True)}
    return stats


# --- 4. differential privacy ------------------------------------------------------------------


@dataclass(frozen=True)
class QueryPrivacy:
    """Site-level differential privacy of one query, as in training.

    Each site clips its query vector (the scaled values, before the limbs are split) to
    L2 norm ``clip`` and adds Gaussian noise of standard deviation
    ``noise_multiplier * clip / sqrt(noise_sites)`` per entry
    (:func:`federation.core.privacy.clip_and_noise`). Adding or removing one site changes
    the sum of the clipped vectors by at most ``clip`` in L2 norm (the sensitivity), and
    the sum of at least ``noise_sites`` sites carries noise of standard deviation at least
    ``noise_multiplier * clip``: a Gaussian mechanism with multiplier ``noise_multiplier``
    on everyone (:func:`query_spend`). The scaling by public numbers, the limbs, the
    quantiser and the decoding are post-processing: they cost nothing more. ``scale``
    must be public already (e.g. the reported rows); the grid, envelope and bins are
    constants.

    Clipping shrinks a site's whole vector by one factor, so ratios (means, variances,
    quantiles) stay those of the pooled rows with that site weighed less; counts and sums
    are biased down. A site of ``n`` rows, all inside the sensors' envelopes, has a norm of
    at most ``(n / scale) * sqrt(1 + sensors * moments + histograms)``: a clip below that
    of the largest site weighs sites more equally.
    """

    noise_multiplier: float
    clip: float
    noise_sites: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise PrivacyError("the noise multiplier must be > 0 (no DP: leave privacy off)")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise PrivacyError("the clipping bound must be > 0")
        if self.noise_sites < 1:
            raise PrivacyError("the noise is shared by at least one site")

    @property
    def noise_std(self) -> float:
        """The least standard deviation of the noise in each summed (scaled) entry."""
        return self.noise_multiplier * self.clip

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "noise_sites": self.noise_sites,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryPrivacy:
        return cls(float(data["noise_multiplier"]), float(data["clip"]), int(data["noise_sites"]))


def query_spend(privacy: QueryPrivacy) -> Spend:
    """What a query with ``privacy`` charges to the federation's budget: one Gaussian
    mechanism with its noise multiplier, on every site (no sampling)."""
    return Spend(noise_multiplier=privacy.noise_multiplier, sample_fraction=1.0, count=1)
