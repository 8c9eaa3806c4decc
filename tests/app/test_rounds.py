"""The round state machine on the database: transitions, deadlines, restarts.

Plain rounds here (one stage: the state machine with the fewest steps); secure rounds
walk the same machine through four stages (test_secure_rounds.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from federation import scheduling
from federation.core import messages as m
from federation.models import Contribution, Federation, Round
from federation.services import rounds, stages

pytestmark = pytest.mark.django_db


@pytest.fixture
def plain(fleet):
    # Plain mode, for debugging, may sum as few as two sites' inputs.
    Federation.objects.filter(id=fleet.federation.id).update(secure_aggregation=False, min_sites=2)
    fleet.federation.refresh_from_db()
    return fleet


def overdue(round_: Round) -> None:
    Round.objects.filter(id=round_.id).update(deadline=timezone.now() - timedelta(seconds=1))
    round_.refresh_from_db()


def test_a_round_does_not_close_before_its_deadline_while_sites_are_missing(plain):
    round_ = plain.open()
    plain.answer("alpha")

    assert stages.stage_close(round_=round_) is False
    round_.refresh_from_db()
    assert round_.status == Round.Status.COLLECTING


def test_at_the_deadline_the_silent_sites_are_dropped_and_the_round_goes_on(plain):
    round_ = plain.open()
    plain.answer("alpha")
    plain.answer("beta")
    overdue(round_)

    assert stages.stage_close(round_=round_) is True
    dropped = round_.contributions.filter(status=Contribution.Status.DROPPED)
    assert sorted(dropped.values_list("site__name", flat=True)) == ["delta", "gamma"]
    assert round_.status == Round.Status.AGGREGATING
    assert stages.stage_close(round_=round_) is False  # a second close changes nothing


def test_below_the_minimum_the_round_fails_with_its_reason(plain):
    round_ = plain.open()
    plain.answer("alpha")
    overdue(round_)

    stages.stage_close(round_=round_)

    round_.refresh_from_db()
    plain.federation.refresh_from_db()
    assert round_.status == Round.Status.FAILED
    assert round_.reason == "1 of 4 sites answered by the deadline; the federation needs 2"
    assert plain.federation.status == Federation.Status.FAILED


def test_the_last_answer_ends_the_round_at_once_and_asks_for_its_aggregation(
    plain, scheduled, django_capture_on_commit_callbacks
):
    round_ = plain.open()

    with django_capture_on_commit_callbacks(execute=True):
        for site in ("alpha", "beta", "gamma", "delta"):
            plain.answer(site)

    round_.refresh_from_db()
    assert round_.status == Round.Status.AGGREGATING
    assert (scheduling.ROUND_AGGREGATE, (round_.id,)) in scheduled
    assert m.PLAIN_INPUT in round_.timings["stage_ends"]


def test_a_deadline_check_of_a_stage_that_is_over_does_nothing(fleet, scheduled):
    from worker.tasks import round_deadline

    round_ = fleet.open()
    fleet.stage(round_)  # every site advertised its keys: the round moved on
    overdue(round_)

    assert round_deadline(round_.id, "advertise_keys") is False
    round_.refresh_from_db()
    assert round_.stage == "share_keys" and round_.status == Round.Status.COLLECTING


def test_after_a_restart_every_unfinished_round_is_picked_up(plain, scheduled):
    collecting = plain.open(kind="points", number=0)
    aggregating = Round.objects.create(
        federation=plain.federation,
        kind=Round.Kind.TRAIN,
        number=1,
        status=Round.Status.AGGREGATING,
        deadline=timezone.now(),
    )
    half_open = Round.objects.create(
        federation=plain.federation, kind=Round.Kind.TRAIN, number=2, deadline=timezone.now()
    )
    scheduled.clear()

    rounds.rounds_resume()

    assert (scheduling.ROUND_DEADLINE, (collecting.id, m.PLAIN_INPUT)) in scheduled
    assert (scheduling.ROUND_AGGREGATE, (aggregating.id,)) in scheduled
    half_open.refresh_from_db()
    assert half_open.status == Round.Status.FAILED
    assert "stopped while opening" in half_open.reason


def test_the_progress_of_a_federation_of_trees_lists_its_newest_boost_rounds_and_folds_the_rest(
    cast,
):
    from federation.selectors.federations import SHOWN_BOOST_ROUNDS, federation_progress
    from federation.services import federations as federation_services
    from turbofan.models.trees import BoostingSettings

    grown = federation_services.federation_create(
        name="trees", admin=cast.admin, rounds=0, boosting=BoostingSettings(trees=20)
    )
    now = timezone.now()
    for number in range(1, 31):
        Round.objects.create(
            federation=grown,
            kind=Round.Kind.BOOST,
            number=number,
            deadline=now,
            status=Round.Status.DONE,
        )

    progress = federation_progress(federation=grown)

    listed = [r["number"] for r in progress["rounds"] if r["kind"] == "boost"]
    assert listed == list(range(31 - SHOWN_BOOST_ROUNDS, 31))
    assert progress["folded_boost_rounds"]["first"] == 1
    assert progress["folded_boost_rounds"]["last"] == 30 - SHOWN_BOOST_ROUNDS
    assert progress["family"] == "trees" and progress["trees"] == 0
    assert progress["most_trees"] == 20
