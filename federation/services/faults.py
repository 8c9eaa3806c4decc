"""Writes about members proved to have broken the protocol: the fault, the member's
exclusion from the round, and its suspension once it is at fault in
:data:`FAULT_LIMIT` rounds.

What counts as a fault is the round engine's to show (a complaint judged on what the
round holds, a revealed share checked against its commitment, a rebuilt secret checked
against what its dealer published); here it meets the database.
"""

from __future__ import annotations

import logging

from federation.models import Contribution, Fault, Membership, Round
from federation.services.sites import membership_suspend

log = logging.getLogger(__name__)

# A member at fault in this many rounds of a federation is suspended (its admin may
# approve it again).
FAULT_LIMIT = 2


def faults_record(*, round_: Round, stage: str, faults: dict[int, str], exclude: bool) -> None:
    """Keep each fault; with ``exclude``, take the member out of the round (its input is
    not in the sum and it owes nothing more); suspend a member at fault in
    :data:`FAULT_LIMIT` rounds. Call it inside a transaction."""
    federation = round_.federation
    for site_id, detail in sorted(faults.items()):
        _, created = Fault.objects.get_or_create(
            round=round_,
            site_id=site_id,
            stage=stage,
            defaults={"federation": federation, "detail": detail[:2000]},
        )
        if exclude:
            Contribution.objects.filter(
                round=round_, site_id=site_id, status=Contribution.Status.ASSIGNED
            ).update(status=Contribution.Status.EXCLUDED)
        if not created:
            continue
        log.warning(
            "fault federation=%s round=%s stage=%s site=%s: %s",
            federation.id,
            round_.number,
            stage,
            site_id,
            detail,
        )
        rounds = (
            Fault.objects.filter(federation=federation, site_id=site_id)
            .values("round_id")
            .distinct()
            .count()
        )
        membership = Membership.objects.filter(
            federation=federation, site_id=site_id, status=Membership.Status.APPROVED
        ).first()
        if membership is not None and rounds >= FAULT_LIMIT:
            membership_suspend(membership=membership)
            log.warning(
                "member suspended federation=%s site=%s: at fault in %d rounds",
                federation.id,
                site_id,
                rounds,
            )
