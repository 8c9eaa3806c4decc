"""The site API: who may call what, and the 4xx answers that say what is wrong."""

from __future__ import annotations

import base64
import json

import pytest
from django.core.files.base import ContentFile

from federation import services
from federation.core.secagg.primitives import SigningKey
from federation.models import Contribution, Federation, ModelVersion, Round, Site

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(django_user_model):
    """A federation with two approved sites (each owner holds a credential) and its admin."""
    admin = django_user_model.objects.create_user("admin", password="pw-admin-123")
    # Plain rounds (their payloads are simple to write); secure ones: test_secure_rounds.py.
    federation = Federation.objects.create(
        name="fleet", admin=admin, min_sites=1, secure_aggregation=False
    )
    credentials, sites = {}, {}
    for name in ("alpha", "beta"):
        owner = django_user_model.objects.create_user(f"owner-{name}", password="pw-123-xyz")
        site = services.site_create(owner=owner, name=name)
        services.membership_approve(
            membership=services.membership_request(federation=federation, site=site)
        )
        credentials[name] = services.site_issue_credential(site=site)
        sites[name] = site
    outsider = services.site_create(
        owner=django_user_model.objects.create_user("outsider"), name="gamma"
    )
    credentials["gamma"] = services.site_issue_credential(site=outsider)
    round_ = services.round_open(federation=federation, kind=Round.Kind.POINTS, number=0)
    version = ModelVersion.objects.create(federation=federation, version=0, sha256="0" * 64)
    version.file.save("v0.rulmodel", ContentFile(b"model bytes"))
    return {
        "federation": federation,
        "credentials": credentials,
        "sites": sites,
        "round": round_,
        "admin": admin,
    }


def call(client, method, path, credential=None, body=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {credential}"} if credential else {}
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(path, data=data, content_type="application/json", **headers)


def contribution_of(cast, site):
    return Contribution.objects.get(round=cast["round"], site=cast["sites"][site])


POINTS = {"examples": 10, "payload": {"points": [[0, 0, 100]], "counts": [10]}}


def endpoints(cast):
    """Every site endpoint, as (method, path, body) for the site 'alpha'."""
    federation = cast["federation"].id
    return [
        ("get", "/api/v1/site", None),
        ("put", "/api/v1/site/data", {"train_rows": 5, "train_engines": 1, "subsets": ["FD001"]}),
        ("get", "/api/v1/work", None),
        ("post", f"/api/v1/contributions/{contribution_of(cast, 'alpha').id}", POINTS),
        ("get", f"/api/v1/federations/{federation}/models/0", None),
    ]


def test_without_a_credential_every_endpoint_answers_401_with_a_hint(client, cast):
    for method, path, body in endpoints(cast):
        response = call(client, method, path, body=body)

        assert response.status_code == 401, path
        assert "Authorization: Bearer" in response.json()["error"]


def test_a_logged_in_admin_is_no_site_and_gets_401(client, cast):
    client.force_login(cast["admin"])

    for method, path, body in endpoints(cast):
        assert call(client, method, path, body=body).status_code == 401, path


def test_a_wrong_credential_answers_401(client, cast):
    response = call(client, "get", "/api/v1/site", credential="tfs_not-a-real-one")

    assert response.status_code == 401
    assert "unknown or replaced credential" in response.json()["error"]


def test_the_owners_credential_reaches_every_endpoint(client, cast):
    expected = {"get": 200, "put": 200, "post": 200}

    for method, path, body in endpoints(cast):
        response = call(client, method, path, cast["credentials"]["alpha"], body)
        assert response.status_code == expected[method], (path, response.content[:200])


def test_a_site_sees_only_itself(client, cast):
    me = call(client, "get", "/api/v1/site", cast["credentials"]["alpha"]).json()

    assert me["name"] == "alpha"
    assert [m["name"] for m in me["memberships"]] == ["fleet"]
    assert "beta" not in json.dumps(me)


def test_a_site_cannot_answer_for_another_site(client, cast):
    theirs = contribution_of(cast, "beta")

    response = call(
        client, "post", f"/api/v1/contributions/{theirs.id}", cast["credentials"]["alpha"], POINTS
    )

    assert response.status_code == 404
    assert response.json() == {"error": f"you have no contribution {theirs.id}"}
    theirs.refresh_from_db()
    assert theirs.status == Contribution.Status.ASSIGNED


def test_a_site_outside_the_federation_cannot_download_its_models(client, cast):
    path = f"/api/v1/federations/{cast['federation'].id}/models/0"

    response = call(client, "get", path, cast["credentials"]["gamma"])

    assert response.status_code == 404
    assert "not an approved member" in response.json()["error"]


def test_a_member_downloads_a_model_with_its_hash(client, cast):
    path = f"/api/v1/federations/{cast['federation'].id}/models/0"

    response = call(client, "get", path, cast["credentials"]["beta"])

    assert b"".join(response.streaming_content) == b"model bytes"
    assert response["X-Model-SHA256"] == "0" * 64


def test_work_goes_to_the_site_it_was_assigned_to(client, cast):
    work = call(client, "get", "/api/v1/work", cast["credentials"]["beta"]).json()

    assert work["contribution"] == contribution_of(cast, "beta").id
    assert work["round"]["kind"] == "points" and work["work"] == {"kind": "points"}


def test_a_paused_site_gets_no_work(client, cast):
    services.site_set_status(site=cast["sites"]["alpha"], status=Site.Status.PAUSED)

    assert call(client, "get", "/api/v1/work", cast["credentials"]["alpha"]).status_code == 204


def test_a_result_counts_once_even_if_delivered_twice(client, cast):
    path = f"/api/v1/contributions/{contribution_of(cast, 'alpha').id}"
    credential = cast["credentials"]["alpha"]

    first = call(client, "post", path, credential, POINTS)
    second = call(client, "post", path, credential, POINTS)

    assert first.status_code == 200
    assert second.status_code == 409
    assert "received already" in second.json()["error"]


def test_a_body_that_is_not_json_is_located(client, cast):
    path = f"/api/v1/contributions/{contribution_of(cast, 'alpha').id}"

    response = client.post(
        path,
        data="{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {cast['credentials']['alpha']}",
    )

    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is not JSON: ")
    assert "line 1, column 2" in response.json()["error"]


def test_a_payload_of_the_wrong_shape_is_refused_with_the_reason(client, cast):
    path = f"/api/v1/contributions/{contribution_of(cast, 'alpha').id}"
    bad = {"examples": 3, "payload": {"points": [[0, 0, 100]], "counts": [1, 2]}}

    response = call(client, "post", path, cast["credentials"]["alpha"], bad)

    assert response.status_code == 400
    assert "not valid for a points round" in response.json()["error"]


def test_raw_rows_are_not_accepted_as_a_data_summary(client, cast):
    response = call(
        client, "put", "/api/v1/site/data", cast["credentials"]["alpha"], {"rows": [[1, 1, 0.5]]}
    )

    assert response.status_code == 400
    assert "counts only, never rows" in response.json()["error"]


def test_a_wrong_method_answers_405_with_the_right_one(client, cast):
    response = call(client, "post", "/api/v1/work", cast["credentials"]["alpha"], {})

    assert response.status_code == 405
    assert response.json() == {"error": "use GET on this endpoint"}


def test_the_openapi_description_lists_every_endpoint_and_needs_no_credential(client):
    spec = client.get("/api/v1/openapi.json").json()

    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) == {
        "/openapi.json",
        "/site",
        "/site/data",
        "/site/identity",
        "/work",
        "/contributions/{id}",
        "/federations/{id}/models/{version}",
    }


def test_a_site_that_leaves_gets_no_more_work_and_its_open_work_is_dropped(client, cast):
    membership = cast["federation"].memberships.get(site=cast["sites"]["alpha"])

    services.membership_leave(membership=membership)

    assert contribution_of(cast, "alpha").status == Contribution.Status.DROPPED
    assert call(client, "get", "/api/v1/work", cast["credentials"]["alpha"]).status_code == 204
    with pytest.raises(services.FederationError, match="the membership is left"):
        services.membership_leave(membership=membership)


def test_a_site_registers_its_identity_key(client, cast):
    public = base64.b64encode(SigningKey.generate().public).decode()

    response = call(
        client, "put", "/api/v1/site/identity", cast["credentials"]["alpha"], {"public_key": public}
    )

    assert response.status_code == 200
    assert Site.objects.get(name="alpha").identity_key == public


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("not base64!", "'public_key' is not valid base64"),
        (base64.b64encode(b"short").decode(), "must be a 32-byte Ed25519 public key"),
        (None, "'public_key' must be a base64 string"),
    ],
)
def test_a_malformed_identity_key_is_refused_with_the_reason(client, cast, key, message):
    response = call(
        client, "put", "/api/v1/site/identity", cast["credentials"]["alpha"], {"public_key": key}
    )

    assert response.status_code == 400
    assert message in response.json()["error"]
    assert Site.objects.get(name="alpha").identity_key == ""
