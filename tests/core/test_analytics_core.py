"""Federated analytics through the real secure sum, against the plain computation on the
pooled rows: 4 sites dealt from FD001 and FD004, each encoding its own rows."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.core.analytics import (
    DEFAULT_GRID,
    AnalyticsError,
    Bins,
    Query,
    QueryError,
    QueryPrivacy,
    decode_moments,
    decode_points,
    decode_query,
    encode_moments,
    encode_points,
    encode_query,
    histogram_quantiles,
    moments_length,
    points_length,
    query_length,
    query_spend,
)
from federation.core.engine.simulation import secure_sum
from federation.core.privacy import PrivacyError, Spend, epsilon_spent
from turbofan.data.features import FeaturePipeline, RegimeModel, SensorMoments
from turbofan.data.files import SETTING_COLUMNS, read_engine_file
from turbofan.data.partition import plan_iid

# The secure sum a live round computes: the whole protocol, in this process.
secure = secure_sum


def sensor_moments(frame: pd.DataFrame, regimes: RegimeModel) -> SensorMoments:
    """A site's own per-regime moments (what it never sends)."""
    regime = regimes.assign(frame[SETTING_COLUMNS].to_numpy())
    return SensorMoments.of(frame, regime, regimes.n_regimes)


def merge_pipeline(
    template: FeaturePipeline, regimes: RegimeModel, moments: list[SensorMoments]
) -> FeaturePipeline:
    return template.unfitted().fit_moments(regimes, functools.reduce(lambda a, b: a + b, moments))


Sites = list[pd.DataFrame]


def deal(frame: pd.DataFrame, subset: str, seed: int = 0, n_sites: int = 4) -> Sites:
    """The engines of ``frame`` dealt at random between ``n_sites`` sites, none held out."""
    plan = plan_iid(subset, frame["unit"].to_numpy(), n_sites, seed=seed, holdout=0)
    return [frame[frame["unit"].isin(s.engines[subset])] for s in plan.sites]


def pooled(sites: Sites) -> pd.DataFrame:
    return pd.concat(sites, ignore_index=True)


@pytest.fixture(scope="module")
def train(cmapss_dir: Path) -> dict[str, pd.DataFrame]:
    return {s: read_engine_file(cmapss_dir / f"train_{s}.txt") for s in ("FD001", "FD004")}


@pytest.fixture(scope="module")
def federations(train: dict[str, pd.DataFrame]) -> dict[str, Sites]:
    """FD001 and FD004 dealt to 4 sites each, and a mixed federation: two sites of each."""
    fd001, fd004 = deal(train["FD001"], "FD001"), deal(train["FD004"], "FD004")
    return {"FD001": fd001, "FD004": fd004, "mixed": fd001[:2] + fd004[2:]}


def federated_regimes(sites: Sites, n_regimes: int, scale: float) -> RegimeModel:
    """The setup round: operating points through the secure sum, then k-means."""
    summed = secure([encode_points(s[SETTING_COLUMNS].to_numpy(), scale=scale) for s in sites])
    points, counts = decode_points(summed, scale=scale)
    return RegimeModel.fit_points(points, counts, n_regimes)


# --- operating points ----------------------------------------------------------------------


@pytest.mark.parametrize(("federation", "n_regimes"), [("FD001", 1), ("FD004", 6), ("mixed", 6)])
def test_regimes_from_the_grid_assign_every_row_as_the_pooled_fit_does(
    federations, federation, n_regimes
):
    sites = federations[federation]
    rows = pooled(sites)
    settings = rows[SETTING_COLUMNS].to_numpy()
    scale = float(len(rows))

    vectors = [encode_points(s[SETTING_COLUMNS].to_numpy(), scale=scale) for s in sites]
    points, counts = decode_points(secure(vectors), scale=scale)
    federated = RegimeModel.fit_points(points, counts, n_regimes)
    plain = RegimeModel.fit(settings, n_regimes)

    assert {len(v) for v in vectors} == {points_length()}
    assert len(points) == n_regimes  # each C-MAPSS condition in one cell
    expected = np.bincount(DEFAULT_GRID.cells(settings), minlength=DEFAULT_GRID.size)
    np.testing.assert_array_equal(counts, expected[expected > 0])
    np.testing.assert_array_equal(federated.assign(settings), plain.assign(settings))


def test_settings_off_the_public_grid_are_refused_by_name():
    settings = np.array([[10.0, 0.25, 100.0], [10.0, 0.25, 120.0]])

    with pytest.raises(AnalyticsError, match="setting_3 = 120 lies outside the public grid"):
        encode_points(settings, scale=10)


def test_a_scale_too_small_for_the_sites_rows_says_what_it_must_be():
    settings = np.zeros((100, 3)) + [0.0, 0.0, 100.0]

    with pytest.raises(AnalyticsError, match="the scale must be at least 13"):
        encode_points(settings, scale=10)


# --- sensor moments and the federation's scaling -------------------------------------------


def test_decoded_moments_are_the_sum_of_the_sites_moments(federations):
    sites = federations["FD004"]
    scale = float(len(pooled(sites)))
    regimes = RegimeModel.fit(pooled(sites)[SETTING_COLUMNS].to_numpy(), 6)

    vectors = [encode_moments(s, regimes, scale=scale) for s in sites]
    decoded = decode_moments(secure(vectors), n_regimes=6, scale=scale)
    total = functools.reduce(lambda a, b: a + b, [sensor_moments(s, regimes) for s in sites])

    assert {len(v) for v in vectors} == {moments_length(6)}
    np.testing.assert_array_equal(decoded.counts, total.counts)
    np.testing.assert_allclose(decoded.sums, total.sums, rtol=1e-12)
    np.testing.assert_allclose(decoded.squares, total.squares, rtol=1e-12)
    np.testing.assert_array_equal(decoded.varied, total.varied)


@pytest.mark.parametrize("subset", ["FD001", "FD004"])
def test_the_pipeline_fitted_through_the_secure_sum_scales_like_the_pooled_fit(federations, subset):
    sites = federations[subset]
    rows = pooled(sites)
    scale = float(len(rows))
    template = FeaturePipeline.for_subset(subset)

    regimes = federated_regimes(sites, template.n_regimes, scale)
    summed = secure([encode_moments(s, regimes, scale=scale) for s in sites])
    moments = decode_moments(summed, n_regimes=regimes.n_regimes, scale=scale)
    federated = merge_pipeline(template, regimes, [moments])
    plain = FeaturePipeline.for_subset(subset).fit(rows)

    assert federated.mean is not None and federated.std is not None
    assert plain.mean is not None and plain.std is not None and plain.regimes is not None
    assert federated.sensors == plain.sensors
    np.testing.assert_allclose(federated.mean, plain.mean, rtol=1e-12)
    # The pooled fit's own sums of raw squares are off by up to 2e-5 of the std of a sensor
    # like s_8 (2388 +- 0.07); against a two-pass std the federated one is within 1e-6.
    np.testing.assert_allclose(federated.std, plain.std, rtol=1e-4)
    regime = plain.regimes.assign(rows[SETTING_COLUMNS].to_numpy())
    two_pass = [rows.loc[regime == k, plain.sensors].std(ddof=0) for k in range(len(plain.std))]
    np.testing.assert_allclose(federated.std, np.array(two_pass), rtol=1e-6)
    np.testing.assert_allclose(federated.transform(rows), plain.transform(rows), atol=1e-3)


# --- queries ---------------------------------------------------------------------------------

FD004_QUERY = Query(
    sensors=("s_2", "s_8", "s_11", "s_15"),
    per_regime=True,
    bins=(Bins("s_2", 530.0, 650.0, 240), Bins("s_11", 36.0, 49.0, 130)),
)
FD001_QUERY = Query(
    sensors=("s_4", "s_11", "s_14"),
    bins=(Bins("s_4", 1390.0, 1430.0, 40), Bins("s_11", 46.8, 48.6, 36)),
    quantiles=(0.01, 0.25, 0.5, 0.75, 0.99),
)


def answer(sites: Sites, query: Query, regimes: RegimeModel | None, **kwargs) -> dict:
    scale = float(len(pooled(sites)))
    n_regimes = regimes.n_regimes if regimes else 1
    vectors = [encode_query(s, query, scale=scale, regimes=regimes, **kwargs) for s in sites]
    assert {len(v) for v in vectors} == {query_length(query, n_regimes)}
    return decode_query(secure(vectors), query, scale=scale, n_regimes=n_regimes)


def assert_describes(stats: dict, rows: pd.DataFrame, query: Query) -> None:
    """``stats`` (one group's sensors) against the plain computation on ``rows``."""
    for name in query.sensors:
        values = rows[name].to_numpy()
        got = stats[name]
        assert got["sum"] == pytest.approx(values.sum(), rel=1e-12)
        assert got["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert got["variance"] == pytest.approx(values.var(), rel=1e-7)
        assert got["std"] == pytest.approx(values.std(), rel=1e-7)
    for bins in query.bins:
        values = rows[bins.sensor].to_numpy()
        histogram = stats[bins.sensor]["histogram"]
        expected, _ = np.histogram(values, bins=bins.count, range=(bins.low, bins.high))
        assert histogram["counts"] == expected.tolist()
        assert histogram["below"] == int((values < bins.low).sum())
        assert histogram["above"] == int((values > bins.high).sum())
        for level, value in zip(
            query.quantiles, stats[bins.sensor]["quantiles"].values(), strict=True
        ):
            truth = np.quantile(values, level, method="inverted_cdf")
            if value is None:
                assert not bins.low <= truth <= bins.high
            else:
                assert abs(value - truth) <= bins.width


def test_a_per_regime_query_equals_the_plain_computation_on_the_pooled_rows(federations):
    sites = federations["FD004"]
    rows = pooled(sites)
    regimes = federated_regimes(sites, 6, float(len(rows)))
    regime = regimes.assign(rows[SETTING_COLUMNS].to_numpy())

    result = answer(sites, FD004_QUERY, regimes)

    assert result["count"] == len(rows)
    assert [r["count"] for r in result["regimes"]] == np.bincount(regime).tolist()
    assert_describes(result["overall"]["sensors"], rows, FD004_QUERY)
    for k, group in enumerate(result["regimes"]):
        assert_describes(group["sensors"], rows[regime == k], FD004_QUERY)
    assert result["quantile_error"] == {"s_2": 0.5, "s_11": pytest.approx(0.1)}
    json.dumps(result, allow_nan=False)


def test_an_overall_query_equals_the_plain_computation_on_the_pooled_rows(federations):
    sites = federations["FD001"]
    rows = pooled(sites)

    result = answer(sites, FD001_QUERY, None)

    assert result["count"] == result["overall"]["count"] == len(rows)
    assert "regimes" not in result
    assert_describes(result["overall"]["sensors"], rows, FD001_QUERY)


def test_the_answer_depends_on_the_pooled_rows_not_on_how_sites_hold_them(train):
    # The decoder sees only the sum: two other deals of the same engines give one answer.
    first = answer(deal(train["FD001"], "FD001", seed=1), FD001_QUERY, None)
    second = answer(deal(train["FD001"], "FD001", seed=2, n_sites=3), FD001_QUERY, None)

    for name, stats in first["overall"]["sensors"].items():
        other = second["overall"]["sensors"][name]
        assert stats.get("histogram") == other.get("histogram")
        assert stats["mean"] == pytest.approx(other["mean"], rel=1e-12)
        assert stats["variance"] == pytest.approx(other["variance"], rel=1e-9)


def test_only_the_asked_for_statistics_are_computed_and_sent(federations):
    sites = federations["FD001"]
    query = Query(sensors=("s_2", "s_3"), statistics=("count", "mean"))

    result = answer(sites, query, None)

    assert query_length(query) == 1 + 2 * 2  # the count, and one sum per sensor in two limbs
    assert result["overall"]["sensors"]["s_2"] == {
        "mean": pytest.approx(pooled(sites)["s_2"].mean(), rel=1e-12)
    }


def test_quantiles_interpolate_within_the_bin_they_fall_in():
    counts = np.array([0, 2, 6, 2, 0])  # below, three bins over [0, 3], above

    values = histogram_quantiles(counts, 0.0, 3.0, [0.1, 0.5, 0.95])

    assert values == pytest.approx([0.5, 1.5, 2.75])


def test_quantiles_outside_the_histograms_range_are_none():
    assert histogram_quantiles(np.array([5, 5, 0, 0, 0]), 0.0, 3.0, [0.25, 0.75]) == [
        None,
        pytest.approx(0.5),
    ]
    assert histogram_quantiles(np.array([0, 0, 0, 5, 5]), 0.0, 3.0, [0.95]) == [None]
    assert histogram_quantiles(np.zeros(5), 0.0, 3.0, [0.5]) == [None]


# --- query validation ------------------------------------------------------------------------

HIST = {"sensor": "s_2", "low": 640.0, "high": 645.0, "count": 50}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sensors": []}, "sensors: choose at least one sensor"),
        ({"sensors": "s_2"}, "sensors: a list of names"),
        ({"sensors": ["s_2", "s_22"]}, r"sensors: unknown \['s_22'\]"),
        ({"sensors": ["s_2", "s_2"]}, "sensors: each sensor at most once"),
        ({"sensors": ["s_2"], "regime": True}, r"unknown fields \['regime'\]"),
        ({"sensors": ["s_2"], "per_regime": "yes"}, "per_regime: true or false"),
        ({"sensors": ["s_2"], "statistics": ["median"]}, r"statistics: unknown \['median'\]"),
        ({"sensors": ["s_3"], "bins": [HIST]}, "bins of s_2: s_2 is not one of the chosen"),
        ({"sensors": ["s_2"], "bins": [{**HIST, "high": 640}]}, "need finite low < high"),
        ({"sensors": ["s_2"], "bins": [{**HIST, "count": 0}]}, "number of bins must be 1 to"),
        ({"sensors": ["s_2"], "bins": [{**HIST, "count": 2.5}]}, "count is a whole number"),
        ({"sensors": ["s_2"], "bins": [HIST, HIST]}, "at most one histogram per sensor"),
        ({"sensors": ["s_2"], "statistics": ["quantiles"]}, "need bins for at least one"),
        (
            {"sensors": ["s_2"], "bins": [HIST], "statistics": ["mean"]},
            "neither 'histogram' nor 'quantiles' is asked for",
        ),
        ({"sensors": ["s_2"], "bins": [HIST], "quantiles": [0, 0.5]}, r"must lie in \(0, 1\)"),
        ({"sensors": ["s_2"], "bins": [HIST], "quantiles": [0.5, 0.5]}, "each level at most once"),
    ],
)
def test_a_wrong_query_is_refused_naming_what_is_wrong(data, message):
    with pytest.raises(QueryError, match=message):
        Query.from_dict(data)


def test_a_query_travels_as_json_and_back():
    text = json.dumps(FD004_QUERY.to_dict())

    assert Query.from_dict(json.loads(text)) == FD004_QUERY


def test_a_query_without_statistics_asks_for_all_that_its_bins_allow():
    assert Query(sensors=("s_2",)).statistics == ("count", "sum", "mean", "variance", "std")
    assert "quantiles" in Query(sensors=("s_2",), bins=(Bins("s_2", 0, 1, 2),)).statistics


def test_a_per_regime_query_needs_the_regimes(federations):
    with pytest.raises(QueryError, match="needs the federation's operating regimes"):
        encode_query(federations["FD004"][0], FD004_QUERY, scale=1e5)


def test_a_vector_of_the_wrong_length_is_refused():
    with pytest.raises(AnalyticsError, match="this query's vector has 9 entries, got 10"):
        decode_query(np.zeros(10), Query(sensors=("s_2", "s_3")), scale=1.0)


# --- differential privacy --------------------------------------------------------------------


def test_each_site_adds_its_share_so_the_sum_carries_the_promised_noise(federations):
    sites = federations["FD004"]
    scale = float(len(pooled(sites)))
    regimes = RegimeModel.fit(pooled(sites)[SETTING_COLUMNS].to_numpy(), 6)
    query = Query(
        sensors=("s_2", "s_11"),
        per_regime=True,
        bins=(Bins("s_2", 530.0, 650.0, 200), Bins("s_11", 36.0, 49.0, 200)),
        statistics=("count", "histogram"),
    )
    # A clip above every site's norm: the noise is all that changes.
    privacy = QueryPrivacy(noise_multiplier=0.01, clip=4.0, noise_sites=4)

    def summed(noisy: bool) -> np.ndarray:
        return secure(
            [
                encode_query(
                    s,
                    query,
                    scale=scale,
                    regimes=regimes,
                    privacy=privacy if noisy else None,
                    rng=np.random.default_rng(seed),
                )
                for seed, s in enumerate(sites)
            ]
        )

    clean, noisy = summed(False), summed(True)
    noise = noisy - clean
    result = decode_query(noisy, query, scale=scale, n_regimes=6, privacy=privacy)

    assert len(noise) > 2000
    assert np.std(noise) == pytest.approx(privacy.noise_std, rel=0.1)
    assert abs(np.mean(noise)) < 0.1 * privacy.noise_std
    assert result["noise"]["count_std"] == pytest.approx(0.04 * scale)
    assert abs(result["count"] - len(pooled(sites))) < 5 * np.sqrt(6) * result["noise"]["count_std"]
    np.testing.assert_array_equal(summed(True), noisy)  # the same seeds, the same noise


def test_a_private_query_charges_one_gaussian_mechanism_on_every_site():
    spend = query_spend(QueryPrivacy(noise_multiplier=2.0, clip=0.5, noise_sites=3))

    assert spend == Spend(noise_multiplier=2.0, sample_fraction=1.0, count=1)
    assert 0 < epsilon_spent([spend], 1e-5) < epsilon_spent([spend, spend], 1e-5)


def test_privacy_without_noise_is_refused():
    with pytest.raises(PrivacyError, match="noise multiplier must be > 0"):
        QueryPrivacy(noise_multiplier=0.0, clip=1.0, noise_sites=2)
