"""Writes: joining, credentials, and the round state machine.

Every transition is a guarded UPDATE (``filter(id=..., status=FROM).update(status=TO)``)
and stops if no row changed, so a redelivered message or a second worker can never
count a result twice or aggregate a round twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from federation.core import messages, server
from federation.core.strategies import SiteResult, make_strategy
from federation.models import Contribution, Federation, Membership, ModelVersion, Round, Site
from federation.specs import evaluate_version, federation_recipe, federation_simulation
from turbofan.data.features import FeaturePipeline, RegimeModel
from turbofan.models.artefact import RulModel
from turbofan.models.fit import new_network_model
from turbofan.models.training import get_weights, seed_everything

log = logging.getLogger(__name__)

CREDENTIAL_PREFIX = "tfs_"


class FederationError(Exception):
    """A request the domain refuses; the message says why and what to do."""

    def __init__(self, message: str, *, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


# --- sites and membership ---------------------------------------------------------


def site_create(*, owner: AbstractBaseUser, name: str) -> Site:
    try:
        with transaction.atomic():
            return Site.objects.create(owner=owner, name=name)
    except IntegrityError:
        raise FederationError(f"a site named {name!r} exists already: pick another name") from None


def membership_request(*, federation: Federation, site: Site) -> Membership:
    membership, created = Membership.objects.get_or_create(federation=federation, site=site)
    if not created and membership.status == Membership.Status.LEFT:
        Membership.objects.filter(id=membership.id).update(status=Membership.Status.REQUESTED)
        membership.refresh_from_db()
    return membership


def membership_approve(*, membership: Membership) -> str | None:
    """Approve a request; return the site's credential if this is its first approval."""
    changed = Membership.objects.filter(
        id=membership.id, status__in=[Membership.Status.REQUESTED, Membership.Status.SUSPENDED]
    ).update(status=Membership.Status.APPROVED, decided_at=timezone.now())
    if not changed:
        raise FederationError(f"the membership is {membership.status}: nothing to approve")
    membership.refresh_from_db()
    if membership.site.credential_hash:
        return None
    return site_issue_credential(site=membership.site)


def membership_suspend(*, membership: Membership) -> None:
    """The admin stops a site's participation (it can be approved again)."""
    _membership_move(
        membership,
        [Membership.Status.REQUESTED, Membership.Status.APPROVED],
        Membership.Status.SUSPENDED,
    )


def membership_leave(*, membership: Membership) -> None:
    """The owner takes the site out; its unanswered work in open rounds is dropped."""
    _membership_move(
        membership,
        [Membership.Status.REQUESTED, Membership.Status.APPROVED, Membership.Status.SUSPENDED],
        Membership.Status.LEFT,
    )
    open_work = Contribution.objects.filter(
        site=membership.site,
        round__federation=membership.federation,
        status=Contribution.Status.ASSIGNED,
    )
    round_ids = list(open_work.values_list("round_id", flat=True))
    open_work.update(status=Contribution.Status.DROPPED)
    from worker.tasks import enqueue_close

    for round_id in round_ids:  # the round need not wait for a site that left
        transaction.on_commit(lambda round_id=round_id: enqueue_close(round_id))


def _membership_move(membership: Membership, sources: list[str], target: str) -> None:
    changed = Membership.objects.filter(id=membership.id, status__in=sources).update(
        status=target, decided_at=timezone.now()
    )
    if not changed:
        raise FederationError(f"the membership is {membership.status}: it cannot become {target}")
    membership.refresh_from_db()


def site_issue_credential(*, site: Site) -> str:
    """A new credential for the site (the old one stops working). Shown once, stored hashed."""
    credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(32)
    Site.objects.filter(id=site.id).update(
        credential_hash=hash_credential(credential), credential_issued_at=timezone.now()
    )
    site.refresh_from_db()
    return credential


def hash_credential(credential: str) -> str:
    # The credential is 256 random bits: a plain SHA-256 cannot be brute-forced.
    return hashlib.sha256(credential.encode()).hexdigest()


def site_authenticate(credential: str) -> Site | None:
    if not credential.startswith(CREDENTIAL_PREFIX):
        return None
    site = Site.objects.filter(credential_hash=hash_credential(credential)).first()
    if site is not None:
        Site.objects.filter(id=site.id).update(last_seen=timezone.now())
    return site


def site_set_status(*, site: Site, status: str) -> None:
    Site.objects.filter(id=site.id).update(status=status)
    site.refresh_from_db()


def site_report_data(*, site: Site, summary: dict[str, Any]) -> None:
    Site.objects.filter(id=site.id).update(data_summary=summary, last_seen=timezone.now())


# --- rounds -------------------------------------------------------------------------


def federation_start(*, federation: Federation) -> Round:
    changed = Federation.objects.filter(
        id=federation.id, status__in=[Federation.Status.DRAFT, Federation.Status.FAILED]
    ).update(status=Federation.Status.RUNNING, reason="")
    if not changed:
        raise FederationError(f"the federation is {federation.status}: it cannot start")
    federation.refresh_from_db()
    # After a failure, training goes on from the failed round with the latest model.
    failed = federation.round_set.filter(status=Round.Status.FAILED).order_by("-id").first()
    if failed is not None and failed.kind == Round.Kind.TRAIN:
        return round_open(federation=federation, kind=Round.Kind.TRAIN, number=failed.number)
    return round_open(federation=federation, kind=Round.Kind.POINTS, number=0)


def _participants(federation: Federation) -> list[Site]:
    return list(
        Site.objects.filter(
            status=Site.Status.ACTIVE,
            memberships__federation=federation,
            memberships__status=Membership.Status.APPROVED,
        ).order_by("name")
    )


def round_open(*, federation: Federation, kind: str, number: int) -> Round:
    """Open a round for the approved, active sites; fail it at once below the minimum."""
    deadline = timezone.now() + timedelta(seconds=federation.round_deadline)
    round_ = Round.objects.create(
        federation=federation, kind=kind, number=number, deadline=deadline
    )
    sites = _participants(federation)
    if len(sites) < federation.min_sites:
        round_fail(
            round_=round_,
            reason=f"only {len(sites)} approved, active sites; the federation needs "
            f"{federation.min_sites} per round",
        )
        return round_
    Contribution.objects.bulk_create([Contribution(round=round_, site=s) for s in sites])
    Round.objects.filter(id=round_.id, status=Round.Status.OPEN).update(
        status=Round.Status.COLLECTING
    )
    round_.refresh_from_db()
    from worker.tasks import schedule_deadline  # the task module imports this one

    transaction.on_commit(lambda: schedule_deadline(round_))
    log.info(
        "round opened federation=%s round=%s kind=%s sites=%d",
        federation.id,
        number,
        kind,
        len(sites),
    )
    return round_


def round_fail(*, round_: Round, reason: str) -> bool:
    changed = Round.objects.filter(
        id=round_.id,
        status__in=[Round.Status.OPEN, Round.Status.COLLECTING, Round.Status.AGGREGATING],
    ).update(status=Round.Status.FAILED, reason=reason, finished_at=timezone.now())
    if changed:
        Contribution.objects.filter(round=round_, status=Contribution.Status.ASSIGNED).update(
            status=Contribution.Status.DROPPED
        )
        log.warning(
            "round failed federation=%s round=%s: %s", round_.federation_id, round_.number, reason
        )
        Federation.objects.filter(id=round_.federation_id).update(
            status=Federation.Status.FAILED, reason=f"{round_}: {reason}"
        )
    round_.refresh_from_db()
    return bool(changed)


def work_next(*, site: Site) -> Contribution | None:
    """The oldest open work assigned to this site, marked as fetched."""
    if site.status != Site.Status.ACTIVE:
        return None
    contribution = (
        Contribution.objects.select_related("round", "round__federation")
        .filter(
            site=site, status=Contribution.Status.ASSIGNED, round__status=Round.Status.COLLECTING
        )
        .order_by("round__opened_at")
        .first()
    )
    if contribution is not None:
        Contribution.objects.filter(id=contribution.id, fetched_at=None).update(
            fetched_at=timezone.now()
        )
    return contribution


def work_message(contribution: Contribution) -> dict[str, Any]:
    """What the site needs to do its part of a round (no other site's data)."""
    round_ = contribution.round
    federation = round_.federation
    work: dict[str, Any] = {messages.KEY_KIND: round_.kind}
    if round_.kind == Round.Kind.MOMENTS:
        work[messages.KEY_REGIMES] = federation.regimes
    elif round_.kind == Round.Kind.TRAIN:
        version = federation.versions.order_by("-version").first()
        assert version is not None  # version 0 exists before the first training round
        simulation = federation_simulation(federation)
        local = simulation.local_config(round_.number, simulation.seed)
        strategy = make_strategy(federation.strategy, **federation.strategy_settings)
        work.update(
            {
                messages.KEY_PIPELINE: federation.pipeline,
                messages.KEY_RECIPE: federation_recipe(federation).to_dict(),
                messages.KEY_WEIGHTS: messages.b64(_version_weights(version)),
                messages.KEY_LOCAL: local.to_dict(),
                messages.KEY_PROXIMAL_MU: strategy.proximal_mu,
                "model_version": version.version,
            }
        )
    return work


def contribution_submit(*, contribution: Contribution, result: dict[str, Any]) -> None:
    """Store a site's result once; a second delivery of the same result is refused."""
    payload = result.get(messages.KEY_PAYLOAD)
    if contribution.round.status != Round.Status.COLLECTING:
        raise FederationError(f"the round is {contribution.round.status}: results are closed")
    data = _payload_bytes(contribution.round.kind, payload)
    changed = Contribution.objects.filter(
        id=contribution.id,
        status=Contribution.Status.ASSIGNED,
        round__status=Round.Status.COLLECTING,
    ).update(
        status=Contribution.Status.RECEIVED,
        examples=int(result.get(messages.KEY_EXAMPLES, 0)),
        metrics=result.get(messages.KEY_METRICS) or {},
        received_at=timezone.now(),
    )
    if not changed:
        raise FederationError("this result was received already, or the round has closed")
    contribution.refresh_from_db()
    contribution.payload.save(
        f"{contribution.round_id}-{contribution.site_id}.bin", ContentFile(data)
    )
    pending = Contribution.objects.filter(
        round=contribution.round, status=Contribution.Status.ASSIGNED
    ).exists()
    if not pending:
        from worker.tasks import enqueue_close

        round_id = contribution.round_id
        transaction.on_commit(lambda: enqueue_close(round_id))


def _payload_bytes(kind: str, payload: Any) -> bytes:
    """Validate a result's payload for its kind; the bytes to keep."""
    try:
        if kind == Round.Kind.TRAIN:
            data = messages.unb64(payload)
            messages.weights_from_bytes(data)
            return data
        if kind == Round.Kind.POINTS:
            messages.points_from_json(payload)
        else:
            messages.moments_from_json(payload)
        return json.dumps(payload).encode()
    except (ValueError, TypeError, KeyError) as error:
        raise FederationError(
            f"the result's payload is not valid for a {kind} round: {error}", status=400
        ) from None


def round_close(*, round_: Round) -> bool:
    """collecting -> aggregating once every site answered or the deadline passed.

    The sites that did not answer are dropped; with fewer answers than the
    minimum the round fails with that reason.
    """
    now = timezone.now()
    pending = round_.contributions.filter(status=Contribution.Status.ASSIGNED).exists()
    if pending and now < round_.deadline:
        return False
    changed = Round.objects.filter(id=round_.id, status=Round.Status.COLLECTING).update(
        status=Round.Status.AGGREGATING, closed_at=now
    )
    if not changed:
        return False
    dropped = Contribution.objects.filter(round=round_, status=Contribution.Status.ASSIGNED).update(
        status=Contribution.Status.DROPPED
    )
    round_.refresh_from_db()
    received = round_.contributions.filter(status=Contribution.Status.RECEIVED).count()
    minimum = round_.federation.min_sites
    if received < minimum:
        round_fail(
            round_=round_,
            reason=f"{received} of {received + dropped} sites answered by "
            f"the deadline; the federation needs {minimum}",
        )
        return False
    log.info(
        "round closed federation=%s round=%s received=%d dropped=%d",
        round_.federation_id,
        round_.number,
        received,
        dropped,
    )
    return True


def round_aggregate(*, round_: Round) -> None:
    """Aggregate a closed round, store what it produced, and open the next round."""
    if round_.status != Round.Status.AGGREGATING:
        return
    started = time.perf_counter()
    federation = round_.federation
    received = list(
        round_.contributions.filter(status=Contribution.Status.RECEIVED).order_by("site__name")
    )
    payloads = [c.payload.read() for c in received]
    if round_.kind == Round.Kind.POINTS:
        points = [messages.points_from_json(json.loads(p)) for p in payloads]
        template = federation_recipe(federation).pipeline(federation.subset)
        regimes = server.merge_regimes(points, template.n_regimes)
        Federation.objects.filter(id=federation.id).update(regimes=regimes.to_dict())
        next_round = (Round.Kind.MOMENTS, 0)
    elif round_.kind == Round.Kind.MOMENTS:
        moments = [messages.moments_from_json(json.loads(p)) for p in payloads]
        template = federation_recipe(federation).pipeline(federation.subset)
        regimes = RegimeModel.from_dict(federation.regimes)
        pipeline = server.merge_pipeline(template, regimes, moments)
        Federation.objects.filter(id=federation.id).update(pipeline=pipeline.to_dict())
        federation.refresh_from_db()
        _save_version(federation, None, _initial_weights(federation))
        next_round = (Round.Kind.TRAIN, 1)
    else:
        _aggregate_training(round_, received, payloads)
        next_round = (Round.Kind.TRAIN, round_.number + 1)
    timings = {**round_.timings, "aggregate_seconds": round(time.perf_counter() - started, 3)}
    changed = Round.objects.filter(id=round_.id, status=Round.Status.AGGREGATING).update(
        status=Round.Status.DONE, finished_at=timezone.now(), timings=timings
    )
    if not changed:
        return
    federation.refresh_from_db()
    kind, number = next_round
    if kind == Round.Kind.TRAIN and number > federation.rounds:
        Federation.objects.filter(id=federation.id).update(status=Federation.Status.FINISHED)
        log.info("federation finished federation=%s", federation.id)
        return
    round_open(federation=federation, kind=kind, number=number)


def _aggregate_training(round_: Round, received: list[Contribution], payloads: list[bytes]) -> None:
    federation = round_.federation
    current = federation.versions.order_by("-version").first()
    assert current is not None
    results = [
        SiteResult(messages.weights_from_bytes(p), c.examples, c.metrics)
        for c, p in zip(received, payloads, strict=True)
    ]
    strategy = make_strategy(federation.strategy, **federation.strategy_settings)
    if federation.strategy_state:
        with federation.strategy_state.open("rb") as handle:
            strategy.load_state(messages.weights_from_bytes(handle.read()))
    weights = strategy.aggregate(_version_weights_arrays(current), results)
    if strategy.state():
        federation.strategy_state.save(
            f"{federation.id}-r{round_.number}.npz",
            ContentFile(messages.weights_to_bytes(strategy.state())),
        )
    # The incoming model's validation error, summed over the sites' own validation engines.
    val = server.merge_validation(
        [
            (float(c.metrics.get("val_sse", 0.0)), int(c.metrics.get("val_count", 0)))
            for c in received
        ]
    )
    current.metrics = {**current.metrics, "federated_val_rmse": val}
    current.save(update_fields=["metrics"])
    _save_version(federation, round_, weights)


def _initial_weights(federation: Federation) -> list:  # type: ignore[type-arg]
    model = new_network_model(
        FeaturePipeline.from_dict(federation.pipeline), federation_recipe(federation)
    )
    seed_everything(federation_simulation(federation).seed)
    return get_weights(model.new_net())


def _save_version(federation: Federation, round_: Round | None, weights: list) -> ModelVersion:  # type: ignore[type-arg]
    number = 0 if round_ is None else round_.number
    model = new_network_model(
        FeaturePipeline.from_dict(federation.pipeline), federation_recipe(federation)
    )
    model.members = [weights]
    model.meta.update(federation=federation.name, version=number, setup="federated")
    content, digest = model.to_bytes()
    metrics = evaluate_version(model, federation.subset)
    version, _ = ModelVersion.objects.get_or_create(
        federation=federation,
        version=number,
        defaults={"round": round_, "sha256": digest, "metrics": metrics},
    )
    if not version.file:
        version.file.save(f"{federation.id}-v{number}.rulmodel", ContentFile(content))
    return version


def _version_weights_arrays(version: ModelVersion) -> list:  # type: ignore[type-arg]
    with version.file.open("rb") as handle:
        return RulModel.from_bytes(handle.read(), source=version.file.name).members[0]


def _version_weights(version: ModelVersion) -> bytes:
    return messages.weights_to_bytes(_version_weights_arrays(version))


def rounds_resume() -> list[int]:
    """After a coordinator restart: close overdue rounds, finish interrupted aggregations.

    Returns the ids of the rounds it acted on; rounds still collecting before their
    deadline get their deadline check scheduled again.
    """
    from worker.tasks import enqueue_aggregate, schedule_deadline

    touched = []
    for round_ in Round.objects.filter(status=Round.Status.COLLECTING):
        schedule_deadline(round_)
        touched.append(round_.id)
    for round_ in Round.objects.filter(status=Round.Status.AGGREGATING):
        enqueue_aggregate(round_.id)
        touched.append(round_.id)
    for round_ in Round.objects.filter(status=Round.Status.OPEN):
        round_fail(round_=round_, reason="the coordinator stopped while opening the round")
        touched.append(round_.id)
    return touched
