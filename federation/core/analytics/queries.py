"""Analytics queries: counts, sums, means, variances and histograms of chosen sensors,
overall and per regime, and quantiles read off the histograms."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from federation.core.analytics.privacy import QueryPrivacy
from federation.core.analytics.scaling import (
    CLIP,
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
from federation.core.privacy import clip_and_noise
from turbofan.data.features import RegimeModel
from turbofan.data.files import SENSOR_COLUMNS, SETTING_COLUMNS

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
    check_scale(scale)
    if query.per_regime and regimes is None:
        raise QueryError("per_regime: the query needs the federation's operating regimes")
    missing = [s for s in query.sensors if s not in frame.columns]
    if missing:
        raise AnalyticsError(f"this site's rows have no column {missing}")
    check_counts(len(frame), scale)
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
        sums / scale for sums in centred_sums(values, query.sensors, group, n_groups, query.moments)
    ]
    if precise:
        check_sensors(np.concatenate(precise), query.sensors, scale)
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
    return np.concatenate([vector[:n_plain], split_limbs(vector[n_plain:])])


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
    joined = join_limbs(summed[n_plain:]) * scale
    moments = [m.reshape(shape) for m in np.split(joined, query.moments)] if query.moments else []
    counts = plain[:n_groups]
    histograms, start = {}, n_groups
    for bins in query.bins:
        size = n_groups * (bins.count + 2)
        histograms[bins.sensor] = plain[start : start + size].reshape(n_groups, bins.count + 2)
        start += size

    def describe(rows: float, pick: Callable[[np.ndarray], Any]) -> dict[str, Any]:
        count = int(whole_counts(np.array([rows]), 1.0)[0])
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
            {"regime": k, **describe(float(counts[k]), operator.itemgetter(k))}
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
        whole = whole_counts(histogram, 1.0)
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
