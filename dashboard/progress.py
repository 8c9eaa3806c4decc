"""What a federation's page shows of its progress, as pure functions of selector output.

``federation_page`` turns ``federation.selectors.federation_progress`` into the words,
table cells and plotly figure of the page. The server renders them into the page, and
the page's script fetches the same dictionary as JSON every few seconds and puts it in
place: one formatting, with or without JavaScript.
"""

from __future__ import annotations

import math
from typing import Any

from federation.core.messages import PLAIN_INPUT
from federation.core.privacy import PrivacySettings, budget_preview

RUNNING = "running"
ROUND_COLUMNS = ("Round", "Kind", "Status", "Sites answered", "Dropped", "Time")
VERSION_COLUMNS = (
    "Version",
    "Test RMSE",
    "NASA score",
    "Sites' validation RMSE",
    "Status",
    "SHA-256",
)
NUMERIC_VERSION_COLUMNS = frozenset(VERSION_COLUMNS[1:4])
LEDGER_COLUMNS = ("When", "Kind", "What", "Noise multiplier", "Sample fraction", "Epsilon after")
NUMERIC_LEDGER_COLUMNS = frozenset(LEDGER_COLUMNS[3:])
COLORS = {"rmse": "#1f5fa8", "val_rmse": "#2e7d32", "score": "#b35900"}


def duration(seconds: float | None) -> str:
    """12.3 s, 4 min 10 s, 1 h 3 min."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def number(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _round_title(round_: dict[str, Any], training_rounds: int) -> str:
    title = f"{round_['kind_label'].capitalize()} round {round_['number']}"
    return f"{title} of {training_rounds}" if round_["kind"] == "train" else title


def _stage_line(round_: dict[str, Any]) -> str:
    if not round_["stage"]:
        return ""
    if round_["stage"] == PLAIN_INPUT:
        return (
            f"Plain aggregation, for debugging: {round_['stage_answered']} of "
            f"{round_['assigned']} sites sent their input in the clear"
        )
    position = (
        f"stage {round_['stage_number']} of {round_['stages']}, " if round_["stage_number"] else ""
    )
    return (
        f"Secure aggregation, {position}{round_['stage_label']}: "
        f"{round_['stage_answered']} of {round_['assigned']} sites answered this stage"
    )


def live_summary(progress: dict[str, Any]) -> dict[str, Any]:
    """The round in progress, in words and as the numbers of two progress bars."""
    current = progress["current"]
    if progress.get("family") == "trees":
        overall = {"value": progress["trees"], "max": progress["most_trees"]}
        overall["text"] = (
            f"{overall['value']} trees grown, of at most {overall['max']} (growing stops "
            "earlier once the sites' validation stops improving)"
        )
        done = f"{progress['trees']} trees grown"
    else:
        overall = {"value": progress["training_done"], "max": progress["training_rounds"]}
        overall["text"] = f"{overall['value']} of {overall['max']} training rounds done"
        done = f"{progress['training_done']} training rounds done"
    if current is None:
        headline = {
            "draft": "Not started yet.",
            "finished": f"Finished: {done}.",
            "failed": f"Stopped: {progress['reason']}" if progress["reason"] else "Stopped.",
        }.get(progress["status"], "Opening the next round.")
        return {
            "headline": headline,
            "round": None,
            "stage": "",
            "deadline": "",
            "overall": overall,
        }
    answered = {"value": current["received"], "max": current["assigned"]}
    deadline = ""
    if current["seconds_left"] is not None:
        deadline = f"Closes at the latest in {duration(current['seconds_left'])}."
    return {
        "headline": f"{_round_title(current, progress['training_rounds'])}: "
        f"{current['status_label']}.",
        "round": {
            **answered,
            "text": f"{answered['value']} of {answered['max']} sites have sent their input",
        },
        "stage": _stage_line(current),
        "deadline": deadline,
        "overall": overall,
    }


def _sites_cell(count: int, of: int | None, names: list[str] | None) -> str:
    text = f"{count} of {of}" if of is not None else str(count)
    return f"{text}: {', '.join(names)}" if names else text


def _time_cell(round_: dict[str, Any]) -> str:
    if round_["status"] in {"open", "collecting", "aggregating"}:
        return f"{duration(round_['seconds'])} so far"
    text = duration(round_["seconds"])
    timing = round_["timing"]
    if round_["kind"] in ("train", "boost") and round_["status"] == "done":
        text += (
            f" (training {duration(timing['training_slowest_site'])}, "
            f"aggregation {duration(timing['aggregating'])})"
        )
    return text


def _cells(
    columns: tuple[str, ...], texts: list[str], numeric: frozenset[str] = NUMERIC_VERSION_COLUMNS
) -> list[dict[str, Any]]:
    """Each cell with its column's name (a phone shows it beside the value)."""
    return [
        {"label": label, "text": text, "number": label in numeric}
        for label, text in zip(columns, texts, strict=True)
    ]


# How the rounds table names the models a site may choose after personalisation.
CHOICE_WORDS = {
    "global": "the federation's model",
    "personal": "their fine-tuned copy",
    "alone": "their own model",
    "mixture": "the mixture of their copy and their own",
    "ditto": "their Ditto model",
}


def round_rows(progress: dict[str, Any]) -> list[dict[str, Any]]:
    """The rounds table, newest first: one list of cells per round."""
    rows = []
    folded = progress.get("folded_boost_rounds")
    for r in reversed(progress["rounds"]):
        if folded and r["id"] < folded["first_id"]:  # the folded rounds come in here
            rows.append(_folded_row(folded))
            folded = None
        sites = r["sites"] or {}
        status = r["status_label"]
        if r["stage"] and r["status"] in {"open", "collecting"}:
            status += f" ({r['stage_label']})"
        if r["reason"]:
            status += f": {r['reason']}"
        if r.get("excluded"):
            status += f" ({r['excluded']} excluded for breaking the protocol)"
        if r.get("choices"):
            chose = ", ".join(
                f"{count} {CHOICE_WORDS.get(name, name)}"
                for name, count in r["choices"].items()
                if count or name in ("global", "personal", "alone")
            )
            status += f"; sites chose: {chose}"
        rows.append(
            {
                "id": r["id"],
                "live": r["status"] in {"open", "collecting", "aggregating"},
                "cells": _cells(
                    ROUND_COLUMNS,
                    [
                        str(r["number"]),
                        r["kind_label"],
                        status,
                        _sites_cell(r["received"], r["assigned"], sites.get("received")),
                        _sites_cell(r["dropped"], None, sites.get("dropped")),
                        _time_cell(r),
                    ],
                ),
            }
        )
    if folded:
        rows.append(_folded_row(folded))
    return rows


def _folded_row(folded: dict[str, Any]) -> dict[str, Any]:
    """Earlier boost rounds, one line for them all."""
    return {
        "id": f"boost-{folded['first']}-{folded['last']}",
        "live": False,
        "cells": _cells(
            ROUND_COLUMNS,
            [
                f"{folded['first']}-{folded['last']}",
                "growing trees",
                f"done: {folded['count']} earlier rounds, one tree level each",
                "",
                "",
                "",
            ],
        ),
    }


def _version_status(version: dict[str, Any]) -> str:
    if version["status"] == "candidate":
        return "candidate: the next round's sites score it against the accepted model"
    return f"{version['status']}: {version['verdict']}" if version["verdict"] else version["status"]


def version_rows(progress: dict[str, Any]) -> list[dict[str, Any]]:
    """The model versions table: the chart's numbers, for reading and for screen readers."""
    return [
        {
            "version": v["version"],
            "cells": _cells(
                VERSION_COLUMNS,
                [
                    str(v["version"]),
                    number(v["rmse"]) or "not scored",
                    number(v["score"], 0),
                    number(v["val_rmse"]),
                    _version_status(v),
                    v["sha256"][:16],
                ],
            ),
        }
        for v in progress["versions"]
    ]


def metrics_figure(versions: list[dict[str, Any]]) -> dict[str, Any]:
    """Test RMSE and the sites' validation RMSE above, the NASA score (log scale) below, of
    the versions not rejected (a rejected one was never the federation's model)."""
    versions = [v for v in versions if v["status"] != "rejected"]
    x = [v["version"] for v in versions]

    def trace(key: str, name: str, axis: str) -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "lines+markers",
            "name": name,
            "x": x,
            "y": [v[key] for v in versions],
            "yaxis": axis,
            "line": {"color": COLORS[key]},
            "hovertemplate": f"version %{{x}}: %{{y:.2f}}<extra>{name}</extra>",
        }

    figure: dict[str, Any] = {
        "data": [
            trace("rmse", "test RMSE", "y"),
            trace("val_rmse", "sites' validation RMSE", "y"),
            trace("score", "NASA score", "y2"),
        ],
        "layout": {
            "height": 420,
            "margin": {"l": 64, "r": 12, "t": 40, "b": 48},
            "font": {"family": "system-ui, sans-serif", "color": "#1d2733"},
            "legend": {"orientation": "h", "x": 0, "y": 1.14},
            "xaxis": {
                "title": {"text": "model version (training round)"},
                "dtick": 1,
                "anchor": "y2",
            },
            "yaxis": {
                "title": {"text": "RMSE (cycles)"},
                "domain": [0.56, 1],
                "rangemode": "tozero",
            },
            "yaxis2": {"title": {"text": "NASA score"}, "domain": [0, 0.44], "type": "log"},
        },
    }
    _scale_to_trained(figure, versions)
    return figure


def _scale_to_trained(figure: dict[str, Any], versions: list[dict[str, Any]]) -> None:
    """Scale the axes to the trained versions: version 0, the untrained initial model, is
    far worse and would flatten the real improvement. It stays on the chart, labelled,
    above the top where it does not fit."""
    trained = [v for v in versions if v["version"] > 0]
    untrained = next((v for v in versions if v["version"] == 0), None)
    rmses = [v[k] for v in trained for k in ("rmse", "val_rmse") if v[k] is not None]
    scores = [v["score"] for v in trained if v["score"] is not None and v["score"] > 0]
    layout = figure["layout"]
    if rmses:
        layout["yaxis"]["range"] = [0, max(rmses) * 1.15]
    if scores:
        layout["yaxis2"]["range"] = [
            math.log10(min(scores)) - 0.15,
            math.log10(max(scores)) + 0.15,
        ]
    if untrained is not None and untrained["rmse"] is not None:
        off_scale = bool(rmses) and untrained["rmse"] > max(rmses) * 1.15
        layout["annotations"] = [
            {
                "x": 0,
                "y": 1 if off_scale else untrained["rmse"],
                "xref": "x",
                "yref": "y domain" if off_scale else "y",
                "text": f"version 0: untrained, RMSE {untrained['rmse']:.1f}"
                + (" (off the scale)" if off_scale else ""),
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 11, "color": "#5b6770"},
            }
        ]


def epsilon(value: float) -> str:
    """3 significant digits: 0.5, 3.21, 12.3."""
    return f"{value:.3g}"


def ledger_rows(ledger: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines of a privacy ledger as table rows, in the ledger's order."""
    return [
        {
            "cells": _cells(
                LEDGER_COLUMNS,
                [
                    line["at"].strftime("%Y-%m-%d %H:%M:%S"),
                    line["kind_label"],
                    line["description"],
                    f"{line['noise_multiplier']:g}",
                    f"{line['sample_fraction']:g}",
                    epsilon(line["epsilon"]),
                ],
                NUMERIC_LEDGER_COLUMNS,
            )
        }
        for line in ledger
    ]


def budget_meter(spent: float, limit: float, before: str = "") -> dict[str, Any]:
    """Epsilon spent against a limit, as a progress bar's numbers and in words."""
    left = max(0.0, limit - spent)
    text = f"epsilon {epsilon(spent)} of {limit:g} spent, "
    text += f"{epsilon(left)} left" if left else "none left"
    # A bar cannot go past its end; the words say how far the spending went.
    return {"value": min(spent, limit), "max": limit, "text": text + before}


def privacy_settings(settings: dict[str, float]) -> list[dict[str, str]]:
    """A federation's DP settings (federation.core.privacy.PrivacySettings) in words."""
    sigma, clip, fraction = (
        settings["noise_multiplier"],
        settings["clip"],
        settings["sample_fraction"],
    )
    sampled = (
        "every approved site takes part in each training round"
        if fraction >= 1
        else f"each training round draws each site with probability {fraction:g} (Poisson)"
    )
    return [
        {
            "label": "Noise multiplier",
            "text": f"{sigma:g}: the sum of the sites' updates carries Gaussian noise of "
            f"standard deviation {sigma:g} x the clipping bound, added in shares by the sites",
        },
        {
            "label": "Clipping bound",
            "text": f"{clip:g}: each site's model update is clipped to this L2 norm, so no "
            "one site moves the sum further",
        },
        {
            "label": "Target epsilon",
            "text": f"{settings['epsilon']:g} at delta {settings['delta']:g}: no training "
            "round or analytics query starts that would take the federation past it",
        },
        {"label": "Sample fraction", "text": f"{fraction:g}: {sampled}"},
    ]


def budget_summary(budget: dict[str, Any] | None, rounds: int = 0) -> dict[str, Any] | None:
    """The federation's epsilon spent against its target, its settings in words, how
    many of its ``rounds`` training rounds the budget allows, and its ledger's rows if
    given."""
    if budget is None:
        return None
    ledger = budget["ledger"]
    return {
        **budget_meter(budget["spent"], budget["settings"]["epsilon"]),
        "settings": privacy_settings(budget["settings"]),
        "allowance": budget_preview(PrivacySettings.from_dict(budget["settings"]), rounds)
        if rounds
        else "",
        "ledger": ledger_rows(ledger) if ledger is not None else None,
        "ledger_limit": budget["ledger_limit"],
    }


def site_budget_summary(budget: dict[str, Any]) -> dict[str, Any]:
    """What one site spent in one federation, against its own cap if it set one, else
    against the federation's target; the site's ledger's rows."""
    cap, target = budget["cap"], budget["settings"]["epsilon"]
    if cap is not None:
        meter = budget_meter(budget["spent"], cap, " before the site's cap")
        limits = f"The site's own cap: epsilon {cap:g}; the federation's target: {target:g}."
    else:
        meter = budget_meter(budget["spent"], target, " before the federation's target")
        limits = f"No cap of its own; the federation's target: epsilon {target:g}."
    return {**budget, "meter": meter, "limits": limits, "rows": ledger_rows(budget["ledger"])}


def model_warning(versions: list[dict[str, Any]], *, private: bool) -> str:
    """Words of warning when the federation's latest model predicts no better than the
    untrained one (version 0) on the test engines: it must not be used."""
    scored = [v for v in versions if v["status"] != "rejected" and v["rmse"] is not None]
    untrained = next((v for v in scored if v["version"] == 0), None)
    latest = max((v for v in scored if v["version"] > 0), key=lambda v: v["version"], default=None)
    if untrained is None or latest is None or latest["rmse"] < untrained["rmse"]:
        return ""
    why = (
        " Under differential privacy the noise drowns the sites' updates: with few sites, "
        "site-level DP costs this much (see the README on what privacy costs)."
        if private
        else ""
    )
    return (
        f"Do not use this model: version {latest['version']} (test RMSE "
        f"{latest['rmse']:.1f}) predicts no better than the untrained model (RMSE "
        f"{untrained['rmse']:.1f}).{why}"
    )


def federation_page(progress: dict[str, Any]) -> dict[str, Any]:
    """Everything of the page that changes while a federation runs."""
    return {
        "status": progress["status"],
        "status_label": progress["status_label"],
        "reason": progress["reason"],
        "running": progress["status"] == RUNNING,
        "live": live_summary(progress),
        "round_columns": ROUND_COLUMNS,
        "rounds": round_rows(progress),
        "version_columns": VERSION_COLUMNS,
        "versions": version_rows(progress),
        "figure": metrics_figure(progress["versions"]),
        "model_warning": model_warning(
            progress["versions"], private=progress["budget"] is not None
        ),
        "budget": budget_summary(progress["budget"], progress["training_rounds"]),
        "ledger_columns": LEDGER_COLUMNS,
    }
