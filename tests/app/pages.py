"""Helpers of the page tests: signing in as one of the cast, and reading a page's controls."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from django.test import Client

from tests.cast import Cast

# The cast's people by the part they play on the pages.
ACTORS = ("anonymous", "owner", "outsider", "admin")


def signed_in(client: Client, cast: Cast, actor: str | None) -> Client:
    """The client signed in as ``actor`` of the cast (anonymous: not signed in)."""
    if actor not in (None, "anonymous"):
        client.force_login(getattr(cast, actor))
    return client


class Controls(HTMLParser):
    """Form controls without a label, and heading levels, of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.labelled: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.headings: list[int] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "label" and attributes.get("for"):
            self.labelled.add(attributes["for"] or "")
        if tag in {"input", "select", "textarea", "progress"} and attributes.get("type") not in {
            "hidden",
            "submit",
        }:
            self.controls.append(attributes)
        if re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))

    def unlabelled(self) -> list[dict[str, str | None]]:
        return [
            c for c in self.controls if c.get("id") not in self.labelled and not c.get("aria-label")
        ]

    def headings_in_order(self) -> bool:
        levels = self.headings
        steps = zip(levels, levels[1:], strict=False)
        return bool(levels) and levels[0] == 1 and all(b - a <= 1 for a, b in steps)
