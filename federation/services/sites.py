"""Writes about sites: creating them, their credentials and identity keys, what they
report of their data, and their membership of federations."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from federation import scheduling
from federation.core.secagg import protocol as p
from federation.core.secagg import wire
from federation.core.secagg.primitives import SecAggError
from federation.errors import FederationError
from federation.models import Contribution, Federation, Membership, Site

CREDENTIAL_PREFIX = "tfs_"


def site_create(*, owner: User, name: str) -> Site:
    try:
        with transaction.atomic():
            return Site.objects.create(owner=owner, name=name)
    except IntegrityError:
        raise FederationError(f"a site named {name!r} exists already: pick another name") from None


# --- credentials and identity ------------------------------------------------------------


def site_issue_credential(*, site: Site) -> str:
    """A new credential for the site (the old one stops working). Shown once, stored hashed.
    Only once a federation has approved the site: before, no work would take it."""
    if not site.may_hold_credential():
        raise FederationError(
            f"{site.name} is in no federation yet: ask to join one, and get the credential "
            "once its admin approves the site",
            status=409,
        )
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


def site_register_identity(*, site: Site, public_key: Any) -> None:
    """Record the Ed25519 public key a site signs its round keys with."""
    try:
        raw = wire.public_key_from_json(public_key)
    except SecAggError as error:
        raise FederationError(str(error), status=400) from None
    Site.objects.filter(id=site.id).update(identity_key=base64.b64encode(raw).decode("ascii"))
    site.refresh_from_db()


def site_set_status(*, site: Site, status: str) -> None:
    Site.objects.filter(id=site.id).update(status=status)
    site.refresh_from_db()


# What a site may say of its data: counts within these bounds (C-MAPSS engines run about
# 200 cycles: 10^7 rows is 50,000 engines), and the names of a few subsets.
MAX_TRAIN_ROWS = 10**7
MAX_TRAIN_ENGINES = 10**6
MAX_SUBSETS, MAX_SUBSET_NAME = 16, 32


def site_report_data(*, site: Site, summary: dict[str, Any]) -> None:
    """Keep what the site says of its data, once checked: these counts are public inputs
    to the rounds (its weight in training, the scale of statistics)."""
    for name, most in (("train_rows", MAX_TRAIN_ROWS), ("train_engines", MAX_TRAIN_ENGINES)):
        value = summary.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            raise FederationError(f"{name!r} must be a whole number from 0 to {most}", status=400)
    subsets = summary.get("subsets")
    if (
        not isinstance(subsets, list)
        or len(subsets) > MAX_SUBSETS
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_SUBSET_NAME for s in subsets)
    ):
        raise FederationError(
            f"'subsets' must be a list of at most {MAX_SUBSETS} names, e.g. [\"FD001\"]",
            status=400,
        )
    Site.objects.filter(id=site.id).update(data_summary=summary, last_seen=timezone.now())


def membership_publish_worth(
    *, site: Site, federation_id: int, figure: dict[str, Any]
) -> Membership:
    """Keep what joining is worth at ``site``, as its owner published it for the
    federation (schema-checked figures; the latest replaces an earlier one). Only a member
    approved into it may publish."""
    membership = Membership.objects.filter(
        site=site, federation_id=federation_id, status=Membership.Status.APPROVED
    ).first()
    if membership is None:
        raise FederationError(
            f"this site is not an approved member of federation {federation_id}", status=404
        )
    published = {k: v for k, v in figure.items() if k != "federation"}
    now = timezone.now()
    Membership.objects.filter(id=membership.id).update(published_worth=published, published_at=now)
    membership.published_worth, membership.published_at = published, now
    return membership


def reported_rows(site: Site) -> int:
    """The training rows the site reported (0 if it reported none, or nonsense)."""
    rows = (site.data_summary or {}).get("train_rows", 0)
    return rows if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0 else 0


# --- membership ------------------------------------------------------------------------------


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


def _membership_move(membership: Membership, sources: list[str], target: str) -> None:
    changed = Membership.objects.filter(id=membership.id, status__in=sources).update(
        status=target, decided_at=timezone.now()
    )
    if not changed:
        raise FederationError(f"the membership is {membership.status}: it cannot become {target}")
    membership.refresh_from_db()


def _drop_open_work(membership: Membership) -> None:
    """The site's unanswered work in open rounds is dropped; those rounds need not wait.

    Where its masked input is in a round's sum already, it stays there (the others'
    shares unmask it): the site's part counts as received, and owes nothing more.
    """
    open_work = Contribution.objects.filter(
        site=membership.site,
        round__federation=membership.federation,
        status=Contribution.Status.ASSIGNED,
    )
    round_ids = list(open_work.values_list("round_id", flat=True))
    summed = open_work.filter(stage__in=[p.MASKED_INPUT, p.UNMASK])
    summed.update(status=Contribution.Status.RECEIVED)
    open_work.update(status=Contribution.Status.DROPPED)
    for round_id in round_ids:
        scheduling.enqueue_close(round_id)
