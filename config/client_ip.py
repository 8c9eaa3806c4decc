"""The address a request came from, behind as many reverse proxies as settings trust."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The client's address: with ``TRUSTED_PROXIES = n``, the n-th address from the
    right of X-Forwarded-For (each trusted proxy appends the address it saw; anything
    left of those the client could have written itself); else the peer's address."""
    peer = str(request.META.get("REMOTE_ADDR", ""))
    trusted = settings.TRUSTED_PROXIES
    if not trusted:
        return peer
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [a for a in forwarded if a]
    return forwarded[-trusted] if len(forwarded) >= trusted else peer
