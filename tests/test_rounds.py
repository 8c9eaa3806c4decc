"""The round state machine on the database: transitions, deadlines, restarts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from federation import services
from federation.models import Contribution, Federation, Round

pytestmark = pytest.mark.django_db


@pytest.fixture
def federation(django_user_model):
    admin = django_user_model.objects.create_user("admin")
    # Plain rounds: the state machine, with payloads simple to write (secure rounds are
    # in test_secure_rounds.py).
    federation = Federation.objects.create(
        name="fleet", admin=admin, min_sites=2, secure_aggregation=False
    )
    for name in ("alpha", "beta", "gamma"):
        site = services.site_create(owner=django_user_model.objects.create_user(name), name=name)
        services.membership_approve(
            membership=services.membership_request(federation=federation, site=site)
        )
    return federation


def answer(round_: Round, site: str) -> None:
    contribution = round_.contributions.get(site__name=site)
    services.contribution_submit(
        contribution=contribution,
        result={"examples": 5, "payload": {"points": [[0, 0, 100]], "counts": [5]}},
    )


def test_a_round_does_not_close_before_its_deadline_while_sites_are_missing(federation, scheduled):
    round_ = services.round_open(federation=federation, kind=Round.Kind.POINTS, number=0)
    answer(round_, "alpha")

    assert services.round_close(round_=round_) is False
    round_.refresh_from_db()
    assert round_.status == Round.Status.COLLECTING


def test_at_the_deadline_the_silent_sites_are_dropped_and_the_round_goes_on(federation, scheduled):
    round_ = services.round_open(federation=federation, kind=Round.Kind.POINTS, number=0)
    answer(round_, "alpha")
    answer(round_, "beta")
    Round.objects.filter(id=round_.id).update(deadline=timezone.now() - timedelta(seconds=1))
    round_.refresh_from_db()

    assert services.round_close(round_=round_) is True
    assert round_.contributions.get(site__name="gamma").status == Contribution.Status.DROPPED
    assert round_.status == Round.Status.AGGREGATING
    assert services.round_close(round_=round_) is False  # a second close changes nothing


def test_below_the_minimum_the_round_fails_with_its_reason(federation, scheduled):
    round_ = services.round_open(federation=federation, kind=Round.Kind.POINTS, number=0)
    answer(round_, "alpha")
    Round.objects.filter(id=round_.id).update(deadline=timezone.now() - timedelta(seconds=1))
    round_.refresh_from_db()

    services.round_close(round_=round_)

    round_.refresh_from_db()
    federation.refresh_from_db()
    assert round_.status == Round.Status.FAILED
    assert round_.reason == "1 of 3 sites answered by the deadline; the federation needs 2"
    assert federation.status == Federation.Status.FAILED


def test_the_last_answer_asks_the_coordinator_to_close_at_once(
    federation, scheduled, django_capture_on_commit_callbacks
):
    round_ = services.round_open(federation=federation, kind=Round.Kind.POINTS, number=0)

    with django_capture_on_commit_callbacks(execute=True):
        for site in ("alpha", "beta", "gamma"):
            answer(round_, site)

    assert ("close", round_.id) in scheduled


def test_after_a_restart_every_unfinished_round_is_picked_up(federation, scheduled):
    collecting = services.round_open(federation=federation, kind=Round.Kind.POINTS, number=0)
    aggregating = Round.objects.create(
        federation=federation,
        kind=Round.Kind.TRAIN,
        number=1,
        status=Round.Status.AGGREGATING,
        deadline=timezone.now(),
    )
    half_open = Round.objects.create(
        federation=federation, kind=Round.Kind.TRAIN, number=2, deadline=timezone.now()
    )
    scheduled.clear()

    services.rounds_resume()

    assert ("deadline", collecting.id) in scheduled
    assert ("aggregate", aggregating.id) in scheduled
    half_open.refresh_from_db()
    assert half_open.status == Round.Status.FAILED
    assert "stopped while opening" in half_open.reason
