"""The site API, versioned under /api/v1/: JSON in and out, one credential per site.

A site authenticates with ``Authorization: Bearer <credential>`` and only ever
sees its own site, its own work and the models of federations it belongs to.
Every refusal is a 4xx with ``{"error": "..."}`` saying what to change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from federation import secure, selectors, services
from federation.errors import FederationError
from federation.models import Contribution, Membership, Site
from federation.openapi import OPENAPI

SiteView = Callable[..., HttpResponse]


def error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def site_endpoint(*methods: str) -> Callable[[SiteView], Callable[..., HttpResponse]]:
    """Authenticate the site, check the method, turn domain errors into 4xx JSON."""

    def decorate(view: SiteView) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error(405, f"use {' or '.join(methods)} on this endpoint")
            header = request.headers.get("Authorization", "")
            if not header.startswith("Bearer "):
                return error(
                    401, "send the site's credential as 'Authorization: Bearer <credential>'"
                )
            site = services.site_authenticate(header.removeprefix("Bearer ").strip())
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
    return JsonResponse(selectors.site_public(site=site))


@site_endpoint("PUT")
def site_data(request: HttpRequest, site: Site) -> JsonResponse:
    body = _json_body(request)
    summary = {k: body[k] for k in ("train_rows", "train_engines", "subsets") if k in body}
    if set(summary) != {"train_rows", "train_engines", "subsets"}:
        raise FederationError(
            "send train_rows, train_engines and subsets (counts only, never rows)", status=400
        )
    services.site_report_data(site=site, summary=summary)
    return JsonResponse({"data_summary": summary})


@site_endpoint("PUT")
def site_identity(request: HttpRequest, site: Site) -> JsonResponse:
    body = _json_body(request)
    secure.site_register_identity(site=site, public_key=body.get("public_key"))
    return JsonResponse({"public_key": site.identity_key})


@site_endpoint("GET")
def work(request: HttpRequest, site: Site) -> HttpResponse:
    contribution = services.work_next(site=site)
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
            "work": services.work_message(contribution),
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
    services.contribution_submit(contribution=contribution, result=_json_body(request))
    return JsonResponse({"status": "received", "contribution": contribution.id})


@site_endpoint("GET")
def model_download(
    request: HttpRequest, site: Site, federation_id: int, version: int
) -> HttpResponse:
    if not Membership.objects.filter(
        federation_id=federation_id, site=site, status=Membership.Status.APPROVED
    ).exists():
        return error(404, f"you are not an approved member of federation {federation_id}")
    model = selectors.model_version(federation_id=federation_id, version=version)
    if model is None:
        return error(404, f"federation {federation_id} has no model version {version}")
    return selectors.model_file_response(model)
