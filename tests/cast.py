"""The cast every database test starts from: the same people and things under the same
names, so that a test says only what differs.

- ada runs the federation ``fd001-fleet`` (secure aggregation, at least 2 sites a round);
- olga owns the site ``north-hangar``, which has asked to join it;
- otto owns ``south-hangar``, which is in no federation;
- :meth:`Cast.add_member` adds more sites, each with its own owner, approved, holding a
  credential, with its data reported and (given a folder) an identity key registered.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model

from federation.models import Federation, Membership, Site
from federation.services import federations, sites
from worker.keystore import Keystore

PASSWORD = "pw-cast-1234"


@dataclass
class Member:
    """A site approved into the cast's federation, as its worker knows it."""

    site: Site
    owner: Any
    credential: str
    keystore: Keystore | None = None


@dataclass
class Cast:
    admin: Any
    owner: Any
    outsider: Any
    federation: Federation
    site: Site
    other_site: Site
    membership: Membership
    members: dict[str, Member] = field(default_factory=dict)

    def approve(self) -> Membership:
        """olga's north-hangar, approved."""
        sites.membership_approve(membership=self.membership)
        return self.membership

    def add_member(
        self,
        name: str,
        *,
        rows: int = 1000,
        keys: Path | None = None,
        federation: Federation | None = None,
    ) -> Member:
        """Another site, with its own owner, approved into the federation (the cast's, or
        ``federation``), holding a credential, with ``rows`` training rows reported; with
        ``keys`` (a folder), its keystore there and its identity key registered."""
        owner = get_user_model().objects.create_user(f"owner-{name}", password=PASSWORD)
        site = sites.site_create(owner=owner, name=name)
        sites.membership_approve(
            membership=sites.membership_request(federation=federation or self.federation, site=site)
        )
        credential = sites.site_issue_credential(site=site)
        sites.site_report_data(
            site=site, summary={"train_rows": rows, "train_engines": 5, "subsets": ["FD001"]}
        )
        keystore = None
        if keys is not None:
            keystore = Keystore(keys / name)
            public = base64.b64encode(keystore.identity().public).decode()
            sites.site_register_identity(site=site, public_key=public)
        site.refresh_from_db()
        self.members[name] = Member(site, owner, credential, keystore)
        return self.members[name]


def make_cast() -> Cast:
    users = get_user_model()
    admin = users.objects.create_user("ada", password=PASSWORD)
    owner = users.objects.create_user("olga", password=PASSWORD)
    outsider = users.objects.create_user("otto", password=PASSWORD)
    federation = federations.federation_create(name="fd001-fleet", admin=admin)
    site = sites.site_create(owner=owner, name="north-hangar")
    other_site = sites.site_create(owner=outsider, name="south-hangar")
    membership = sites.membership_request(federation=federation, site=site)
    return Cast(admin, owner, outsider, federation, site, other_site, membership)
