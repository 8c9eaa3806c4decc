"""Lookups that enforce who may see what: a site's pages answer 404 to anyone but its
owner, so names cannot be probed; a federation's admin actions answer 403 to other
signed-in users (the federation itself is public); a federation's fleet health is for its
admin and the owners of its member sites (403 for others)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.loader import render_to_string

from federation.models import Federation, Membership, Site
from federation.selectors.federations import is_insider


def owned_site(request: HttpRequest, name: str) -> Site:
    """The signed-in user's site of that name; 404 for everyone else's."""
    return get_object_or_404(Site, name=name, owner=request.user)


def administered(request: HttpRequest, federation_id: int) -> Federation:
    federation = get_object_or_404(Federation, id=federation_id)
    if federation.admin_id != request.user.pk:
        raise PermissionDenied("only the federation's admin can do this")
    return federation


def insider_federation(request: HttpRequest, federation_id: int) -> Federation:
    """The federation, for its admin and the owners of its approved member sites only:
    its statistics describe the sites' data (403 for everyone else)."""
    federation = get_object_or_404(Federation, id=federation_id)
    if not is_insider(federation=federation, user=request.user):
        raise PermissionDenied("the fleet's statistics are for the admin and member sites")
    return federation


def memberships(federation: Federation, statuses: list[str]) -> list[Membership]:
    return list(
        federation.memberships.select_related("site")
        .filter(status__in=statuses)
        .order_by("requested_at")
    )


View = Callable[..., HttpResponseBase]


def post_only(page: str, *keys: str) -> Callable[[View], View]:
    """An action's view that acts on POST only. A GET (a reload after the action, a link
    followed, a bookmark) goes to the page the action belongs to, ``page`` with the
    view's arguments ``keys``, instead of the browser's bare 405 page; other methods get
    a 405 that names POST."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method == "POST":
                return view(request, *args, **kwargs)
            if request.method in ("GET", "HEAD"):
                return redirect(page, **{key: kwargs[key] for key in keys})
            refused = HttpResponseNotAllowed(
                ["POST"], render_to_string("405.html", request=request)
            )
            return refused

        return inner

    return wrap
