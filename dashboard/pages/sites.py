"""A site owner's pages: the sites, one site's portal (memberships, worker, what the
coordinator received, the privacy budget), joining, pausing, leaving, the credential.
Credentials are rendered once, in the response to the POST that made them."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers

from dashboard.forms import CapForm, JoinForm, ParticipationForm, SiteForm
from dashboard.pages.access import owned_site, post_only
from dashboard.progress import LEDGER_COLUMNS, site_budget_summary
from federation import budget
from federation.errors import FederationError
from federation.models import Membership, Site
from federation.selectors import sites as site_reads
from federation.services import sites


def _credential_page(
    request: HttpRequest, *, site: Site, credential: str, replaced: bool
) -> HttpResponse:
    coordinator = settings.SITE_API_URL or request.build_absolute_uri("/")
    command = site_reads.worker_command(credential=credential, coordinator=coordinator)
    context = {"site": site, "credential": credential, "command": command, "replaced": replaced}
    response = render(request, "federation/credential.html", context)
    add_never_cache_headers(response)
    return response


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
            site = sites.site_create(owner=request.user, name=name)  # type: ignore[arg-type]
        except FederationError as error:
            form.add_error("name", str(error))
        else:
            messages.success(request, f"Site {site.name} created: ask a federation to join.")
            return redirect("pages:site", name=site.name)
    return render(request, "federation/site_new.html", {"form": form})


def _site_page(request: HttpRequest, site: Site, cap_form: CapForm | None = None) -> HttpResponse:
    """The site's portal; ``cap_form``, bound and refused, in place of its membership's."""
    portal = site_reads.site_portal(site=site)
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
    return _site_page(request, owned_site(request, name))


@login_required
@post_only("pages:site", "name")
def site_join(request: HttpRequest, name: str) -> HttpResponse:
    site = owned_site(request, name)
    form = JoinForm(request.POST, site=site)
    if not form.is_valid():
        messages.error(request, "Pick one of the listed federations to join.")
        return redirect("pages:site", name=site.name)
    federation = form.cleaned_data["federation"]
    sites.membership_request(federation=federation, site=site)
    messages.success(request, f"Asked to join {federation.name}; its admin decides.")
    return redirect("pages:site", name=site.name)


@login_required
@post_only("pages:site", "name")
def site_participation(request: HttpRequest, name: str) -> HttpResponse:
    site = owned_site(request, name)
    form = ParticipationForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose to pause or to resume participation.")
        return redirect("pages:site", name=site.name)
    sites.site_set_status(site=site, status=form.cleaned_data["status"])
    messages.success(request, f"{site.name} is now {site.get_status_display()}.")
    return redirect("pages:site", name=site.name)


@login_required
@post_only("pages:site", "name")
def membership_leave(request: HttpRequest, name: str, membership_id: int) -> HttpResponse:
    site = owned_site(request, name)
    membership = get_object_or_404(
        Membership.objects.select_related("federation").exclude(status=Membership.Status.LEFT),
        id=membership_id,
        site=site,
    )
    sites.membership_leave(membership=membership)
    messages.success(request, f"{site.name} left {membership.federation.name}.")
    return redirect("pages:site", name=site.name)


@login_required
@post_only("pages:site", "name")
def membership_cap(request: HttpRequest, name: str, membership_id: int) -> HttpResponse:
    """Set or clear the site's own epsilon cap in a federation with DP (404 for others)."""
    site = owned_site(request, name)
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
@post_only("pages:site", "name")
def site_credential(request: HttpRequest, name: str) -> HttpResponse:
    site = owned_site(request, name)
    replaced = bool(site.credential_hash)
    try:
        credential = sites.site_issue_credential(site=site)
    except FederationError as error:
        messages.error(request, str(error))
        return redirect("pages:site", name=site.name)
    return _credential_page(request, site=site, credential=credential, replaced=replaced)
