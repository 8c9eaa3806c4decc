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

from federation.core.analytics.moments import decode_moments, encode_moments, moments_length
from federation.core.analytics.points import (
    DEFAULT_GRID,
    SettingGrid,
    decode_points,
    encode_points,
    points_length,
)
from federation.core.analytics.privacy import QueryPrivacy, query_spend
from federation.core.analytics.queries import (
    COUNT,
    DEFAULT_QUANTILES,
    HISTOGRAM,
    MAX_BINS,
    MEAN,
    QUANTILES,
    STATISTICS,
    STD,
    SUM,
    VARIANCE,
    Bins,
    Query,
    QueryError,
    decode_query,
    encode_query,
    histogram_quantiles,
    query_length,
)
from federation.core.analytics.scaling import (
    CLIP,
    SENSOR_CENTRE,
    SENSOR_ENVELOPE,
    SENSOR_HALF_WIDTH,
    STEP,
    AnalyticsError,
)

__all__ = [
    "CLIP",
    "COUNT",
    "DEFAULT_GRID",
    "DEFAULT_QUANTILES",
    "HISTOGRAM",
    "MAX_BINS",
    "MEAN",
    "QUANTILES",
    "SENSOR_CENTRE",
    "SENSOR_ENVELOPE",
    "SENSOR_HALF_WIDTH",
    "STATISTICS",
    "STD",
    "STEP",
    "SUM",
    "VARIANCE",
    "AnalyticsError",
    "Bins",
    "Query",
    "QueryError",
    "QueryPrivacy",
    "SettingGrid",
    "decode_moments",
    "decode_points",
    "decode_query",
    "encode_moments",
    "encode_points",
    "encode_query",
    "histogram_quantiles",
    "moments_length",
    "points_length",
    "query_length",
    "query_spend",
]
