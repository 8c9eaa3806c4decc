"""The browser pages: who may see and do what, and the journey of a site joining."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from federation.models import (
    Contribution,
    Fault,
    Federation,
    Membership,
    ModelVersion,
    Round,
    Site,
    StageMessage,
)
from federation.services import sites
from tests.app.pages import ACTORS, Controls, signed_in
from tests.cast import PASSWORD, Cast

pytestmark = pytest.mark.django_db

CREDENTIAL = re.compile(r"tfs_[A-Za-z0-9_-]{20,}")
LOGIN = "login"  # expected outcome: a redirect to the login page


PAGES = {
    "signup": lambda c: reverse("pages:signup"),
    "login": lambda c: reverse("login"),
    "logout": lambda c: reverse("logout"),
    "federations": lambda c: reverse("pages:federations"),
    "federation": lambda c: reverse("pages:federation", args=[c.federation.id]),
    "progress": lambda c: reverse("pages:federation-progress", args=[c.federation.id]),
    "start": lambda c: reverse("pages:federation-start", args=[c.federation.id]),
    "extend": lambda c: reverse("pages:federation-extend", args=[c.federation.id]),
    "approve": lambda c: reverse(
        "pages:membership-approve", args=[c.federation.id, c.membership.id]
    ),
    "suspend": lambda c: reverse(
        "pages:membership-suspend", args=[c.federation.id, c.membership.id]
    ),
    "my sites": lambda c: reverse("pages:my-sites"),
    "new site": lambda c: reverse("pages:site-new"),
    "site": lambda c: reverse("pages:site", args=[c.site.name]),
    "join": lambda c: reverse("pages:site-join", args=[c.site.name]),
    "pause": lambda c: reverse("pages:site-participation", args=[c.site.name]),
    "leave": lambda c: reverse("pages:membership-leave", args=[c.site.name, c.membership.id]),
    "credential": lambda c: reverse("pages:site-credential", args=[c.site.name]),
}

# page, method, and the expected answer for: anonymous, site owner, other owner, admin.
# Sites answer 404 to all but their owner; admin actions answer 403 to other users.
MATRIX = [
    ("signup", "GET", (200, 302, 302, 302)),
    ("login", "GET", (200, 200, 200, 200)),
    ("logout", "POST", (302, 302, 302, 302)),
    ("federations", "GET", (200, 200, 200, 200)),
    ("federation", "GET", (200, 200, 200, 200)),
    ("progress", "GET", (200, 200, 200, 200)),
    ("start", "POST", (LOGIN, 403, 403, 302)),
    ("extend", "POST", (LOGIN, 403, 403, 302)),
    ("approve", "POST", (LOGIN, 403, 403, 302)),
    ("suspend", "POST", (LOGIN, 403, 403, 302)),
    ("my sites", "GET", (LOGIN, 200, 200, 200)),
    ("new site", "GET", (LOGIN, 200, 200, 200)),
    ("site", "GET", (LOGIN, 200, 404, 404)),
    ("join", "POST", (LOGIN, 302, 404, 404)),
    ("pause", "POST", (LOGIN, 302, 404, 404)),
    ("leave", "POST", (LOGIN, 302, 404, 404)),
    ("credential", "POST", (LOGIN, 302, 404, 404)),  # 302: not approved yet, says why
]
CASES = [
    pytest.param(page, method, actor, expected, id=f"{page}-{actor}")
    for page, method, answers in MATRIX
    for actor, expected in zip(ACTORS, answers, strict=True)
]
POST_DATA = {"join": {"federation": "{federation}"}, "pause": {"status": "paused"}}


@pytest.mark.parametrize(("page", "method", "actor", "expected"), CASES)
def test_each_page_answers_each_actor_as_the_matrix_says(
    client, cast, page, method, actor, expected
):
    url = PAGES[page](cast)
    data = {k: v.format(federation=cast.federation.id) for k, v in POST_DATA.get(page, {}).items()}
    if page == "join":
        cast.membership.delete()  # so the owner's site can ask again
    signed_in(client, cast, actor)

    response = client.get(url) if method == "GET" else client.post(url, data)

    if expected == LOGIN:
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    else:
        assert response.status_code == expected


@pytest.mark.parametrize(
    "page", ["start", "extend", "approve", "suspend", "join", "pause", "leave", "credential"]
)
def test_a_get_on_an_action_goes_to_its_page_and_triggers_nothing(client, cast, page):
    admin_action = page in {"start", "extend", "approve", "suspend"}
    client.force_login(cast.admin if admin_action else cast.owner)

    response = client.get(PAGES[page](cast))
    put = client.put(PAGES[page](cast))

    assert response.status_code == 302
    assert response["Location"] == PAGES["federation" if admin_action else "site"](cast)
    assert put.status_code == 405 and put["Allow"] == "POST"
    cast.membership.refresh_from_db()
    cast.federation.refresh_from_db()
    cast.site.refresh_from_db()
    assert (cast.membership.status, cast.federation.status) == ("requested", "draft")
    assert cast.site.status == "active" and not cast.site.credential_hash


def test_errors_are_pages_of_the_app_that_say_why_and_lead_back(client, cast):
    missing = client.get("/federations/999999/")
    client.force_login(cast.owner)  # not the federation's admin
    forbidden = client.post(PAGES["start"](cast))
    refused = client.put(PAGES["start"](cast))
    api = client.get("/api/v1/nothing-here")

    assert missing.status_code == 404
    assert "This page is not here" in missing.content.decode()
    assert "only the federation&#x27;s admin can do this" in forbidden.content.decode().lower()
    assert forbidden.status_code == 403
    assert refused.status_code == 405 and "takes a form's submission only" in (
        refused.content.decode()
    )
    for page in (missing, forbidden, refused):
        assert 'href="/federations/"' in page.content.decode()  # a way back
    assert api.status_code == 404 and api["Content-Type"].startswith("application/json")


def test_the_server_error_page_stands_alone():
    from django.template.loader import render_to_string

    page = render_to_string("500.html")

    assert "Something went wrong on our side" in page and 'href="/"' in page


def test_another_owner_cannot_leave_a_membership_through_their_own_site(client, cast):
    url = reverse("pages:membership-leave", args=[cast.other_site.name, cast.membership.id])
    client.force_login(cast.outsider)

    response = client.post(url)

    assert response.status_code == 404
    cast.membership.refresh_from_db()
    assert cast.membership.status == Membership.Status.REQUESTED


def test_the_admin_cannot_approve_a_membership_of_another_federation(client, cast):
    elsewhere = Federation.objects.create(name="fd002-fleet", admin=cast.outsider)
    foreign = Membership.objects.create(federation=elsewhere, site=cast.other_site)
    client.force_login(cast.admin)

    response = client.post(
        reverse("pages:membership-approve", args=[cast.federation.id, foreign.id])
    )

    assert response.status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == Membership.Status.REQUESTED


# --- the journey ---------------------------------------------------------------------


def test_a_new_user_signs_up_creates_a_site_joins_gets_approved_pauses_and_leaves(cast):
    owner, admin = Client(), Client()
    admin.force_login(cast.admin)

    signup = owner.post(
        reverse("pages:signup"),
        {"username": "nina", "password1": PASSWORD, "password2": PASSWORD},
    )
    created = owner.post(reverse("pages:site-new"), {"name": "east-hangar"})
    site = Site.objects.get(name="east-hangar")
    joined = owner.post(
        reverse("pages:site-join", args=[site.name]), {"federation": cast.federation.id}
    )
    membership = Membership.objects.get(site=site, federation=cast.federation)
    approved = admin.post(
        reverse("pages:membership-approve", args=[cast.federation.id, membership.id]),
        follow=True,
    )
    issued = owner.post(reverse("pages:site-credential", args=[site.name]))

    assert signup.status_code == 302 and signup["Location"] == reverse("pages:my-sites")
    assert site.owner.username == "nina"
    assert created["Location"] == reverse("pages:site", args=[site.name])
    assert joined.status_code == 302
    assert not CREDENTIAL.search(approved.content.decode())  # the admin never sees it
    assert "its owner gets the site" in approved.content.decode().lower()
    assert issued.status_code == 200
    shown = CREDENTIAL.findall(issued.content.decode())
    assert len(set(shown)) == 1
    credential = shown[0]
    site.refresh_from_db()
    assert site.credential_hash == hashlib.sha256(credential.encode()).hexdigest()
    command = (
        f"SITE_CREDENTIAL={credential} .venv/bin/python manage.py site_worker "
        "--coordinator http://testserver/ --data-dir PATH"
    )
    assert command in issued.content.decode()
    assert "no-store" in issued["Cache-Control"]
    assert credential not in issued.request["PATH_INFO"]

    federation_page = admin.get(reverse("pages:federation", args=[cast.federation.id]))
    site_page = owner.get(reverse("pages:site", args=[site.name]))

    assert credential not in federation_page.content.decode()
    assert credential not in site_page.content.decode()
    assert not CREDENTIAL.search(federation_page.content.decode())

    paused = owner.post(
        reverse("pages:site-participation", args=[site.name]), {"status": "paused"}, follow=True
    )
    left = owner.post(
        reverse("pages:membership-leave", args=[site.name, membership.id]), follow=True
    )

    site.refresh_from_db()
    membership.refresh_from_db()
    assert site.status == Site.Status.PAUSED
    assert membership.status == Membership.Status.LEFT
    assert "paused by its owner" in paused.content.decode()
    assert f"left {cast.federation.name}" in left.content.decode()


def test_approving_again_after_a_suspension_leaves_the_credential_alone(client, cast):
    client.force_login(cast.admin)
    approve = reverse("pages:membership-approve", args=[cast.federation.id, cast.membership.id])
    suspend = reverse("pages:membership-suspend", args=[cast.federation.id, cast.membership.id])
    client.post(approve)
    first_hash = (
        sites.site_issue_credential(site=cast.site)
        and Site.objects.get(id=cast.site.id).credential_hash
    )

    client.post(suspend)
    again = client.post(approve, follow=True)

    cast.site.refresh_from_db()
    assert not CREDENTIAL.search(again.content.decode())
    assert cast.site.credential_hash == first_hash
    cast.membership.refresh_from_db()
    assert cast.membership.status == Membership.Status.APPROVED


def test_a_credential_comes_once_a_federation_has_approved_the_site(client, cast):
    client.force_login(cast.owner)
    url = reverse("pages:site-credential", args=[cast.site.name])
    before = client.get(PAGES["site"](cast)).content.decode()

    refused = client.post(url, follow=True).content.decode()

    assert 'id="credential-not-yet"' in before and "Get the site's credential" not in before
    assert "north-hangar is in no federation yet: ask to join one" in refused
    assert not CREDENTIAL.search(refused)
    cast.site.refresh_from_db()
    assert not cast.site.credential_hash
    approve(cast)
    after = client.get(PAGES["site"](cast)).content.decode()
    assert "Get the site's credential" in after
    assert CREDENTIAL.search(client.post(url).content.decode())
    rotate = client.get(PAGES["site"](cast)).content.decode()
    assert 'id="rotate-credential"' in rotate and "a worker running with it is cut off" in rotate


def test_a_new_credential_is_shown_once_and_replaces_the_old_one(client, cast):
    approve(cast)
    client.force_login(cast.owner)
    url = reverse("pages:site-credential", args=[cast.site.name])

    first_shown = CREDENTIAL.search(client.post(url).content.decode())
    response = client.post(url)

    second_shown = CREDENTIAL.search(response.content.decode())
    assert first_shown and second_shown
    first, second = first_shown.group(), second_shown.group()
    cast.site.refresh_from_db()
    assert first != second
    assert cast.site.credential_hash == hashlib.sha256(second.encode()).hexdigest()
    assert "stopped working" in response.content.decode()


def test_the_credential_page_points_the_site_at_the_api_pool(client, cast, settings):
    settings.SITE_API_URL = "https://api.fleet.example.com/"
    approve(cast)
    client.force_login(cast.owner)

    page = client.post(reverse("pages:site-credential", args=[cast.site.name])).content.decode()

    assert "--coordinator https://api.fleet.example.com/ --data-dir PATH" in page


# --- federations -----------------------------------------------------------------------


def test_the_list_shows_approved_sites_and_the_latest_accepted_models_test_rmse(client, cast):
    Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.APPROVED)
    accepted, rejected, candidate = (ModelVersion.Status.ACCEPTED, "rejected", "candidate")
    for version, rmse, status in [
        (0, 40.0, accepted),
        (1, 17.25, accepted),
        (2, 90.0, rejected),
        (3, 16.0, candidate),  # not scored by the sites yet
    ]:
        ModelVersion.objects.create(
            federation=cast.federation,
            version=version,
            sha256="0" * 64,
            metrics={"test": {"literature": {"rmse": rmse}}},
            status=status,
        )

    response = client.get(reverse("pages:federations"))

    rows = response.context["rows"]
    assert [(r["federation"].name, r["approved_sites"], r["rmse"]) for r in rows] == [
        ("fd001-fleet", 1, 17.25)
    ]
    assert "17.25" in response.content.decode()


def test_the_detail_shows_rounds_versions_and_the_privacy_mode(client, cast):
    round_ = Round.objects.create(
        federation=cast.federation,
        number=0,
        kind=Round.Kind.POINTS,
        status=Round.Status.FAILED,
        reason="only 0 approved, active sites",
        deadline="2030-01-01T00:00Z",
    )
    ModelVersion.objects.create(
        federation=cast.federation, round=round_, version=0, sha256="a" * 64, metrics={}
    )

    page = client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()

    assert "operating points" in page and "only 0 approved, active sites" in page
    assert "not scored" in page
    assert "secure aggregation (SecAgg+): the coordinator sees only the sum" in page
    assert "north-hangar" not in page  # memberships are for the admin's eyes


def test_the_versions_table_says_which_model_was_rejected_and_why(client, cast):
    for version, status, verdict in [
        (0, ModelVersion.Status.ACCEPTED, ""),
        (1, ModelVersion.Status.REJECTED, "3 of 4 sites found it worse than the accepted model"),
        (2, ModelVersion.Status.CANDIDATE, ""),
    ]:
        ModelVersion.objects.create(
            federation=cast.federation,
            version=version,
            sha256="a" * 64,
            status=status,
            verdict=verdict,
        )

    page = client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()

    assert "rejected: 3 of 4 sites found it worse than the accepted model" in page
    assert "candidate: the next round&#x27;s sites score it" in page


def test_the_admin_sees_a_site_common_to_repeated_rejections_flagged(client, cast):
    suspect, other = cast.site.id, cast.other_site.id
    for version, suspects in [(1, [suspect, other]), (2, [suspect]), (3, [])]:
        ModelVersion.objects.create(
            federation=cast.federation,
            version=version,
            sha256="a" * 64,
            status=ModelVersion.Status.REJECTED,
            suspects=suspects,
        )
    url = reverse("pages:federation", args=[cast.federation.id])
    public = client.get(url).content.decode()
    client.force_login(cast.admin)

    page = client.get(url).content.decode()

    assert "north-hangar: rejected versions 1, 2" in page
    assert f"{cast.other_site.name}: rejected" not in page  # once is not a pattern
    assert "Flagged" not in public


def test_the_admin_sees_who_broke_the_protocol_and_how(client, cast):
    round_ = Round.objects.create(
        federation=cast.federation, kind="train", number=3, deadline=timezone.now()
    )
    Fault.objects.create(
        federation=cast.federation,
        round=round_,
        site=cast.site,
        stage="masked_input",
        detail="its shares for site 2 are bad (an encrypted share failed authentication)",
    )
    url = reverse("pages:federation", args=[cast.federation.id])
    public = client.get(url).content.decode()
    client.force_login(cast.admin)

    page = client.get(url).content.decode()

    assert "north-hangar</td><td>train 3</td><td>masked input</td>" in page
    assert "its shares for site 2 are bad" in page
    assert "member-faults" not in public


def test_the_admin_sees_pending_requests_with_their_buttons(client, cast):
    client.force_login(cast.admin)

    response = client.get(reverse("pages:federation", args=[cast.federation.id]))

    page = response.content.decode()
    assert [m.site.name for m in response.context["pending"]] == ["north-hangar"]
    assert response.context["members"] == []
    assert "Approve north-hangar" in page and "Suspend north-hangar" in page
    assert "Start the federation" in page


def test_approved_sites_move_to_the_members_with_only_a_suspend_button(client, cast):
    Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.APPROVED)
    client.force_login(cast.admin)

    response = client.get(reverse("pages:federation", args=[cast.federation.id]))

    page = response.content.decode()
    assert response.context["pending"] == []
    assert [m.site.name for m in response.context["members"]] == ["north-hangar"]
    assert "Suspend north-hangar" in page and "Approve north-hangar" not in page


def test_a_running_federation_offers_no_start_button(client, cast):
    Federation.objects.filter(id=cast.federation.id).update(status=Federation.Status.RUNNING)
    client.force_login(cast.admin)

    page = client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()

    assert "Start the federation" not in page


def test_starting_without_enough_sites_fails_the_first_round_with_its_reason(client, cast):
    client.force_login(cast.admin)

    response = client.post(
        reverse("pages:federation-start", args=[cast.federation.id]), follow=True
    )

    cast.federation.refresh_from_db()
    assert cast.federation.status == Federation.Status.FAILED
    assert "the federation needs 3 per round" in response.content.decode()


def test_a_refused_start_shows_the_reason_as_a_message(client, cast):
    Federation.objects.filter(id=cast.federation.id).update(status=Federation.Status.RUNNING)
    client.force_login(cast.admin)

    response = client.post(
        reverse("pages:federation-start", args=[cast.federation.id]), follow=True
    )

    assert "the federation is running: it cannot start" in response.content.decode()


def test_approving_twice_shows_the_refusal_as_a_message(client, cast):
    Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.APPROVED)
    client.force_login(cast.admin)

    response = client.post(
        reverse("pages:membership-approve", args=[cast.federation.id, cast.membership.id]),
        follow=True,
    )

    assert "nothing to approve" in response.content.decode()


# --- sites ------------------------------------------------------------------------------


def test_my_sites_lists_only_the_users_own_sites(client, cast):
    Site.objects.filter(id=cast.site.id).update(
        data_summary={"train_rows": 1234, "train_engines": 7, "subsets": ["FD001"]}
    )
    client.force_login(cast.owner)

    page = client.get(reverse("pages:my-sites")).content.decode()

    assert "north-hangar" in page and "south-hangar" not in page
    assert "1234 rows, 7 engines" in page
    assert "fd001-fleet (requested)" in page


def test_a_duplicate_site_name_is_reported_on_the_form(client, cast):
    client.force_login(cast.outsider)

    response = client.post(reverse("pages:site-new"), {"name": "north-hangar"})

    assert response.status_code == 200
    assert "exists already: pick another name" in response.content.decode()
    assert Site.objects.filter(name="north-hangar").count() == 1


@pytest.mark.parametrize("name", ["new", "not a slug", ""])
def test_reserved_or_malformed_site_names_are_refused(client, cast, name):
    client.force_login(cast.owner)

    response = client.post(reverse("pages:site-new"), {"name": name})

    assert response.status_code == 200
    assert response.context["form"].errors["name"]
    assert not Site.objects.filter(name=name).exists()


def test_the_join_form_lists_only_federations_the_site_is_not_in(client, cast):
    Federation.objects.create(name="fd002-fleet", admin=cast.admin)
    client.force_login(cast.owner)

    response = client.get(reverse("pages:site", args=[cast.site.name]))

    choices = [f.name for f in response.context["join_form"].fields["federation"].queryset]
    assert choices == ["fd002-fleet"]


def test_a_site_that_left_can_ask_to_join_again(client, cast):
    Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.LEFT)
    client.force_login(cast.owner)

    client.post(
        reverse("pages:site-join", args=[cast.site.name]), {"federation": cast.federation.id}
    )

    cast.membership.refresh_from_db()
    assert cast.membership.status == Membership.Status.REQUESTED


def test_a_paused_site_can_resume(client, cast):
    Site.objects.filter(id=cast.site.id).update(status=Site.Status.PAUSED)
    client.force_login(cast.owner)

    page = client.get(reverse("pages:site", args=[cast.site.name])).content.decode()
    client.post(reverse("pages:site-participation", args=[cast.site.name]), {"status": "active"})

    cast.site.refresh_from_db()
    assert "Resume participation" in page
    assert cast.site.status == Site.Status.ACTIVE


# --- accounts ---------------------------------------------------------------------------


def test_logging_in_lands_on_my_sites_and_logging_out_on_the_home_page(client, cast):
    logged_in = client.post(
        reverse("login"), {"username": "olga", "password": PASSWORD}, follow=True
    )
    logged_out = client.post(reverse("logout"))

    assert logged_in.redirect_chain[-1][0] == "/sites/"
    assert logged_out["Location"] == "/"
    assert client.get(reverse("pages:my-sites")).status_code == 302


def test_an_admin_lands_on_the_federation_with_requests_waiting(client, cast):
    quiet = Federation.objects.create(name="newer-but-quiet", admin=cast.admin)

    logged_in = client.post(
        reverse("login"), {"username": cast.admin.username, "password": PASSWORD}, follow=True
    )

    assert quiet.id > cast.federation.id  # the newer one has no request waiting
    assert logged_in.redirect_chain[-1][0] == f"/federations/{cast.federation.id}/"
    assert "Approve north-hangar" in logged_in.content.decode()


def test_wrong_passwords_pause_an_address_before_any_more_are_tried(client, cast, settings):
    settings.AXES_FAILURE_LIMIT = 3
    answers = [
        client.post(reverse("login"), {"username": "olga", "password": "guess"}).status_code
        for _ in range(3)
    ]
    assert answers == [200, 200, 429]  # the form again with its error, then the pause

    right = client.post(reverse("login"), {"username": "olga", "password": PASSWORD})

    assert right.status_code == 429  # refused without checking the password
    assert "Too many failed logins" in right.content.decode()
    assert "Try again in 15 minutes" in right.content.decode()
    other = Client(REMOTE_ADDR="203.0.113.9")  # another address is not paused
    assert other.post(reverse("login"), {"username": "olga", "password": PASSWORD})["Location"] == (
        "/accounts/landing/"
    )


def test_behind_a_proxy_the_address_is_the_one_the_proxy_saw(rf, settings):
    from config.client_ip import client_ip

    settings.TRUSTED_PROXIES = 1
    forged = rf.get("/", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7", REMOTE_ADDR="10.0.0.2")
    direct = rf.get("/", REMOTE_ADDR="10.0.0.2")

    assert client_ip(forged) == "198.51.100.7"  # what the client wrote itself is ignored
    assert client_ip(direct) == "10.0.0.2"
    settings.TRUSTED_PROXIES = 0
    assert client_ip(forged) == "10.0.0.2"


def test_every_page_carries_the_link_bar(client, cast):
    anonymous = client.get(reverse("pages:federations")).content.decode()
    client.force_login(cast.owner)
    signed = client.get(reverse("pages:site", args=[cast.site.name])).content.decode()

    assert "Log in" in anonymous and "Sign up" in anonymous and "Log out" not in anonymous
    assert "Log out (olga)" in signed and "My sites" in signed and "Federations" in signed


@pytest.mark.parametrize(
    ("actor", "expected"),
    [("anonymous", 302), ("owner", 200), ("outsider", 404), ("admin", 200)],
)
def test_model_files_go_to_the_admin_and_owners_of_member_sites_only(client, cast, actor, expected):
    Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.APPROVED)
    version = ModelVersion.objects.create(federation=cast.federation, version=0, sha256="a" * 64)
    version.file.save("v0.rulmodel", ContentFile(b"weights"))
    url = reverse("pages:model-download", args=[cast.federation.id, 0])

    response: HttpResponseBase = signed_in(client, cast, actor).get(url)

    assert response.status_code == expected
    if expected == 200:
        assert isinstance(response, StreamingHttpResponse)  # a file is streamed
        assert response.getvalue() == b"weights"  # the streamed content, joined
        assert response["X-Model-SHA256"] == "a" * 64


# --- a running federation: progress, rounds, the chart -----------------------------------


def approve(cast: Cast) -> None:
    Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.APPROVED)


def running_round(cast: Cast, *, stage: str = "") -> Round:
    """Training round 1 of the cast's federation, collecting from both hangars."""
    Federation.objects.filter(id=cast.federation.id).update(status=Federation.Status.RUNNING)
    Membership.objects.create(
        federation=cast.federation, site=cast.other_site, status=Membership.Status.APPROVED
    )
    approve(cast)
    ModelVersion.objects.create(
        federation=cast.federation,
        version=0,
        status=ModelVersion.Status.ACCEPTED,
        sha256="b" * 64,
        metrics={
            "test": {"literature": {"rmse": 41.5, "score": 12345.6}, "strict": {"rmse": 44.0}},
            "federated_val_rmse": 39.25,
        },
    )
    round_ = Round.objects.create(
        federation=cast.federation,
        number=1,
        status=Round.Status.COLLECTING,
        stage=stage,
        deadline=timezone.now() + timedelta(minutes=5),
    )
    Contribution.objects.create(
        round=round_,
        site=cast.site,
        status=Contribution.Status.RECEIVED,
        received_at=timezone.now(),
        examples=1200,
    )
    Contribution.objects.create(round=round_, site=cast.other_site)
    return round_


def progress_json(client: Client, cast: Cast) -> dict:
    response = client.get(reverse("pages:federation-progress", args=[cast.federation.id]))
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    return response.json()


def test_progress_json_carries_the_running_round_the_tables_and_the_figure(client, cast):
    running_round(cast)

    page = progress_json(client, cast)

    assert page["status"] == "running" and page["running"] is True
    assert page["live"]["headline"] == "Training round 1 of 10: collecting."
    assert page["live"]["round"] == {
        "value": 1,
        "max": 2,
        "text": "1 of 2 sites have sent their input",
    }
    assert page["live"]["overall"]["text"] == "0 of 10 training rounds done"
    assert re.fullmatch(r"Closes at the latest in (4 min 5\d s|5 min)\.", page["live"]["deadline"])
    [row] = page["rounds"]
    assert row["live"] is True
    assert [c["text"] for c in row["cells"]][:5] == ["1", "training", "collecting", "1 of 2", "0"]
    [version] = page["versions"]
    assert [c["text"] for c in version["cells"]][:4] == ["0", "41.50", "12,346", "39.25"]
    traces = {t["name"]: t["y"] for t in page["figure"]["data"]}
    assert traces == {
        "test RMSE": [41.5],
        "sites' validation RMSE": [39.25],
        "NASA score": [12345.6],
    }
    assert page["figure"]["layout"]["yaxis2"]["type"] == "log"


def test_a_poller_with_the_current_progress_gets_a_bodiless_304(client, cast):
    running_round(cast)
    url = reverse("pages:federation-progress", args=[cast.federation.id])
    first = client.get(url)

    again = client.get(url, HTTP_IF_NONE_MATCH=first["ETag"])

    assert first.status_code == 200 and first["ETag"].startswith('"')
    assert again.status_code == 304 and again.content == b""
    assert "private" in again["Cache-Control"]


def test_progress_is_computed_once_a_second_for_each_view_of_it(client, cast, settings):
    settings.PROGRESS_CACHE_SECONDS = 60
    round_ = running_round(cast)
    url = reverse("pages:federation-progress", args=[cast.federation.id])
    public = client.get(url).json()
    Contribution.objects.filter(round=round_, site=cast.other_site).update(
        status=Contribution.Status.RECEIVED, received_at=timezone.now()
    )

    assert client.get(url).json() == public  # served from the cache
    client.force_login(cast.admin)  # another view of it: its own computation
    admin = client.get(url).json()
    assert admin["live"]["round"]["text"] == "2 of 2 sites have sent their input"
    assert admin["budget"] == public["budget"] and "north-hangar" in json.dumps(admin)
    assert "north-hangar" not in json.dumps(public)


def test_progress_json_follows_the_database_between_two_polls(client, cast):
    round_ = running_round(cast)
    first = progress_json(client, cast)

    Contribution.objects.filter(round=round_, site=cast.other_site).update(
        status=Contribution.Status.RECEIVED, received_at=timezone.now()
    )
    second = progress_json(client, cast)

    assert first["live"]["round"]["text"] == "1 of 2 sites have sent their input"
    assert second["live"]["round"]["text"] == "2 of 2 sites have sent their input"


@pytest.mark.parametrize(
    ("actor", "named"),
    [("anonymous", False), ("outsider", True), ("owner", True), ("admin", True)],
)
def test_only_the_admin_and_members_see_which_sites_answered(client, cast, actor, named):
    running_round(cast)  # both hangars are members now, "other" owns one of them
    outsider = type(cast.admin).objects.create_user("uma", password=PASSWORD)
    signed_in(client, cast, actor)
    if actor == "anonymous":
        client.force_login(outsider)  # signed in but not a member: same as anonymous

    page = progress_json(client, cast)
    html = client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()

    sites_cell = page["rounds"][0]["cells"][3]["text"]
    assert sites_cell == ("1 of 2: north-hangar" if named else "1 of 2")
    assert ("north-hangar" in html) is named


def test_the_live_round_shows_its_secure_aggregation_stage_and_who_answered_it(client, cast):
    round_ = running_round(cast, stage="share_keys")
    StageMessage.objects.create(round=round_, site=cast.site, stage="share_keys")
    StageMessage.objects.create(round=round_, site=cast.site, stage="advertise_keys")

    page = progress_json(client, cast)

    assert page["live"]["stage"] == (
        "Secure aggregation, stage 2 of 4, share keys: 1 of 2 sites answered this stage"
    )
    assert page["rounds"][0]["cells"][2]["text"] == "collecting (share keys)"


def test_a_finished_federation_stops_asking_for_updates(client, cast):
    Federation.objects.filter(id=cast.federation.id).update(status=Federation.Status.FINISHED)

    page = progress_json(client, cast)
    html = client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()

    assert page["running"] is False
    assert page["live"]["headline"] == "Finished: 0 training rounds done."
    assert "Reload the page to see later changes." in html


def test_the_admin_of_a_finished_federation_may_run_more_rounds_and_hears_why_not(client, cast):
    client.force_login(cast.admin)
    page = PAGES["federation"](cast)
    assert 'id="extend-federation"' not in client.get(page).content.decode()  # a draft
    Federation.objects.filter(id=cast.federation.id).update(status=Federation.Status.FINISHED)

    html = client.get(page).content.decode()
    not_a_number = client.post(PAGES["extend"](cast), {"rounds": "ten"}, follow=True)
    untrained = client.post(PAGES["extend"](cast), {"rounds": "10"}, follow=True)

    assert 'id="extend-federation"' in html and 'name="rounds"' in html
    assert "its sites wait with no work" in html
    assert "Say how many more rounds to run: a whole number" in not_a_number.content.decode()
    assert "has trained no round yet" in untrained.content.decode()
    cast.federation.refresh_from_db()
    assert cast.federation.status == Federation.Status.FINISHED


def test_the_detail_page_renders_the_same_rows_without_javascript(client, cast):
    running_round(cast)

    html = client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()

    assert "Training round 1 of 10: collecting." in html
    assert 'id="round-progress" max="2" value="1"' in html
    assert '<td data-label="Test RMSE" class="number">41.50</td>' in html
    assert '<script id="metrics-figure" type="application/json">' in html


def test_plotly_comes_from_the_apps_own_static_files(client, cast):
    running_round(cast)

    html = client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()
    bundle = client.get("/static/plotly/plotly.min.js")

    sources = re.findall(r'<script[^>]* src="([^"]+)"', html)
    assert sources == ["/static/plotly/plotly.min.js", "/static/dashboard/federation.js"]
    assert bundle.status_code == 200
    plain = b"".join(bundle.streaming_content)
    assert b"plotly" in plain[:2000].lower()
    assert "http://" not in html.split("<body>")[0] and "https://" not in html
    # A browser that accepts gzip gets the bundle gzipped: under a third of the bytes.
    zipped = client.get("/static/plotly/plotly.min.js", headers={"accept-encoding": "gzip, br"})
    assert zipped["Content-Encoding"] == "gzip"
    body = b"".join(zipped.streaming_content)
    assert len(body) < len(plain) / 3 and gzip.decompress(body) == plain


def test_the_list_counts_each_site_once_and_shows_progress_scores_and_privacy(client, cast):
    round_ = running_round(cast)
    untrained = client.get(reverse("pages:federations")).content.decode()
    Round.objects.filter(id=round_.id).update(status=Round.Status.DONE)
    ModelVersion.objects.filter(federation=cast.federation).update(version=1)  # it trained

    response = client.get(reverse("pages:federations"))

    [row] = response.context["rows"]
    assert (row["approved_sites"], row["training_done"], row["rmse"], row["score"]) == (
        2,
        1,
        41.5,
        12345.6,
    )
    page = response.content.decode()
    assert "1 of 10" in page and "12346" in page
    assert "secure aggregation (SecAgg+)" in page
    # Version 0 is the untrained initial model: its scores are no one's achievement.
    assert "not trained yet" in untrained and "41.50" not in untrained


# --- a site's portal -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_seen", "expected"),
    [
        (None, "has not connected yet"),
        (timedelta(seconds=20), "polling: last request less than a minute ago"),
        (timedelta(minutes=30), "quiet: last request 30"),
    ],
)
def test_the_site_page_says_whether_its_worker_polls(client, cast, last_seen, expected):
    seen = timezone.now() - last_seen if last_seen is not None else None
    Site.objects.filter(id=cast.site.id).update(last_seen=seen)
    client.force_login(cast.owner)

    page = client.get(reverse("pages:site", args=[cast.site.name])).content.decode()

    assert expected in page


def test_the_site_page_shows_its_data_and_what_the_coordinator_received_from_it(client, cast):
    round_ = running_round(cast, stage="masked_input")
    Site.objects.filter(id=cast.site.id).update(
        data_summary={"train_rows": 5123, "train_engines": 25, "subsets": ["FD001", "FD003"]}
    )
    StageMessage.objects.create(
        round=round_, site=cast.site, stage="advertise_keys", body={"share_public": "k" * 40}
    )
    masked = StageMessage(round=round_, site=cast.site, stage="masked_input", body={})
    masked.vector.save("masked.uint64", ContentFile(b"x" * 2048))
    StageMessage.objects.create(
        round=round_, site=cast.other_site, stage="advertise_keys", body={"secret": "theirs"}
    )
    client.force_login(cast.owner)

    response = client.get(reverse("pages:site", args=[cast.site.name]))

    page = response.content.decode()
    sent = response.context["sent"]
    assert [(e["what"], e["round"], e["bytes"]) for e in sent] == [
        ("secure aggregation: masked input", 1, 2048),
        ("secure aggregation: advertise keys", 1, len('{"share_public":"' + "k" * 40 + '"}')),
    ]
    assert "theirs" not in page and "k" * 40 not in page  # sizes, never content
    assert "5123" in page and "FD001, FD003" in page
    assert "2.0\xa0KB" in page
    assert "manage.py site_log --state-dir var/sites/north-hangar" in page


def test_another_owner_gets_404_for_a_site_portal_and_sees_nothing_of_its_log(client, cast):
    running_round(cast)
    client.force_login(cast.outsider)

    response = client.get(reverse("pages:site", args=[cast.site.name]))

    assert response.status_code == 404
    assert "1200" not in response.content.decode()


# --- accessibility ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "page"),
    [
        ("anonymous", "signup"),
        ("anonymous", "login"),
        ("anonymous", "federations"),
        ("admin", "federation"),
        ("owner", "my sites"),
        ("owner", "new site"),
        ("owner", "site"),
    ],
)
def test_every_control_has_a_label_and_headings_go_in_order(client, cast, actor, page):
    running_round(cast)
    Federation.objects.create(name="fd002-fleet", admin=cast.admin)  # something to join
    signed_in(client, cast, actor)

    parser = Controls()
    parser.feed(client.get(PAGES[page](cast)).content.decode())

    assert parser.unlabelled() == []
    assert parser.headings_in_order()


def test_a_plain_round_says_it_is_plain_and_who_sent_their_input(client, cast):
    round_ = running_round(cast, stage="plain_input")
    StageMessage.objects.create(round=round_, site=cast.site, stage="plain_input")

    page = progress_json(client, cast)

    assert page["live"]["stage"] == (
        "Plain aggregation, for debugging: 1 of 2 sites sent their input in the clear"
    )


def test_the_site_page_says_what_work_the_site_has_or_why_it_has_none(client, cast):
    client.force_login(cast.owner)

    def work() -> str:
        html = client.get(PAGES["site"](cast)).content.decode()
        return html.split('class="work">', 1)[1].split("</td>", 1)[0]

    assert work() == "No work yet: the federation&#x27;s admin has not approved the request."
    approve(cast)
    assert work().startswith("Waiting for the federation&#x27;s admin to start it")
    round_ = running_round(cast)
    Contribution.objects.filter(round=round_, site=cast.site).delete()
    assert work() == (
        "Training round 1 started before this site joined: it takes part from the next."
    )
    Contribution.objects.create(round=round_, site=cast.site)
    assert work() == "Taking part in training round 1: the worker answers its stages."
    Federation.objects.filter(id=cast.federation.id).update(status=Federation.Status.FINISHED)
    assert work().startswith("The federation has finished: no work will come unless its admin")
    Site.objects.filter(id=cast.site.id).update(status=Site.Status.PAUSED)
    assert work() == "No work while participation is paused: resume it above."


def test_pausing_and_leaving_say_what_will_happen_before_they_act(client, cast):
    approve(cast)
    client.force_login(cast.owner)

    page = client.get(PAGES["site"](cast)).content.decode()

    pause = page.split('id="pause-participation"', 1)[1].split("</details>", 1)[0]
    assert "<summary>Pause participation…</summary>" in pause
    assert "The site gets no more work in any federation until you resume" in pause
    assert "Yes, pause participation</button>" in pause
    leave = page.split("Leave federation…</summary>", 1)[1].split("</details>", 1)[0]
    assert "to come back it must ask to join again and be approved" in leave
    assert "Yes, leave</button>" in leave


def test_the_site_page_shows_the_fingerprint_of_the_sites_registered_key(client, cast):
    from federation.core.secagg.primitives import SigningKey, fingerprint

    client.force_login(cast.owner)
    before = client.get(PAGES["site"](cast)).content.decode()
    public = SigningKey.generate().public
    sites.site_register_identity(site=cast.site, public_key=base64.b64encode(public).decode())

    after = client.get(PAGES["site"](cast)).content.decode()

    assert "not registered yet: the worker registers it when it starts" in before
    assert f"<code>{fingerprint(public)}</code>" in after
