"""A federation's fleet health: the setup rounds' statistics and analytics queries."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from dashboard import figures
from dashboard.forms import QueryForm
from dashboard.pages.access import administered, insider_federation, post_only
from federation.errors import FederationError
from federation.models import AnalyticsQuery, Federation
from federation.selectors import federations as federation_reads
from federation.selectors import fleet as fleet_reads
from federation.services import rounds


def _query_form(federation: Federation, data: Any = None) -> QueryForm:
    ranges = fleet_reads.histogram_defaults(federation=federation)
    return QueryForm(data, federation=federation, ranges=ranges)


def _fleet_page(
    request: HttpRequest, federation: Federation, form: QueryForm | None = None
) -> HttpResponse:
    is_admin = federation.admin_id == request.user.pk
    if is_admin and form is None:
        form = _query_form(federation)
    context = {
        "federation": federation,
        "normalisation": figures.with_figures(
            fleet_reads.fleet_normalisation(federation=federation)
        ),
        "queries": [
            figures.query_with_figures(q)
            for q in fleet_reads.analytics_queries(federation=federation)
        ],
        "query_limit": fleet_reads.QUERY_LIST_LIMIT,
        "form": form if is_admin else None,
        "is_admin": is_admin,
    }
    return render(request, "federation/fleet.html", context)


@login_required
def fleet_health(request: HttpRequest, federation_id: int) -> HttpResponse:
    return _fleet_page(request, insider_federation(request, federation_id))


@login_required
@post_only("pages:fleet", "federation_id")
def query_new(request: HttpRequest, federation_id: int) -> HttpResponse:
    """Ask the sites a new analytics query (the admin only); a refusal stays on the form."""
    federation = administered(request, federation_id)
    form = _query_form(federation, request.POST)
    if form.is_valid():
        try:
            query = rounds.analytics_request(
                federation=federation,
                query=form.query(),
                noise_multiplier=form.cleaned_data.get("noise_multiplier"),
                user=request.user,  # type: ignore[arg-type]
            )
        except FederationError as error:
            form.add_error(None, str(error))
        else:
            _query_message(request, query)
            return redirect(reverse("pages:fleet", args=[federation.id]) + f"#query-{query.id}")
    return _fleet_page(request, federation, form)


def _query_message(request: HttpRequest, query: AnalyticsQuery) -> None:
    if query.status == AnalyticsQuery.Status.FAILED:
        messages.error(request, f"Query {query.id} could not run: {query.reason}")
    else:
        messages.success(
            request,
            f"Query {query.id} asked: the sites answer it in a secure round, and its result "
            "appears below when they have.",
        )


def query_status(request: HttpRequest, federation_id: int, query_id: int) -> JsonResponse:
    """What the fleet page polls for a running query: its state, and its part of the page."""
    federation = get_object_or_404(Federation, id=federation_id)
    if not federation_reads.is_insider(federation=federation, user=request.user):
        return JsonResponse({"error": "for the federation's admin and member sites"}, status=403)
    entry = fleet_reads.analytics_query(federation=federation, query_id=query_id)
    if entry is None:
        return JsonResponse({"error": "no such query in this federation"}, status=404)
    html = render_to_string(
        "federation/_query.html",
        {"q": figures.query_with_figures(entry), "federation": federation},
        request=request,
    )
    body = {key: entry[key] for key in ("id", "status", "status_label", "running", "reason")}
    response = JsonResponse({**body, "html": html})
    add_never_cache_headers(response)
    return response
