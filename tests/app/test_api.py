"""The site API: who may call what, and the 4xx answers that say what is wrong."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import NoReturn

import pytest
from django.core.files.base import ContentFile

from federation.core import messages as m
from federation.core.engine.site import site_step
from federation.core.messages import Kind
from federation.core.secagg.primitives import SigningKey
from federation.errors import FederationError
from federation.models import Contribution, ModelVersion, Site
from federation.services import federations, rounds, sites

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(cast, tmp_path, scheduled):
    """The cast's federation at its first round, with members alpha, beta and delta (each
    with its credential and keys); otto's south-hangar holds a credential but no
    membership in it."""
    members = {name: cast.add_member(name, keys=tmp_path) for name in ("alpha", "beta", "delta")}
    credentials = {name: member.credential for name, member in members.items()}
    # A member of another federation only (one not started): a credential, no work here.
    elsewhere = federations.federation_create(name="elsewhere", admin=cast.admin)
    sites.membership_approve(
        membership=sites.membership_request(federation=elsewhere, site=cast.other_site)
    )
    credentials["gamma"] = sites.site_issue_credential(site=cast.other_site)
    round_ = rounds.round_open(federation=cast.federation, kind=Kind.POINTS, number=0)
    version = ModelVersion.objects.create(federation=cast.federation, version=0, sha256="0" * 64)
    version.file.save("v0.rulmodel", ContentFile(b"model bytes"))
    return {
        "federation": cast.federation,
        "credentials": credentials,
        "members": members,
        "sites": {name: member.site for name, member in members.items()},
        "round": round_,
        "admin": cast.admin,
    }


def call(client, method, path, credential=None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {credential}"} if credential else {}
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(path, data=data, content_type="application/json", **headers)


def contribution_of(api, site):
    return Contribution.objects.get(round=api["round"], site=api["sites"][site])


def not_called() -> NoReturn:
    """The site's computation: the first stage sends keys, never an input."""
    raise AssertionError("not called")


def keys_of(client, api, name: str) -> dict:
    """The message site ``name`` sends in the round's first stage: its signed keys."""
    work = call(client, "get", "/api/v1/work", api["credentials"][name]).json()["work"]
    member = api["members"][name]
    body, _ = site_step(work, member.site.id, member.keystore.identity(), None, not_called)
    return body


def endpoints(client, api):
    """Every site endpoint, as (method, path, body) for the site 'alpha'."""
    federation = api["federation"].id
    return [
        ("get", "/api/v1/site", None),
        ("put", "/api/v1/site/data", {"train_rows": 5, "train_engines": 1, "subsets": ["FD001"]}),
        ("get", "/api/v1/work", None),
        (
            "post",
            f"/api/v1/contributions/{contribution_of(api, 'alpha').id}",
            keys_of(client, api, "alpha"),
        ),
        ("get", f"/api/v1/federations/{federation}/models/0", None),
    ]


def test_without_a_credential_every_endpoint_answers_401_with_a_hint(client, api):
    for method, path, body in endpoints(client, api):
        response = call(client, method, path, body=body)

        assert response.status_code == 401, path
        assert "Authorization: Bearer" in response.json()["error"]


def test_a_logged_in_admin_is_no_site_and_gets_401(client, api):
    client.force_login(api["admin"])

    for method, path, body in endpoints(client, api):
        assert call(client, method, path, body=body).status_code == 401, path


def test_a_wrong_credential_answers_401(client, api):
    response = call(client, "get", "/api/v1/site", credential="tfs_not-a-real-one")

    assert response.status_code == 401
    assert "unknown or replaced credential" in response.json()["error"]


def test_the_owners_credential_reaches_every_endpoint(client, api):
    expected = {"get": 200, "put": 200, "post": 200}

    for method, path, body in endpoints(client, api):
        response = call(client, method, path, api["credentials"]["alpha"], body)
        assert response.status_code == expected[method], (path, response.content[:200])


def test_a_site_sees_only_itself(client, api):
    me = call(client, "get", "/api/v1/site", api["credentials"]["alpha"]).json()

    assert me["name"] == "alpha"
    assert [m["name"] for m in me["memberships"]] == ["fd001-fleet"]
    assert "beta" not in json.dumps(me)


def test_a_site_cannot_answer_for_another_site(client, api):
    theirs = contribution_of(api, "beta")

    response = call(
        client,
        "post",
        f"/api/v1/contributions/{theirs.id}",
        api["credentials"]["alpha"],
        keys_of(client, api, "alpha"),
    )

    assert response.status_code == 404
    assert response.json() == {"error": f"you have no contribution {theirs.id}"}
    theirs.refresh_from_db()
    assert theirs.status == Contribution.Status.ASSIGNED


def test_a_site_outside_the_federation_cannot_download_its_models(client, api):
    path = f"/api/v1/federations/{api['federation'].id}/models/0"

    response = call(client, "get", path, api["credentials"]["gamma"])

    assert response.status_code == 404
    assert "not an approved member" in response.json()["error"]


def test_a_member_downloads_a_model_with_its_hash(client, api):
    path = f"/api/v1/federations/{api['federation'].id}/models/0"

    response = call(client, "get", path, api["credentials"]["beta"])

    assert b"".join(response.streaming_content) == b"model bytes"
    assert response["X-Model-SHA256"] == "0" * 64
    assert response["X-Model-Status"] == "candidate"


def test_work_goes_to_the_site_it_was_assigned_to(client, api):
    work = call(client, "get", "/api/v1/work", api["credentials"]["beta"]).json()

    assert work["contribution"] == contribution_of(api, "beta").id
    assert work["round"]["kind"] == "points" and work["work"][m.KEY_KIND] == "points"
    assert work["work"][m.KEY_PROTOCOL][m.STAGE] == "advertise_keys"
    assert work["work"][m.KEY_PROTOCOL][m.SITE] == api["sites"]["beta"].id


def test_a_paused_site_gets_no_work(client, api):
    sites.site_set_status(site=api["sites"]["alpha"], status=Site.Status.PAUSED)

    assert call(client, "get", "/api/v1/work", api["credentials"]["alpha"]).status_code == 204


def test_a_result_counts_once_even_if_delivered_twice(client, api):
    path = f"/api/v1/contributions/{contribution_of(api, 'alpha').id}"
    credential = api["credentials"]["alpha"]
    body = keys_of(client, api, "alpha")

    first = call(client, "post", path, credential, body)
    second = call(client, "post", path, credential, body)

    assert first.status_code == 200
    assert second.status_code == 409
    assert "answered the advertise_keys stage of the round already" in second.json()["error"]


def test_a_body_that_is_not_json_is_located(client, api):
    path = f"/api/v1/contributions/{contribution_of(api, 'alpha').id}"

    response = client.post(
        path,
        data="{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api['credentials']['alpha']}",
    )

    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is not JSON: ")
    assert "line 1, column 2" in response.json()["error"]


def test_a_message_of_the_wrong_shape_is_refused_with_the_reason(client, api):
    path = f"/api/v1/contributions/{contribution_of(api, 'alpha').id}"
    bad = {**keys_of(client, api, "alpha"), "mask_public": "c2hvcnQ="}

    response = call(client, "post", path, api["credentials"]["alpha"], bad)

    assert response.status_code == 400
    assert (
        "advertise_keys.mask_public: should be 32 bytes in base64 (44 characters)"
        in response.json()["error"]
    )


def test_a_long_poll_answers_as_soon_as_work_is_there_and_waits_no_longer(client, api):
    credential = api["credentials"]["alpha"]
    call(
        client,
        "post",
        f"/api/v1/contributions/{contribution_of(api, 'alpha').id}",
        credential,
        keys_of(client, api, "alpha"),
    )
    started = time.monotonic()

    waited = call(client, "get", "/api/v1/work?wait=0.3", credential)

    assert waited.status_code == 204  # alpha answered its stage; beta has not
    assert 0.3 <= time.monotonic() - started < 2
    assert (
        call(client, "get", "/api/v1/work?wait=0.3", api["credentials"]["beta"]).status_code == 200
    )


@pytest.mark.parametrize(
    ("wait", "message"),
    [
        ("-1", "wait: Input should be greater than or equal to 0"),
        ("26", "wait: Input should be less than or equal to 25"),
        ("soon", "wait: Input should be a valid number"),
        ("nan", "wait: Input should be a finite number"),
    ],
)
def test_a_wait_out_of_range_is_refused_with_the_range(client, api, wait, message):
    response = call(client, "get", f"/api/v1/work?wait={wait}", api["credentials"]["alpha"])

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_raw_rows_are_not_accepted_as_a_data_summary(client, api):
    response = call(
        client, "put", "/api/v1/site/data", api["credentials"]["alpha"], {"rows": [[1, 1, 0.5]]}
    )

    assert response.status_code == 400
    assert "rows: Extra inputs are not permitted" in response.json()["error"]
    assert "train_rows: Field required" in response.json()["error"]


def test_a_wrong_method_answers_405_with_the_right_one(client, api):
    response = call(client, "post", "/api/v1/work", api["credentials"]["alpha"], {})

    assert response.status_code == 405
    assert response.json() == {"error": "use GET on this endpoint"}


def test_the_openapi_description_lists_every_endpoint_and_needs_no_credential(client):
    spec = client.get("/api/v1/openapi.json").json()

    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/api/v1/site",
        "/api/v1/site/data",
        "/api/v1/site/identity",
        "/api/v1/site/worth",
        "/api/v1/work",
        "/api/v1/contributions/{contribution_id}",
        "/api/v1/federations/{federation_id}/models/{version}",
    }
    kinds = spec["components"]["schemas"]["RoundRef"]["properties"]["kind"]
    assert set(spec["components"]["schemas"][kinds["$ref"].split("/")[-1]]["enum"]) == {
        "points",
        "moments",
        "sketch",
        "train",
        "boost",
        "evaluate",
        "personalise",
        "analytics",
    }


def test_a_site_that_leaves_gets_no_more_work_and_its_open_work_is_dropped(client, api):
    membership = api["federation"].memberships.get(site=api["sites"]["alpha"])

    sites.membership_leave(membership=membership)

    assert contribution_of(api, "alpha").status == Contribution.Status.DROPPED
    assert call(client, "get", "/api/v1/work", api["credentials"]["alpha"]).status_code == 204
    with pytest.raises(FederationError, match="the membership is left"):
        sites.membership_leave(membership=membership)


def test_a_site_registers_its_identity_key(client, api):
    public = base64.b64encode(SigningKey.generate().public).decode()

    response = call(
        client, "put", "/api/v1/site/identity", api["credentials"]["alpha"], {"public_key": public}
    )

    assert response.status_code == 200
    assert Site.objects.get(name="alpha").identity_key == public


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("not base64!", "public_key: should be 32 bytes in base64 (44 characters)"),
        (base64.b64encode(b"short").decode(), "public_key: should be 32 bytes in base64"),
        (None, "public_key: Input should be a valid string"),
    ],
)
def test_a_malformed_identity_key_is_refused_with_the_reason(client, api, key, message):
    response = call(
        client, "put", "/api/v1/site/identity", api["credentials"]["alpha"], {"public_key": key}
    )

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert Site.objects.get(name="alpha").identity_key == api["sites"]["alpha"].identity_key


def test_past_the_cap_of_waiting_requests_a_long_poll_answers_at_once(client, api, monkeypatch):
    monkeypatch.setattr("federation.api._waiting", threading.BoundedSemaphore(0))
    credential = api["credentials"]["alpha"]
    path = f"/api/v1/contributions/{contribution_of(api, 'alpha').id}"
    call(client, "post", path, credential, keys_of(client, api, "alpha"))
    started = time.monotonic()

    response = call(client, "get", "/api/v1/work?wait=5", credential)

    assert response.status_code == 204 and time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        ({"train_rows": "abc"}, "train_rows: Input should be a whole number"),
        ({"train_rows": -1_000_000_000}, "train_rows: Input should be greater than or equal to 0"),
        ({"train_rows": 10**12}, "train_rows: Input should be less than or equal to 10000000"),
        ({"train_engines": True}, "train_engines: Input should be a whole number"),
        ({"subsets": "FD001"}, "subsets: Input should be a valid list"),
        ({"subsets": ["FD001"] * 17}, "subsets: List should have at most 16 items"),
    ],
)
def test_what_a_site_says_of_its_data_is_checked_before_it_counts(client, api, summary, message):
    body = {"train_rows": 5, "train_engines": 1, "subsets": ["FD001"], **summary}

    response = call(client, "put", "/api/v1/site/data", api["credentials"]["alpha"], body)

    assert response.status_code == 400
    assert message in response.json()["error"]
    summary_kept = Site.objects.get(name="alpha").data_summary
    assert summary_kept is not None and summary_kept["train_rows"] == 1000  # as it was


# --- what a hostile member sends ----------------------------------------------------------


def raw(client, method, path, credential, data: bytes, **extra):
    return getattr(client, method)(
        path,
        data=data,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {credential}",
        **extra,
    )


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("/api/v1/site/data", b'{"train_rows": "\xff\xfe"}', "the body is not UTF-8 (byte 16)"),
        ("/api/v1/site/identity", b"\xc3\x28", "the body is not UTF-8 (byte 0)"),
        ("/api/v1/site/data", b"[" * 100_000 + b"]" * 100_000, "nests deeper than 64 levels"),
        ("/api/v1/site/data", b"[1, 2]", "the body must be a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_in_utf8_is_refused_saying_why(
    client, api, path, data, message
):
    response = raw(client, "put", path, api["credentials"]["alpha"], data)

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_body_past_the_limit_is_refused_before_it_is_read(client, api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"public_key": "A" * 2000}).encode()

    response = raw(client, "put", "/api/v1/site/identity", api["credentials"]["alpha"], body)

    assert response.status_code == 413
    assert response.json() == {"error": "the body is larger than 1000 bytes"}


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/federations/{2**64}/models/0",
        f"/api/v1/federations/1/models/{2**70}",
        f"/api/v1/contributions/{2**63}",
    ],
)
def test_ids_past_64_bits_are_refused_not_looked_up(client, api, path):
    method = "post" if "contributions" in path else "get"

    response = call(
        client, method, path, api["credentials"]["alpha"], {} if method == "post" else None
    )

    assert response.status_code == 400
    assert "less than or equal to 9223372036854775807" in response.json()["error"]


def test_a_masked_input_with_an_absurd_count_writes_nothing(client, api, settings):
    path = f"/api/v1/contributions/{contribution_of(api, 'alpha').id}"
    body = {
        "stage": "masked_input",
        "round": "abc",
        "site": api["sites"]["alpha"].id,
        "masked": base64.b64encode(b"\0" * 288_000).decode(),
        "examples": 10**30,
    }

    response = call(client, "post", path, api["credentials"]["alpha"], body)

    assert response.status_code == 400
    assert "examples: Input should be less than or equal to 2147483647" in response.json()["error"]
    masked = settings.MEDIA_ROOT / "masked"
    assert not masked.exists() or not any(masked.iterdir())  # no orphaned vector file


def test_a_share_of_the_wrong_size_is_refused(client, api):
    path = f"/api/v1/contributions/{contribution_of(api, 'alpha').id}"
    body = {
        "stage": "share_keys",
        "round": "abc",
        "site": api["sites"]["alpha"].id,
        "sealed": {str(api["sites"]["beta"].id): base64.b64encode(b"x" * 1_000_000).decode()},
    }

    response = call(client, "post", path, api["credentials"]["alpha"], body)

    assert response.status_code == 400
    assert "should be 168 bytes in base64 (224 characters)" in response.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("delete", "/api/v1/site", 405, "GET"),
        ("get", "/api/v1/site/data", 405, "PUT"),
        ("get", "/api/v1/no/such/thing", 404, None),
    ],
)
def test_every_refusal_under_the_api_is_json(client, api, method, path, status, allow):
    response = call(client, method, path, api["credentials"]["alpha"])

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert "error" in response.json()
    assert response.get("Allow") == allow


WORTH = {
    "worth": 48000.0,
    "low": 0.0,
    "high": 110200.0,
    "level": 0.9,
    "engines": 3,
    "fleet_size": 4,
    "horizon": 5000,
}


def test_a_member_publishes_what_joining_is_worth_and_insiders_see_it_as_its_own(client, api):
    figure = {"federation": api["federation"].id, **WORTH}

    response = call(client, "put", "/api/v1/site/worth", api["credentials"]["alpha"], figure)

    assert response.status_code == 200
    membership = api["sites"]["alpha"].memberships.get(federation=api["federation"])
    assert membership.published_worth == WORTH and membership.published_at is not None
    page = f"/federations/{api['federation'].id}/"
    assert b"as sites published it" not in client.get(page).content  # a visitor: no
    client.force_login(api["admin"])
    shown = client.get(page).content.decode()
    assert "as sites published it" in shown and "$48000" in shown and "alpha" in shown


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"low": 50000.0}, "the interval must hold the figure"),
        ({"worth": float("nan")}, "worth: Input should be a finite number"),
        ({"worth": 1e15}, "worth: Input should be less than or equal to 1000000000000"),
        ({"engines": 0}, "engines: Input should be greater than or equal to 1"),
        ({"comment": "trust me"}, "comment: Extra inputs are not permitted"),
    ],
)
def test_a_published_worth_that_does_not_hold_together_is_refused(client, api, change, message):
    figure = {"federation": api["federation"].id, **WORTH, **change}

    response = call(client, "put", "/api/v1/site/worth", api["credentials"]["alpha"], figure)

    assert response.status_code == 400 and message in response.json()["error"]
    membership = api["sites"]["alpha"].memberships.get(federation=api["federation"])
    assert membership.published_worth is None


def test_a_site_cannot_publish_to_a_federation_it_is_not_in(client, api):
    figure = {"federation": api["federation"].id, **WORTH}

    response = call(client, "put", "/api/v1/site/worth", api["credentials"]["gamma"], figure)

    assert response.status_code == 404
    assert "not an approved member" in response.json()["error"]
