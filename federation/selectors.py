"""Reads for the API and the pages."""

from __future__ import annotations

from typing import Any

from federation.models import Federation, ModelVersion, Round, Site


def site_public(*, site: Site) -> dict[str, Any]:
    """What a site may see of itself."""
    return {
        "name": site.name,
        "status": site.status,
        "data_summary": site.data_summary,
        "memberships": [
            {"federation": m.federation_id, "name": m.federation.name, "status": m.status}
            for m in site.memberships.select_related("federation").order_by("federation__name")
        ],
    }


def model_version(*, federation_id: int, version: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(federation_id=federation_id, version=version).first()


def federation_progress(*, federation: Federation) -> dict[str, Any]:
    """Rounds and model versions of a federation, for the demo, the pages and tests."""
    rounds = [
        {
            "number": r.number,
            "kind": r.kind,
            "status": r.status,
            "reason": r.reason,
            "received": r.contributions.filter(status="received").count(),
            "dropped": r.contributions.filter(status="dropped").count(),
            "timings": r.timings,
        }
        for r in Round.objects.filter(federation=federation).order_by("id")
    ]
    versions = [
        {"version": v.version, "sha256": v.sha256, "metrics": v.metrics}
        for v in federation.versions.order_by("version")
    ]
    return {
        "status": federation.status,
        "reason": federation.reason,
        "rounds": rounds,
        "versions": versions,
    }
