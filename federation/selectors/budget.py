"""Reads of the privacy budget: a federation's settings and spend, and each site's."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from federation import budget
from federation.budget import privacy_of
from federation.models import Federation, PrivacySpend, Site

# Each round adds a line: the newest are enough, as each carries the epsilon so far.
LEDGER_LIMIT = 100


def _ledger(federation: Federation, site: Site | None) -> list[dict[str, Any]]:
    lines = PrivacySpend.objects.filter(federation=federation, site=site).order_by("-id")
    return [
        {
            "at": timezone.localtime(line.created_at),
            "kind": line.kind,
            "kind_label": PrivacySpend.Kind(line.kind).label,
            "description": line.description,
            "noise_multiplier": line.noise_multiplier,
            "sample_fraction": line.sample_fraction,
            "epsilon": line.epsilon,
        }
        for line in lines[:LEDGER_LIMIT]
    ]


def federation_budget(
    *, federation: Federation, with_ledger: bool = False
) -> dict[str, Any] | None:
    """A federation's DP settings and the epsilon it spent (None without DP); with
    ``with_ledger``, its ledger too, newest first (the federation's lines only)."""
    settings = privacy_of(federation)
    if settings is None:
        return None
    return {
        "settings": settings.to_dict(),
        "spent": budget.spent(federation=federation),
        "ledger": _ledger(federation, None) if with_ledger else None,
        "ledger_limit": LEDGER_LIMIT,
    }


def site_budgets(*, site: Site) -> list[dict[str, Any]]:
    """For each of the site's federations with DP: what the site spent there, its own
    cap, the federation's target, and the site's ledger (its lines only), newest first."""
    memberships = site.memberships.select_related("federation").order_by("federation__name")
    budgets = []
    for membership in memberships:
        settings = privacy_of(membership.federation)
        if settings is None:
            continue
        budgets.append(
            {
                "membership": membership,
                "federation": membership.federation,
                "settings": settings.to_dict(),
                "spent": budget.spent(federation=membership.federation, site=site),
                "cap": membership.epsilon_cap,
                "ledger": _ledger(membership.federation, site),
            }
        )
    return budgets
