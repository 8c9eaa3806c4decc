"""The browser pages: browse federations, run one as its admin, manage your own sites.

Each view parses its input, calls one service, and renders or redirects. A site's
pages answer 404 to anyone but its owner, so names cannot be probed; a federation's
admin actions answer 403 to other signed-in users (the federation itself is public).
A federation's fleet health (its sensors' statistics and analytics queries, aggregates
of the sites' data) is for its admin and the owners of its member sites: 403 for others.
Credentials are rendered once, in the response to the POST that made them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from dashboard.progress import LEDGER_COLUMNS, federation_page, site_budget_summary
from federation import budget, selectors, services
from federation.forms import CapForm, JoinForm, ParticipationForm, QueryForm, SiteForm
from federation.models import AnalyticsQuery, Federation, Membership, ModelVersion, Site
from federation.selectors import can_download_models, model_file_response
from federation.services import FederationError

# The variable site_worker reads the credential from (worker.site_runtime.CREDENTIAL_ENV;
# not imported here, as that module pulls in the training stack).
CREDENTIAL_ENV = "SITE_CREDENTIAL"


# --- helpers: lookups that enforce who may see what --------------------------------


def _owned_site(request: HttpRequest, name: str) -> Site:
    """The signed-in user's site of that name; 404 for everyone else's."""
    return get_object_or_404(Site, name=name, owner=request.user)  # type: ignore[misc]


def _administered(request: HttpRequest, federation_id: int) -> Federation:
    federation = get_object_or_404(Federation, id=federation_id)
    if federation.admin_id != request.user.pk:  # type: ignore[attr-defined]
        raise PermissionDenied("only the federation's admin can do this")
    return federation


def _memberships(federation: Federation, statuses: list[str]) -> list[Membership]:
    return list(
        federation.memberships.select_related("site")
        .filter(status__in=statuses)
        .order_by("requested_at")
    )


def _credential_page(
    request: HttpRequest, *, site: Site, credential: str, replaced: bool
) -> HttpResponse:
    coordinator = request.build_absolute_uri("/")
    command = (
        f"{CREDENTIAL_ENV}={credential} python manage.py site_worker "
        f"--coordinator {coordinator} --data-dir PATH"
    )
    context = {"site": site, "credential": credential, "command": command, "replaced": replaced}
    response = render(request, "federation/credential.html", context)
    add_never_cache_headers(response)
    return response


# --- accounts -----------------------------------------------------------------------


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("pages:my-sites")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        login(request, form.save())
        return redirect("pages:my-sites")
    return render(request, "registration/signup.html", {"form": form})


# --- federations --------------------------------------------------------------------


def federation_list(request: HttpRequest) -> HttpResponse:
    return render(request, "federation/federation_list.html", {"rows": selectors.federation_list()})


def _federation_page(request: HttpRequest, federation: Federation) -> dict[str, Any]:
    """The changing part of a federation's page; site names for its admin and members
    only, the privacy ledger for its admin only (anyone sees the epsilon spent)."""
    insider = selectors.is_insider(federation=federation, user=request.user)
    is_admin = federation.admin_id == request.user.pk  # type: ignore[attr-defined]
    progress = selectors.federation_progress(
        federation=federation, show_sites=insider, show_ledger=is_admin
    )
    return federation_page(progress)


def federation_detail(request: HttpRequest, federation_id: int) -> HttpResponse:
    federation = get_object_or_404(Federation, id=federation_id)
    is_admin = federation.admin_id == request.user.pk  # type: ignore[attr-defined]
    context = {
        "federation": federation,
        "page": _federation_page(request, federation),
        "approved_sites": federation.memberships.filter(status=Membership.Status.APPROVED).count(),
        "is_admin": is_admin,
        "is_insider": selectors.is_insider(federation=federation, user=request.user),
        "can_download": can_download_models(federation=federation, user=request.user),
        "can_start": federation.status in {Federation.Status.DRAFT, Federation.Status.FAILED},
        "pending": _memberships(federation, [Membership.Status.REQUESTED]) if is_admin else [],
        "members": (
            _memberships(federation, [Membership.Status.APPROVED, Membership.Status.SUSPENDED])
            if is_admin
            else []
        ),
    }
    return render(request, "federation/federation_detail.html", context)


def federation_progress(request: HttpRequest, federation_id: int) -> JsonResponse:
    """What the federation's page polls: the same words, cells and figure it rendered."""
    federation = get_object_or_404(Federation, id=federation_id)
    response = JsonResponse(_federation_page(request, federation))
    add_never_cache_headers(response)
    return response


@login_required
@require_POST
def federation_start(request: HttpRequest, federation_id: int) -> HttpResponse:
    federation = _administered(request, federation_id)
    try:
        services.federation_start(federation=federation)
    except FederationError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Start requested: the status and rounds below show how it goes.")
    return redirect("pages:federation", federation_id=federation.id)


@login_required
@require_POST
def membership_approve(
    request: HttpRequest, federation_id: int, membership_id: int
) -> HttpResponse:
    federation = _administered(request, federation_id)
    membership = get_object_or_404(
        Membership.objects.select_related("site"), id=membership_id, federation=federation
    )
    try:
        services.membership_approve(membership=membership)
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
@require_POST
def membership_suspend(
    request: HttpRequest, federation_id: int, membership_id: int
) -> HttpResponse:
    federation = _administered(request, federation_id)
    membership = get_object_or_404(
        Membership.objects.select_related("site"),
        id=membership_id,
        federation=federation,
        status__in=[Membership.Status.REQUESTED, Membership.Status.APPROVED],
    )
    services.membership_suspend(membership=membership)
    messages.success(request, f"{membership.site.name} is suspended from this federation.")
    return redirect("pages:federation", federation_id=federation.id)


# --- sites --------------------------------------------------------------------------


@login_required
def my_sites(request: HttpRequest) -> HttpResponse:
    sites = (
        Site.objects.filter(owner=request.user)  # type: ignore[misc]
        .prefetch_related(
            Prefetch(
                "memberships",
                queryset=Membership.objects.select_related("federation").order_by(
                    "federation__name"
                ),
            )
        )
        .order_by("name")
    )
    return render(request, "federation/my_sites.html", {"sites": sites})


@login_required
def site_new(request: HttpRequest) -> HttpResponse:
    form = SiteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        name = form.cleaned_data["name"]
        try:
            site = services.site_create(owner=request.user, name=name)  # type: ignore[arg-type]
        except FederationError as error:
            form.add_error("name", str(error))
        else:
            messages.success(request, f"Site {site.name} created: ask a federation to join.")
            return redirect("pages:site", name=site.name)
    return render(request, "federation/site_new.html", {"form": form})


def _site_page(request: HttpRequest, site: Site, cap_form: CapForm | None = None) -> HttpResponse:
    """The site's portal; ``cap_form``, bound and refused, in place of its membership's."""
    portal = selectors.site_portal(site=site)
    budgets = []
    for entry in portal.pop("budgets"):
        membership = entry["membership"]
        mine = cap_form is not None and cap_form.membership.id == membership.id
        form = cap_form if mine else CapForm(membership=membership)
        budgets.append({**site_budget_summary(entry), "form": form})
    context = {
        "site": site,
        **portal,
        "budgets": budgets,
        "ledger_columns": LEDGER_COLUMNS,
        "join_form": JoinForm(site=site),
        "Status": Site.Status,
    }
    return render(request, "federation/site_detail.html", context)


@login_required
def site_detail(request: HttpRequest, name: str) -> HttpResponse:
    return _site_page(request, _owned_site(request, name))


@login_required
@require_POST
def site_join(request: HttpRequest, name: str) -> HttpResponse:
    site = _owned_site(request, name)
    form = JoinForm(request.POST, site=site)
    if not form.is_valid():
        messages.error(request, "Pick one of the listed federations to join.")
        return redirect("pages:site", name=site.name)
    federation = form.cleaned_data["federation"]
    services.membership_request(federation=federation, site=site)
    messages.success(request, f"Asked to join {federation.name}; its admin decides.")
    return redirect("pages:site", name=site.name)


@login_required
@require_POST
def site_participation(request: HttpRequest, name: str) -> HttpResponse:
    site = _owned_site(request, name)
    form = ParticipationForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose to pause or to resume participation.")
        return redirect("pages:site", name=site.name)
    services.site_set_status(site=site, status=form.cleaned_data["status"])
    messages.success(request, f"{site.name} is now {site.get_status_display()}.")
    return redirect("pages:site", name=site.name)


@login_required
@require_POST
def membership_leave(request: HttpRequest, name: str, membership_id: int) -> HttpResponse:
    site = _owned_site(request, name)
    membership = get_object_or_404(
        Membership.objects.select_related("federation").exclude(status=Membership.Status.LEFT),
        id=membership_id,
        site=site,
    )
    services.membership_leave(membership=membership)
    messages.success(request, f"{site.name} left {membership.federation.name}.")
    return redirect("pages:site", name=site.name)


@login_required
@require_POST
def membership_cap(request: HttpRequest, name: str, membership_id: int) -> HttpResponse:
    """Set or clear the site's own epsilon cap in a federation with DP (404 for others)."""
    site = _owned_site(request, name)
    membership = get_object_or_404(
        Membership.objects.select_related("federation", "site")
        .exclude(status=Membership.Status.LEFT)
        .filter(federation__privacy__isnull=False),
        id=membership_id,
        site=site,
    )
    form = CapForm(request.POST, membership=membership)
    if form.is_valid():
        cap = form.cleaned_data["epsilon_cap"]
        try:
            budget.membership_set_cap(membership=membership, epsilon_cap=cap)
        except FederationError as error:
            form.add_error("epsilon_cap", str(error))
        else:
            messages.success(request, _cap_message(membership))
            return redirect("pages:site", name=site.name)
    return _site_page(request, site, cap_form=form)


def _cap_message(membership: Membership) -> str:
    where = f"{membership.site.name} in {membership.federation.name}"
    if membership.epsilon_cap is None:
        return f"No cap of its own for {where}: the federation's target applies."
    return (
        f"The cap of {where} is epsilon {membership.epsilon_cap:g}: work that would take "
        "the site past it leaves it out."
    )


@login_required
@require_POST
def site_credential(request: HttpRequest, name: str) -> HttpResponse:
    site = _owned_site(request, name)
    replaced = bool(site.credential_hash)
    credential = services.site_issue_credential(site=site)
    return _credential_page(request, site=site, credential=credential, replaced=replaced)


@login_required
def model_download(request: HttpRequest, federation_id: int, version: int) -> HttpResponse:
    """A model version's file, for the admin and owners of member sites (404 for others)."""
    federation = get_object_or_404(Federation, id=federation_id)
    if not can_download_models(federation=federation, user=request.user):
        raise Http404("no such model")
    model = get_object_or_404(ModelVersion, federation=federation, version=version)
    return model_file_response(model)


# --- fleet health: the setup rounds' statistics and analytics queries -------------------


def _insider_federation(request: HttpRequest, federation_id: int) -> Federation:
    """The federation, for its admin and the owners of its approved member sites only:
    its statistics describe the sites' data (403 for everyone else)."""
    federation = get_object_or_404(Federation, id=federation_id)
    if not selectors.is_insider(federation=federation, user=request.user):
        raise PermissionDenied("the fleet's statistics are for the admin and member sites")
    return federation


def _query_form(federation: Federation, data: Any = None) -> QueryForm:
    ranges = selectors.histogram_defaults(federation=federation)
    return QueryForm(data, federation=federation, ranges=ranges)


def _fleet_page(
    request: HttpRequest, federation: Federation, form: QueryForm | None = None
) -> HttpResponse:
    is_admin = federation.admin_id == request.user.pk  # type: ignore[attr-defined]
    if is_admin and form is None:
        form = _query_form(federation)
    context = {
        "federation": federation,
        "normalisation": selectors.fleet_normalisation(federation=federation),
        "queries": selectors.analytics_queries(federation=federation),
        "query_limit": selectors.QUERY_LIST_LIMIT,
        "form": form if is_admin else None,
        "is_admin": is_admin,
    }
    return render(request, "federation/fleet.html", context)


@login_required
def fleet_health(request: HttpRequest, federation_id: int) -> HttpResponse:
    return _fleet_page(request, _insider_federation(request, federation_id))


@login_required
@require_POST
def query_new(request: HttpRequest, federation_id: int) -> HttpResponse:
    """Ask the sites a new analytics query (the admin only); a refusal stays on the form."""
    federation = _administered(request, federation_id)
    form = _query_form(federation, request.POST)
    if form.is_valid():
        try:
            query = services.analytics_request(
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
    if not selectors.is_insider(federation=federation, user=request.user):
        return JsonResponse({"error": "for the federation's admin and member sites"}, status=403)
    entry = selectors.analytics_query(federation=federation, query_id=query_id)
    if entry is None:
        return JsonResponse({"error": "no such query in this federation"}, status=404)
    html = render_to_string(
        "federation/_query.html", {"q": entry, "federation": federation}, request=request
    )
    body = {key: entry[key] for key in ("id", "status", "status_label", "running", "reason")}
    response = JsonResponse({**body, "html": html})
    add_never_cache_headers(response)
    return response
