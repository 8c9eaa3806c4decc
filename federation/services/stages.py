"""Writes of a running round: the work a site pulls, what it sends in each stage, the end
of each stage, and the aggregation of a complete round.

Every round walks the stages of its mode (four under secure aggregation, one in plain
mode), collecting one message per site per stage (a :class:`StageMessage`) until every
site answered or the stage's deadline passes. Checks, stage ends, the sum and its
decoding are the round engine's (:mod:`federation.core.engine.coordinator`); here they
meet the database. Every transition is a guarded UPDATE
(``filter(id=..., status=FROM).update(status=TO)``) that stops when no row changed, so a
redelivered message or a second worker never counts a message twice or aggregates a round
twice.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from federation import scheduling
from federation.core import analytics
from federation.core import messages as m
from federation.core.engine import coordinator as engine
from federation.core.engine import state as federation_engine
from federation.core.engine.rounds import INPUT_STAGES, RoundParameters, next_round
from federation.core.messages import Kind
from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import Misbehaviour, SecAggError
from federation.errors import FederationError
from federation.models import (
    AnalyticsQuery,
    Contribution,
    Federation,
    Membership,
    ModelVersion,
    Round,
    Site,
    StageMessage,
)
from federation.services.faults import faults_record
from federation.services.rounds import round_fail, round_open
from federation.services.versions import (
    NewVersion,
    boosting_state,
    federation_state,
    latest_version,
    version_build,
    version_judge,
    version_record_validation,
)

log = logging.getLogger(__name__)


class RoundStore:
    """The messages a round has kept, as the round engine reads them."""

    def __init__(self, round_: Round, parameters: RoundParameters) -> None:
        self.round, self.parameters = round_, parameters

    def messages(self, stage: str) -> list[engine.StoredMessage]:
        rows = StageMessage.objects.filter(round=self.round, stage=stage).order_by("site_id")
        return [engine.StoredMessage(row.site_id, row.body, self._vector(row)) for row in rows]

    def senders(self, stage: str) -> set[int]:
        rows = StageMessage.objects.filter(round=self.round, stage=stage)
        return set(rows.values_list("site_id", flat=True))

    def _vector(self, row: StageMessage) -> np.ndarray | None:
        if not row.vector:
            return None
        secure = self.parameters.secure
        dtype = secure.quantiser.dtype if secure is not None else np.float64
        with row.vector.open("rb") as handle:
            return np.frombuffer(handle.read(), dtype=dtype)


def _parameters(round_: Round) -> RoundParameters:
    return RoundParameters.from_json(round_.parameters)


# --- the work a site pulls ---------------------------------------------------------------


def work_next(*, site: Site) -> Contribution | None:
    """The oldest open work assigned to this site whose current stage it has not answered,
    marked as fetched."""
    contribution = (
        Contribution.objects.select_related("round", "round__federation")
        .filter(
            site=site,
            site__status=Site.Status.ACTIVE,
            status=Contribution.Status.ASSIGNED,
            round__status=Round.Status.COLLECTING,
            # Only while the site is an approved member (not suspended, not gone).
            round__federation__memberships__site=site,
            round__federation__memberships__status=Membership.Status.APPROVED,
        )
        .exclude(stage=F("round__stage"))
        .order_by("round__opened_at")
        .first()
    )
    if contribution is not None:
        Contribution.objects.filter(id=contribution.id, fetched_at=None).update(
            fetched_at=timezone.now()
        )
    return contribution


def work_message(contribution: Contribution) -> dict[str, Any]:
    """What the site needs for its part of the round's current stage (no other site's
    data): the protocol's part, and in the stage where it sends its input, the task."""
    round_ = contribution.round
    parameters = _parameters(round_)
    kind = Kind(round_.kind)
    store = RoundStore(round_, parameters)
    work: dict[str, Any] = {
        m.KEY_KIND: kind,
        m.KEY_PROTOCOL: engine.stage_part(parameters, round_.stage, contribution.site_id, store),
    }
    if round_.stage in INPUT_STAGES:
        state = federation_state(round_.federation)
        work.update(federation_engine.task(kind, round_.number, state, _query(round_)))
    return work


def _query(round_: Round) -> analytics.Query | None:
    if round_.kind != Round.Kind.ANALYTICS:
        return None
    return analytics.Query.from_dict(AnalyticsQuery.objects.get(round=round_).query)


# --- what a site sends ---------------------------------------------------------------------


def stage_submit(*, contribution: Contribution, body: Any) -> None:
    """Check and keep a site's message for the round's current stage; once every site has
    answered, end the stage at once. Anything forged, replayed, misaddressed or of another
    stage is refused with a 400 that says what is wrong."""
    round_ = contribution.round
    stage = round_.stage
    if round_.status != Round.Status.COLLECTING:
        raise FederationError(f"the round is {round_.status}: results are closed")
    if contribution.status != Contribution.Status.ASSIGNED:
        raise FederationError(f"this site's part in the round is {contribution.status}")
    if contribution.stage == stage:
        raise FederationError(f"this site answered the {stage} stage of the round already")
    parameters = _parameters(round_)
    try:
        checked = engine.check_message(
            parameters, stage, contribution.site_id, body, RoundStore(round_, parameters)
        )
    except SecAggError as error:
        raise FederationError(f"refused: {error}", status=400) from None
    _store(round_, contribution, stage, checked)
    if not _pending(round_).exists():
        # Everyone answered: the next stage opens in this request (a hop through the
        # coordinator's queue would cost a broker poll per stage). The message is kept
        # already: if ending the stage fails here, the coordinator's worker ends it.
        try:
            with transaction.atomic():
                stage_close(round_=round_, stage=stage)
        except DatabaseError:
            log.exception("ending stage %s of round %s failed; the worker will", stage, round_.id)
            scheduling.enqueue_close(round_.id)


def _store(round_: Round, contribution: Contribution, stage: str, checked: engine.Checked) -> None:
    """Keep the message, then mark the stage answered, in one transaction; the vector's
    file is written first (whoever sees the message can read it) and removed if the
    message is not kept."""
    message = StageMessage(
        round=round_, site_id=contribution.site_id, stage=stage, body=checked.body
    )
    if checked.vector is not None:
        vector = checked.vector
        name = f"{round_.id}-{contribution.site_id}.{vector.dtype.name}"
        message.vector.save(name, ContentFile(vector.tobytes()), save=False)
    try:
        with transaction.atomic():
            message.save()
            fields: dict[str, Any] = {"stage": stage}
            if checked.vector is not None:
                fields.update(
                    examples=checked.examples, metrics=checked.metrics, received_at=timezone.now()
                )
            changed = (
                Contribution.objects.filter(
                    id=contribution.id,
                    status=Contribution.Status.ASSIGNED,
                    round__status=Round.Status.COLLECTING,
                    round__stage=stage,
                )
                .exclude(stage=stage)
                .update(**fields)
            )
            if not changed:
                raise IntegrityError("the stage moved on meanwhile")
            if checked.faults:  # shown by the message itself: see engine.check_message
                faults_record(
                    round_=round_,
                    stage=stage,
                    faults=checked.faults,
                    exclude=stage == p.MASKED_INPUT,
                )
    except IntegrityError:
        _forget_vector(message)
        raise FederationError(
            f"this site's {stage} message was received already, or the stage has closed"
        ) from None
    except BaseException:
        _forget_vector(message)  # nothing is kept of a message that was not stored
        raise
    contribution.refresh_from_db()


def _forget_vector(message: StageMessage) -> None:
    if message.vector:
        message.vector.delete(save=False)


# --- the end of a stage --------------------------------------------------------------------


def _pending(round_: Round) -> QuerySet[Contribution]:
    return Contribution.objects.filter(round=round_, status=Contribution.Status.ASSIGNED).exclude(
        stage=round_.stage
    )


def stage_close(*, round_: Round, stage: str | None = None) -> bool:
    """End the round's current stage (``stage``, if given) once every site answered or its
    deadline passed. Call it inside a transaction.

    The round is read again under a lock first: a check that loaded it before another
    request ended the stage must not end the next one. The silent are dropped (except in
    the unmask stage, whose silent sites' inputs are in the sum already); then the next
    stage opens with a fresh deadline, or the round is complete and goes to aggregation
    (returns True), or it fails with the reason.
    """
    now = timezone.now()
    current = Round.objects.select_for_update().select_related("federation").get(id=round_.id)
    if current.status != Round.Status.COLLECTING or stage not in (None, current.stage):
        round_.refresh_from_db()
        return False
    stage = current.stage
    pending = _pending(current)
    if pending.exists() and now < current.deadline:
        return False
    federation = current.federation
    parameters = _parameters(current)
    answered = Contribution.objects.filter(round=current, stage=stage).exclude(
        status__in=[Contribution.Status.DROPPED, Contribution.Status.EXCLUDED]
    )
    end = engine.end_stage(parameters, stage, answered=answered.count(), silent=pending.count())
    timings = _stage_timing(current, stage, now)
    if end.failure:
        round_fail(round_=current, reason=end.failure)
        round_.refresh_from_db()
        return False
    # The silent are dropped first: a late message of this stage then finds its
    # contribution dropped, and nobody can answer the next stage before the drop.
    dropped = pending.update(status=Contribution.Status.DROPPED) if end.drop_silent else 0
    if end.following is not None:
        deadline = now + timedelta(seconds=federation.round_deadline)
        Round.objects.filter(id=current.id).update(
            stage=end.following, deadline=deadline, timings=timings
        )
        scheduling.schedule_deadline(current.id, end.following, deadline)
        log.info(
            "stage closed federation=%s round=%s stage=%s dropped=%d next=%s",
            federation.id,
            current.number,
            stage,
            dropped,
            end.following,
        )
        round_.refresh_from_db()
        return False
    Round.objects.filter(id=current.id).update(
        status=Round.Status.AGGREGATING, closed_at=now, timings=timings
    )
    # Whoever is still assigned has its input in the sum.
    Contribution.objects.filter(round=current, status=Contribution.Status.ASSIGNED).update(
        status=Contribution.Status.RECEIVED
    )
    scheduling.enqueue_aggregate(current.id)
    log.info(
        "round closed federation=%s round=%s kind=%s", federation.id, current.number, current.kind
    )
    round_.refresh_from_db()
    return True


def _stage_timing(round_: Round, stage: str, now: Any) -> dict[str, Any]:
    """The round's timings with this stage's end, in seconds since the round opened."""
    ends = {**round_.timings.get("stage_ends", {})}
    ends[stage] = round((now - round_.opened_at).total_seconds(), 3)
    return {**round_.timings, "stage_ends": ends}


# --- aggregation ------------------------------------------------------------------------------


def round_aggregate(*, round_: Round) -> None:
    """Sum a complete round, decode the sum, store what it produced, open the next round.

    The aggregation is claimed first (a guarded UPDATE), so a second task for the same
    round does nothing; the work runs outside any transaction (SQLite would block the API
    meanwhile) and its results are written in one short transaction at the end.
    """
    claimed = Round.objects.filter(
        id=round_.id, status=Round.Status.AGGREGATING, aggregation_claimed_at=None
    ).update(aggregation_claimed_at=timezone.now())
    if not claimed:
        return
    round_.refresh_from_db()
    started = time.perf_counter()
    federation = round_.federation
    kind = Kind(round_.kind)
    parameters = _parameters(round_)
    state = federation_state(federation)
    store = RoundStore(round_, parameters)
    try:
        summed = engine.round_sum(parameters, store)
    except Misbehaviour as fault:  # a member dealt shares that rebuild nothing it committed to
        with transaction.atomic():
            faults_record(
                round_=round_, stage="aggregate", faults={fault.culprit: str(fault)}, exclude=True
            )
        round_fail(round_=round_, reason=f"aggregation failed: {fault}")
        return
    outcome = federation_engine.decode(
        kind,
        summed,
        parameters,
        state,
        _query(round_),
        summed_sites=engine.contributors(parameters, store),
        votes=engine.votes(parameters, store),
    )
    version: NewVersion | None = None
    # Boosted trees: the engine's own step gives the state the row keeps between rounds.
    after = federation_engine.advance(state, kind, outcome, number=round_.number)
    if kind == Kind.MOMENTS:
        assert outcome.pipeline is not None and outcome.weights is not None
        version = version_build(federation, outcome.pipeline, 0, outcome.weights)
    elif kind == Kind.TRAIN and outcome.weights is not None:  # none from a rejected start
        assert state.pipeline is not None
        version = version_build(federation, state.pipeline, round_.number, outcome.weights)
    elif kind == Kind.BOOST and (
        outcome.new_tree or (outcome.boosted and after.version > state.version)
    ):
        assert state.pipeline is not None and after.trees is not None
        version = version_build(federation, state.pipeline, after.version, after.trees, trees=True)
    elif kind == Kind.EVALUATE and outcome.share is not None:  # a hybrid's blend
        assert state.pipeline is not None and after.trees is not None and after.weights
        version = version_build(
            federation,
            state.pipeline,
            after.version,
            after.weights,
            blend=(after.trees, outcome.share),
        )
    timings = {**round_.timings, "aggregate_seconds": round(time.perf_counter() - started, 3)}
    with transaction.atomic():
        changed = Round.objects.filter(id=round_.id, status=Round.Status.AGGREGATING).update(
            status=Round.Status.DONE, finished_at=timezone.now(), timings=timings
        )
        if not changed:
            return
        _store_outcome(federation, round_, kind, outcome, version, state, after)
        if kind == Kind.ANALYTICS:  # a query: its answer, and nothing follows
            return
        federation.refresh_from_db()
        # Under DP the sites keep their validation errors home: no last scoring round.
        following = next_round(
            kind,
            round_.number,
            federation.rounds,
            evaluate=not federation.privacy,
            personalise=state.training.personal_epochs > 0,
            boost_rounds=state.training.boost_rounds,
            boosted=after.boosted,
        )
        if following is None:
            Federation.objects.filter(id=federation.id).update(status=Federation.Status.FINISHED)
            log.info("federation finished federation=%s", federation.id)
            return
        round_open(federation=federation, kind=following[0], number=following[1])


NOT_SCORED = (
    "not scored: under differential privacy the sites keep their validation errors home "
    "(each site's update is clipped and noised instead)"
)


def _store_outcome(
    federation: Federation,
    round_: Round,
    kind: Kind,
    outcome: federation_engine.Outcome,
    version: NewVersion | None,
    state: federation_engine.FederationState,
    after: federation_engine.FederationState,
) -> None:
    fields: dict[str, Any] = {}
    if state.grows_trees and kind in (Kind.SKETCH, Kind.BOOST, Kind.EVALUATE):
        fields["boosting_state"] = boosting_state(after)
    if kind == Kind.POINTS:
        fields["regimes"] = outcome.regimes
    elif kind == Kind.MOMENTS:
        fields["pipeline"] = outcome.pipeline
    elif kind in (Kind.TRAIN, Kind.EVALUATE, Kind.BOOST):
        incoming = latest_version(federation)  # the model the round started from
        # A boost round part-way through a tree scores the same trees as the round that
        # started it: their score is recorded once.
        scored_afresh = kind != Kind.BOOST or state.growing is None
        if incoming is not None and scored_afresh and not math.isnan(outcome.val_rmse):
            # Under DP the sites keep their validation errors home: none to record.
            version_record_validation(version=incoming, val_rmse=outcome.val_rmse)
        if incoming is not None and outcome.verdict is not None:
            suspects = version_judge(
                version=incoming,
                verdict=outcome.verdict,
                reason=outcome.reason,
                found_worse=outcome.found_worse,
            )
            if outcome.verdict == federation_engine.REJECTED:
                log.warning(
                    "candidate rejected federation=%s version=%s suspects=%s: %s",
                    federation.id,
                    incoming.version,
                    suspects,
                    outcome.reason,
                )
                fields["strategy_state"] = ""  # it moved with the rejected step
        if outcome.strategy_state:
            fields["strategy_state"] = default_storage.save(
                f"strategy/{federation.id}-r{round_.number}.npz",
                ContentFile(m.weights_to_bytes(outcome.strategy_state)),
            )
    elif kind == Kind.PERSONALISE:
        Round.objects.filter(id=round_.id).update(outcome={"choices": outcome.choices})
        log.info("personalised federation=%s choices=%s", federation.id, outcome.choices)
    elif kind == Kind.ANALYTICS:
        AnalyticsQuery.objects.filter(round=round_).update(
            status=AnalyticsQuery.Status.DONE, result=outcome.answer, finished_at=timezone.now()
        )
    if fields:
        Federation.objects.filter(id=federation.id).update(**fields)
    if version is None:
        return
    if kind == Kind.BOOST and outcome.boosted:  # the best trees, kept
        best = after.boost_best
        reason = "the trees cut back to their best number on the sites' validation engines"
        if best is not None:
            reason += f" ({best[1]} trees, RMSE {best[0]:.2f})"
        version.store(federation, round_, status=ModelVersion.Status.ACCEPTED, verdict=reason)
    elif kind == Kind.BOOST:  # a finished tree: the next round's sites score it
        version.store(federation, round_, status=ModelVersion.Status.CANDIDATE)
    elif kind == Kind.EVALUATE:  # a hybrid's network and trees, blended
        reason = (
            f"the network and the trees blended, {outcome.share:.0%} trees: the share the "
            "sites' validation engines preferred"
        )
        version.store(federation, round_, status=ModelVersion.Status.ACCEPTED, verdict=reason)
    elif kind != Kind.TRAIN:  # the initial model
        version.store(federation, None, status=ModelVersion.Status.ACCEPTED)
    elif federation.privacy:  # nobody scores it: see federation_engine.advance
        version.store(federation, round_, status=ModelVersion.Status.ACCEPTED, verdict=NOT_SCORED)
    else:  # the next round's sites score it against the accepted model
        version.store(federation, round_, status=ModelVersion.Status.CANDIDATE)
