"""The site API, versioned under /api/v1/: JSON in and out, one credential per site.

A site authenticates with ``Authorization: Bearer <credential>`` and only ever sees its
own site, its own work and the models of federations it belongs to. Every message is
declared once in :mod:`federation.schemas`, which validates it and describes it at
``/api/v1/openapi.json``. Every refusal is a 4xx with ``{"error": "..."}`` saying what
to change, and nothing of a refused message is written.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from ninja import NinjaAPI, Path, Query, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer

from federation import schemas as s
from federation.errors import FederationError
from federation.models import Contribution, Membership, Site
from federation.selectors import federations as federation_reads
from federation.selectors.sites import site_public
from federation.services import sites, stages

# Every operation may answer these, each with {"error": ...}.
REFUSALS: dict[int, Any] = {400: s.Error, 401: s.Error, 404: s.Error, 409: s.Error, 413: s.Error}


class BodyError(ValueError):
    """A body that is not a JSON object in UTF-8: the message says where."""


class StrictJson(Parser):
    """JSON in UTF-8, an object at the top, nested at most 64 deep."""

    MAX_DEPTH = 64

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        raw = request.body  # RequestDataTooBig past DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as problem:
            raise BodyError(f"the body is not UTF-8 (byte {problem.start})") from None
        if _depth(text) > self.MAX_DEPTH:
            raise BodyError(f"the body nests deeper than {self.MAX_DEPTH} levels")
        try:
            body = json.loads(text)
        except json.JSONDecodeError as problem:
            raise BodyError(
                f"the body is not JSON: {problem.msg} at line {problem.lineno}, "
                f"column {problem.colno}"
            ) from None
        if not isinstance(body, dict):
            raise BodyError("the body must be a JSON object")
        return body


def _depth(text: str) -> int:
    """How deep brackets nest in ``text`` (strings included: an upper bound, cheap)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


class JsonRefusals:
    """Middleware: under /api/, a refusal Django or the router makes itself (no such path,
    a method the path does not take, a bad Host header, an error page) is JSON too, with
    its headers (Allow) kept. Listed first, so that it sees every response."""

    PREFIX = "/api/"
    MESSAGES = {
        400: "bad request: check the Host header and the body",
        403: "forbidden",
        404: "no such endpoint: see /api/v1/openapi.json",
        405: "method not allowed on this endpoint",
        413: "the body is too large",
        500: "the coordinator failed to answer: try again later",
    }

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = self.get_response(request)
        if (
            not request.path.startswith(self.PREFIX)
            or response.status_code < 400
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        message = self.MESSAGES.get(response.status_code, "refused")
        if response.status_code == 405 and response.get("Allow"):
            message = f"use {response['Allow']} on this endpoint"
        replaced = HttpResponse(
            json.dumps({"error": message}),
            status=response.status_code,
            content_type="application/json",
        )
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if response.get(header):
                replaced[header] = response[header]
        return replaced


class SiteCredential(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Site | None:
        return sites.site_authenticate(token.strip())


api = NinjaAPI(
    title="Turbofan federation: site API",
    version="1",
    description=(
        "What a site's worker speaks to the coordinator. Send the site's credential as "
        "'Authorization: Bearer <credential>'. Refusals are 4xx with {\"error\": ...}."
    ),
    urls_namespace="api",
    auth=SiteCredential(),
    parser=StrictJson(),
    docs_url=None,
)


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    return api.create_response(request, {"error": message}, status=status)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    if not request.headers.get("Authorization", "").lower().startswith("bearer "):
        return _refuse(
            request, 401, "send the site's credential as 'Authorization: Bearer <credential>'"
        )
    return _refuse(
        request,
        401,
        "unknown or replaced credential: ask your federation's admin or issue a new one on "
        "your site's page",
    )


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = []
    for problem in exc.errors[:5]:
        loc = list(problem.get("loc", ()))
        # ("body", <the body's parameter>, field, ...) or ("query" | "path", field)
        where = ".".join(str(part) for part in loc[2 if loc[:1] == ["body"] else 1 :])
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return _refuse(request, 400, "; ".join(problems))


def _too_big(request: HttpRequest) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return _refuse(request, 413, f"the body is larger than {limit} bytes")


@api.exception_handler(RequestDataTooBig)
def _body_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _too_big(request)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if isinstance(cause, RequestDataTooBig):
        return _too_big(request)
    if isinstance(cause, BodyError):
        return _refuse(request, 400, str(cause))
    return _refuse(request, exc.status_code, str(exc))


@api.exception_handler(FederationError)
def _refused(request: HttpRequest, exc: FederationError) -> HttpResponse:
    return _refuse(request, exc.status, str(exc))


def _site(request: HttpRequest) -> Site:
    site = request.auth  # type: ignore[attr-defined]
    assert isinstance(site, Site)
    return site


@api.get("/site", response={200: s.SiteOut, **REFUSALS}, summary="Your own site")
def site_detail(request: HttpRequest) -> dict[str, Any]:
    return site_public(site=_site(request))


@api.put(
    "/site/data",
    response={200: s.DataSummaryOut, **REFUSALS},
    summary="Report the site's data summary (counts only, never rows)",
)
def site_data(request: HttpRequest, summary: s.DataSummary) -> dict[str, Any]:
    counts = summary.model_dump()
    sites.site_report_data(site=_site(request), summary=counts)
    return {"data_summary": counts}


@api.put(
    "/site/identity",
    response={200: s.IdentityOut, **REFUSALS},
    summary="Register the Ed25519 key the site signs its round keys and votes with",
)
def site_identity(request: HttpRequest, identity: s.IdentityIn) -> dict[str, Any]:
    site = _site(request)
    sites.site_register_identity(site=site, public_key=identity.public_key)
    return {"public_key": site.identity_key}


@api.put(
    "/site/worth",
    response={200: s.WorthOut, **REFUSALS},
    summary="Publish what joining is worth at the site (its owner's choice, off by default)",
)
def site_worth(request: HttpRequest, figure: s.WorthIn) -> dict[str, Any]:
    membership = sites.membership_publish_worth(
        site=_site(request), federation_id=figure.federation, figure=figure.model_dump()
    )
    return {"federation": membership.federation_id, "published_worth": membership.published_worth}


# Long polling: GET /work?wait=SECONDS holds the request until work is there (the next
# stage of a round opens the moment its last site answers) or the wait is over, so a
# site learns of it at once, without a poll interval and without a server beyond the
# database. Each waiting request holds one thread of the web server and looks often
# early in its wait (the next stage is usually a moment away), then less often.
MAX_WAIT = s.MAX_WAIT
LOOKS = ((3.0, 0.01), (10.0, 0.1), (MAX_WAIT, 0.25))  # (until this many seconds, every)


def _look_interval(waited: float) -> float:
    return next(every for until, every in LOOKS if waited < until) if waited < MAX_WAIT else 0.25


# At most this many requests of one web process wait at once, so that waiting sites
# leave threads to the other requests (the posts that end a stage, the pages); beyond it
# a request does not wait, and the site asks again after a pause.
_waiting = threading.BoundedSemaphore(settings.API_LONG_POLLS)


@api.get(
    "/work",
    response={200: s.WorkOut, 204: None, **REFUSALS},
    summary="Your next piece of work (204: none), waiting up to 'wait' seconds for it",
)
def work(request: HttpRequest, query: Query[s.WorkQuery]) -> Any:
    wait = query.wait
    started = time.monotonic()
    site = _site(request)
    contribution = stages.work_next(site=site)
    if contribution is None and wait > 0 and _waiting.acquire(blocking=False):
        try:
            while contribution is None and time.monotonic() - started < wait:
                time.sleep(_look_interval(time.monotonic() - started))
                contribution = stages.work_next(site=site)
        finally:
            _waiting.release()
    if contribution is None:
        return Status(204, None)
    round_ = contribution.round
    return {
        "contribution": contribution.id,
        "federation": {"id": round_.federation_id, "name": round_.federation.name},
        "round": {
            "id": round_.id,
            "number": round_.number,
            "kind": round_.kind,
            "deadline": round_.deadline,
        },
        "work": stages.work_message(contribution),
    }


Id = Path(..., ge=1, le=s.MAX_ID)


@api.post(
    "/contributions/{contribution_id}",
    response={200: s.Received, **REFUSALS},
    summary="Answer a stage of a round with the site's message for it",
)
def contribution_result(
    request: HttpRequest,
    message: s.StageMessage,
    contribution_id: int = Id,
) -> dict[str, Any]:
    # Another site's contribution answers 404 like a missing one: no hint that it exists.
    contribution = (
        Contribution.objects.select_related("round", "round__federation")
        .filter(id=contribution_id, site=_site(request))
        .first()
    )
    if contribution is None:
        raise FederationError(f"you have no contribution {contribution_id}", status=404)
    body = message.model_dump(exclude_none=True)
    stages.stage_submit(contribution=contribution, body=body)
    return {"status": "received", "contribution": contribution.id}


@api.get(
    "/federations/{federation_id}/models/{version}",
    response={200: None, **REFUSALS},
    summary="Download a global model version (members only)",
    openapi_extra={
        "responses": {
            "200": {
                "description": "The .rulmodel file",
                "content": {"application/zip": {}},
                "headers": {
                    "X-Model-SHA256": {
                        "description": "The file's SHA-256, to check",
                        "schema": {"type": "string"},
                    },
                    "X-Model-Status": {
                        "description": "candidate (not scored by the sites yet), accepted, "
                        "or rejected by the sites' votes",
                        "schema": {"type": "string", "enum": ["candidate", "accepted", "rejected"]},
                    },
                },
            }
        }
    },
)
def model_download(
    request: HttpRequest,
    federation_id: int = Id,
    version: int = Path(..., ge=0, le=s.MAX_ID),
) -> HttpResponseBase:
    if not Membership.objects.filter(
        federation_id=federation_id, site=_site(request), status=Membership.Status.APPROVED
    ).exists():
        raise FederationError(
            f"you are not an approved member of federation {federation_id}", status=404
        )
    model = federation_reads.model_version(federation_id=federation_id, version=version)
    if model is None:
        raise FederationError(
            f"federation {federation_id} has no model version {version}", status=404
        )
    return federation_reads.model_file_response(model)
