"""Reads for the API and the pages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Prefetch, Q
from django.http import FileResponse
from django.utils import timezone

from federation import budget
from federation.budget import privacy_of
from federation.core.analytics import SENSOR_ENVELOPE
from federation.core.secagg.protocol import STAGES
from federation.models import (
    AnalyticsQuery,
    Contribution,
    Federation,
    Membership,
    ModelVersion,
    PrivacySpend,
    Round,
    Site,
    StageMessage,
)

LIVE_ROUND_STATUSES = (Round.Status.OPEN, Round.Status.COLLECTING, Round.Status.AGGREGATING)
# A worker's requests move Site.last_seen at most once a minute (services.site_authenticate);
# a worker that polls every few seconds is never quieter than this.
WORKER_QUIET_AFTER = timedelta(minutes=3)
SENT_LOG_LIMIT = 50
# Each round adds a line: the newest are enough, as each carries the epsilon so far.
LEDGER_LIMIT = 100


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


# --- federations -------------------------------------------------------------------------


def version_scores(metrics: Any) -> dict[str, float | None]:
    """A version's scores on the public test engines and the sites' validation engines."""

    def number(*keys: str) -> float | None:
        value = metrics
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else None  # type: ignore[arg-type]

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
        .prefetch_related(Prefetch("versions", queryset=ModelVersion.objects.order_by("-version")))
        .order_by("name")
    )
    rows = []
    for federation in federations:
        latest = next(iter(federation.versions.all()), None)
        rows.append(
            {
                "federation": federation,
                "approved_sites": federation.approved_sites,  # type: ignore[attr-defined]
                "training_done": federation.training_done,  # type: ignore[attr-defined]
                **version_scores(latest.metrics if latest else None),
            }
        )
    return rows


def _stage_label(stage: str) -> str:
    return stage.replace("_", " ")


def _timing(round_: Round, received: list[Contribution]) -> dict[str, float]:
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


def _round_entry(
    round_: Round, *, now: datetime, stage_answered: int, show_sites: bool
) -> dict[str, Any]:
    contributions = list(round_.contributions.all())  # prefetched, with their sites
    by_status: dict[str, list[str]] = {status: [] for status in Contribution.Status.values}
    for contribution in sorted(contributions, key=lambda c: c.site.name):
        by_status[contribution.status].append(contribution.site.name)
    received = [c for c in contributions if c.status == Contribution.Status.RECEIVED]
    live = round_.status in LIVE_ROUND_STATUSES
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
        "stage_label": _stage_label(round_.stage),
        "stage_number": STAGES.index(round_.stage) + 1 if round_.stage in STAGES else None,
        "stages": len(STAGES),
        "stage_answered": stage_answered,
        "assigned": len(contributions),
        "received": len(by_status[Contribution.Status.RECEIVED]),
        "dropped": len(by_status[Contribution.Status.DROPPED]),
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
    rounds_qs = (
        Round.objects.filter(federation=federation)
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
            "metrics": v.metrics,
            **version_scores(v.metrics),
        }
        for v in federation.versions.order_by("version")
    ]
    live = [r for r in rounds if r["status"] in LIVE_ROUND_STATUSES]
    return {
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


# --- the privacy budget ------------------------------------------------------------------


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


def round_timing(*, round_: Round) -> dict[str, float]:
    """Where a round's time went: sites training, waiting and transfer, aggregation.

    ``collecting`` runs from opening to closing; the slowest site's training is part
    of it, the rest is polling, downloading, uploading and waiting. ``aggregating``
    includes scoring the new global model on the test engines.
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


def can_download_models(*, federation: Federation, user: Any) -> bool:
    """The admin and the owners of approved member sites may download its models."""
    return is_insider(federation=federation, user=user)


def model_file_response(model: ModelVersion) -> FileResponse:
    """A model version as a download, with its hash for the receiver to check."""
    response = FileResponse(
        model.file.open("rb"),
        as_attachment=True,
        filename=f"federation-{model.federation_id}-v{model.version}.rulmodel",
    )
    response["X-Model-SHA256"] = model.sha256
    return response


# --- a site's portal ----------------------------------------------------------------------


def site_worker_status(*, site: Site, now: datetime | None = None) -> dict[str, Any]:
    """Whether the site's worker is polling, from when the coordinator last heard from it."""
    now = now or timezone.now()
    if site.last_seen is None:
        state = "never"
    elif now - site.last_seen <= WORKER_QUIET_AFTER:
        state = "polling"
    else:
        state = "quiet"
    ago = (now - site.last_seen).total_seconds() if site.last_seen else None
    return {"state": state, "last_seen": site.last_seen, "seconds_ago": ago}


def _file_size(field: Any) -> int | None:
    if not field:
        return None
    try:
        return int(field.size)
    except OSError:  # the file was removed from storage
        return None


def site_sent_log(*, site: Site, limit: int = SENT_LOG_LIMIT) -> list[dict[str, Any]]:
    """What the coordinator received from this site, newest first: when, where, how big.

    Results of rounds and messages of secure-aggregation stages; sizes only, never the
    content, and nothing another site sent.
    """
    entries = []
    results = (
        Contribution.objects.filter(site=site, received_at__isnull=False)
        .select_related("round__federation")
        .order_by("-received_at")[:limit]
    )
    for c in results:
        entries.append(
            {
                "at": c.received_at,
                "federation": c.round.federation,
                "round": c.round.number,
                "kind_label": Round.Kind(c.round.kind).label,
                "what": "round result",
                "examples": c.examples,
                "bytes": _file_size(c.payload),
            }
        )
    stage_messages = (
        StageMessage.objects.filter(site=site)
        .select_related("round__federation")
        .order_by("-received_at")[:limit]
    )
    for m in stage_messages:
        body = len(json.dumps(m.body, separators=(",", ":")).encode()) if m.body else 0
        entries.append(
            {
                "at": m.received_at,
                "federation": m.round.federation,
                "round": m.round.number,
                "kind_label": Round.Kind(m.round.kind).label,
                "what": f"secure aggregation: {_stage_label(m.stage)}",
                "examples": None,
                "bytes": body + (_file_size(m.vector) or 0),
            }
        )
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[:limit]


def site_portal(*, site: Site) -> dict[str, Any]:
    """Everything the site's owner sees on the site's page."""
    memberships = site.memberships.select_related("federation").order_by("federation__name")
    return {
        "worker": site_worker_status(site=site),
        "memberships": list(memberships),
        "sent": site_sent_log(site=site),
        "sent_limit": SENT_LOG_LIMIT,
        "budgets": site_budgets(site=site),
        "ledger_limit": LEDGER_LIMIT,
    }


# --- fleet health: the setup rounds' statistics and analytics queries ---------------------

QUERY_LIST_LIMIT = 50
REGIME_COLORS = ("#1f5fa8", "#b35900", "#2e7d32", "#7b3fa0", "#a8321f", "#4a5868")
_FIGURE_FONT = {"family": "system-ui, sans-serif", "color": "#1d2733"}


def _regime_settings(federation: Federation) -> list[str]:
    """Each operating regime's centre in words (altitude, Mach, throttle), in regime order."""
    regimes = federation.regimes or (federation.pipeline or {}).get("regimes")
    if not regimes:
        return []
    scale = regimes["scale"]
    return [
        f"altitude {c[0] * scale[0]:.0f} kft, Mach {c[1] * scale[1]:.2f}, "
        f"throttle {c[2] * scale[2]:.0f}"
        for c in regimes["centres"]
    ]


def _significant(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def fleet_normalisation(*, federation: Federation) -> dict[str, Any] | None:
    """The federation's scaling statistics, per regime and kept sensor (None before setup).

    They were fitted in the setup rounds from the secure sum of the sites' per-regime
    moments (``FeaturePipeline.fit_moments``): no site's own numbers.
    """
    pipeline = federation.pipeline
    if not pipeline or not pipeline.get("sensors"):
        return None
    sensors, means, stds = pipeline["sensors"], pipeline["mean"], pipeline["std"]
    settings = _regime_settings(federation)
    regimes = [
        {"number": k + 1, "settings": settings[k] if k < len(settings) else ""}
        for k in range(len(means))
    ]
    rows = [
        {
            "sensor": name,
            "cells": [
                {
                    "label": f"Regime {k + 1}",
                    "text": f"{_significant(means[k][j])} ± {_significant(stds[k][j], 3)}",
                }
                for k in range(len(means))
            ],
        }
        for j, name in enumerate(sensors)
    ]
    return {
        "regimes": regimes,
        "rows": rows,
        "figure": _normalisation_figure(sensors, means, stds),
    }


def _normalisation_figure(
    sensors: list[str], means: list[list[float]], stds: list[list[float]]
) -> dict[str, Any]:
    """Each sensor's mean +- std per regime, as a position in its public envelope (-1 to 1),
    so that sensors of very different units share one axis."""
    centre = {s: (low + high) / 2 for s, (low, high) in SENSOR_ENVELOPE.items()}
    half = {s: (high - low) / 2 for s, (low, high) in SENSOR_ENVELOPE.items()}
    data = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": f"regime {k + 1}",
            "x": sensors,
            "y": [(means[k][j] - centre[s]) / half[s] for j, s in enumerate(sensors)],
            "error_y": {
                "type": "data",
                "array": [stds[k][j] / half[s] for j, s in enumerate(sensors)],
            },
            "marker": {"color": REGIME_COLORS[k % len(REGIME_COLORS)]},
            "customdata": [[means[k][j], stds[k][j]] for j in range(len(sensors))],
            "hovertemplate": "%{x}: mean %{customdata[0]:.6g}, std %{customdata[1]:.3g}"
            f"<extra>regime {k + 1}</extra>",
        }
        for k in range(len(means))
    ]
    return {
        "data": data,
        "layout": {
            "height": 300,
            "margin": {"l": 56, "r": 12, "t": 32, "b": 40},
            "font": _FIGURE_FONT,
            "showlegend": len(means) > 1,
            "legend": {"orientation": "h", "x": 0, "y": 1.16},
            "yaxis": {"title": {"text": "place in public range"}, "range": [-1.1, 1.1]},
        },
    }


def analytics_queries(
    *, federation: Federation, limit: int = QUERY_LIST_LIMIT
) -> list[dict[str, Any]]:
    """The federation's analytics queries, newest first, each as the page shows it."""
    queries = (
        AnalyticsQuery.objects.filter(federation=federation)
        .select_related("requested_by")
        .order_by("-id")[:limit]
    )
    settings = _regime_settings(federation)
    return [query_view(query=q, regime_settings=settings) for q in queries]


def analytics_query(*, federation: Federation, query_id: int) -> dict[str, Any] | None:
    """One query of the federation as the page shows it (None: no such query there)."""
    query = (
        AnalyticsQuery.objects.filter(federation=federation, id=query_id)
        .select_related("requested_by")
        .first()
    )
    if query is None:
        return None
    return query_view(query=query, regime_settings=_regime_settings(federation))


def query_view(*, query: AnalyticsQuery, regime_settings: list[str]) -> dict[str, Any]:
    """What the fleet page shows of one query: what was asked, its state, its answer."""
    asked = query.query
    result = query.result if query.status == AnalyticsQuery.Status.DONE else None
    return {
        "id": query.id,
        "created_at": timezone.localtime(query.created_at),
        "finished_at": query.finished_at,
        "requested_by": query.requested_by.get_username() if query.requested_by else "",
        "sensors": asked.get("sensors", []),
        "per_regime": bool(asked.get("per_regime")),
        "histograms": [b["sensor"] for b in asked.get("bins", [])],
        "noise_multiplier": query.noise_multiplier,
        "noise_text": f"{query.noise_multiplier:g}" if query.noise_multiplier else "",
        "status": query.status,
        "status_label": query.get_status_display(),
        "running": query.status == AnalyticsQuery.Status.RUNNING,
        "reason": query.reason,
        "result": _result_view(query.id, asked, result, regime_settings) if result else None,
    }


def _result_view(
    query_id: int, asked: dict[str, Any], result: dict[str, Any], regime_settings: list[str]
) -> dict[str, Any]:
    levels = [f"{float(q):g}" for q in asked.get("quantiles", [])]
    has_quantiles = "quantile_error" in result
    groups = [{"title": "All rows", "count": result["count"], **result["overall"]}]
    for regime in result.get("regimes", []):
        k = regime["regime"]
        where = f" ({regime_settings[k]})" if k < len(regime_settings) else ""
        groups.append({**regime, "title": f"Regime {k + 1}{where}"})
    columns = ["Sensor", "Rows", "Mean", "Std"]
    if has_quantiles:
        columns += [f"Quantile {level}" for level in levels] + ["Below range", "Above range"]
    tables = [
        {
            "title": group["title"],
            "count": group["count"],
            "rows": [
                _sensor_cells(columns, name, group["count"], stats, levels, has_quantiles)
                for name, stats in group["sensors"].items()
            ],
        }
        for group in groups
    ]
    figures = [
        {
            "sensor": name,
            "id": f"query-{query_id}-histogram-{name}",
            "figure_id": f"query-{query_id}-histogram-{name}-figure",
            "figure": _histogram_figure(name, result),
            "caption": _histogram_caption(name, stats["histogram"]),
        }
        for name, stats in result["overall"]["sensors"].items()
        if "histogram" in stats
    ]
    noise = result.get("noise")
    if noise:
        noise = {
            "count_std": f"{noise['count_std']:.3g}",
            "noise_multiplier": f"{noise['noise_multiplier']:g}",
            "clip": f"{noise['clip']:g}",
        }
    return {
        "count": result["count"],
        "columns": columns,
        "tables": tables,
        "histograms": figures,
        "quantile_error": [
            f"{name} ± {width:.3g}" for name, width in result.get("quantile_error", {}).items()
        ],
        "noise": noise,
    }


def _sensor_cells(
    columns: list[str],
    name: str,
    count: int,
    stats: dict[str, Any],
    levels: list[str],
    has_quantiles: bool,
) -> list[dict[str, Any]]:
    texts = [name, str(count), _significant(stats.get("mean")), _significant(stats.get("std"), 4)]
    if has_quantiles:
        quantiles = stats.get("quantiles") or {}
        histogram = stats.get("histogram") or {}
        texts += [_significant(quantiles.get(level)) for level in levels]
        texts += [str(histogram.get("below", "")), str(histogram.get("above", ""))]
    return [
        {"label": label, "text": text, "number": i > 0}
        for i, (label, text) in enumerate(zip(columns, texts, strict=True))
    ]


def _histogram_caption(sensor: str, histogram: dict[str, Any]) -> str:
    return (
        f"{sensor}: {len(histogram['counts'])} bins of {histogram['bin_width']:.4g} from "
        f"{histogram['low']:g} to {histogram['high']:g}; {histogram['below']} rows below "
        f"the range and {histogram['above']} above it"
    )


def _histogram_figure(sensor: str, result: dict[str, Any]) -> dict[str, Any]:
    """The sensor's histogram: one bar per bin, stacked by regime when the query has them
    (the stack is then the histogram of all rows)."""
    overall = result["overall"]["sensors"][sensor]["histogram"]
    low, width = overall["low"], overall["bin_width"]
    centres = [low + width * (i + 0.5) for i in range(len(overall["counts"]))]
    parts = [
        (f"regime {r['regime'] + 1}", r["sensors"][sensor]["histogram"]["counts"], r["regime"])
        for r in result.get("regimes", [])
        if "histogram" in r["sensors"].get(sensor, {})
    ] or [("all rows", overall["counts"], 0)]
    data = [
        {
            "type": "bar",
            "name": name,
            "x": centres,
            "y": counts,
            "width": width,
            "marker": {"color": REGIME_COLORS[k % len(REGIME_COLORS)]},
            "hovertemplate": f"%{{x:.6g}} ± {width / 2:.3g}: %{{y}} rows<extra>{name}</extra>",
        }
        for name, counts, k in parts
    ]
    return {
        "data": data,
        "layout": {
            "height": 300,
            "barmode": "stack",
            "bargap": 0,
            "margin": {"l": 56, "r": 12, "t": 28, "b": 44},
            "font": _FIGURE_FONT,
            "showlegend": len(data) > 1,
            "legend": {"orientation": "h", "x": 0, "y": 1.2},
            "xaxis": {"title": {"text": sensor}},
            "yaxis": {"title": {"text": "rows"}, "rangemode": "tozero"},
        },
    }


def histogram_defaults(*, federation: Federation) -> dict[str, tuple[float, float]]:
    """A default histogram range per sensor: the fleet's mean +- 4 std over all regimes
    (from the setup rounds), else the sensor's public envelope."""
    ranges = dict(SENSOR_ENVELOPE)
    pipeline = federation.pipeline or {}
    for j, name in enumerate(pipeline.get("sensors", [])):
        lows = [m[j] - 4 * s[j] for m, s in zip(pipeline["mean"], pipeline["std"], strict=True)]
        highs = [m[j] + 4 * s[j] for m, s in zip(pipeline["mean"], pipeline["std"], strict=True)]
        ranges[name] = (float(f"{min(lows):.6g}"), float(f"{max(highs):.6g}"))
    return ranges
