"""Writes: joining, credentials, and the round state machine.

Every transition is a guarded UPDATE (``filter(id=..., status=FROM).update(status=TO)``)
and stops if no row changed, so a redelivered message or a second worker can never
count a result twice or aggregate a round twice.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from federation import budget, secure
from federation.core import analytics, messages, server
from federation.core.privacy import Spend
from federation.core.secagg import session
from federation.core.secagg.aggregate import (
    DEFAULT_CLIP,
    TRAINING_EXTRAS,
    input_length,
    training_result,
)
from federation.core.secagg.protocol import MASKED_INPUT
from federation.core.strategies import SiteResult, make_strategy
from federation.errors import FederationError
from federation.models import (
    AnalyticsQuery,
    Contribution,
    Federation,
    Membership,
    ModelVersion,
    PrivacySpend,
    Round,
    Site,
)
from federation.specs import evaluate_version, federation_recipe, federation_simulation
from turbofan.data.features import FeaturePipeline, RegimeModel
from turbofan.models.artefact import RulModel
from turbofan.models.fit import new_network_model
from turbofan.models.training import get_weights, seed_everything

log = logging.getLogger(__name__)

CREDENTIAL_PREFIX = "tfs_"
# The L2 bound of a site's scaled query vector under DP (federation.core.analytics
# scales counts by the federation's total rows: a site's counts are at most 1).
QUERY_CLIP = 1.0


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


def membership_approve(*, membership: Membership) -> None:
    """Approve a request. The credential is the owner's to get, never the admin's to see:
    a credential is site-wide, and an admin of one federation must not hold a site's key
    to others."""
    changed = Membership.objects.filter(
        id=membership.id, status__in=[Membership.Status.REQUESTED, Membership.Status.SUSPENDED]
    ).update(status=Membership.Status.APPROVED, decided_at=timezone.now())
    if not changed:
        raise FederationError(f"the membership is {membership.status}: nothing to approve")
    membership.refresh_from_db()


def membership_suspend(*, membership: Membership) -> None:
    """The admin stops a site's participation (it can be approved again)."""
    _membership_move(
        membership,
        [Membership.Status.REQUESTED, Membership.Status.APPROVED],
        Membership.Status.SUSPENDED,
    )
    _drop_open_work(membership)


def membership_leave(*, membership: Membership) -> None:
    """The owner takes the site out of the federation."""
    _membership_move(
        membership,
        [Membership.Status.REQUESTED, Membership.Status.APPROVED, Membership.Status.SUSPENDED],
        Membership.Status.LEFT,
    )
    _drop_open_work(membership)


def _drop_open_work(membership: Membership) -> None:
    """The site's unanswered work in open rounds is dropped; those rounds need not wait."""
    open_work = Contribution.objects.filter(
        site=membership.site,
        round__federation=membership.federation,
        status=Contribution.Status.ASSIGNED,
    )
    round_ids = list(open_work.values_list("round_id", flat=True))
    open_work.update(status=Contribution.Status.DROPPED)
    from worker.tasks import enqueue_close

    for round_id in round_ids:
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
        # At most one write a minute per site: reads should not queue behind writes.
        now = timezone.now()
        if site.last_seen is None or now - site.last_seen > timedelta(seconds=60):
            Site.objects.filter(id=site.id).update(last_seen=now)
    return site


def site_set_status(*, site: Site, status: str) -> None:
    Site.objects.filter(id=site.id).update(status=status)
    site.refresh_from_db()


def site_report_data(*, site: Site, summary: dict[str, Any]) -> None:
    Site.objects.filter(id=site.id).update(data_summary=summary, last_seen=timezone.now())


# --- rounds -------------------------------------------------------------------------


def federation_start(*, federation: Federation) -> Round:
    """Start (or, after a failure, resume) a federation from its first unfinished step."""
    with transaction.atomic():
        changed = Federation.objects.filter(
            id=federation.id, status__in=[Federation.Status.DRAFT, Federation.Status.FAILED]
        ).update(status=Federation.Status.RUNNING, reason="")
        if not changed:
            raise FederationError(f"the federation is {federation.status}: it cannot start")
        federation.refresh_from_db()
        # After a failure, the failed step runs again (training from the latest model).
        failed = (
            federation.round_set.filter(status=Round.Status.FAILED)
            .exclude(kind=Round.Kind.ANALYTICS)
            .order_by("-id")
            .first()
        )
        if failed is not None:
            return round_open(federation=federation, kind=failed.kind, number=failed.number)
        return round_open(federation=federation, kind=Round.Kind.POINTS, number=0)


def _participants(federation: Federation) -> list[Site]:
    return list(
        Site.objects.filter(
            status=Site.Status.ACTIVE,
            memberships__federation=federation,
            memberships__status=Membership.Status.APPROVED,
        ).order_by("name")
    )


def round_open(
    *, federation: Federation, kind: str, number: int, query: AnalyticsQuery | None = None
) -> Round:
    """Open a round for the approved, active sites; fail it at once below the minimum.

    Under secure aggregation every round sums vectors: the model for training, the
    setup statistics and analytics queries from :mod:`federation.core.analytics`. A
    round that spends privacy (DP training, a query with noise) is admitted against
    the budget first.
    """
    deadline = timezone.now() + timedelta(seconds=federation.round_deadline)
    round_ = Round.objects.create(
        federation=federation, kind=kind, number=number, deadline=deadline
    )
    if query is not None:
        AnalyticsQuery.objects.filter(id=query.id).update(round=round_)
    sites = _participants(federation)
    if len(sites) < federation.min_sites:
        round_fail(
            round_=round_,
            reason=f"only {len(sites)} approved, active sites; the federation needs "
            f"{federation.min_sites} per round",
        )
        return round_
    noise = _round_noise(federation, kind, query)
    admission = None
    if noise is not None:
        if not federation.secure_aggregation:
            round_fail(
                round_=round_,
                reason="differential privacy adds its noise in shares inside the secure "
                "sum: turn secure aggregation on",
            )
            return round_
        admission = budget.admit(
            federation=federation,
            sites=sites,
            spend=Spend(noise[0], federation.privacy["sample_fraction"])
            if kind == Round.Kind.TRAIN
            else Spend(noise[0]),
            minimum=max(federation.min_sites, 2),
            what=_spend_description(round_),
        )
        if admission.refusal:
            round_fail(round_=round_, reason=admission.refusal)
            return round_
        sites = admission.sites
    if federation.secure_aggregation:
        ready = secure.round_begin(
            round_=round_,
            sites=sites,
            length=_secure_length(federation, kind, query),
            noise=noise,
            minimum=federation.min_sites,
            reference_max=_reference_max(federation) if kind == Round.Kind.TRAIN else 0.0,
        )
        minimum = max(federation.min_sites, 2)
        if len(ready) < minimum:
            round_fail(
                round_=round_,
                reason=f"only {len(ready)} approved, active sites have registered an "
                f"identity key (a site's worker registers one when it starts); secure "
                f"aggregation needs {minimum}",
            )
            return round_
        sites = ready
        if kind == Round.Kind.ANALYTICS and noise is not None:
            # The encoding's range must hold six standard deviations of a noise share.
            root = math.sqrt(round_.secagg[session.PRIVACY]["noise_sites"])
            largest = (DEFAULT_CLIP - 1) / 6 / noise[1] * root
            if noise[0] > largest:
                round_fail(
                    round_=round_,
                    reason=f"a noise multiplier of {noise[0]:g} is too large for the "
                    f"fixed-point range of a query over {len(ready)} sites: at most "
                    f"{largest:.3g}",
                )
                return round_
    elif kind == Round.Kind.ANALYTICS:
        round_fail(
            round_=round_,
            reason="analytics run over the secure sum only: turn secure aggregation on",
        )
        return round_
    if admission is not None:  # the round runs: its privacy cost goes into the ledger
        budget.record(
            federation=federation,
            admission=admission,
            kind=PrivacySpend.Kind.ANALYTICS
            if kind == Round.Kind.ANALYTICS
            else PrivacySpend.Kind.TRAINING,
            description=_spend_description(round_),
            round_=round_,
        )
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


def _round_noise(
    federation: Federation, kind: str, query: AnalyticsQuery | None
) -> tuple[float, float] | None:
    """(noise multiplier, clipping bound) of a round that spends privacy, else None."""
    if kind == Round.Kind.TRAIN and federation.privacy:
        return federation.privacy["noise_multiplier"], federation.privacy["clip"]
    if query is not None and query.noise_multiplier:
        return query.noise_multiplier, QUERY_CLIP
    return None


def _spend_description(round_: Round) -> str:
    if round_.kind == Round.Kind.ANALYTICS:
        return f"analytics query {round_.number}"
    return f"training round {round_.number}"


def _secure_length(federation: Federation, kind: str, query: AnalyticsQuery | None) -> int:
    """The length of the vectors a secure round of this kind sums."""
    if kind == Round.Kind.POINTS:
        return analytics.points_length()
    if kind == Round.Kind.MOMENTS:
        return analytics.moments_length(RegimeModel.from_dict(federation.regimes).n_regimes)
    if kind == Round.Kind.ANALYTICS:
        assert query is not None
        return analytics.query_length(
            analytics.Query.from_dict(query.query), _n_regimes(federation)
        )
    current = federation.versions.order_by("-version").first()
    assert current is not None  # version 0 exists before the first training round
    return input_length(_version_weights_arrays(current), TRAINING_EXTRAS)


def _reference_max(federation: Federation) -> float:
    """The largest absolute global weight: public, bounds the training inputs' range."""
    current = federation.versions.order_by("-version").first()
    assert current is not None
    return float(max(np.abs(w).max() for w in _version_weights_arrays(current)))


def _n_regimes(federation: Federation) -> int:
    return RegimeModel.from_dict(federation.regimes).n_regimes if federation.regimes else 1


def analytics_request(
    *,
    federation: Federation,
    query: dict[str, Any],
    noise_multiplier: float | None = None,
    user: AbstractBaseUser | None = None,
) -> AnalyticsQuery:
    """Ask the sites for statistics across them: a secure round that answers ``query``.

    With ``noise_multiplier``, each site adds its share of noise and the query spends
    the federation's privacy budget (refused, with the reason, past it).
    """
    try:
        parsed = analytics.Query.from_dict(query)
    except (analytics.QueryError, TypeError, KeyError) as error:
        raise FederationError(f"the query is not valid: {error}", status=400) from None
    if parsed.per_regime and not federation.regimes:
        raise FederationError(
            "per-regime statistics need the federation's operating regimes: they are "
            "found in its first round, once it has started"
        )
    if noise_multiplier is not None:
        if not noise_multiplier > 0:
            raise FederationError("the noise multiplier must be > 0", status=400)
        if not federation.privacy:
            raise FederationError(
                "a query with noise spends privacy budget, and this federation has none: "
                "give it DP settings, or ask without noise"
            )
    with transaction.atomic():
        record = AnalyticsQuery.objects.create(
            federation=federation,
            requested_by=user,
            query=parsed.to_dict(),
            noise_multiplier=noise_multiplier,
        )
        round_open(federation=federation, kind=Round.Kind.ANALYTICS, number=record.id, query=record)
    record.refresh_from_db()
    return record


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
        if round_.kind == Round.Kind.ANALYTICS:  # a query fails alone; training goes on
            AnalyticsQuery.objects.filter(round=round_).update(
                status=AnalyticsQuery.Status.FAILED, reason=reason, finished_at=timezone.now()
            )
        else:
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
            site=site,
            status=Contribution.Status.ASSIGNED,
            round__status=Round.Status.COLLECTING,
            # Only while the site is an approved member (not suspended, not gone).
            round__federation__memberships__site=site,
            round__federation__memberships__status=Membership.Status.APPROVED,
        )
        # In a secure round: only while this site has not answered the current stage.
        .filter(Q(round__stage="") | ~Q(stage=F("round__stage")))
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
    if round_.stage:
        work[session.WORK_KEY] = secure.work_part(contribution)
    if round_.kind == Round.Kind.MOMENTS:
        work[messages.KEY_REGIMES] = federation.regimes
    elif round_.kind == Round.Kind.ANALYTICS:
        query = AnalyticsQuery.objects.get(round=round_)
        work[messages.KEY_QUERY] = query.query
        work[messages.KEY_REGIMES] = federation.regimes
    elif round_.kind == Round.Kind.TRAIN and round_.stage in ("", MASKED_INPUT):
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
    """Store a site's result once; a second delivery of the same result is refused.

    The payload file is written before the result is marked received, so whoever sees
    the contribution as received can read its file.
    """
    round_ = contribution.round
    if round_.stage:
        secure.submit(contribution=contribution, body=result)
        return
    if round_.status != Round.Status.COLLECTING:
        raise FederationError(f"the round is {round_.status}: results are closed")
    examples, metrics = _result_metadata(result)
    data = _payload_bytes(round_, result.get(messages.KEY_PAYLOAD))
    name = default_storage.save(
        f"contributions/{round_.id}-{contribution.site_id}.bin", ContentFile(data)
    )
    changed = Contribution.objects.filter(
        id=contribution.id,
        status=Contribution.Status.ASSIGNED,
        round__status=Round.Status.COLLECTING,
    ).update(
        status=Contribution.Status.RECEIVED,
        examples=examples,
        metrics=metrics,
        payload=name,
        received_at=timezone.now(),
    )
    if not changed:
        default_storage.delete(name)
        raise FederationError("this result was received already, or the round has closed")
    contribution.refresh_from_db()
    pending = Contribution.objects.filter(
        round=round_, status=Contribution.Status.ASSIGNED
    ).exists()
    if not pending:
        from worker.tasks import enqueue_close

        transaction.on_commit(lambda: enqueue_close(round_.id))


def _result_metadata(result: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """``examples`` a whole number >= 0; ``metrics`` finite numbers by name."""
    examples = result.get(messages.KEY_EXAMPLES)
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
        raise FederationError("'examples' must be a whole number >= 0", status=400)
    metrics = result.get(messages.KEY_METRICS) or {}
    if not isinstance(metrics, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in metrics.values()
    ):
        raise FederationError("'metrics' must map names to finite numbers", status=400)
    return examples, metrics


def _payload_bytes(round_: Round, payload: Any) -> bytes:
    """Validate a result's payload for its round; the bytes to keep."""
    kind = round_.kind
    try:
        if kind == Round.Kind.TRAIN:
            data = messages.unb64(payload)
            _check_shapes(round_, messages.weights_from_bytes(data))
            return data
        if kind == Round.Kind.POINTS:
            messages.points_from_json(payload)
        else:
            messages.moments_from_json(payload)
        return json.dumps(payload).encode()
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as error:
        raise FederationError(
            f"the result's payload is not valid for a {kind} round: {error}", status=400
        ) from None


def _check_shapes(round_: Round, weights: list) -> None:  # type: ignore[type-arg]
    current = round_.federation.versions.order_by("-version").first()
    expected = [a.shape for a in _version_weights_arrays(current)] if current else []
    if [w.shape for w in weights] != expected:
        raise ValueError(f"weights of shapes {[w.shape for w in weights]}, expected {expected}")


def round_close(*, round_: Round) -> bool:
    """collecting -> aggregating once every site answered or the deadline passed.

    The sites that did not answer are dropped; with fewer answers than the
    minimum the round fails with that reason.
    """
    if round_.stage:
        closed, failure = secure.close_stage(round_=round_, minimum=round_.federation.min_sites)
        if failure:
            round_fail(round_=round_, reason=failure)
        return closed
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
    """Aggregate a closed round, store what it produced, and open the next round.

    The aggregation is claimed first (a guarded UPDATE), so a second task for the same
    round does nothing; the work runs outside any transaction (SQLite would block the
    API meanwhile) and its results are written in one short transaction at the end.
    """
    claimed = Round.objects.filter(
        id=round_.id, status=Round.Status.AGGREGATING, aggregation_claimed_at=None
    ).update(aggregation_claimed_at=timezone.now())
    if not claimed:
        return
    round_.refresh_from_db()
    started = time.perf_counter()
    federation = round_.federation
    received = list(
        round_.contributions.filter(status=Contribution.Status.RECEIVED).order_by("site__name")
    )
    payloads = [] if round_.stage else [c.payload.read() for c in received]
    template = federation_recipe(federation).pipeline(federation.subset)
    federation_fields: dict[str, Any] = {}
    version: _NewVersion | None = None
    strategy_state: bytes | None = None
    scale = round_.secagg.get(session.WEIGHT_SCALE, 1)
    summed = secure.unmasked_sum(round_=round_) if round_.stage else None
    next_round: tuple[str, int] | None
    if round_.kind == Round.Kind.ANALYTICS:
        assert summed is not None  # analytics rounds are always secure
        query = AnalyticsQuery.objects.get(round=round_)
        privacy = round_.secagg.get(session.PRIVACY)
        result = analytics.decode_query(
            summed,
            analytics.Query.from_dict(query.query),
            scale=scale,
            n_regimes=_n_regimes(federation),
            privacy=analytics.QueryPrivacy.from_dict(privacy) if privacy else None,
        )
        next_round = None
    elif round_.kind == Round.Kind.POINTS:
        if summed is not None:  # the sites' operating points, counted on a public grid
            points = [analytics.decode_points(summed, scale=scale)]
        else:
            points = [messages.points_from_json(json.loads(p)) for p in payloads]
        federation_fields["regimes"] = server.merge_regimes(points, template.n_regimes).to_dict()
        next_round = (Round.Kind.MOMENTS, 0)
    elif round_.kind == Round.Kind.MOMENTS:
        regimes = RegimeModel.from_dict(federation.regimes)
        if summed is not None:
            moments = [analytics.decode_moments(summed, n_regimes=regimes.n_regimes, scale=scale)]
        else:
            moments = [messages.moments_from_json(json.loads(p)) for p in payloads]
        pipeline = server.merge_pipeline(template, regimes, moments)
        federation_fields["pipeline"] = pipeline.to_dict()
        version = _new_version(federation, pipeline, 0, _initial_weights(federation, pipeline))
        next_round = (Round.Kind.TRAIN, 1)
    else:
        version, strategy_state = _aggregate_training(round_, received, payloads, summed)
        next_round = (Round.Kind.TRAIN, round_.number + 1)
    timings = {**round_.timings, "aggregate_seconds": round(time.perf_counter() - started, 3)}
    with transaction.atomic():
        changed = Round.objects.filter(id=round_.id, status=Round.Status.AGGREGATING).update(
            status=Round.Status.DONE, finished_at=timezone.now(), timings=timings
        )
        if not changed:
            return
        if strategy_state is not None:
            name = default_storage.save(
                f"strategy/{federation.id}-r{round_.number}.npz", ContentFile(strategy_state)
            )
            federation_fields["strategy_state"] = name
        if federation_fields:
            Federation.objects.filter(id=federation.id).update(**federation_fields)
        if version is not None:
            version.store(federation, None if round_.kind != Round.Kind.TRAIN else round_)
        if next_round is None:  # a query: its answer, and nothing follows
            AnalyticsQuery.objects.filter(round=round_).update(
                status=AnalyticsQuery.Status.DONE, result=result, finished_at=timezone.now()
            )
            return
        federation.refresh_from_db()
        kind, number = next_round
        if kind == Round.Kind.TRAIN and number > federation.rounds:
            Federation.objects.filter(id=federation.id).update(status=Federation.Status.FINISHED)
            log.info("federation finished federation=%s", federation.id)
            return
        round_open(federation=federation, kind=kind, number=number)


@dataclass
class _NewVersion:
    """A global model computed by an aggregation, written once the round is done."""

    number: int
    content: bytes
    sha256: str
    metrics: dict[str, Any]

    def store(self, federation: Federation, round_: Round | None) -> ModelVersion:
        version, created = ModelVersion.objects.get_or_create(
            federation=federation,
            version=self.number,
            defaults={"round": round_, "sha256": self.sha256, "metrics": self.metrics},
        )
        if created:
            version.file.save(f"{federation.id}-v{self.number}.rulmodel", ContentFile(self.content))
        return version


def _aggregate_training(
    round_: Round, received: list[Contribution], payloads: list[bytes], summed: Any
) -> tuple[_NewVersion, bytes | None]:
    federation = round_.federation
    current = federation.versions.order_by("-version").first()
    assert current is not None
    like = _version_weights_arrays(current)
    strategy = make_strategy(federation.strategy, **federation.strategy_settings)
    if round_.stage:
        # The coordinator sees the sum only: the average and the pooled validation error.
        average, val = training_result(summed, like)
        strategy.average = lambda results: average  # type: ignore[attr-defined]
        results = [SiteResult([], c.examples) for c in received]
    else:
        results = [
            SiteResult(messages.weights_from_bytes(p), c.examples, c.metrics)
            for c, p in zip(received, payloads, strict=True)
        ]
        # The incoming model's validation error, summed over the sites' validation engines.
        val = server.merge_validation(
            [
                (float(c.metrics.get("val_sse", 0.0)), int(c.metrics.get("val_count", 0)))
                for c in received
            ]
        )
    if federation.strategy_state:
        with federation.strategy_state.open("rb") as handle:
            strategy.load_state(messages.weights_from_bytes(handle.read()))
    weights = strategy.aggregate(like, results)
    state = messages.weights_to_bytes(strategy.state()) if strategy.state() else None
    if not math.isnan(val):  # under DP the sites keep their validation errors home
        ModelVersion.objects.filter(id=current.id).update(
            metrics={**current.metrics, "federated_val_rmse": val}
        )
    pipeline = FeaturePipeline.from_dict(federation.pipeline)
    return _new_version(federation, pipeline, round_.number, weights), state


def _initial_weights(federation: Federation, pipeline: FeaturePipeline) -> list:  # type: ignore[type-arg]
    model = new_network_model(pipeline, federation_recipe(federation))
    seed_everything(federation_simulation(federation).seed)
    return get_weights(model.new_net())


def _new_version(
    federation: Federation,
    pipeline: FeaturePipeline,
    number: int,
    weights: list,  # type: ignore[type-arg]
) -> _NewVersion:
    """The global model file and its scores on the public test engines."""
    model = new_network_model(pipeline, federation_recipe(federation))
    model.members = [weights]
    model.meta.update(federation=federation.name, version=number, setup="federated")
    content, digest = model.to_bytes()
    return _NewVersion(number, content, digest, evaluate_version(model, federation.subset))


def _version_weights_arrays(version: ModelVersion) -> list:  # type: ignore[type-arg]
    return list(_weights_of(version.file.name, version.sha256))


def _version_weights(version: ModelVersion) -> bytes:
    return _weights_npz(version.file.name, version.sha256)


# A model version never changes once stored (its hash is in the key): every site's
# fetch of the round's work and every result's shape check reuse one decoding.
@lru_cache(maxsize=8)
def _weights_of(name: str, sha256: str) -> tuple[np.ndarray, ...]:
    with default_storage.open(name, "rb") as handle:
        return tuple(RulModel.from_bytes(handle.read(), source=name).members[0])


@lru_cache(maxsize=8)
def _weights_npz(name: str, sha256: str) -> bytes:
    return messages.weights_to_bytes(list(_weights_of(name, sha256)))


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
        # Run at the coordinator's start: a claimed aggregation died with the old process.
        Round.objects.filter(id=round_.id).update(aggregation_claimed_at=None)
        enqueue_aggregate(round_.id)
        touched.append(round_.id)
    for round_ in Round.objects.filter(status=Round.Status.OPEN):
        round_fail(round_=round_, reason="the coordinator stopped while opening the round")
        touched.append(round_.id)
    return touched
