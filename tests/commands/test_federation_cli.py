"""``manage.py federation``: joining from the command line, the same services as the pages."""

from __future__ import annotations

import hashlib
import io
import json
import re

import pytest
from django.core.management import CommandError, call_command

from federation.models import AnalyticsQuery, Federation, Membership, Site
from federation.specs import federation_training

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("federation", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def users(django_user_model):
    return [django_user_model.objects.create_user(name) for name in ("boss", "ann", "bob")]


def test_a_site_joins_and_its_owner_gets_the_credential_once_with_the_command(users):
    run("create", "fleet", "--admin", "boss")
    run("join", "fleet", "ann-site", "--owner", "ann")
    approved = run("approve", "fleet", "ann-site")

    printed = run(
        "credential", "ann-site", "--owner", "ann", "--coordinator", "https://fleet.example.com/"
    )

    assert "tfs_" not in approved  # the admin never sees a site's credential
    found = re.search(r"SITE_CREDENTIAL=(\S+) \.venv/bin/python manage\.py site_worker", printed)
    assert found, "no credential printed"
    credential = found[1]
    assert "--coordinator https://fleet.example.com/ --data-dir PATH" in printed
    site = Site.objects.get(name="ann-site")
    assert site.credential_hash == hashlib.sha256(credential.encode()).hexdigest()
    assert Membership.objects.get(site=site).status == "approved"


def test_only_the_owner_can_get_a_sites_credential(users):
    run("create", "fleet", "--admin", "boss")
    run("join", "fleet", "ann-site", "--owner", "ann")

    with pytest.raises(CommandError, match="'bob' owns no site named 'ann-site'"):
        run("credential", "ann-site", "--owner", "bob")


def test_approving_twice_is_refused_and_shows_no_credential(users):
    run("create", "fleet", "--admin", "boss")
    run("join", "fleet", "ann-site", "--owner", "ann")
    run("approve", "fleet", "ann-site")

    with pytest.raises(CommandError, match="the membership is approved: nothing to approve"):
        run("approve", "fleet", "ann-site")


def test_nobody_joins_with_someone_elses_site(users):
    run("create", "fleet", "--admin", "boss")
    run("join", "fleet", "ann-site", "--owner", "ann")

    with pytest.raises(CommandError, match="belongs to another owner"):
        run("join", "fleet", "ann-site", "--owner", "bob")


def test_a_federation_below_its_minimum_fails_its_first_round_with_the_reason(users):
    run("create", "fleet", "--admin", "boss")
    run("join", "fleet", "ann-site", "--owner", "ann")
    run("approve", "fleet", "ann-site")

    run("start", "fleet")

    status = json.loads(run("status", "fleet"))
    assert status["status"] == "failed"
    assert status["rounds"][0]["reason"] == (
        "only 1 approved, active sites; the federation needs 3 per round"
    )


def test_a_secure_federation_of_fewer_than_three_sites_is_refused_a_plain_one_is_not(users):
    with pytest.raises(CommandError, match="no sum of fewer than 3 sites' inputs"):
        run("create", "fleet", "--admin", "boss", "--min-sites", "2")

    assert "plain aggregation" in run(
        "create", "debug", "--admin", "boss", "--min-sites", "2", "--plain"
    )


def test_a_federation_is_secure_unless_created_plain_and_says_so(users):
    created = run("create", "fleet", "--admin", "boss")
    plain = run("create", "debug-fleet", "--admin", "boss", "--plain")

    assert "secure aggregation (SecAgg+)" in created
    assert "plain aggregation, for debugging" in plain
    assert json.loads(run("status", "debug-fleet"))["privacy"].startswith("plain aggregation")
    assert Federation.objects.get(name="fleet").secure_aggregation


def test_a_federation_with_differential_privacy_and_a_sites_own_cap(users):
    created = run("create", "private", "--admin", "boss", "--dp-noise", "1.1", "--dp-epsilon", "4")
    run("join", "private", "ann-site", "--owner", "ann")

    capped = run("cap", "private", "ann-site", "--owner", "ann", "--epsilon", "2.5")

    assert "differential privacy: noise x1.1" in created and "budget epsilon 4" in created
    privacy = Federation.objects.get(name="private").privacy
    assert privacy is not None and privacy["noise_multiplier"] == 1.1
    assert "at most epsilon 2.5" in capped
    assert Membership.objects.get(site__name="ann-site").epsilon_cap == 2.5
    assert json.loads(run("status", "private"))["epsilon_spent"] == 0.0


def test_privacy_settings_that_cannot_work_are_refused_with_the_reason(users):
    with pytest.raises(CommandError, match="delta must be between 0 and 1"):
        run("create", "private", "--admin", "boss", "--dp-noise", "1", "--dp-delta", "2")
    with pytest.raises(CommandError, match="needs secure aggregation"):
        run("create", "private", "--admin", "boss", "--dp-noise", "1", "--plain")


def test_a_federation_that_personalises_keeps_its_settings_in_the_model_spec(users):
    run("create", "fedper", "--admin", "boss", "--personal-epochs", "5", "--private-head")
    run("create", "ditto", "--admin", "boss", "--personal-epochs", "5", "--ditto", "0.1")

    fedper = Federation.objects.get(name="fedper").model_spec["training"]
    ditto = Federation.objects.get(name="ditto").model_spec["training"]
    assert fedper["personal_epochs"] == 5 and fedper["private_head"] is True
    assert ditto["personal_epochs"] == 5 and ditto["ditto_mu"] == 0.1


def test_sites_optimisers_go_on_between_rounds_unless_the_federation_asks_afresh(users):
    run("create", "kept", "--admin", "boss")
    run("create", "fresh", "--admin", "boss", "--fresh-optimisers")

    assert federation_training(Federation.objects.get(name="kept")).site_optimiser is True
    assert federation_training(Federation.objects.get(name="fresh")).site_optimiser is False


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--private-head"], "a private head makes each site's model its own"),
        (["--ditto", "0.1"], "a Ditto model is chosen in the personalisation round"),
        (["--personal-epochs", "2", "--ditto", "nan"], "the Ditto weight must be from 0"),
        (["--personal-epochs", "2", "--ditto", "11"], "the Ditto weight must be from 0"),
        (
            ["--personal-epochs", "2", "--ditto", "0.1", "--private-head"],
            "choose one way to personalise during training",
        ),
    ],
)
def test_personalisation_settings_that_cannot_work_are_refused(users, flags, message):
    with pytest.raises(CommandError, match=message):
        run("create", "fleet", "--admin", "boss", *flags)
    assert not Federation.objects.filter(name="fleet").exists()


def test_a_federation_runs_more_rounds_only_once_it_has_trained(users):
    run("create", "fleet", "--admin", "boss")

    with pytest.raises(CommandError, match="has trained no round yet: start it instead"):
        run("extend", "fleet", "--rounds", "5")
    Federation.objects.filter(name="fleet").update(status=Federation.Status.FINISHED)
    with pytest.raises(CommandError, match="has trained no round yet: start it instead"):
        run("extend", "fleet", "--rounds", "5")
    with pytest.raises(CommandError, match="run from 1 to 200 more rounds"):
        run("extend", "fleet", "--rounds", "500")


def test_a_query_is_asked_and_a_bad_one_is_refused_with_the_reason(users):
    run("create", "fleet", "--admin", "boss")

    with pytest.raises(CommandError, match="--bins 's_2:1:2': write SENSOR:LOW:HIGH:COUNT"):
        run("query", "fleet", "--sensors", "s_2", "--bins", "s_2:1:2")
    with pytest.raises(CommandError, match="refused: only 0 approved, active sites"):
        run("query", "fleet", "--sensors", "s_2")
    answer = json.loads(run("answer", str(AnalyticsQuery.objects.get().id)))
    assert answer["status"] == "failed" and answer["query"]["sensors"] == ["s_2"]


def test_creating_a_private_federation_says_how_many_rounds_its_budget_allows(users):
    short = run(
        *("create", "short", "--admin", "boss", "--rounds", "10"),
        *("--dp-noise", "1.1", "--dp-epsilon", "8"),
    )
    enough = run(
        *("create", "enough", "--admin", "boss", "--rounds", "10"),
        *("--dp-noise", "2.1", "--dp-epsilon", "8"),
    )

    assert "WARNING: At noise x1.1 the budget (epsilon 8) allows only 2 of the 10" in short
    assert "all 10 would need noise x2.02 or more" in short
    assert "allows all 10 training rounds" in enough and "WARNING" not in enough
