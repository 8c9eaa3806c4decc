"""The site API, versioned under /api/v1/: JSON in and out, one credential per site.

A site authenticates with ``Authorization: Bearer <credential>`` and only ever
sees its own site, its own work and the models of federations it belongs to.
Every refusal is a 4xx with ``{"error": "..."}`` saying what to change.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from federation.errors import FederationError
from federation.models import Contribution, Membership, Site
from federation.openapi import OPENAPI
from federation.selectors import federations as federation_reads
from federation.selectors.sites import site_public
from federation.services import sites, stages

SiteView = Callable[..., HttpResponseBase]


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def site_endpoint(*methods: str) -> Callable[[SiteView], Callable[..., HttpResponseBase]]:
    """Authenticate the site, check the method, turn domain errors into 4xx JSON."""

    def decorate(view: SiteView) -> Callable[..., HttpResponseBase]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return error(405, f"use {' or '.join(methods)} on this endpoint")
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return error(
                    401, "send the site's credential as 'Authorization: Bearer <credential>'"
                )
            site = sites.site_authenticate(header.removeprefix("Bearer ").strip())
            if site is None:
                return error(
                    401,
                    "unknown or replaced credential: ask your federation's admin "
                    "or issue a new one on your site's page",
                )
            try:
                return view(request, site, *args, **kwargs)
            except FederationError as problem:
                return error(problem.status, str(problem))

        return wrapper

    return decorate


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except json.JSONDecodeError as problem:
        raise FederationError(
            f"the body is not JSON: {problem.msg} at line {problem.lineno}, column {problem.colno}",
            status=400,
        ) from None
    if not isinstance(body, dict):
        raise FederationError("the body must be a JSON object", status=400)
    return body


def openapi(request: HttpRequest) -> JsonResponse:
    return JsonResponse(OPENAPI)


@site_endpoint("GET")
def site_detail(request: HttpRequest, site: Site) -> JsonResponse:
    return JsonResponse(site_public(site=site))


@site_endpoint("PUT")
def site_data(request: HttpRequest, site: Site) -> JsonResponse:
    body = _json_body(request)
    summary: dict[str, Any] = {
        k: body[k] for k in ("train_rows", "train_engines", "subsets") if k in body
    }
    if set(summary) != {"train_rows", "train_engines", "subsets"}:
        raise FederationError(
            "send train_rows, train_engines and subsets (counts only, never rows)", status=400
        )
    sites.site_report_data(site=site, summary=summary)
    return JsonResponse({"data_summary": summary})


@site_endpoint("PUT")
def site_identity(request: HttpRequest, site: Site) -> JsonResponse:
    body = _json_body(request)
    sites.site_register_identity(site=site, public_key=body.get("public_key"))
    return JsonResponse({"public_key": site.identity_key})


# Long polling: GET /work?wait=SECONDS holds the request until work is there (the next
# stage of a round opens the moment its last site answers) or the wait is over, so a
# site learns of it at once, without a poll interval and without a server beyond the
# database. Each waiting request holds one thread of the web server and looks often
# early in its wait (the next stage is usually a moment away), then less often.
MAX_WAIT = 25.0
LOOKS = ((3.0, 0.01), (10.0, 0.1), (MAX_WAIT, 0.25))  # (until this many seconds, every)


def _look_interval(waited: float) -> float:
    return next(every for until, every in LOOKS if waited < until) if waited < MAX_WAIT else 0.25


def _wait_seconds(request: HttpRequest) -> float:
    raw = request.GET.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT:
        raise FederationError(
            f"'wait' must be a number of seconds from 0 to {MAX_WAIT:g}, got {raw!r}", status=400
        )
    return wait


# At most this many requests of one web process wait at once, so that waiting sites
# leave threads to the other requests (the posts that end a stage, the pages); beyond it
# a request does not wait, and the site asks again after a pause.
_waiting = threading.BoundedSemaphore(settings.API_LONG_POLLS)


@site_endpoint("GET")
def work(request: HttpRequest, site: Site) -> HttpResponse:
    started = time.monotonic()
    wait = _wait_seconds(request)
    contribution = stages.work_next(site=site)
    if contribution is None and wait > 0 and _waiting.acquire(blocking=False):
        try:
            while contribution is None and time.monotonic() - started < wait:
                time.sleep(_look_interval(time.monotonic() - started))
                contribution = stages.work_next(site=site)
        finally:
            _waiting.release()
    if contribution is None:
        return HttpResponse(status=204)
    round_ = contribution.round
    return JsonResponse(
        {
            "contribution": contribution.id,
            "federation": {"id": round_.federation_id, "name": round_.federation.name},
            "round": {
                "id": round_.id,
                "number": round_.number,
                "kind": round_.kind,
                "deadline": round_.deadline.isoformat(),
            },
            "work": stages.work_message(contribution),
        }
    )


@site_endpoint("POST")
def contribution_result(request: HttpRequest, site: Site, contribution_id: int) -> JsonResponse:
    # Another site's contribution answers 404 like a missing one: no hint that it exists.
    contribution = (
        Contribution.objects.select_related("round", "round__federation")
        .filter(id=contribution_id, site=site)
        .first()
    )
    if contribution is None:
        return error(404, f"you have no contribution {contribution_id}")
    stages.stage_submit(contribution=contribution, body=_json_body(request))
    return JsonResponse({"status": "received", "contribution": contribution.id})


@site_endpoint("GET")
def model_download(
    request: HttpRequest, site: Site, federation_id: int, version: int
) -> HttpResponseBase:
    if not Membership.objects.filter(
        federation_id=federation_id, site=site, status=Membership.Status.APPROVED
    ).exists():
        return error(404, f"you are not an approved member of federation {federation_id}")
    model = federation_reads.model_version(federation_id=federation_id, version=version)
    if model is None:
        return error(404, f"federation {federation_id} has no model version {version}")
    return federation_reads.model_file_response(model)
