"""A federation's pages: the list, a federation followed live, its admin's actions, and
its model versions' files."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import get_conditional_response, patch_cache_control

from dashboard.pages.access import administered, memberships, post_only
from dashboard.progress import federation_page
from federation.errors import FederationError
from federation.models import Federation, Membership, ModelVersion
from federation.selectors import federations as federation_reads
from federation.services import federations, sites
from federation.services.faults import FAULT_LIMIT


def federation_list(request: HttpRequest) -> HttpResponse:
    return render(
        request, "federation/federation_list.html", {"rows": federation_reads.federation_list()}
    )


def _federation_page(request: HttpRequest, federation: Federation) -> dict[str, Any]:
    """The changing part of a federation's page; site names for its admin and members
    only, the privacy ledger for its admin only (anyone sees the epsilon spent)."""
    insider = federation_reads.is_insider(federation=federation, user=request.user)
    is_admin = federation.admin_id == request.user.pk
    progress = federation_reads.federation_progress(
        federation=federation, show_sites=insider, show_ledger=is_admin
    )
    return federation_page(progress)


def federation_detail(request: HttpRequest, federation_id: int) -> HttpResponse:
    federation = get_object_or_404(Federation, id=federation_id)
    is_admin = federation.admin_id == request.user.pk
    context = {
        "federation": federation,
        "page": _federation_page(request, federation),
        "approved_sites": federation.memberships.filter(status=Membership.Status.APPROVED).count(),
        "is_admin": is_admin,
        "is_insider": federation_reads.is_insider(federation=federation, user=request.user),
        "published_worth": federation_reads.published_worth(federation=federation),
        "can_download": federation_reads.can_download_models(
            federation=federation, user=request.user
        ),
        "can_start": federation.status in {Federation.Status.DRAFT, Federation.Status.FAILED},
        "can_extend": federation.status == Federation.Status.FINISHED,
        "max_more_rounds": federations.MAX_MORE_ROUNDS,
        "pending": memberships(federation, [Membership.Status.REQUESTED]) if is_admin else [],
        "members": (
            memberships(federation, [Membership.Status.APPROVED, Membership.Status.SUSPENDED])
            if is_admin
            else []
        ),
        "flagged": federation_reads.flagged_sites(federation=federation) if is_admin else [],
        "faults": federation_reads.member_faults(federation=federation) if is_admin else [],
        "fault_limit": FAULT_LIMIT,
    }
    return render(request, "federation/federation_detail.html", context)


def federation_progress(request: HttpRequest, federation_id: int) -> HttpResponseBase:
    """What the federation's page polls: the same words, cells and figure it rendered.

    Computed at most once a second for each view of it (the public's, a member's, the
    admin's), with an ETag: a poller that has the current one gets a bodiless 304.
    """
    federation = get_object_or_404(Federation, id=federation_id)
    insider = federation_reads.is_insider(federation=federation, user=request.user)
    is_admin = insider and federation.admin_id == request.user.pk
    key = f"progress.json:{federation.id}:{int(insider)}{int(is_admin)}"
    body: bytes | None = cache.get(key)
    if body is None:
        page = _federation_page(request, federation)
        body = json.dumps(page, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
        cache.set(key, body, settings.PROGRESS_CACHE_SECONDS)
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    response = get_conditional_response(request, etag=etag) or HttpResponse(
        body, content_type="application/json"
    )
    response["ETag"] = etag
    # The browser keeps it, but asks each time whether it changed (and per user: an
    # insider's view holds site names).
    patch_cache_control(response, private=True, no_cache=True)
    return response


@login_required
@post_only("pages:federation", "federation_id")
def federation_start(request: HttpRequest, federation_id: int) -> HttpResponse:
    federation = administered(request, federation_id)
    try:
        federations.federation_start(federation=federation)
    except FederationError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Start requested: the status and rounds below show how it goes.")
    return redirect("pages:federation", federation_id=federation.id)


@login_required
@post_only("pages:federation", "federation_id")
def federation_extend(request: HttpRequest, federation_id: int) -> HttpResponse:
    """Run more rounds of a finished federation (the admin's form on its page)."""
    federation = administered(request, federation_id)
    try:
        rounds = int(request.POST.get("rounds", ""))
    except ValueError:
        messages.error(request, "Say how many more rounds to run: a whole number, e.g. 10.")
        return redirect("pages:federation", federation_id=federation.id)
    try:
        round_ = federations.federation_extend(federation=federation, rounds=rounds)
    except FederationError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            f"{rounds} more rounds requested: training round {round_.number} is open, and "
            "the approved sites' workers pick it up. The rounds below show how it goes.",
        )
    return redirect("pages:federation", federation_id=federation.id)


@login_required
@post_only("pages:federation", "federation_id")
def membership_approve(
    request: HttpRequest, federation_id: int, membership_id: int
) -> HttpResponse:
    federation = administered(request, federation_id)
    membership = get_object_or_404(
        Membership.objects.select_related("site"), id=membership_id, federation=federation
    )
    try:
        sites.membership_approve(membership=membership)
    except FederationError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            f"{membership.site.name} is approved. Its owner gets the site's credential on the "
            "site's own page: it is never shown to anyone else.",
        )
    return redirect("pages:federation", federation_id=federation.id)


@login_required
@post_only("pages:federation", "federation_id")
def membership_suspend(
    request: HttpRequest, federation_id: int, membership_id: int
) -> HttpResponse:
    federation = administered(request, federation_id)
    membership = get_object_or_404(
        Membership.objects.select_related("site"),
        id=membership_id,
        federation=federation,
        status__in=[Membership.Status.REQUESTED, Membership.Status.APPROVED],
    )
    sites.membership_suspend(membership=membership)
    messages.success(request, f"{membership.site.name} is suspended from this federation.")
    return redirect("pages:federation", federation_id=federation.id)


@login_required
def model_download(request: HttpRequest, federation_id: int, version: int) -> HttpResponseBase:
    """A model version's file, for the admin and owners of member sites (404 for others)."""
    federation = get_object_or_404(Federation, id=federation_id)
    if not federation_reads.can_download_models(federation=federation, user=request.user):
        raise Http404("no such model")
    model = get_object_or_404(ModelVersion, federation=federation, version=version)
    return federation_reads.model_file_response(model)
