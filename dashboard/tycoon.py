"""Turbofan Tycoon pages and JSON API: the maintenance replay and the model page.

Views parse and validate, load the current prediction pack (cached by file time)
and call the numpy core in :mod:`turbofan.tycoon`; nothing here simulates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import render
from django.views.decorators.http import require_GET

from turbofan.metrics import evaluate
from turbofan.tycoon import (
    Economics,
    SimulationResult,
    corrective_triggers,
    difference_interval,
    expected_engines,
    predictive_triggers,
    preventive_triggers,
    sequence_profits,
    simulate,
)
from turbofan.tycoon_pack import CENTRALISED, FEDERATED, HOLDOUT, TEST, PackError, PredictionPack

BUILD_COMMAND = "python manage.py tycoon_pack"
RUL_CAP = 125  # the packs' models predict at most this (a pack says its own)
MAX_THRESHOLD = RUL_CAP - 1
# Engine sequences behind each interval (fewer for a costly replay); the level shown.
SEQUENCES = 40
SEQUENCE_ENGINES = 800_000  # engines all the sequences together may start
LEVEL = 0.9
# Engines the whole replay may start (every strategy together): bounds a request's time.
MAX_ENGINES = 10_000_000
# Engine slots of each factory shown in the animation.
ANIMATED_SLOTS = 8
CURVE_POINTS = 400


@dataclass(frozen=True)
class Parameter:
    """A replay setting: its form field, allowed range and default."""

    name: str
    label: str
    minimum: float
    maximum: float
    default: float
    step: float = 1
    whole: bool = True
    slider_max: float | None = None  # the slider's end; the number field goes to ``maximum``
    why: str = ""  # why the range ends where it does, when that is not obvious

    @property
    def slider_end(self) -> float:
        return self.slider_max if self.slider_max is not None else self.maximum

    @property
    def initial(self) -> str:
        """The default as a form's number field takes it (300, not 300.0 nor 1,000)."""
        return _plain_field(self.default)

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        low, high = _plain(self.minimum), _plain(self.maximum)
        reason = f": {self.why}" if self.why else ""
        return f"{self.label} must be {kind} from {low} to {high}{reason}"


_DEFAULT = Economics()
PARAMETERS = (
    Parameter("revenue_per_cycle", "Revenue per engine per running cycle ($)", 0, 100_000,
              _DEFAULT.revenue_per_cycle, step=10, slider_max=2_000, whole=False),
    Parameter("maintenance_cost", "Maintenance cost ($)", 0, 10_000_000,
              _DEFAULT.maintenance_cost, step=500, slider_max=100_000, whole=False),
    Parameter("maintenance_downtime", "Maintenance downtime (cycles)", 0, 10_000,
              _DEFAULT.maintenance_downtime, slider_max=200),
    Parameter("failure_cost", "Failure cost ($)", 0, 10_000_000,
              _DEFAULT.failure_cost, step=1_000, slider_max=300_000, whole=False),
    Parameter("failure_downtime", "Failure downtime (cycles)", 0, 10_000,
              _DEFAULT.failure_downtime, slider_max=300),
    Parameter("preventive_age", "Preventive: maintain at age (cycles)", 1, 1_000, 193,
              slider_max=400),
    Parameter("rul_threshold", "Predictive: maintain when predicted RUL is below (cycles)",
              0, MAX_THRESHOLD, 10, whole=False,
              why=f"the models predict at most {RUL_CAP} cycles (their training cap), so from "
              f"{RUL_CAP} up every engine would be maintained after its first cycle"),
    Parameter("fleet_size", "Engines per factory", 1, 10_000, _DEFAULT.fleet_size,
              slider_max=100),
    Parameter("horizon", "Horizon (cycles)", 10, 100_000, _DEFAULT.horizon, step=10,
              slider_max=20_000),
    Parameter("seed", "Seed of the engine sequence", 0, 2**31 - 1, _DEFAULT.seed,
              slider_max=100),
)  # fmt: skip
BY_NAME = {p.name: p for p in PARAMETERS}
SITE = "site"


class ParameterError(ValueError):
    def __init__(self, parameter: str, message: str, allowed: dict[str, Any]) -> None:
        super().__init__(message)
        self.parameter, self.allowed = parameter, allowed

    def response(self) -> JsonResponse:
        body = {"error": str(self), "parameter": self.parameter, "allowed": self.allowed}
        return JsonResponse(body, status=400)


def _plain_field(value: float) -> str:
    """A value as a form's number field shows it (300, not 300.0)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _plain(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else str(value)


def parse_parameters(query: QueryDict, sites: list[str]) -> dict[str, Any]:
    """Every setting from a query, defaults for those missing; ParameterError on a bad one."""
    refuse_unknown(query, [*BY_NAME, SITE])
    values: dict[str, Any] = {p.name: parse_one(p, query.get(p.name)) for p in PARAMETERS}
    values[SITE] = parse_site(query, sites)
    return values


def refuse_unknown(query: QueryDict, names: list[str]) -> None:
    """ParameterError for the first setting of ``query`` not among ``names``."""
    unknown = sorted(set(query) - set(names))
    if unknown:
        message = f"unknown setting {unknown[0]}: use {', '.join(names)}"
        raise ParameterError(unknown[0], message, {"names": names})


def parse_site(query: QueryDict, sites: list[str]) -> str:
    """The site whose model is "local": the query's, else the pack's first."""
    site = query.get(SITE) or (sites[0] if sites else "")
    if sites and site not in sites:
        message = f"the local model must be one of {', '.join(sites)}, got {site!r}"
        raise ParameterError(SITE, message, {"choices": sites})
    return site


def check_threshold(parameter: Parameter, value: float, rul_cap: float) -> None:
    """ParameterError for a threshold the pack's models cannot predict below."""
    if value >= rul_cap:
        raise ParameterError(
            parameter.name,
            f"{parameter.label} must be below {_plain(rul_cap)}: {parameter.why}",
            {"max": rul_cap},
        )


def parse_one(parameter: Parameter, raw: str | None) -> float | int:
    if raw is None or raw.strip() == "":
        return int(parameter.default) if parameter.whole else parameter.default
    allowed = {"min": parameter.minimum, "max": parameter.maximum}
    try:
        value = float(raw)
    except ValueError:
        raise ParameterError(
            parameter.name, f"{parameter.describe()}, got {raw!r}", allowed
        ) from None
    if not math.isfinite(value) or not parameter.minimum <= value <= parameter.maximum:
        raise ParameterError(parameter.name, f"{parameter.describe()}, got {raw!r}", allowed)
    if parameter.whole:
        if not value.is_integer():
            raise ParameterError(parameter.name, f"{parameter.describe()}, got {raw!r}", allowed)
        return int(value)
    return value


# --- the pack ---------------------------------------------------------------------


def pack_path() -> Path:
    """Where the current prediction pack lives (setting ``TYCOON_PACK`` overrides it)."""
    configured = getattr(settings, "TYCOON_PACK", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "tycoon" / "pack.npz"


_cache: dict[str, tuple[int, PredictionPack]] = {}


def current_pack() -> PredictionPack | None:
    """The pack, read once per change of the file; None when there is none yet."""
    path = pack_path()
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    cached = _cache.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    pack = PredictionPack.load(path)
    _cache[str(path)] = (stamp, pack)
    return pack


def pack_for_page() -> tuple[PredictionPack | None, str]:
    """The pack for a page, or None and why it cannot be read (empty when there is none)."""
    try:
        return current_pack(), ""
    except PackError as error:
        return None, str(error)


def rebuild(error: PackError) -> JsonResponse:
    """The API's 404 for a pack that cannot be used: what is wrong and how to mend it."""
    return JsonResponse({"error": f"{error}: run `{BUILD_COMMAND}` again"}, status=404)


def pack_for_api() -> tuple[PredictionPack | None, JsonResponse | None]:
    """The pack, or the 404 that says how to make one (none yet, or an unreadable one)."""
    try:
        pack = current_pack()
    except PackError as error:
        return None, rebuild(error)
    if pack is None:
        message = f"no prediction pack yet: run `{BUILD_COMMAND}` (see the Tycoon page)"
        return None, JsonResponse({"error": message}, status=404)
    return pack, None


# --- the replay -------------------------------------------------------------------


def strategy_rules(pack: PredictionPack, values: dict[str, Any]) -> dict[str, np.ndarray]:
    """Triggers of every strategy the pack allows; ``local:<site>`` for the other sites."""
    lives, predicted = pack.lives, pack.holdout.predicted
    threshold = values["rul_threshold"]
    rules = {
        "corrective": corrective_triggers(lives),
        "preventive": preventive_triggers(lives, values["preventive_age"]),
    }
    local = f"local:{values[SITE]}"
    if local in predicted:
        rules["local"] = predictive_triggers(predicted[local], threshold)
    for key in (FEDERATED, CENTRALISED):
        if key in predicted:
            rules[key] = predictive_triggers(predicted[key], threshold)
    if FEDERATED in predicted:  # what joining is worth, for every site
        for site in pack.sites():
            if site != values[SITE]:
                rules[f"local:{site}"] = predictive_triggers(predicted[f"local:{site}"], threshold)
    return rules


def replay(pack: PredictionPack, values: dict[str, Any]) -> dict[str, Any]:
    """The JSON answer of the simulate API for validated settings."""
    check_threshold(BY_NAME["rul_threshold"], values["rul_threshold"], pack.rul_cap)
    rules = strategy_rules(pack, values)
    economics = Economics.of(values)
    engines = expected_engines(pack.lives, rules, economics)
    if engines > MAX_ENGINES:
        raise ParameterError(
            "fleet_size",
            f"these settings replay about {engines:,.0f} engines, more than {MAX_ENGINES:,}: "
            "lower the engines per factory or the horizon, or raise the downtimes",
            {"max_engines": MAX_ENGINES},
        )
    slots = min(ANIMATED_SLOTS, economics.fleet_size)
    result = simulate(pack.lives, rules, economics, curve_points=CURVE_POINTS, trace_slots=slots)
    shown = [k for k in ("corrective", "preventive", "local", FEDERATED, CENTRALISED) if k in rules]
    count = int(max(5, min(SEQUENCES, SEQUENCE_ENGINES // max(engines, 1))))
    # Every strategy, the other sites' local ones too: each difference gets its interval.
    profits = sequence_profits(pack.lives, rules, economics, sequences=count)
    return {
        "parameters": values,
        "pool": {"engines": len(pack.lives), "subset": pack.subset},
        "interval": {"sequences": count, "level": LEVEL},
        "bottom_line": bottom_line(pack, values, result, profits),
        "strategies": [_row(pack, values, result, key, profits) for key in shown],
        "curve": {
            "cycles": result.times.tolist(),
            "profit": {k: np.round(result.strategies[k].curve).tolist() for k in shown},
        },
        "fleet": _fleet(pack, result, shown, slots, economics),
        "joining": _joining(pack, values, result, profits),
        "missing": [k for k in ("local", FEDERATED, CENTRALISED) if k not in rules],
    }


def bottom_line(
    pack: PredictionPack,
    values: dict[str, Any],
    result: SimulationResult,
    profits: dict[str, np.ndarray],
) -> dict[str, Any] | None:
    """The page's answer in one sentence: federated against the local model, with the
    interval over engine sequences."""
    if FEDERATED not in profits or "local" not in profits:
        return None
    # The mean over the paired sequences, with their interval: one sequence alone may
    # lie in a tail.
    worth = float(np.mean(profits[FEDERATED] - profits["local"]))
    low, high = difference_interval(profits[FEDERATED], profits["local"], LEVEL)
    model = pack.model(f"local:{values[SITE]}")
    local = model.label if model else "the local model"
    local = local[0].lower() + local[1:] if local.startswith("A ") else local
    sentence = (
        f"Federated predictive earns {_dollars(abs(worth))} on average "
        f"({LEVEL:.0%}: {_dollars(low)} to {_dollars(high)}) "
        f"{'more' if worth >= 0 else 'less'} than {local}, per factory of "
        f"{values['fleet_size']:,} engines over {values['horizon']:,} cycles."
    )
    return {"worth": round(worth), "low": round(low), "high": round(high), "sentence": sentence}


def _dollars(value: float) -> str:
    return f"-${abs(value):,.0f}" if round(value) < 0 else f"${value:,.0f}"


def strategy_label(pack: PredictionPack, key: str, values: dict[str, Any]) -> str:
    if key == "corrective":
        return "Corrective (run to failure)"
    if key == "preventive":
        return f"Preventive (at age {values['preventive_age']})"
    if key == "local":
        model = pack.model(f"local:{values[SITE]}")
        label = model.label if model else values[SITE]
        return f"Local predictive ({label[0].lower() + label[1:]})"
    if key == FEDERATED:
        if pack.meta.get("crossfit"):
            return "Federated predictive (a simulated federation of the other folds' engines)"
        return "Federated predictive (the federation's latest model)"
    return "Centralised model (oracle: all the engines in one place)"


def _row(
    pack: PredictionPack,
    values: dict[str, Any],
    result: SimulationResult,
    key: str,
    profits: dict[str, np.ndarray],
) -> dict[str, Any]:
    outcome = result.strategies[key]
    corrective = result.strategies["corrective"]
    economics = Economics.of(values)
    engine_cycles = economics.fleet_size * economics.horizon
    # What running to failure loses against a factory that never stops and never pays.
    losses = economics.revenue_per_cycle * engine_cycles - corrective.profit
    low, high = difference_interval(profits[key], profits["corrective"], LEVEL)
    per_maintenance = outcome.life_wasted / outcome.maintenances if outcome.maintenances else 0.0
    return {
        "key": key,
        "label": strategy_label(pack, key, values),
        "oracle": key == CENTRALISED,
        "profit": round(outcome.profit),
        "profit_per_engine_cycle": round(outcome.profit / engine_cycles, 2),
        "vs_corrective": {  # mean over the paired sequences, and their interval
            "difference": round(float(np.mean(profits[key] - profits["corrective"]))),
            "low": round(low),
            "high": round(high),
        },
        "savings_vs_corrective": (
            round((outcome.profit - corrective.profit) / losses, 4) if losses > 0 else None
        ),
        "revenue": round(outcome.revenue),
        "maintenance_spend": round(outcome.maintenance_spend),
        "failure_spend": round(outcome.failure_spend),
        "uptime": round(outcome.uptime, 4),
        "running_cycles": outcome.running_cycles,
        "failures": outcome.failures,
        "maintenances": outcome.maintenances,
        "engines": outcome.engines,
        "life_wasted": outcome.life_wasted,
        "life_wasted_per_maintenance": round(per_maintenance, 1),
    }


def _fleet(
    pack: PredictionPack,
    result: SimulationResult,
    shown: list[str],
    slots: int,
    economics: Economics,
) -> dict[str, Any]:
    """The first slots' engines, per strategy, as [slot, start, run, maintained, engine]."""
    episodes = {}
    for key in shown:
        trace = result.strategies[key].trace
        assert trace is not None
        episodes[key] = np.stack(
            [trace.slot, trace.start, trace.run, trace.maintained.astype(np.int64), trace.engine],
            axis=1,
        ).tolist()
    return {
        "slots": slots,
        "lives": pack.lives.tolist(),
        "units": pack.holdout.units.tolist(),
        "maintenance_downtime": economics.maintenance_downtime,
        "failure_downtime": economics.failure_downtime,
        "episodes": episodes,
    }


def _joining(
    pack: PredictionPack,
    values: dict[str, Any],
    result: SimulationResult,
    profits: dict[str, np.ndarray],
) -> Any:
    """Federated minus local profit, for the chosen site and for every site, each with
    its mean and interval over the paired sequences."""
    strategies = result.strategies
    if FEDERATED not in strategies or "local" not in strategies:
        return None
    federated = strategies[FEDERATED].profit
    rows = []
    for site in pack.sites():
        key = "local" if site == values[SITE] else f"local:{site}"
        local = strategies[key].profit
        low, high = difference_interval(profits[FEDERATED], profits[key], LEVEL)
        rows.append(
            {
                "site": site,
                "local": round(local),
                "worth": round(federated - local),
                "mean": round(float(np.mean(profits[FEDERATED] - profits[key]))),
                "low": round(low),
                "high": round(high),
            }
        )
    chosen = next(r for r in rows if r["site"] == values[SITE])
    return {"site": values[SITE], "federated": round(federated), **chosen, "sites": rows}


# --- views ------------------------------------------------------------------------


@require_GET
def tycoon_page(request: HttpRequest) -> HttpResponse:
    pack, problem = pack_for_page()
    # Settings may come in the address (a game's "see this run", a shared link): the form
    # starts from them; one that does not hold is named, and the defaults stand.
    values: dict[str, Any] = {}
    refused = ""
    if pack is not None and request.GET:
        try:
            values = parse_parameters(request.GET, pack.sites())
        except ParameterError as error:
            refused = f"The address's settings were not used: {error}."
    fields = [(p, _plain_field(values.get(p.name, p.default))) for p in PARAMETERS]
    context = {
        "pack": pack,
        "problem": problem,
        "refused": refused,
        "fields": fields,
        "site": values.get(SITE, ""),
        "parameters": PARAMETERS,
        "sequences": SEQUENCES,
        "sites": pack.sites() if pack else [],
        "models": pack.models if pack else [],
        "build_command": BUILD_COMMAND,
        "flattered": pack is not None and any(m.trained_on_holdout for m in pack.models),
    }
    return render(request, "dashboard/tycoon.html", context)


@require_GET
def simulate_api(request: HttpRequest) -> JsonResponse:
    pack, refusal = pack_for_api()
    if pack is None:
        return refusal  # type: ignore[return-value]
    try:
        values = parse_parameters(request.GET, pack.sites())
        return JsonResponse(replay(pack, values))
    except ParameterError as error:
        return error.response()


@require_GET
def models_page(request: HttpRequest) -> HttpResponse:
    pack, problem = pack_for_page()
    context = {"pack": pack, "problem": problem, "build_command": BUILD_COMMAND}
    return render(request, "dashboard/tycoon_models.html", context)


@require_GET
def models_api(request: HttpRequest) -> JsonResponse:
    """Predicted vs true RUL of the test engines per model, and the replayed engines."""
    pack, refusal = pack_for_api()
    if pack is None:
        return refusal  # type: ignore[return-value]
    models = []
    for model in pack.models:
        entry: dict[str, Any] = {
            "key": model.key,
            "kind": model.kind,
            "label": model.label,
            "source": model.source,
            "trained_on_holdout": model.trained_on_holdout,
        }
        if pack.test is not None:
            entry["test"] = _test_scores(pack, model.key)
        models.append(entry)
    holdout = [
        {"index": i, "unit": int(u), "life": int(n)}
        for i, (u, n) in enumerate(zip(pack.holdout.units, pack.holdout.cycles, strict=True))
    ]
    test = [] if pack.test is None else [int(u) for u in pack.test.units]
    return JsonResponse(
        {
            "subset": pack.subset,
            "rul_cap": pack.rul_cap,
            "models": models,
            "engines": {HOLDOUT: holdout, TEST: test},
        }
    )


def _test_scores(pack: PredictionPack, key: str) -> dict[str, Any]:
    assert pack.test is not None
    predicted = pack.test.last_predictions(key).astype(np.float64)
    true = pack.test.final_rul
    scores = evaluate(predicted, true, cap=pack.rul_cap)
    return {
        "true": true.tolist(),
        "predicted": np.round(predicted, 2).tolist(),
        "rmse": round(scores["literature"]["rmse"], 2),
        "rmse_strict": round(scores["strict"]["rmse"], 2),
        "score": round(scores["literature"]["score"], 1),
    }


@require_GET
def trajectory_api(request: HttpRequest) -> JsonResponse:
    """One engine's predicted RUL after each cycle, per model, with the true RUL."""
    pack, refusal = pack_for_api()
    if pack is None:
        return refusal  # type: ignore[return-value]
    sets = {HOLDOUT: pack.holdout, TEST: pack.test}
    name = request.GET.get("set", HOLDOUT)
    engines = sets.get(name)
    if engines is None:
        choices = [k for k, v in sets.items() if v is not None]
        return ParameterError(
            "set", f"set must be one of {', '.join(choices)}", {"choices": choices}
        ).response()
    try:
        index = int(request.GET.get("engine", "0"))
        if not 0 <= index < len(engines.cycles):
            raise ValueError
    except ValueError:
        last = len(engines.cycles) - 1
        message = f"engine must be a whole number from 0 to {last}"
        return ParameterError("engine", message, {"min": 0, "max": last}).response()
    n = int(engines.cycles[index])
    true = engines.true_rul(index)
    return JsonResponse(
        {
            "set": name,
            "engine": index,
            "unit": int(engines.units[index]),
            "cycles": list(range(1, n + 1)),
            "true_rul": true.tolist(),
            "true_rul_capped": np.minimum(true, pack.rul_cap).tolist(),
            "predicted": {
                m.key: np.round(engines.predicted[m.key][index, :n].astype(np.float64), 2).tolist()
                for m in pack.models
            },
            "labels": {m.key: m.label for m in pack.models},
        }
    )
