"""Reads about federations: the list, one federation's progress, its rounds' timing, who
may see or download what."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min, Prefetch, Q
from django.http import FileResponse
from django.utils import timezone

from federation.core import messages as m
from federation.core.engine.rounds import PLAIN_STAGES, SECURE_STAGES
from federation.models import (
    Contribution,
    Fault,
    Federation,
    Membership,
    ModelVersion,
    Round,
    Site,
    StageMessage,
)
from federation.selectors.budget import federation_budget
from federation.specs import federation_training
from turbofan.models.trees import Ensemble

LIVE_ROUND_STATUSES = (Round.Status.OPEN, Round.Status.COLLECTING, Round.Status.AGGREGATING)
SHOWN_BOOST_ROUNDS = 10  # the newest finished boost rounds listed one by one


def model_version(*, federation_id: int, version: int) -> ModelVersion | None:
    return ModelVersion.objects.filter(federation_id=federation_id, version=version).first()


def version_scores(metrics: Any) -> dict[str, float | None]:
    """A version's scores on the public test engines and the sites' validation engines."""

    def number(*keys: str) -> float | None:
        value = metrics
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None

    return {
        "rmse": number("test", "literature", "rmse"),
        "score": number("test", "literature", "score"),
        "strict_rmse": number("test", "strict", "rmse"),
        "val_rmse": number("federated_val_rmse"),
    }


def federation_list() -> list[dict[str, Any]]:
    """Every federation with its approved sites, training progress and latest scores."""
    federations = (
        Federation.objects.annotate(
            approved_sites=Count(
                "memberships",
                filter=Q(memberships__status=Membership.Status.APPROVED),
                distinct=True,
            ),
            training_done=Count(
                "round_set",
                filter=Q(round_set__kind=Round.Kind.TRAIN, round_set__status=Round.Status.DONE),
                distinct=True,
            ),
        )
        .prefetch_related(
            Prefetch(
                "versions",
                queryset=ModelVersion.objects.filter(status=ModelVersion.Status.ACCEPTED).order_by(
                    "-version"
                ),
            )
        )
        .order_by("name")
    )
    rows = []
    for federation in federations:
        latest = next(iter(federation.versions.all()), None)
        trained = latest is not None and latest.version > 0  # version 0 is untrained
        rows.append(
            {
                "federation": federation,
                "approved_sites": federation.approved_sites,
                "training_done": federation.training_done,
                "untrained": latest is not None and not trained,
                **version_scores(latest.metrics if trained and latest else None),
            }
        )
    return rows


def stage_label(stage: str) -> str:
    return stage.replace("_", " ")


def sent_label(stage: str) -> str:
    """What a message of ``stage`` is, in the words of a site's log of what it sent."""
    if stage in SECURE_STAGES:
        return f"secure aggregation: {stage_label(stage)}"
    return "input in the clear (plain mode)"


def _timing(round_: Round, received: list[Contribution]) -> dict[str, Any]:
    training = [float(c.metrics.get("seconds", 0.0)) for c in received]
    collecting = (round_.closed_at - round_.opened_at).total_seconds() if round_.closed_at else 0.0
    total = (round_.finished_at - round_.opened_at).total_seconds() if round_.finished_at else 0.0
    slowest = max(training, default=0.0)
    return {
        "collecting": round(collecting, 3),
        "training_slowest_site": round(slowest, 3),
        "training_mean": round(sum(training) / len(training), 3) if training else 0.0,
        "waiting_and_transfer": round(max(0.0, collecting - slowest), 3),
        "aggregating": float(round_.timings.get("aggregate_seconds", 0.0)),
        # From opening to the round's result stored; all but the slowest site's training
        # is the protocol's overhead (stage hand-offs, transfers, the queue, aggregating).
        "total": round(total, 3),
        "overhead": round(max(0.0, total - slowest), 3) if total else 0.0,
        "stage_ends": dict(round_.timings.get("stage_ends", {})),
    }


def _round_entry(
    round_: Round, *, now: datetime, stage_answered: int, show_sites: bool
) -> dict[str, Any]:
    contributions = list(round_.contributions.all())  # prefetched, with their sites
    by_status: dict[str, list[str]] = {status: [] for status in Contribution.Status.values}
    for contribution in sorted(contributions, key=lambda c: c.site.name):
        by_status[contribution.status].append(contribution.site.name)
    received = [c for c in contributions if c.status == Contribution.Status.RECEIVED]
    live = round_.status in LIVE_ROUND_STATUSES
    stages = PLAIN_STAGES if round_.stage in PLAIN_STAGES else SECURE_STAGES
    end = round_.finished_at or round_.closed_at
    return {
        "id": round_.id,
        "number": round_.number,
        "kind": round_.kind,
        "kind_label": Round.Kind(round_.kind).label,
        "status": round_.status,
        "status_label": Round.Status(round_.status).label,
        "reason": round_.reason,
        "stage": round_.stage,
        "stage_label": stage_label(round_.stage),
        "stage_number": stages.index(round_.stage) + 1 if round_.stage in stages else None,
        "stages": len(stages),
        "stage_answered": stage_answered,
        "assigned": len(contributions),
        "received": len(by_status[Contribution.Status.RECEIVED]),
        "dropped": len(by_status[Contribution.Status.DROPPED]),
        "excluded": len(by_status[Contribution.Status.EXCLUDED]),
        # A personalisation round: how many sites chose each model (nothing else is known).
        "choices": (round_.outcome or {}).get("choices"),
        "opened_at": round_.opened_at,
        "deadline": round_.deadline,
        "finished_at": round_.finished_at,
        "seconds": round(((end if end else now) - round_.opened_at).total_seconds(), 1),
        "seconds_left": (
            max(0, round((round_.deadline - now).total_seconds()))
            if live and round_.status != Round.Status.AGGREGATING
            else None
        ),
        "timings": round_.timings,
        "timing": _timing(round_, received),
        # Which site answered is for the federation's admin and members, not the public.
        "sites": (
            {
                "received": by_status[Contribution.Status.RECEIVED],
                "dropped": by_status[Contribution.Status.DROPPED],
                "waiting": by_status[Contribution.Status.ASSIGNED],
            }
            if show_sites
            else None
        ),
    }


def federation_progress(
    *, federation: Federation, show_sites: bool = False, show_ledger: bool = False
) -> dict[str, Any]:
    """Rounds and model versions of a federation, for the demo, the pages and tests.

    ``current`` is the round in progress (or None); ``sites`` of each round names the
    sites only with ``show_sites`` (the admin and owners of member sites); ``budget``
    is the privacy budget (None without DP), with its ledger only with ``show_ledger``
    (the admin).
    """
    now = timezone.now()
    # Boosted trees take a round a tree level, hundreds of them: the page lists the newest
    # finished ones and folds the rest into one line.
    grown = Round.objects.filter(
        federation=federation, kind=Round.Kind.BOOST, status=Round.Status.DONE
    )
    folded = list(grown.order_by("-id").values_list("id", flat=True)[SHOWN_BOOST_ROUNDS:])
    rounds_qs = (
        Round.objects.filter(federation=federation)
        .exclude(id__in=folded)
        .prefetch_related(
            Prefetch("contributions", queryset=Contribution.objects.select_related("site"))
        )
        .order_by("id")
    )
    rounds_list = list(rounds_qs)
    staged = [r.id for r in rounds_list if r.stage]
    answered = {
        (row["round_id"], row["stage"]): row["sites"]
        for row in StageMessage.objects.filter(round_id__in=staged)
        .values("round_id", "stage")
        .annotate(sites=Count("site", distinct=True))
    }
    rounds = [
        _round_entry(
            r,
            now=now,
            stage_answered=answered.get((r.id, r.stage), 0),
            show_sites=show_sites,
        )
        for r in rounds_list
    ]
    round_numbers = {r.id: r.number for r in rounds_list}
    versions = [
        {
            "version": v.version,
            "round": round_numbers.get(v.round_id) if v.round_id else None,
            "sha256": v.sha256,
            "status": v.status,
            "verdict": v.verdict,
            "metrics": v.metrics,
            **version_scores(v.metrics),
        }
        for v in federation.versions.order_by("version")
    ]
    live = [r for r in rounds if r["status"] in LIVE_ROUND_STATUSES]
    training = federation_training(federation)
    boosting = training.boosting_settings()
    return {
        "family": training.family,
        "folded_boost_rounds": _folded(folded),
        "trees": _trees_grown(federation) if boosting is not None else None,
        "most_trees": boosting.trees if boosting is not None else None,
        "id": federation.id,
        "name": federation.name,
        "status": federation.status,
        "status_label": Federation.Status(federation.status).label,
        "reason": federation.reason,
        "privacy": federation.privacy_label,
        "training_rounds": federation.rounds,
        "training_done": sum(
            1 for r in rounds if r["kind"] == Round.Kind.TRAIN and r["status"] == Round.Status.DONE
        ),
        "current": live[-1] if live else None,
        "rounds": rounds,
        "versions": versions,
        "budget": federation_budget(federation=federation, with_ledger=show_ledger),
    }


def _folded(ids: list[int]) -> dict[str, Any] | None:
    """The finished boost rounds the page does not list one by one, in one line."""
    if not ids:
        return None
    numbers = Round.objects.filter(id__in=ids).aggregate(
        first=Min("number"), last=Max("number"), count=Count("id"), first_id=Min("id")
    )
    return dict(numbers)


def _trees_grown(federation: Federation) -> int:
    """How many trees the federation's model has so far."""
    packed = (federation.boosting_state or {}).get("trees")
    if not packed:
        return 0
    return Ensemble.from_arrays(m.weights_from_bytes(m.unb64(packed))).trees


def round_timing(*, round_: Round) -> dict[str, Any]:
    """Where a round's time went: sites training, waiting and transfer, aggregation.

    ``collecting`` runs from opening to closing; the slowest site's training is part
    of it, the rest is waiting for stages, downloading and uploading. ``aggregating``
    includes scoring the new global model on the test engines; ``total`` runs from
    opening to the stored result, and ``stage_ends`` gives when each stage ended, in
    seconds since the round opened.
    """
    return _timing(round_, list(round_.contributions.filter(status="received")))


def is_insider(*, federation: Federation, user: Any) -> bool:
    """The admin and the owners of approved member sites."""
    if not getattr(user, "is_authenticated", False):
        return False
    return (
        federation.admin_id == user.pk
        or federation.memberships.filter(status="approved", site__owner=user).exists()
    )


def published_worth(*, federation: Federation) -> list[dict[str, Any]]:
    """What joining is worth at each member site that published it from its console, as
    the site computed it (the coordinator cannot check it), newest first."""
    rows = federation.memberships.filter(published_worth__isnull=False).select_related("site")
    return [
        {"site": m.site.name, "at": m.published_at, **(m.published_worth or {})}
        for m in rows.order_by("-published_at")
    ]


def can_download_models(*, federation: Federation, user: Any) -> bool:
    """The admin and the owners of approved member sites may download its models."""
    return is_insider(federation=federation, user=user)


# A site among the suspects of this many rejected candidates is flagged to the admin.
FLAG_AFTER_REJECTIONS = 2


def flagged_sites(*, federation: Federation) -> list[dict[str, Any]]:
    """The sites among the suspects of repeated rejected candidates (see
    ``ModelVersion.suspects``), most often first, with the versions, for the admin."""
    rejected = federation.versions.filter(status=ModelVersion.Status.REJECTED).order_by("version")
    seen: dict[int, list[int]] = {}
    for version in rejected:
        for site in version.suspects:
            seen.setdefault(int(site), []).append(version.version)
    names = dict(Site.objects.filter(id__in=seen).values_list("id", "name"))
    rows = [
        {"site": names.get(site, f"site {site}"), "versions": versions}
        for site, versions in seen.items()
        if len(versions) >= FLAG_AFTER_REJECTIONS
    ]
    return sorted(rows, key=lambda r: (-len(r["versions"]), r["site"]))


def member_faults(*, federation: Federation) -> list[dict[str, Any]]:
    """What members were proved to have done wrong, newest first, for the admin: the
    round, the stage, the site and the proof in words (see ``Fault``)."""
    faults = Fault.objects.filter(federation=federation).select_related("site", "round")
    return [
        {
            "site": fault.site.name,
            "round": fault.round.number,
            "kind": fault.round.kind,
            "stage": fault.stage.replace("_", " "),
            "detail": fault.detail,
            "when": fault.created_at,
        }
        for fault in faults.order_by("-created_at", "-id")[:50]
    ]


def model_file_response(model: ModelVersion) -> FileResponse:
    """A model version as a download, with its hash for the receiver to check and its
    status (a candidate not scored yet, or one the sites rejected, says so)."""
    response = FileResponse(
        model.file.open("rb"),
        as_attachment=True,
        filename=f"federation-{model.federation_id}-v{model.version}.rulmodel",
    )
    response["X-Model-SHA256"] = model.sha256
    response["X-Model-Status"] = model.status
    return response
