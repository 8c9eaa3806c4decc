"""Turbofan Tycoon, the game: its page and the one JSON answer a game needs.

The game runs in the browser, hour by hour (``tycoon_game.js``); the server hands it
everything at the start: the settings, checked; the engines (lives, shown sensors,
every model's predicted RUL after every hour) and the engine sequence of the seed,
the same :func:`turbofan.tycoon.engine_sequence` the analyst replay uses, so a rival
that keeps one strategy earns, hour for hour, what the analyst view shows for it.
"""

from __future__ import annotations

import base64
import math
from typing import Any
from urllib.parse import urlencode

import numpy as np
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.gzip import gzip_page
from django.views.decorators.http import require_GET

from dashboard.tycoon import (
    BUILD_COMMAND,
    BY_NAME,
    SITE,
    Parameter,
    ParameterError,
    check_threshold,
    pack_for_api,
    pack_for_page,
    parse_one,
    parse_site,
    rebuild,
    refuse_unknown,
    strategy_label,
)
from turbofan.tycoon import (
    Economics,
    corrective_triggers,
    engine_sequence,
    outcomes,
    predictive_triggers,
    preventive_triggers,
)
from turbofan.tycoon_pack import CENTRALISED, FEDERATED, SHOWN_SENSORS, PackError, PredictionPack

# The longest game the engine sequence is dealt for (a race to the default target takes
# about 3,000 hours; "play on" and "skip 1,000 hours" go on from there).
GAME_HOURS = 30_000
MAX_ENGINES_PER_FACTORY = 8  # what a factory's turbofans can show side by side
# The order strategies unlock in (the original's), and what the player starts on.
LADDER = ("corrective", "preventive", "local", FEDERATED)
RIVAL_STRATEGIES = (*LADDER, CENTRALISED)
# The original's three rivals stopped at corrective, preventive and local predictive.
RIVALS = (
    ("rival_1", "Atlas Turbines", "corrective"),
    ("rival_2", "Boreal Power", "preventive"),
    ("rival_3", "Cirrus Works", "local"),
)
SHORT_LABELS = {
    "corrective": "Corrective",
    "preventive": "Preventive",
    "local": "Local predictive",
    FEDERATED: "Federated predictive",
    CENTRALISED: "Centralised (oracle)",
}
ECONOMICS = (
    "revenue_per_cycle",
    "maintenance_cost",
    "maintenance_downtime",
    "failure_cost",
    "failure_downtime",
    "preventive_age",
    "rul_threshold",
    "fleet_size",
    "seed",
)
# The game's labels: an hour is one cycle of an engine's run, as in the original.
GAME_LABELS = {
    "revenue_per_cycle": "Revenue per turbofan per running hour ($)",
    "maintenance_downtime": "Maintenance downtime (hours)",
    "failure_downtime": "Repair downtime after a failure (hours)",
    "preventive_age": "Preventive: maintain at age (hours)",
    "rul_threshold": "Predictive: maintain when predicted RUL is below (hours)",
    "fleet_size": "Turbofans per factory",
    "seed": "Seed of the engine sequence (the same for every factory)",
}
RULES = (
    Parameter("target", "Profit that wins the race ($)", 10_000, 1_000_000_000, 3_000_000,
              step=100_000),
    Parameter("unlock_failures", "Failures before preventive maintenance unlocks", 0, 1_000, 4),
    Parameter("scientist_hours", "Hours from preventive to the data scientist (local "
              "predictive)", 0, 10_000, 499),
    Parameter("federation_hours", "Hours from the data scientist to the federation's offer "
              "(federated predictive)", 0, 10_000, 499),
)  # fmt: skip


def _game_parameter(name: str) -> Parameter:
    parameter = BY_NAME[name]
    label = GAME_LABELS.get(name, parameter.label)
    maximum = MAX_ENGINES_PER_FACTORY if name == "fleet_size" else parameter.maximum
    why = parameter.why.replace("cycles", "hours").replace("cycle", "hour")
    if name == "fleet_size":
        why = "a factory shows each of its turbofans"
    return Parameter(name, label, parameter.minimum, maximum, parameter.default,
                     step=parameter.step, whole=parameter.whole, why=why)  # fmt: skip


PARAMETERS = (*(_game_parameter(n) for n in ECONOMICS), *RULES)
BY_GAME_NAME = {p.name: p for p in PARAMETERS}


def parse_game(query: QueryDict, pack: PredictionPack) -> dict[str, Any]:
    """Every game setting from a query, defaults for those missing; ParameterError on a
    bad one (its message names the setting as the form does, and says what to change)."""
    choices = available_strategies(pack)
    refuse_unknown(query, [*BY_GAME_NAME, SITE, *(key for key, _, _ in RIVALS)])
    values: dict[str, Any] = {p.name: parse_one(p, query.get(p.name)) for p in PARAMETERS}
    check_threshold(BY_GAME_NAME["rul_threshold"], values["rul_threshold"], pack.rul_cap)
    values[SITE] = parse_site(query, pack.sites())
    for key, name, default in RIVALS:
        chosen = query.get(key) or (default if default in choices else choices[0])
        if chosen not in choices:
            message = f"{name}'s strategy must be one of {', '.join(choices)}, got {chosen!r}"
            raise ParameterError(key, message, {"choices": choices})
        values[key] = chosen
    return values


def available_strategies(pack: PredictionPack) -> list[str]:
    """The strategies this pack can play: the time rules, and each model it predicts with."""
    predicted = pack.holdout.predicted
    models = {
        "local": any(key.startswith("local:") for key in predicted),
        FEDERATED: FEDERATED in predicted,
        CENTRALISED: CENTRALISED in predicted,
    }
    return [key for key in RIVAL_STRATEGIES if models.get(key, True)]


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def game_answer(pack: PredictionPack, values: dict[str, Any]) -> dict[str, Any]:
    """What a game needs, for checked settings: rules, engines and the engine sequence."""
    lives = pack.lives.astype(np.int64)
    offsets = np.r_[0, np.cumsum(lives)[:-1]]
    models = {
        "local": f"local:{values[SITE]}",
        FEDERATED: FEDERATED,
        CENTRALISED: CENTRALISED,
    }
    holdout = pack.holdout
    predicted = {
        kind: _b64(_hours(holdout.predicted[key], lives), "<f4")
        for kind, key in models.items()
        if key in holdout.predicted
    }
    sensors = None
    if holdout.sensors is not None:
        sensors = {
            "names": [name for _, name in SHOWN_SENSORS],
            "data": _b64(_hours(holdout.sensors, lives), "u1"),
        }
    rows = _rows_needed(pack, values, models)
    fleet = int(values["fleet_size"])
    sequence = engine_sequence(len(lives), fleet, rows, int(values["seed"]))
    playable = available_strategies(pack)
    analyst = {k: values[k] for k in ECONOMICS if k != "fleet_size"}
    analyst.update(fleet_size=fleet, site=values[SITE])
    return {
        "settings": values,
        "strategies": [
            {"key": key, "label": SHORT_LABELS[key], "long": strategy_label(pack, key, values)}
            for key in playable
        ],
        "ladder": [key for key in LADDER if key in playable],
        "rivals": [{"key": key, "name": name, "strategy": values[key]} for key, name, _ in RIVALS],
        "pool": {
            "subset": pack.subset,
            "engines": len(lives),
            "units": holdout.units.tolist(),
            "lives": lives.tolist(),
            "offsets": offsets.tolist(),
            "predicted": predicted,
            "sensors": sensors,
            "rul_cap": pack.rul_cap,
            "crossfit": bool(pack.meta.get("crossfit")),
        },
        "sequence": {"rows": rows, "slots": fleet, "data": _b64(sequence, "<i4")},
        "max_hours": GAME_HOURS,
        "analyst": reverse("tycoon:tycoon") + "?" + urlencode(analyst),
    }


def _hours(values: np.ndarray, lives: np.ndarray) -> np.ndarray:
    """Each engine's hours of a (engines, hours, ...) array, engine after engine."""
    if values.shape[1] < lives.max():
        raise PackError("the pack's arrays are shorter than its engines' lives")
    return values[np.arange(values.shape[1])[None, :] < lives[:, None]]


def _rows_needed(pack: PredictionPack, values: dict[str, Any], models: dict[str, str]) -> int:
    """Engines per slot that last :data:`GAME_HOURS` whatever the strategy: the game
    length over the shortest run plus downtime any rule gives an engine."""
    lives = pack.lives
    economics = Economics.of(values)
    rules = [corrective_triggers(lives), preventive_triggers(lives, values["preventive_age"])]
    for key in models.values():
        if key in pack.holdout.predicted:
            rules.append(predictive_triggers(pack.holdout.predicted[key], values["rul_threshold"]))
    shortest = GAME_HOURS
    for rule in rules:
        run, maintained = outcomes(lives, rule)
        down = np.where(maintained, economics.maintenance_downtime, economics.failure_downtime)
        shortest = min(shortest, int((run + down).min()))
    # A switch of strategy may cut one run per unlock short: a few rows to spare.
    return math.ceil(GAME_HOURS / max(shortest, 1)) + 8


# --- views ------------------------------------------------------------------------


@require_GET
def game_page(request: HttpRequest) -> HttpResponse:
    pack, problem = pack_for_page()
    rivals = []
    if pack is not None:
        choices = available_strategies(pack)
        for key, name, default in RIVALS:
            options = [(c, SHORT_LABELS[c]) for c in choices]
            rivals.append({"key": key, "name": name, "default": default, "options": options})
    context = {
        "pack": pack,
        "problem": problem,
        "parameters": PARAMETERS,
        "rivals": rivals,
        "sites": pack.sites() if pack else [],
        "build_command": BUILD_COMMAND,
    }
    return render(request, "dashboard/tycoon_game.html", context)


@require_GET
@gzip_page  # the engines' hours are a few hundred kB to a few MB
def game_api(request: HttpRequest) -> JsonResponse:
    pack, refusal = pack_for_api()
    if pack is None:
        return refusal  # type: ignore[return-value]
    try:
        return JsonResponse(game_answer(pack, parse_game(request.GET, pack)))
    except PackError as error:
        return rebuild(error)
    except ParameterError as error:
        return error.response()
