"""Reads for the API and the pages."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse

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


def round_timing(*, round_: Round) -> dict[str, float]:
    """Where a round's time went: sites training, waiting and transfer, aggregation.

    ``collecting`` runs from opening to closing; the slowest site's training is part
    of it, the rest is polling, downloading, uploading and waiting. ``aggregating``
    includes scoring the new global model on the test engines.
    """
    received = round_.contributions.filter(status="received")
    training = [float(c.metrics.get("seconds", 0.0)) for c in received]
    collecting = (round_.closed_at - round_.opened_at).total_seconds() if round_.closed_at else 0.0
    slowest = max(training, default=0.0)
    return {
        "collecting": round(collecting, 2),
        "training_slowest_site": round(slowest, 2),
        "training_mean": round(sum(training) / len(training), 2) if training else 0.0,
        "waiting_and_transfer": round(max(0.0, collecting - slowest), 2),
        "aggregating": float(round_.timings.get("aggregate_seconds", 0.0)),
    }


def can_download_models(*, federation: Federation, user: Any) -> bool:
    """The admin and the owners of approved member sites may download its models."""
    if not getattr(user, "is_authenticated", False):
        return False
    return (
        federation.admin_id == user.pk
        or federation.memberships.filter(status="approved", site__owner=user).exists()
    )


def model_file_response(model: ModelVersion) -> FileResponse:
    """A model version as a download, with its hash for the receiver to check."""
    response = FileResponse(
        model.file.open("rb"),
        as_attachment=True,
        filename=f"federation-{model.federation_id}-v{model.version}.rulmodel",
    )
    response["X-Model-SHA256"] = model.sha256
    return response
