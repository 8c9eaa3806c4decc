"""Statistics over the secure sum in live rounds: the setup rounds and analytics queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from federation.core import analytics
from federation.core.messages import Kind
from federation.core.privacy import PrivacySettings
from federation.core.secagg import protocol as p
from federation.errors import FederationError
from federation.models import (
    AnalyticsQuery,
    Contribution,
    Federation,
    PrivacySpend,
    Round,
    StageMessage,
)
from federation.services import rounds, sites
from federation.specs import federation_recipe
from tests.rounds import SITES
from turbofan.data.features import SETTING_COLUMNS, RegimeModel, SensorMoments
from turbofan.data.files import read_engine_file

pytestmark = pytest.mark.django_db

SENSORS = ("s_2", "s_11")


@pytest.fixture(scope="module")
def frames(cmapss_dir):
    rows = read_engine_file(cmapss_dir / "train_FD004.txt")
    rows = rows[rows["unit"] <= 60]
    return {name: rows[rows["unit"] % len(SITES) == i] for i, name in enumerate(SITES)}


@pytest.fixture
def fd004(fleet, frames):
    """The fleet's sites holding FD004 engines (six operating regimes)."""
    fleet.frames = frames
    for name, frame in frames.items():
        sites.site_report_data(
            site=fleet.sites[name],
            summary={"train_rows": len(frame), "train_engines": 20, "subsets": ["FD004"]},
        )
        fleet.sites[name].refresh_from_db()
    Federation.objects.filter(id=fleet.federation.id).update(subset="FD004")
    fleet.federation.refresh_from_db()
    return fleet


def run(fd004, round_: Round) -> Round:
    fd004.run(round_)
    return round_


def test_the_operating_regimes_come_from_a_secure_count_of_operating_points(fd004, frames):
    round_ = rounds.round_open(federation=fd004.federation, kind=Kind.POINTS, number=0)

    assert run(fd004, round_).status == Round.Status.DONE, round_.reason

    fd004.federation.refresh_from_db()
    pooled = np.concatenate([f[list(SETTING_COLUMNS)].to_numpy() for f in frames.values()])
    regimes = RegimeModel.from_dict(fd004.federation.regimes)
    assert regimes.n_regimes == 6
    expected = RegimeModel.fit(pooled, 6, 0).assign(pooled)
    found = regimes.assign(pooled)
    # The same six groups of rows, whatever their numbering.
    assert len({(a, b) for a, b in zip(expected, found, strict=True)}) == 6


def test_the_scaling_statistics_come_from_the_secure_sum_of_the_sites_moments(fd004, frames):
    run(fd004, rounds.round_open(federation=fd004.federation, kind=Kind.POINTS, number=0))
    fd004.federation.refresh_from_db()
    regimes = RegimeModel.from_dict(fd004.federation.regimes)
    moments_round = Round.objects.get(federation=fd004.federation, kind=Round.Kind.MOMENTS)
    assert moments_round.stage == p.ADVERTISE_KEYS  # the next setup round is secure too

    run(fd004, moments_round)

    fd004.federation.refresh_from_db()
    total = None
    for frame in frames.values():  # what the sites hold: never sent, summed here to check
        regime = regimes.assign(frame[list(SETTING_COLUMNS)].to_numpy())
        moments = SensorMoments.of(frame, regime, regimes.n_regimes)
        total = moments if total is None else total + moments
    decoded = fd004.federation.pipeline
    assert fd004.federation.versions.filter(version=0).exists()  # the initial model
    template = federation_recipe(fd004.federation).pipeline("FD004")
    assert total is not None
    pooled = template.unfitted().fit_moments(regimes, total).to_dict()
    assert decoded.keys() == pooled.keys()
    for key in ("means", "stds"):
        if key in pooled:
            assert np.allclose(decoded[key], pooled[key], rtol=1e-6), key


def test_an_analytics_query_answers_as_the_pooled_rows_would(fd004, frames):
    query = {
        "sensors": list(SENSORS),
        "bins": [{"sensor": "s_2", "low": 535, "high": 650, "count": 23}],
    }

    record = rounds.analytics_request(federation=fd004.federation, query=query)
    assert record.round is not None
    run(fd004, record.round)

    record.refresh_from_db()
    assert record.status == AnalyticsQuery.Status.DONE, record.reason
    assert record.result is not None
    pooled = np.concatenate([f["s_2"].to_numpy() for f in frames.values()])
    overall = record.result["overall"]["sensors"]["s_2"]
    assert record.result["count"] == len(pooled)
    assert overall["mean"] == pytest.approx(pooled.mean(), rel=1e-9)
    assert overall["variance"] == pytest.approx(pooled.var(), rel=1e-6)
    assert overall["histogram"]["counts"] == np.histogram(pooled, 23, (535, 650))[0].tolist()
    # What the coordinator kept of the round: masked vectors, no site's statistics.
    for message in StageMessage.objects.filter(round=record.round, stage=p.MASKED_INPUT):
        masked = np.frombuffer(message.vector.read(), dtype=np.uint64)
        assert masked.std() > 2**61
    assert fd004.federation.status == Federation.Status.DRAFT  # training untouched


def test_a_query_with_noise_spends_the_budget_and_is_refused_past_it(fd004):
    privacy = PrivacySettings(noise_multiplier=1.0, clip=1.0, epsilon=5.0)
    Federation.objects.filter(id=fd004.federation.id).update(privacy=privacy.to_dict())
    fd004.federation.refresh_from_db()
    query = {"sensors": ["s_2"]}

    first = rounds.analytics_request(federation=fd004.federation, query=query, noise_multiplier=1.5)
    second = rounds.analytics_request(
        federation=fd004.federation, query=query, noise_multiplier=0.5
    )

    assert first.status == AnalyticsQuery.Status.RUNNING
    line = PrivacySpend.objects.get(site=None)
    assert line.kind == "analytics" and line.description == f"analytics query {first.id}"
    assert second.status == AnalyticsQuery.Status.FAILED
    assert second.reason.startswith("the privacy budget would be exceeded: analytics query")
    fd004.federation.refresh_from_db()
    assert fd004.federation.status == Federation.Status.DRAFT  # a failed query fails alone


def test_a_query_with_noise_needs_a_budget_and_a_bad_query_is_refused(fd004):
    with pytest.raises(FederationError, match="spends privacy budget"):
        rounds.analytics_request(
            federation=fd004.federation, query={"sensors": ["s_2"]}, noise_multiplier=1.0
        )
    with pytest.raises(FederationError, match="the query is not valid"):
        rounds.analytics_request(federation=fd004.federation, query={"sensors": ["s_99"]})
    with pytest.raises(FederationError, match="operating regimes"):
        rounds.analytics_request(
            federation=fd004.federation, query={"sensors": ["s_2"], "per_regime": True}
        )


def test_a_query_whose_noise_would_not_fit_the_fixed_point_range_is_refused(fd004):
    privacy = PrivacySettings(noise_multiplier=1.0, clip=1.0, epsilon=1e6)
    Federation.objects.filter(id=fd004.federation.id).update(privacy=privacy.to_dict())
    fd004.federation.refresh_from_db()

    record = rounds.analytics_request(
        federation=fd004.federation, query={"sensors": ["s_2"]}, noise_multiplier=50.0
    )

    assert record.status == AnalyticsQuery.Status.FAILED
    assert "too large for the fixed-point range of a query over 4 sites: at most 2.02" in (
        record.reason
    )


def test_the_coordinator_stores_no_sites_statistics(fd004, frames, settings):
    run(fd004, rounds.round_open(federation=fd004.federation, kind=Kind.POINTS, number=0))
    fd004.federation.refresh_from_db()
    moments_round = Round.objects.get(federation=fd004.federation, kind=Round.Kind.MOMENTS)
    run(fd004, moments_round)
    regimes = RegimeModel.from_dict(fd004.federation.regimes)

    stored_rows = json.dumps(
        [
            list(model.objects.values())
            for model in (Round, Contribution, StageMessage, Federation, AnalyticsQuery)
        ],
        default=str,
    ).encode()
    files = [f.read_bytes() for f in Path(settings.MEDIA_ROOT).rglob("*") if f.is_file()]
    scale = moments_round.parameters["weight_scale"]
    for name, frame in frames.items():  # each site's own statistics, as it encodes them
        own = analytics.encode_moments(frame, regimes, scale=scale)
        quantised = np.rint((np.clip(own, -8, 8) + 8) / (16 / 2**40)).astype(np.uint64)
        for needle in (own, quantised, own.astype(np.float32)):
            chunk = needle[:12].tobytes()
            assert chunk not in stored_rows and all(chunk not in data for data in files), name
        assert repr(float(frame["s_2"].sum()))[:9].encode() not in stored_rows
