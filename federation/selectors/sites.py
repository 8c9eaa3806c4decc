"""Reads about a site: what it may see of itself, and its owner's portal."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from federation.core.secagg.primitives import fingerprint
from federation.models import Federation, Membership, Round, Site, StageMessage
from federation.selectors.budget import LEDGER_LIMIT, site_budgets
from federation.selectors.federations import sent_label

# A worker's requests move Site.last_seen at most once a minute (site_authenticate); a
# worker that polls every few seconds is never quieter than this.
WORKER_QUIET_AFTER = timedelta(minutes=3)
SENT_LOG_LIMIT = 50


def site_public(*, site: Site) -> dict[str, Any]:
    """What a site may see of itself."""
    return {
        "name": site.name,
        "status": site.status,
        "data_summary": site.data_summary,
        "memberships": [
            {
                "federation": m.federation_id,
                "name": m.federation.name,
                "status": m.status,
                "work": membership_work(membership=m),
            }
            for m in site.memberships.select_related("federation", "site").order_by(
                "federation__name"
            )
        ],
    }


def site_worker_status(*, site: Site, now: datetime | None = None) -> dict[str, Any]:
    """Whether the site's worker is polling, from when the coordinator last heard from it."""
    now = now or timezone.now()
    if site.last_seen is None:
        state = "never"
    elif now - site.last_seen <= WORKER_QUIET_AFTER:
        state = "polling"
    else:
        state = "quiet"
    ago = (now - site.last_seen).total_seconds() if site.last_seen else None
    return {"state": state, "last_seen": site.last_seen, "seconds_ago": ago}


def _file_size(field: Any) -> int | None:
    if not field:
        return None
    try:
        return int(field.size)
    except OSError:  # the file was removed from storage
        return None


def site_sent_log(*, site: Site, limit: int = SENT_LOG_LIMIT) -> list[dict[str, Any]]:
    """What the coordinator received from this site, newest first: when, where, what
    and how big (sizes only, never the content, and nothing another site sent)."""
    stage_messages = (
        StageMessage.objects.filter(site=site)
        .select_related("round__federation")
        .order_by("-received_at")[:limit]
    )
    entries = []
    for message in stage_messages:
        body = len(json.dumps(message.body, separators=(",", ":")).encode()) if message.body else 0
        entries.append(
            {
                "at": message.received_at,
                "federation": message.round.federation,
                "round": message.round.number,
                "kind_label": Round.Kind(message.round.kind).label,
                "what": sent_label(message.stage),
                "examples": message.body.get("examples"),
                "bytes": body + (_file_size(message.vector) or 0),
            }
        )
    return entries


def identity_fingerprint(site: Site) -> str | None:
    """The fingerprint of the identity key the coordinator registered for the site, as its
    worker and its peers see it (None before the worker registered one)."""
    if not site.identity_key:
        return None
    return fingerprint(base64.b64decode(site.identity_key))


def worker_command(*, credential: str, coordinator: str) -> str:
    """The command that starts a site's worker, as the README sets the project up (run
    in the project's folder, with its virtual environment)."""
    return (
        f"SITE_CREDENTIAL={credential} .venv/bin/python manage.py site_worker "
        f"--coordinator {coordinator} --data-dir PATH"
    )


def membership_work(*, membership: Membership) -> str:
    """In plain words, what work the site has in this federation now, or why it has none
    and when work will come."""
    federation, site = membership.federation, membership.site
    status = Membership.Status
    if membership.status == status.REQUESTED:
        return "No work yet: the federation's admin has not approved the request."
    if membership.status == status.SUSPENDED:
        return "No work: the federation's admin suspended this site."
    if membership.status == status.LEFT:
        return "No work: the site left this federation."
    if site.status == Site.Status.PAUSED:
        return "No work while participation is paused: resume it above."
    if federation.status == Federation.Status.DRAFT:
        return "Waiting for the federation's admin to start it; the worker then gets work."
    if federation.status == Federation.Status.FINISHED:
        return (
            "The federation has finished: no work will come unless its admin runs more "
            "rounds, which this site will then take part in."
        )
    if federation.status == Federation.Status.FAILED:
        return (
            f"The federation stopped ({federation.reason or 'no reason given'}); work "
            "resumes when its admin starts it again."
        )
    current = (
        federation.round_set.filter(
            status__in=[Round.Status.OPEN, Round.Status.COLLECTING, Round.Status.AGGREGATING]
        )
        .exclude(kind=Round.Kind.ANALYTICS)
        .order_by("-id")
        .first()
    )
    if current is None:
        return "Between rounds: the next opens in a moment."
    label = f"{current.get_kind_display()} round {current.number}"
    if current.contributions.filter(site=site).exists():
        return f"Taking part in {label}: the worker answers its stages."
    return f"{label.capitalize()} started before this site joined: it takes part from the next."


def site_portal(*, site: Site) -> dict[str, Any]:
    """Everything the site's owner sees on the site's page."""
    memberships = site.memberships.select_related("federation", "site").order_by("federation__name")
    return {
        "worker": site_worker_status(site=site),
        "memberships": list(memberships),
        "work": {m.id: membership_work(membership=m) for m in memberships},
        "may_hold_credential": site.may_hold_credential(),
        "fingerprint": identity_fingerprint(site),
        "sent": site_sent_log(site=site),
        "sent_limit": SENT_LOG_LIMIT,
        "budgets": site_budgets(site=site),
        "ledger_limit": LEDGER_LIMIT,
    }
