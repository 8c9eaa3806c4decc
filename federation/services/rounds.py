"""Writes that open and end rounds: opening one (or refusing to, with the reason), asking
an analytics query, failing a round, and picking rounds up after a restart.

What a round may be and how it is set up is the round engine's
(:mod:`federation.core.engine`); here it meets the database: the sites that take part,
the privacy ledger, the round's row and its contributions.
"""

from __future__ import annotations

import base64
import logging
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from federation import budget, scheduling
from federation.core import analytics
from federation.core.engine import admission
from federation.core.engine.rounds import Noise, Participant, RoundParameters, plan_round
from federation.core.engine.state import announcement, input_length, reference_max
from federation.core.messages import Kind
from federation.core.privacy import Admission, Spend
from federation.errors import FederationError
from federation.models import (
    AnalyticsQuery,
    Contribution,
    Fault,
    Federation,
    Membership,
    PrivacySpend,
    Round,
    Site,
)
from federation.services.sites import reported_rows
from federation.services.versions import federation_state

log = logging.getLogger(__name__)

# The L2 bound of a site's scaled query vector under DP (federation.core.analytics
# scales counts by the federation's total rows: a site's counts are at most 1).
QUERY_CLIP = 1.0


class _Refused(Exception):
    """The round may not open; the message says why."""


def _refuse(reason: str) -> None:
    if reason:
        raise _Refused(reason)


def round_open(
    *, federation: Federation, kind: Kind, number: int, query: AnalyticsQuery | None = None
) -> Round:
    """Open a round for the approved, active sites, or fail it at once with the reason it
    may not open (too few sites, no budget left, too few identity keys, ...).

    A round that spends privacy (DP training, a query with noise) is admitted against the
    budget first, and its cost goes into the ledger once it runs.
    """
    deadline = timezone.now() + timedelta(seconds=federation.round_deadline)
    round_ = Round.objects.create(
        federation=federation, kind=kind, number=number, deadline=deadline
    )
    if query is not None:
        AnalyticsQuery.objects.filter(id=query.id).update(round=round_)
    try:
        sites, parameters, admitted = _plan(federation, round_, query)
    except _Refused as refusal:
        round_fail(round_=round_, reason=str(refusal))
        return round_
    if admitted is not None:  # the round runs: its privacy cost goes into the ledger
        spends = PrivacySpend.Kind
        budget.record(
            federation=federation,
            admission=admitted,
            kind=spends.ANALYTICS if kind == Kind.ANALYTICS else spends.TRAINING,
            description=_spend_description(round_),
            round_=round_,
        )
    Contribution.objects.bulk_create([Contribution(round=round_, site=s) for s in sites])
    Round.objects.filter(id=round_.id, status=Round.Status.OPEN).update(
        status=Round.Status.COLLECTING, stage=parameters.stages[0], parameters=parameters.to_json()
    )
    round_.refresh_from_db()
    scheduling.schedule_deadline(round_.id, round_.stage, round_.deadline)
    log.info(
        "round opened federation=%s round=%s kind=%s sites=%d",
        federation.id,
        number,
        kind,
        len(sites),
    )
    return round_


def _participants(federation: Federation) -> list[Site]:
    return list(
        Site.objects.filter(
            status=Site.Status.ACTIVE,
            memberships__federation=federation,
            memberships__status=Membership.Status.APPROVED,
        ).order_by("name")
    )


def _plan(
    federation: Federation, round_: Round, query: AnalyticsQuery | None
) -> tuple[list[Site], RoundParameters, Admission[Site] | None]:
    """Who takes part and the round's parameters; raises :class:`_Refused` with the reason
    the round may not open."""
    kind = Kind(round_.kind)
    secure = federation.secure_aggregation
    sites = _participants(federation)
    noise = _round_noise(federation, kind, query)
    _refuse(admission.too_few_contributors(federation.min_sites, secure=secure))
    _refuse(admission.too_few_sites(len(sites), federation.min_sites))
    _refuse(admission.needs_secure_aggregation(kind, secure=secure, noise=noise))
    admitted = None
    if noise is not None:
        spend = Spend(noise.multiplier)
        settings = budget.privacy_of(federation)
        if kind == Kind.TRAIN and settings is not None:
            spend = Spend(noise.multiplier, settings.sample_fraction)
        admitted = budget.admit(
            federation=federation,
            sites=sites,
            spend=spend,
            minimum=max(federation.min_sites, 2),
            what=_spend_description(round_),
        )
        _refuse(admitted.refusal)
        sites = admitted.sites
    if secure:  # only a site with an identity key can sign its round keys
        sites = [s for s in sites if s.identity_key]
        _refuse(admission.too_few_identities(len(sites), federation.min_sites))
    state = federation_state(federation)
    parsed = analytics.Query.from_dict(query.query) if query is not None else None
    parameters = plan_round(
        kind=kind,
        participants=[_participant(s) for s in sites],
        length=input_length(kind, state, parsed),
        secure=secure,
        minimum=federation.min_sites,
        noise=noise,
        reference_max=reference_max(kind, state),
        announcement=announcement(kind, state),
    )
    fewest = int(parameters.privacy["noise_sites"]) if parameters.privacy else 0
    _refuse(admission.query_noise_too_large(kind, noise, noise_sites=fewest, sites=len(sites)))
    return sites, parameters, admitted


def _participant(site: Site) -> Participant:
    identity = base64.b64decode(site.identity_key) if site.identity_key else None
    return Participant(site.id, identity, reported_rows(site))


def _round_noise(federation: Federation, kind: Kind, query: AnalyticsQuery | None) -> Noise | None:
    """The noise of a round that spends privacy, else None."""
    if kind == Kind.TRAIN and federation.privacy:
        return Noise(federation.privacy["noise_multiplier"], federation.privacy["clip"])
    if query is not None and query.noise_multiplier:
        return Noise(query.noise_multiplier, QUERY_CLIP)
    return None


def _spend_description(round_: Round) -> str:
    if round_.kind == Round.Kind.ANALYTICS:
        return f"analytics query {round_.number}"
    return f"training round {round_.number}"


def analytics_request(
    *,
    federation: Federation,
    query: dict[str, Any],
    noise_multiplier: float | None = None,
    user: User | None = None,
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
        round_open(federation=federation, kind=Kind.ANALYTICS, number=record.id, query=record)
    record.refresh_from_db()
    return record


def round_fail(*, round_: Round, reason: str) -> bool:
    """Fail a round that is not over, with its reason: a query fails alone; a training or
    setup round in which a member was proved at fault is run again (without the member
    once it is suspended: one member does not stop the federation); any other failed
    round stops the federation (its admin may start it again)."""
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
        if round_.kind == Round.Kind.ANALYTICS:
            AnalyticsQuery.objects.filter(round=round_).update(
                status=AnalyticsQuery.Status.FAILED, reason=reason, finished_at=timezone.now()
            )
        elif Fault.objects.filter(round=round_).exists():
            named = sorted(
                {f.site.name for f in Fault.objects.filter(round=round_).select_related("site")}
            )
            Round.objects.filter(id=round_.id).update(
                reason=f"{reason} (at fault: {', '.join(named)}; the round runs again)"
            )
            log.warning(
                "round run again federation=%s round=%s: at fault %s",
                round_.federation_id,
                round_.number,
                named,
            )
            federation = Federation.objects.get(id=round_.federation_id)
            round_open(federation=federation, kind=Kind(round_.kind), number=round_.number)
        else:
            Federation.objects.filter(id=round_.federation_id).update(
                status=Federation.Status.FAILED, reason=f"{round_}: {reason}"
            )
    round_.refresh_from_db()
    return bool(changed)


def rounds_resume() -> list[int]:
    """After a coordinator restart: check every collecting round, finish interrupted
    aggregations, fail rounds that were being opened. Returns the ids of the rounds."""
    touched = []
    for round_ in Round.objects.filter(status=Round.Status.COLLECTING):
        scheduling.schedule_deadline(round_.id, round_.stage, round_.deadline)
        touched.append(round_.id)
    for round_ in Round.objects.filter(status=Round.Status.AGGREGATING):
        # Run at the coordinator's start: a claimed aggregation died with the old process.
        Round.objects.filter(id=round_.id).update(aggregation_claimed_at=None)
        scheduling.enqueue_aggregate(round_.id)
        touched.append(round_.id)
    for round_ in Round.objects.filter(status=Round.Status.OPEN):
        round_fail(round_=round_, reason="the coordinator stopped while opening the round")
        touched.append(round_.id)
    return touched
