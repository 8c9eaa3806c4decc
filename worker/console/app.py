"""The console's pages: parse the query, compute from the site's folders, render.

The site's owner signs in by opening the address ``site_console`` prints once: it
carries the console's secret (``?key=``), which becomes a cookie for this console only.
No page reads the coordinator's database or sends anything anywhere.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from federation.core.private_files import write_private
from turbofan.plan import Worth, plan_engine, replay_worth
from worker.console.forms import SettingsForm
from worker.console.state import (
    CHOSEN,
    FEDERATION,
    LOCAL,
    ConsoleError,
    SiteState,
    console_secret,
)
from worker.ledger import PrivacyLedger
from worker.peers import PeerBook
from worker.site_runtime import PUBLISH, read_outbox, what_was_sent

DEFAULT_THRESHOLD = 10  # the replay's, unless the owner gives one: the original Tycoon's
# The fleet table's sortable columns: key, heading, numeric.
COLUMNS = (
    ("file", "File", False),
    ("unit", "Unit", True),
    ("cycles", "Cycles run", True),
    ("predicted", "Predicted RUL (90% interval)", True),
    ("local", "Local model's RUL", True),
    ("pull_in", "Plan", True),
    ("fail_chance", "Fail chance", True),
)
SORTS = tuple(key for key, _, _ in COLUMNS)

_state: SiteState | None = None


def configure(state_dir: Path, data_dir: Path | None = None) -> SiteState:
    """Point the console at a site's folders (``site_console`` does, and tests)."""
    global _state
    _state = SiteState(state_dir, data_dir)
    console_secret(_state.state_dir)
    return _state


def current() -> SiteState:
    if _state is None:
        raise RuntimeError("the console is not configured: run it with manage.py site_console")
    return _state


def cookie_name(secret: str) -> str:
    """One cookie per console: several sites' consoles on one machine keep apart."""
    return "site_console_" + hashlib.sha256(secret.encode()).hexdigest()[:10]


View = Callable[..., HttpResponse]


def signed_in(view: View) -> View:
    """Only the site's owner: the one who holds the console's secret."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        state = current()
        secret = console_secret(state.state_dir)
        key = request.GET.get("key")
        if key is not None:
            if not hmac.compare_digest(key.encode(), secret.encode()):
                return _refused(request, state, "That key is not this console's.")
            rest = request.GET.copy()
            del rest["key"]
            target = request.path + (f"?{rest.urlencode()}" if rest else "")
            response = HttpResponseRedirect(target)
            response.set_cookie(
                cookie_name(secret), secret, httponly=True, samesite="Strict", max_age=30 * 86400
            )
            return response
        held = request.COOKIES.get(cookie_name(secret), "")
        if not hmac.compare_digest(held.encode(), secret.encode()):
            return _refused(
                request, state, "Open the address site_console printed: it signs you in."
            )
        return view(request, state, *args, **kwargs)

    return wrapped


def _refused(request: HttpRequest, state: SiteState, why: str) -> HttpResponse:
    return render(
        request,
        "console/refused.html",
        {"site": state.name, "why": why, "state_dir": state.state_dir},
        status=403,
    )


def _page(request: HttpRequest, state: SiteState, template: str, **context: Any) -> HttpResponse:
    query = request.GET.copy()
    query.pop("sort", None)
    query.pop("q", None)
    query.pop("show", None)
    context.setdefault("status", 200)
    return render(
        request,
        template,
        {
            "site": state.name,
            "coordinator": state.site.get("coordinator"),
            "settings_query": urlencode(dict(query.items())),
            **context,
        },
        status=context["status"],
    )


# --- the fleet and its plan ------------------------------------------------------------


def fleet_rows(state: SiteState, form: SettingsForm) -> dict[str, Any]:
    """Every engine in service with its predictions, interval and part in the plan."""
    economics = form.economics()
    horizon = int(form.cleaned_data["horizon"])
    given = form.cleaned_data.get("threshold")
    threshold = int(given) if given else None
    calibration = state.calibration(CHOSEN)
    rows: list[dict[str, Any]] = []
    for engine in state.fleet():
        predicted = engine.predicted[CHOSEN]
        low, high = calibration.interval(predicted)
        plan = plan_engine(
            predicted,
            engine.cycles,
            calibration,
            economics,
            horizon=horizon,
            threshold=threshold,
        )
        rows.append(
            {
                "file": engine.file,
                "unit": engine.unit,
                "cycles": engine.cycles,
                "predicted": predicted,
                "low": low,
                "high": high,
                "local": engine.predicted.get(LOCAL),
                "federation": engine.predicted.get(FEDERATION),
                "pull_in": plan.pull_in,
                "fail_chance": plan.fail_chance,
                "plan_cost": plan.plan_cost,
                "run_cost": plan.run_cost,
                "run_fail_chance": plan.run_fail_chance,
                "life_left": plan.life_left_at_pull,
                "sparks": [(s, _spark(v)) for s, v in engine.sparks.items()],
            }
        )
    pulled = [r for r in rows if r["pull_in"] is not None]
    return {
        "rows": rows,
        "threshold": threshold,
        "horizon": horizon,
        "calibration_engines": calibration.engines,
        "totals": {
            "engines": len(rows),
            "pulls": len(pulled),
            "plan_cost": sum(r["plan_cost"] for r in rows),
            "run_cost": sum(r["run_cost"] for r in rows),
            "plan_failures": sum(r["fail_chance"] for r in rows),
            "run_failures": sum(r["run_fail_chance"] for r in rows),
            "life_left": sum(r["life_left"] for r in pulled if not math.isnan(r["life_left"])),
        },
    }


def _spark(values: list[float], width: int = 90, height: int = 22) -> str:
    """SVG polyline points of a sparkline, scaled to its own range."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
        for i, v in enumerate(values)
    )


def _sorted_filtered(rows: list[dict[str, Any]], request: HttpRequest) -> list[dict[str, Any]]:
    text = request.GET.get("q", "").strip().lower()
    if text:
        rows = [r for r in rows if text in f"{r['file']} {r['unit']}".lower()]
    if request.GET.get("show") == "pull":
        rows = [r for r in rows if r["pull_in"] is not None]
    sort = request.GET.get("sort", "pull_in")
    key = sort.lstrip("-")
    if key not in SORTS:
        key, sort = "pull_in", "pull_in"

    def order(row: dict[str, Any]) -> tuple[int, Any, float]:
        value = row[key]
        return (value is None, value if value is not None else 0, row["predicted"])

    rows = sorted(rows, key=order, reverse=sort.startswith("-"))
    if sort.startswith("-"):  # engines never pulled still last
        rows = [r for r in rows if r[key] is not None] + [r for r in rows if r[key] is None]
    return rows


@signed_in
def fleet_page(request: HttpRequest, state: SiteState) -> HttpResponse:
    form = SettingsForm(request.GET)
    listing = request.GET.copy()
    listing.pop("sort", None)
    context: dict[str, Any] = {
        "form": form,
        "sort": request.GET.get("sort", "pull_in"),
        "q": request.GET.get("q", ""),
        "show": request.GET.get("show", ""),
        "columns": COLUMNS,
        "list_query": listing.urlencode(),
    }
    if not form.is_valid():
        return _page(request, state, "console/fleet.html", status=400, **context)
    try:
        state.require_models()
        if not state.fleet_files():
            raise ConsoleError(
                f"No engine in service: put test-format files (test_*.txt: runs that have "
                f"not failed yet) in {state.data_dir}."
            )
        plan = fleet_rows(state, form)
    except ConsoleError as error:
        return _page(request, state, "console/fleet.html", not_yet=str(error), **context)
    plan["rows"] = _sorted_filtered(plan["rows"], request)
    return _page(request, state, "console/fleet.html", plan=plan, **context)


@signed_in
def fleet_csv(request: HttpRequest, state: SiteState) -> HttpResponse:
    form = SettingsForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items())
        return HttpResponse(errors, status=400, content_type="text/plain")
    try:
        plan = fleet_rows(state, form)
    except ConsoleError as error:
        return HttpResponse(str(error), status=409, content_type="text/plain")
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{state.name}-fleet-plan.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "file",
            "unit",
            "cycles_run",
            "predicted_rul",
            "interval_low",
            "interval_high",
            "local_predicted_rul",
            "pull_in_cycles",
            "fail_chance",
            "plan_cost",
            "run_to_failure_cost",
        ]
    )
    for r in _sorted_filtered(plan["rows"], request):
        writer.writerow(
            [
                r["file"],
                r["unit"],
                r["cycles"],
                f"{r['predicted']:.3f}",
                f"{r['low']:.1f}",
                f"{r['high']:.1f}",
                "" if r["local"] is None else f"{r['local']:.3f}",
                "" if r["pull_in"] is None else r["pull_in"],
                f"{r['fail_chance']:.3f}",
                f"{r['plan_cost']:.0f}",
                f"{r['run_cost']:.0f}",
            ]
        )
    return response


# --- what joining is worth -----------------------------------------------------------------


def worth_of(state: SiteState, form: SettingsForm) -> dict[str, Any]:
    """Each model in the replay of the site's validation engines against the local one,
    all maintaining at one threshold: the owner's, else the original Tycoon's. (Tuning
    a threshold per model on these few engines would flatter whichever got lucky.)"""
    economics = form.economics()
    lives, predicted = state.replay_pool()
    given = form.cleaned_data.get("threshold")
    threshold = int(given) if given else DEFAULT_THRESHOLD
    compared: dict[str, Worth] = {}
    for role in (CHOSEN, FEDERATION):
        compared[role] = replay_worth(
            lives,
            {role: predicted[role], LOCAL: predicted[LOCAL]},
            economics,
            thresholds={role: threshold, LOCAL: threshold},
        )
    choice = state.choice() or {}
    return {
        "threshold": threshold,
        "threshold_source": "yours" if given else "the original Tycoon's",
        "engines": len(lives),
        "economics": economics,
        "chosen": compared[CHOSEN],
        "gain": abs(compared[CHOSEN].difference),
        "federation": compared[FEDERATION],
        "choice": choice.get("choice"),
        "val_rmse": choice.get("val_rmse", {}),
    }


def publication(state: SiteState) -> dict[str, Any]:
    """What the site published of its worth (from its outbox), and what waits to go."""
    sent = [
        e
        for e in read_outbox(state.state_dir)
        if e.get("path") == "/api/v1/site/worth" and e.get("status") == 200
    ]
    pending = state.state_dir / PUBLISH
    return {
        "last": sent[-1] if sent else None,
        "pending": json.loads(pending.read_text()) if pending.is_file() else None,
    }


@signed_in
def worth_page(request: HttpRequest, state: SiteState) -> HttpResponse:
    form = SettingsForm(request.GET)
    context: dict[str, Any] = {"form": form, "publication": publication(state)}
    if not form.is_valid():
        return _page(request, state, "console/worth.html", status=400, **context)
    try:
        worth = worth_of(state, form)
    except ConsoleError as error:
        return _page(request, state, "console/worth.html", not_yet=str(error), **context)
    return _page(request, state, "console/worth.html", worth=worth, **context)


@signed_in
@require_POST
def publish_worth(request: HttpRequest, state: SiteState) -> HttpResponse:
    """The owner's choice to publish the headline figure to the federation: queued for
    the site's worker, which sends it at its next poll and logs it in the outbox."""
    form = SettingsForm(request.POST)
    if request.POST.get("confirm") != "yes" or not form.is_valid():
        return _page(
            request,
            state,
            "console/worth.html",
            form=form,
            publication=publication(state),
            not_yet="Nothing was published: tick the box to confirm, with valid settings.",
            status=400,
        )
    federation = (state.choice() or {}).get("federation") or {}
    try:
        worth = worth_of(state, form)
        if not federation.get("id"):
            raise ConsoleError(
                "This site's choice does not say which federation it came from (it was "
                "made by an older worker): publish after the next personalisation round."
            )
    except ConsoleError as error:
        return _page(
            request, state, "console/worth.html", form=form, not_yet=str(error), status=409
        )
    chosen, economics = worth["chosen"], worth["economics"]
    figure = {
        "federation": int(federation["id"]),
        "federation_name": federation.get("name"),
        "worth": round(chosen.difference, 2),
        "low": round(chosen.low, 2),
        "high": round(chosen.high, 2),
        "level": chosen.level,
        "engines": chosen.engines,
        "fleet_size": economics.fleet_size,
        "horizon": economics.horizon,
    }
    write_private(state.state_dir / PUBLISH, json.dumps(figure).encode())
    query = urlencode({k: v for k, v in request.POST.items() if k in form.fields})
    return HttpResponseRedirect(reverse("console:worth") + (f"?{query}" if query else ""))


# --- what left, who it talks to, what it spent ---------------------------------------------


def outbox_by_round(state: SiteState) -> dict[str, Any]:
    """The outbox grouped by federation and round, in the order sent, and the refusals."""
    groups: dict[str, dict[str, Any]] = {}
    refused, other = [], []
    for entry in read_outbox(state.state_dir):
        if "refused" in entry:
            refused.append(entry)
            continue
        line = {**entry, "what": what_was_sent(entry)}
        if "round" not in entry:
            other.append(line)
            continue
        key = f"{entry.get('federation')}, {entry.get('kind')} round {entry['round']}"
        group = groups.setdefault(key, {"label": key, "lines": [], "bytes": 0})
        group["lines"].append(line)
        group["bytes"] += int(entry.get("bytes", 0))
    return {
        "rounds": list(groups.values())[::-1],  # newest first
        "refused": refused[::-1],
        "other": [o for o in other if o.get("method") != "GET"][::-1],
        "requests": sum(1 for o in other if o.get("method") == "GET"),
    }


@signed_in
def sent_page(request: HttpRequest, state: SiteState) -> HttpResponse:
    return _page(request, state, "console/sent.html", outbox=outbox_by_round(state))


@signed_in
def peers_page(request: HttpRequest, state: SiteState) -> HttpResponse:
    entries = PeerBook(state.state_dir).entries()[::-1]
    return _page(
        request,
        state,
        "console/peers.html",
        own=state.identity_fingerprint(),
        entries=entries,
        warnings=[w for e in entries for w in e["changed"]],
    )


@signed_in
def budget_page(request: HttpRequest, state: SiteState) -> HttpResponse:
    ledger = PrivacyLedger(state.state_dir, state.policy())
    rows = ledger.running()
    spent = rows[-1]["epsilon"] if rows else 0.0
    cap = ledger.policy.epsilon_cap
    return _page(
        request,
        state,
        "console/budget.html",
        rows=rows[::-1],
        spent=spent,
        cap=cap,
        delta=ledger.policy.delta,
        share=min(1.0, spent / cap) if cap else None,
    )
