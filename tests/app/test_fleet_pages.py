"""The fleet-health page: the setup rounds' statistics, analytics queries and their form.

Results are real decoder output: a few rows encoded by ``encode_query`` and decoded by
``decode_query``, stored on an AnalyticsQuery as the aggregation task would; no round runs.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from federation.core.analytics import (
    Bins,
    Query,
    QueryPrivacy,
    decode_query,
    encode_query,
)
from federation.core.privacy import PrivacySettings
from federation.errors import FederationError
from federation.models import AnalyticsQuery, Federation
from federation.services import rounds
from tests.app.pages import Controls
from tests.cast import Cast
from turbofan.data.features import RegimeModel
from turbofan.data.files import SETTING_COLUMNS

pytestmark = pytest.mark.django_db

SCALE = 1000.0
# Two operating regimes: sea level at idle-ish Mach, and 20 kft at Mach 0.7.
REGIMES = RegimeModel(
    centres=np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]), scale=np.array([20.0, 0.7, 100.0])
)
# What the setup rounds leave: per regime (rows) the mean and std of each kept sensor.
PIPELINE = {
    "n_regimes": 2,
    "window": 30,
    "rul_cap": 125.0,
    "cycle_channel": False,
    "pad_training": False,
    "regimes": REGIMES.to_dict(),
    "sensors": ["s_2", "s_11"],
    "mean": [[642.68, 47.54], [555.12, 42.01]],
    "std": [[0.5, 0.27], [0.25, 0.125]],
}


@pytest.fixture
def fleet_cast(cast) -> Cast:
    """The cast's federation after its setup rounds (two regimes), olga's site a member."""
    Federation.objects.filter(id=cast.federation.id).update(
        name="fd002-fleet",
        status=Federation.Status.RUNNING,
        regimes=REGIMES.to_dict(),
        pipeline=PIPELINE,
    )
    cast.federation.refresh_from_db()
    cast.approve()
    return cast


def as_user(client: Client, user: User | None) -> Client:
    if user is not None:
        client.force_login(user)
    return client


def fleet_url(fleet_cast: Cast) -> str:
    return reverse("pages:fleet", args=[fleet_cast.federation.id])


def ask_url(fleet_cast: Cast) -> str:
    return reverse("pages:query-new", args=[fleet_cast.federation.id])


def status_url(fleet_cast: Cast, query: AnalyticsQuery) -> str:
    return reverse("pages:query-status", args=[fleet_cast.federation.id, query.id])


def rows(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """``n`` rows per regime of s_2 and s_11, the settings at the regimes' centres."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"s_2": rng.normal(600, 3, 2 * n), "s_11": rng.normal(45, 1, 2 * n)})
    settings = np.repeat(REGIMES.centres * REGIMES.scale, n, axis=0)
    frame[SETTING_COLUMNS] = settings
    return frame


def decoded(query: Query, privacy: QueryPrivacy | None = None) -> dict:
    """A query's answer as the coordinator decodes it, from two sites' vectors."""
    first, second = rows(seed=1), rows(seed=2)
    summed = sum(
        encode_query(f, query, scale=SCALE, regimes=REGIMES, privacy=privacy, rng=None)
        for f in (first, second)
    )
    assert isinstance(summed, np.ndarray)
    return decode_query(summed, query, scale=SCALE, n_regimes=2, privacy=privacy)


QUERY = Query(sensors=("s_2", "s_11"), per_regime=True, bins=(Bins("s_2", 590.0, 610.0, 8),))


def done_query(fleet_cast: Cast, query: Query = QUERY, **fields) -> AnalyticsQuery:
    return AnalyticsQuery.objects.create(
        federation=fleet_cast.federation,
        requested_by=fleet_cast.admin,
        query=query.to_dict(),
        status=AnalyticsQuery.Status.DONE,
        result=json.loads(json.dumps(decoded(query, fields.pop("privacy", None)))),
        **fields,
    )


def page(client: Client, fleet_cast: Cast) -> str:
    response = client.get(fleet_url(fleet_cast))
    assert response.status_code == 200
    return response.content.decode()


def figure(html: str, element_id: str) -> dict:
    found = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html)
    assert found, f"no figure {element_id}"
    return json.loads(found.group(1))


# --- who sees it --------------------------------------------------------------------------


@pytest.mark.parametrize(("actor", "expected"), [("admin", 200), ("owner", 200), ("outsider", 403)])
def test_the_fleet_page_is_for_the_admin_and_member_sites_only(client, fleet_cast, actor, expected):
    as_user(client, getattr(fleet_cast, actor))

    assert client.get(fleet_url(fleet_cast)).status_code == expected


def test_an_anonymous_visitor_is_sent_to_log_in(client, fleet_cast):
    response = client.get(fleet_url(fleet_cast))

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("actor", "linked"), [("admin", True), ("owner", True), ("outsider", False)]
)
def test_the_federation_page_links_the_fleet_for_insiders(client, fleet_cast, actor, linked):
    as_user(client, getattr(fleet_cast, actor))

    html = client.get(reverse("pages:federation", args=[fleet_cast.federation.id])).content.decode()

    assert (f'href="{fleet_url(fleet_cast)}"' in html) is linked


# --- how the fleet's sensors look ---------------------------------------------------------


def test_the_page_shows_each_regimes_mean_and_std_from_the_secure_sum(client, fleet_cast):
    html = page(as_user(client, fleet_cast.owner), fleet_cast)

    assert "642.68 ± 0.5" in html and "42.01 ± 0.125" in html
    assert "altitude 20 kft, Mach 0.70, throttle 100" in html
    assert "secure sum of the sites' per-regime sums" in html
    traces = figure(html, "normalisation-figure")["data"]
    assert [t["name"] for t in traces] == ["regime 1", "regime 2"]
    assert traces[0]["x"] == ["s_2", "s_11"]


def test_before_the_setup_rounds_the_page_says_they_come_later(client, fleet_cast):
    Federation.objects.filter(id=fleet_cast.federation.id).update(pipeline=None, regimes=None)

    html = page(as_user(client, fleet_cast.owner), fleet_cast)

    assert "Not yet: the federation fits them in its setup rounds" in html


# --- query results ------------------------------------------------------------------------


def test_a_done_query_shows_its_statistics_per_regime_and_its_histogram(client, fleet_cast):
    query = done_query(fleet_cast)
    result = query.result
    assert result is not None

    html = page(as_user(client, fleet_cast.owner), fleet_cast)

    mean = result["overall"]["sensors"]["s_2"]["mean"]
    median = result["regimes"][1]["sensors"]["s_2"]["quantiles"]["0.5"]
    assert f"{mean:.6g}" in html and f"{median:.6g}" in html
    assert "All rows: 240 rows" in html and "Regime 2 (altitude 20 kft" in html
    assert "Quantile 0.95" in html
    assert "within one bin width of the rows' own quantile (s_2 ± 2.5)" in html
    assert "by ada" in html and "none: exact statistics" in html
    bars = figure(html, f"query-{query.id}-histogram-s_2-figure")["data"]
    assert [b["name"] for b in bars] == ["regime 1", "regime 2"]
    stacked = np.sum([b["y"] for b in bars], axis=0).tolist()
    assert stacked == result["overall"]["sensors"]["s_2"]["histogram"]["counts"]


def test_a_query_with_noise_states_the_noises_standard_deviation(client, fleet_cast):
    privacy = QueryPrivacy(noise_multiplier=1.5, clip=0.5, noise_sites=2)
    query = done_query(fleet_cast, privacy=privacy, noise_multiplier=1.5)

    html = page(as_user(client, fleet_cast.admin), fleet_cast)

    assert query.result is not None
    std = query.result["noise"]["count_std"]
    assert std == pytest.approx(1.5 * 0.5 * SCALE)
    assert f"standard deviation of about {std:.3g} rows" in html
    assert "noise multiplier 1.5" in html


def test_queries_are_listed_newest_first_with_a_failures_reason(client, fleet_cast):
    first = done_query(fleet_cast)
    failed = AnalyticsQuery.objects.create(
        federation=fleet_cast.federation,
        query=Query(sensors=("s_11",)).to_dict(),
        status=AnalyticsQuery.Status.FAILED,
        reason="only 1 approved, active sites; the federation needs 2 per round",
    )

    html = page(as_user(client, fleet_cast.owner), fleet_cast)

    assert html.index(f'id="query-{failed.id}"') < html.index(f'id="query-{first.id}"')
    assert "failed</span>: only 1 approved, active sites" in html


def test_a_running_querys_json_says_so_until_its_result_arrives(client, fleet_cast):
    query = AnalyticsQuery.objects.create(
        federation=fleet_cast.federation, requested_by=fleet_cast.admin, query=QUERY.to_dict()
    )
    as_user(client, fleet_cast.owner)
    assert f'data-status-url="{status_url(fleet_cast, query)}"' in page(client, fleet_cast)

    running = client.get(status_url(fleet_cast, query)).json()
    AnalyticsQuery.objects.filter(id=query.id).update(
        status=AnalyticsQuery.Status.DONE, result=decoded(QUERY)
    )
    done = client.get(status_url(fleet_cast, query)).json()

    assert (running["running"], running["status"]) == (True, "running")
    assert (done["running"], done["status"]) == (False, "done")
    assert "data-status-url" not in done["html"]
    assert f"query-{query.id}-histogram-s_2-figure" in done["html"]


def test_the_query_json_refuses_outsiders_and_other_federations_queries(client, fleet_cast):
    query = done_query(fleet_cast)
    elsewhere = Federation.objects.create(name="other-fleet", admin=fleet_cast.outsider)

    assert client.get(status_url(fleet_cast, query)).status_code == 403
    as_user(client, fleet_cast.outsider)
    assert client.get(status_url(fleet_cast, query)).status_code == 403
    url = reverse("pages:query-status", args=[elsewhere.id, query.id])
    assert client.get(url).status_code == 404


# --- the form -----------------------------------------------------------------------------


def test_only_the_admin_gets_the_form_with_the_fleets_varying_sensors_ticked(client, fleet_cast):
    admin_html = page(as_user(client, fleet_cast.admin), fleet_cast)
    client.logout()
    owner_html = page(as_user(client, fleet_cast.owner), fleet_cast)

    ticked = re.findall(
        r'<input type="checkbox" name="sensors" value="(s_\d+)"[^>]*checked', admin_html
    )
    assert ticked == ["s_2", "s_11"]
    assert 'id="query-form"' not in owner_html
    assert "Noise multiplier" not in admin_html  # no DP settings: no noise to ask for


def test_per_regime_is_disabled_with_a_hint_until_the_federation_has_regimes(client, fleet_cast):
    Federation.objects.filter(id=fleet_cast.federation.id).update(pipeline=None, regimes=None)

    html = page(as_user(client, fleet_cast.admin), fleet_cast)

    assert re.search(r'<input type="checkbox" name="per_regime"[^>]*disabled', html)
    assert "Available once the federation has found its operating regimes" in html


def test_asking_calls_the_service_with_default_ranges_and_redirects(
    client, fleet_cast, monkeypatch
):
    calls = []

    def analytics_request(**kwargs):
        calls.append(kwargs)
        return AnalyticsQuery.objects.create(
            federation=kwargs["federation"], query=kwargs["query"], requested_by=kwargs["user"]
        )

    monkeypatch.setattr(rounds, "analytics_request", analytics_request)
    as_user(client, fleet_cast.admin)

    response = client.post(
        ask_url(fleet_cast),
        {"sensors": ["s_2", "s_4"], "per_regime": "on", "histograms": "on", "bins": "20"},
        follow=True,
    )

    (call,) = calls
    assert call["query"] == {
        "sensors": ["s_2", "s_4"],
        "per_regime": True,
        # s_2: the fleet's mean +- 4 std over both regimes; s_4 (constant): its public range
        "bins": [
            {"sensor": "s_2", "low": 554.12, "high": 644.68, "count": 20},
            {"sensor": "s_4", "low": 1020.0, "high": 1445.0, "count": 20},
        ],
    }
    assert call["noise_multiplier"] is None and call["user"] == fleet_cast.admin
    assert response.redirect_chain[-1][0].startswith(fleet_url(fleet_cast))
    assert "appears below when they have" in response.content.decode()


def test_one_range_applies_to_every_chosen_sensor(client, fleet_cast, monkeypatch):
    calls = []

    def analytics_request(**kwargs):
        calls.append(kwargs)
        return done_query(fleet_cast)

    monkeypatch.setattr(rounds, "analytics_request", analytics_request)
    as_user(client, fleet_cast.admin)

    client.post(
        ask_url(fleet_cast),
        {"sensors": ["s_2", "s_3"], "histograms": "on", "bins": "10", "low": "0", "high": "9"},
    )

    assert [(b["low"], b["high"]) for b in calls[0]["query"]["bins"]] == [(0, 9), (0, 9)]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"bins": "10"}, "This field is required."),
        ({"sensors": ["s_2"], "histograms": "on", "bins": "10", "low": "1"}, "Give both ends"),
        ({"sensors": ["s_99"]}, "Select a valid choice."),
    ],
)
def test_a_wrong_form_stays_on_the_page_with_its_error(client, fleet_cast, data, error):
    as_user(client, fleet_cast.admin)

    response = client.post(ask_url(fleet_cast), data)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not AnalyticsQuery.objects.exists()


def test_the_services_refusal_shows_on_the_form(client, fleet_cast):
    Federation.objects.filter(id=fleet_cast.federation.id).update(
        privacy=PrivacySettings(noise_multiplier=1.1, clip=0.5, epsilon=8.0, delta=1e-5).to_dict()
    )
    as_user(client, fleet_cast.admin)

    response = client.post(ask_url(fleet_cast), {"sensors": ["s_2"], "noise_multiplier": "0"})

    assert response.status_code == 200
    assert "the noise multiplier must be &gt; 0" in response.content.decode()
    assert "spends the federation&#x27;s privacy budget" in response.content.decode()


def test_a_refusal_raised_by_the_service_is_its_message_on_the_form(
    client, fleet_cast, monkeypatch
):
    def refuse(**kwargs):
        raise FederationError("per-regime statistics need the federation's operating regimes")

    monkeypatch.setattr(rounds, "analytics_request", refuse)
    as_user(client, fleet_cast.admin)

    response = client.post(ask_url(fleet_cast), {"sensors": ["s_2"], "per_regime": "on"})

    assert "per-regime statistics need the federation&#x27;s operating regimes" in (
        response.content.decode()
    )


def test_a_query_that_cannot_run_is_listed_as_failed_with_its_reason(client, fleet_cast):
    as_user(client, fleet_cast.admin)

    response = client.post(ask_url(fleet_cast), {"sensors": ["s_2"], "bins": "40"}, follow=True)

    query = AnalyticsQuery.objects.get()
    assert query.status == AnalyticsQuery.Status.FAILED
    assert query.query["bins"] == [] and query.requested_by == fleet_cast.admin
    assert f"Query {query.id} could not run: only 1 approved" in response.content.decode()


@pytest.mark.parametrize(("actor", "expected"), [("owner", 403), ("outsider", 403), (None, 302)])
def test_only_the_admin_may_ask(client, fleet_cast, actor, expected):
    as_user(client, getattr(fleet_cast, actor) if actor else None)

    response = client.post(ask_url(fleet_cast), {"sensors": ["s_2"]})

    assert response.status_code == expected
    assert not AnalyticsQuery.objects.exists()


def test_the_form_needs_its_csrf_token(fleet_cast):
    client = Client(enforce_csrf_checks=True)
    client.force_login(fleet_cast.admin)

    assert client.post(ask_url(fleet_cast), {"sensors": ["s_2"]}).status_code == 403
    assert 'name="csrfmiddlewaretoken"' in client.get(fleet_url(fleet_cast)).content.decode()


# --- accessibility ------------------------------------------------------------------------


def test_every_control_has_a_label_and_headings_go_in_order(client, fleet_cast):
    done_query(fleet_cast)
    parser = Controls()

    parser.feed(page(as_user(client, fleet_cast.admin), fleet_cast))

    assert [c for c in parser.controls if c.get("id") not in parser.labelled] == []
    assert len(parser.controls) > 21
    assert parser.headings_in_order()
