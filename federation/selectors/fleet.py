"""Reads of a fleet's health: the scaling statistics fitted in the setup rounds and the
federation's analytics queries, as data (the pages draw them)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from federation.core.analytics import SENSOR_ENVELOPE
from federation.models import AnalyticsQuery, Federation
from turbofan.data.sensors import sensor_label

QUERY_LIST_LIMIT = 50


def regime_settings(federation: Federation) -> list[str]:
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
    settings = regime_settings(federation)
    regimes = [
        {"number": k + 1, "settings": settings[k] if k < len(settings) else ""}
        for k in range(len(means))
    ]
    rows = [
        {
            "sensor": name,
            "label": sensor_label(name),
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
    return {"regimes": regimes, "rows": rows, "sensors": sensors, "means": means, "stds": stds}


def analytics_queries(
    *, federation: Federation, limit: int = QUERY_LIST_LIMIT
) -> list[dict[str, Any]]:
    """The federation's analytics queries, newest first, each as the page shows it."""
    queries = (
        AnalyticsQuery.objects.filter(federation=federation)
        .select_related("requested_by")
        .order_by("-id")[:limit]
    )
    settings = regime_settings(federation)
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
    return query_view(query=query, regime_settings=regime_settings(federation))


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
        "answer": result,  # the decoded answer itself, for the pages' charts
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
