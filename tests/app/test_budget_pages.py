"""The privacy budget on the pages: spent against the target for everyone, the ledger for
the federation's admin, each site's own ledger and cap for its owner."""

# The pages' fixtures are imported by name, and pytest passes them back in.
# ruff: noqa: F811

from __future__ import annotations

from html import unescape

import pytest
from django.test import Client
from django.urls import reverse

from federation.core.privacy import PrivacySettings, budget_preview
from federation.models import Federation, Membership, PrivacySpend, Site
from tests.app.pages import Controls, signed_in
from tests.cast import Cast

pytestmark = pytest.mark.django_db

PRIVACY = PrivacySettings(noise_multiplier=1.1, clip=0.5, epsilon=8.0, delta=1e-5)
SPENT = "epsilon 3.2 of 8 spent, 4.8 left"
# The federation's lines, oldest first: (kind, description, epsilon after).
FEDERATION_LINES = [
    (PrivacySpend.Kind.TRAINING, "training round 1", 1.9),
    (PrivacySpend.Kind.ANALYTICS, "analytics query: mean of sensor 7", 2.4),
    (PrivacySpend.Kind.TRAINING, "training round 2", 3.2),
]
# north-hangar's lines: it was not in the running for the query.
SITE_LINES = [
    (PrivacySpend.Kind.TRAINING, "training round 1", 1.9),
    (PrivacySpend.Kind.TRAINING, "training round 2", 2.6),
]


def line(cast: Cast, site: Site | None, kind: str, description: str, epsilon: float) -> None:
    PrivacySpend.objects.create(
        federation=cast.federation,
        site=site,
        kind=kind,
        description=description,
        noise_multiplier=PRIVACY.noise_multiplier,
        sample_fraction=PRIVACY.sample_fraction,
        epsilon=epsilon,
        delta=PRIVACY.delta,
    )


def with_ledger(cast: Cast) -> None:
    """The cast's federation with DP, north-hangar approved, and a few rounds spent."""
    Federation.objects.filter(id=cast.federation.id).update(privacy=PRIVACY.to_dict())
    cast.federation.refresh_from_db()
    Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.APPROVED)
    for kind, description, epsilon in FEDERATION_LINES:
        line(cast, None, kind, description, epsilon)
    for kind, description, epsilon in SITE_LINES:
        line(cast, cast.site, kind, description, epsilon)
    # Another site's line, for no one but its owner.
    line(cast, cast.other_site, PrivacySpend.Kind.ANALYTICS, "south-hangar's own query", 0.7)


def federation_page(client: Client, cast: Cast) -> str:
    return unescape(
        client.get(reverse("pages:federation", args=[cast.federation.id])).content.decode()
    )


def progress_json(client: Client, cast: Cast) -> dict:
    return client.get(reverse("pages:federation-progress", args=[cast.federation.id])).json()


def site_page(client: Client, cast: Cast) -> str:
    return unescape(client.get(reverse("pages:site", args=[cast.site.name])).content.decode())


def cap_url(cast: Cast) -> str:
    return reverse("pages:membership-cap", args=[cast.site.name, cast.membership.id])


# --- the federation's page --------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "sees_ledger"),
    [("anonymous", False), ("outsider", False), ("owner", False), ("admin", True)],
)
def test_everyone_sees_spent_against_the_target_and_only_the_admin_the_ledger(
    client, cast, actor, sees_ledger
):
    with_ledger(cast)
    signed_in(client, cast, actor)

    page = federation_page(client, cast)

    assert SPENT in page
    assert 'id="budget-progress" max="8.0" value="3.2"' in page
    assert "1.1: the sum of the sites' updates carries Gaussian noise" in page
    assert "8 at delta 1e-05: no training round or analytics query starts" in page
    assert "every approved site takes part in each training round" in page
    assert ('id="ledger-table"' in page) is sees_ledger
    assert ("analytics query: mean of sensor 7" in page) is sees_ledger
    assert "south-hangar's own query" not in page


def test_the_admins_ledger_lists_each_run_newest_first_with_the_epsilon_after_it(client, cast):
    with_ledger(cast)
    client.force_login(cast.admin)

    budget = progress_json(client, cast)["budget"]

    rows = [[c["text"] for c in row["cells"]][1:] for row in budget["ledger"]]
    assert rows == [
        ["training round", "training round 2", "1.1", "1", "3.2"],
        ["analytics query", "analytics query: mean of sensor 7", "1.1", "1", "2.4"],
        ["training round", "training round 1", "1.1", "1", "1.9"],
    ]
    assert budget["ledger"][0]["cells"][0]["label"] == "When"


def test_the_progress_json_carries_the_budget_and_follows_a_new_line(client, cast):
    with_ledger(cast)

    first = progress_json(client, cast)["budget"]
    line(cast, None, PrivacySpend.Kind.TRAINING, "training round 3", 3.9)
    second = progress_json(client, cast)["budget"]

    assert (first["value"], first["max"], first["text"]) == (3.2, 8.0, SPENT)
    assert first["ledger"] is None  # the public gets the sum, never the lines
    assert second["text"] == "epsilon 3.9 of 8 spent, 4.1 left"


def test_a_sampled_federation_says_how_it_samples(client, cast):
    with_ledger(cast)
    sampled = {**PRIVACY.to_dict(), "sample_fraction": 0.25}
    Federation.objects.filter(id=cast.federation.id).update(privacy=sampled)

    page = federation_page(client, cast)

    assert "0.25: each training round draws each site with probability 0.25 (Poisson)" in page


def test_spending_past_a_lowered_target_fills_the_bar_and_says_none_is_left(client, cast):
    with_ledger(cast)
    lowered = {**PRIVACY.to_dict(), "epsilon": 3.0}
    Federation.objects.filter(id=cast.federation.id).update(privacy=lowered)

    budget = progress_json(client, cast)["budget"]

    assert (budget["value"], budget["max"]) == (3.0, 3.0)
    assert budget["text"] == "epsilon 3.2 of 3 spent, none left"


@pytest.mark.parametrize(
    ("secure", "words"),
    [
        (True, "secure aggregation still shows the coordinator only their sum"),
        (False, "in plain aggregation the coordinator sees every site's update"),
    ],
)
def test_a_federation_without_dp_says_so_and_has_no_budget(client, cast, secure, words):
    Federation.objects.filter(id=cast.federation.id).update(secure_aggregation=secure)
    client.force_login(cast.admin)

    page = federation_page(client, cast)

    assert "No differential privacy: the sites' updates carry no noise" in page
    assert words in page
    assert 'id="budget-meter"' not in page
    assert progress_json(client, cast)["budget"] is None


# --- a site's portal ---------------------------------------------------------------------


def test_the_owner_sees_what_the_site_spent_and_its_own_lines_only(client, cast):
    with_ledger(cast)
    client.force_login(cast.owner)

    response = client.get(reverse("pages:site", args=[cast.site.name]))

    page = unescape(response.content.decode())
    [budget] = response.context["budgets"]
    assert (
        budget["meter"]["text"] == "epsilon 2.6 of 8 spent, 5.4 left before the federation's target"
    )
    assert [[c["text"] for c in row["cells"]][2:] for row in budget["rows"]] == [
        ["training round 2", "1.1", "1", "2.6"],
        ["training round 1", "1.1", "1", "1.9"],
    ]
    assert "No cap of its own; the federation's target: epsilon 8." in page
    assert "Work that would take this site past its cap leaves it out." in page
    assert "analytics query: mean of sensor 7" not in page  # the site was not in it
    assert "south-hangar's own query" not in page


def test_a_site_in_federations_without_dp_has_nothing_to_cap(client, cast):
    client.force_login(cast.owner)

    page = site_page(client, cast)

    assert "None of the site's federations uses differential privacy" in page
    assert 'action="' + cap_url(cast) + '"' not in page


def csrf_client(cast: Cast) -> tuple[Client, str]:
    """The owner's browser, with Django's CSRF check on as in production."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.owner)
    client.get(reverse("pages:site", args=[cast.site.name]))
    return client, client.cookies["csrftoken"].value


def test_the_owner_sets_the_sites_cap_and_clears_it(cast):
    with_ledger(cast)
    client, token = csrf_client(cast)

    capped = client.post(
        cap_url(cast), {"epsilon_cap": "3", "csrfmiddlewaretoken": token}, follow=True
    )
    cast.membership.refresh_from_db()
    cap = cast.membership.epsilon_cap
    cleared = client.post(
        cap_url(cast), {"epsilon_cap": "", "csrfmiddlewaretoken": token}, follow=True
    )

    page = unescape(capped.content.decode())
    assert cap == 3.0
    assert (
        "The cap of north-hangar in fd001-fleet is epsilon 3: work that would take "
        "the site past it leaves it out." in page
    )
    assert "epsilon 2.6 of 3 spent" in page
    assert "Remove the cap" in page
    cast.membership.refresh_from_db()
    assert cast.membership.epsilon_cap is None
    assert "No cap of its own for north-hangar in fd001-fleet" in unescape(cleared.content.decode())
    assert "Remove the cap" not in cleared.content.decode()


def test_a_cap_below_what_the_site_spent_is_refused_with_the_reason(cast):
    with_ledger(cast)
    client, token = csrf_client(cast)

    refused = client.post(
        cap_url(cast), {"epsilon_cap": "2.5", "csrfmiddlewaretoken": token}, follow=True
    )

    cast.membership.refresh_from_db()
    assert cast.membership.epsilon_cap is None
    assert "would stop nothing that has run; set at least 2.6" in unescape(refused.content.decode())


def test_a_cap_without_the_csrf_token_is_refused(cast):
    with_ledger(cast)
    client, _ = csrf_client(cast)

    response = client.post(cap_url(cast), {"epsilon_cap": "2.5"})

    assert response.status_code == 403
    cast.membership.refresh_from_db()
    assert cast.membership.epsilon_cap is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "the cap must be a positive epsilon, or empty for none"),
        ("-1.5", "the cap must be a positive epsilon, or empty for none"),
        ("lots", "Enter a number."),
        ("inf", "Enter a number."),
    ],
)
def test_a_bad_cap_is_refused_on_the_form_and_the_old_one_stays(client, cast, value, message):
    with_ledger(cast)
    Membership.objects.filter(id=cast.membership.id).update(epsilon_cap=3.0)
    client.force_login(cast.owner)

    response = client.post(cap_url(cast), {"epsilon_cap": value})

    assert response.status_code == 200
    [budget] = response.context["budgets"]
    assert budget["form"].errors["epsilon_cap"] == [message]
    page = response.content.decode()
    assert 'aria-invalid="true"' in page
    cast.membership.refresh_from_db()
    assert cast.membership.epsilon_cap == 3.0


@pytest.mark.parametrize(("actor", "expected"), [("outsider", 404), ("admin", 404)])
def test_no_one_but_the_owner_may_set_the_sites_cap(client, cast, actor, expected):
    with_ledger(cast)
    signed_in(client, cast, actor)

    posted = client.post(cap_url(cast), {"epsilon_cap": "0.1"})

    assert posted.status_code == expected
    cast.membership.refresh_from_db()
    assert cast.membership.epsilon_cap is None


def test_the_cap_form_needs_a_signed_in_owner_and_a_post(client, cast):
    with_ledger(cast)

    anonymous = client.post(cap_url(cast), {"epsilon_cap": "1"})
    client.force_login(cast.owner)
    got = client.get(cap_url(cast))

    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert got.status_code == 302 and got["Location"] == f"/sites/{cast.site.name}/"
    cast.membership.refresh_from_db()
    assert cast.membership.epsilon_cap is None


@pytest.mark.parametrize("case", ["no dp", "left", "through another site"])
def test_there_is_no_cap_to_set_where_there_is_no_budget_or_membership(client, cast, case):
    with_ledger(cast)
    url = cap_url(cast)
    if case == "no dp":
        Federation.objects.filter(id=cast.federation.id).update(privacy=None)
    elif case == "left":
        Membership.objects.filter(id=cast.membership.id).update(status=Membership.Status.LEFT)
    else:  # another owner names the membership under their own site
        url = reverse("pages:membership-cap", args=[cast.other_site.name, cast.membership.id])
    client.force_login(cast.outsider if case == "through another site" else cast.owner)

    response = client.post(url, {"epsilon_cap": "1"})

    assert response.status_code == 404
    cast.membership.refresh_from_db()
    assert cast.membership.epsilon_cap is None


# --- accessibility ----------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["admin", "owner"])
def test_the_budget_controls_are_labelled_and_headings_go_in_order(client, cast, actor):
    with_ledger(cast)
    Membership.objects.filter(id=cast.membership.id).update(epsilon_cap=3.0)
    client.force_login(getattr(cast, actor))
    page = federation_page(client, cast) if actor == "admin" else site_page(client, cast)

    parser = Controls()
    parser.feed(page)

    assert parser.unlabelled() == []
    assert parser.headings[0] == 1
    assert all(b - a <= 1 for a, b in zip(parser.headings, parser.headings[1:], strict=False))
    assert '<th scope="col" class="number">Epsilon after</th>' in page
    assert '<th scope="row" data-label="When">' in page
    if actor == "owner":  # the field says what a cap does, to a screen reader too
        field = f"id_cap_{cast.membership.id}_epsilon_cap"
        assert f'aria-describedby="{field}_helptext"' in page
        assert f'<label for="{field}">Epsilon cap in fd001-fleet:</label>' in page


def test_the_federations_page_says_how_many_of_its_rounds_the_budget_allows(client, cast):
    with_ledger(cast)

    page = federation_page(client, cast)
    allowance = budget_preview(PRIVACY, cast.federation.rounds)

    assert 'id="budget-allowance"' in page and allowance in page
    assert progress_json(client, cast)["budget"]["allowance"] == allowance
