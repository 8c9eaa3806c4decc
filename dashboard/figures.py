"""Plotly figures of the fleet-health page, built by pure functions from selector output."""

from __future__ import annotations

from typing import Any

from federation.core.analytics import SENSOR_ENVELOPE

REGIME_COLORS = ("#1f5fa8", "#b35900", "#2e7d32", "#7b3fa0", "#a8321f", "#4a5868")
FIGURE_FONT = {"family": "system-ui, sans-serif", "color": "#1d2733"}


def normalisation_figure(
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
            "font": FIGURE_FONT,
            "showlegend": len(means) > 1,
            "legend": {"orientation": "h", "x": 0, "y": 1.16},
            "yaxis": {"title": {"text": "place in public range"}, "range": [-1.1, 1.1]},
        },
    }


def histogram_figure(sensor: str, result: dict[str, Any]) -> dict[str, Any]:
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
            "font": FIGURE_FONT,
            "showlegend": len(data) > 1,
            "legend": {"orientation": "h", "x": 0, "y": 1.2},
            "xaxis": {"title": {"text": sensor}},
            "yaxis": {"title": {"text": "rows"}, "rangemode": "tozero"},
        },
    }


def with_figures(normalisation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fleet's scaling statistics with their chart."""
    if normalisation is None:
        return None
    figure = normalisation_figure(
        normalisation["sensors"], normalisation["means"], normalisation["stds"]
    )
    return {**normalisation, "figure": figure}


def query_with_figures(query: dict[str, Any]) -> dict[str, Any]:
    """One analytics query as the page shows it, each histogram with its chart."""
    result = query.get("result")
    if not result:
        return query
    histograms = [
        {**h, "figure": histogram_figure(h["sensor"], query["answer"])}
        for h in result["histograms"]
    ]
    return {**query, "result": {**result, "histograms": histograms}}
