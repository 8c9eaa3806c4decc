"""Turbofan Tycoon: maintenance strategies replayed on engines that ran to failure.

A fleet of ``fleet_size`` engine slots runs for ``horizon`` cycles. Each slot runs
one engine at a time, drawn at random from a pool of engines whose whole life is
known (held-out training engines: they ran to failure and no model trained on
them). A strategy decides, for every engine, the cycle after which it is taken
out for maintenance (its *trigger*); an engine whose trigger comes no earlier than
its last cycle fails instead. After a maintenance or a failure the slot is down
for a while, then the next engine of its sequence starts.

Economics, per strategy::

    profit = revenue_per_cycle * running engine-cycles
             - maintenance_cost * maintenances - failure_cost * failures

An engine of life ``L`` (cycles 1..L, RUL 0 at cycle L, failure at the end of it)
with trigger ``t``:

* ``t < L``: it runs ``t`` cycles, is maintained (``maintenance_cost``, then
  ``maintenance_downtime`` cycles down) and wastes ``L - t`` cycles of life;
* ``t >= L``: it runs ``L`` cycles and fails (``failure_cost``, then
  ``failure_downtime`` cycles down).

Only what happens inside the horizon counts: running cycles up to ``horizon``,
maintenances and failures that happen at or before it.

Pairing: the k-th engine of slot f is the same for every strategy (one seeded
draw serves them all), so differences between strategies are differences of
their rules, not of luck. The sequence depends only on the seed, the fleet size
and the pool size.

Everything here is numpy on whole arrays; no Django.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# A trigger no engine reaches: the strategy never maintains (runs to failure).
NEVER = np.int32(2**30)
# Rows of draws per block: bounds the memory of a block.
_MAX_BLOCK = 1024
_BLOCK_ELEMENTS = 8_000_000
# Elements of one array of a group of slots replayed together (about 1 MB of int64).
_CACHE_ELEMENTS = 131_072
# Bits per field of the packed per-engine outcome (see _Replay).
_FIELD_BITS = 20
_FIELD = (1 << _FIELD_BITS) - 1


@dataclass(frozen=True)
class Economics:
    """Money and time of the replay (the defaults are those of the original Tycoon).

    Parameters
    ----------
    revenue_per_cycle : money an engine earns per cycle it runs
    maintenance_cost, maintenance_downtime : cost and cycles down of a maintenance
    failure_cost, failure_downtime : cost and cycles down of a failure
    fleet_size : engines running side by side (slots)
    horizon : cycles replayed
    seed : seed of the engine sequence (shared by every strategy)
    """

    revenue_per_cycle: float = 300.0
    maintenance_cost: float = 10_000.0
    maintenance_downtime: int = 20
    failure_cost: float = 60_000.0
    failure_downtime: int = 60
    fleet_size: int = 4
    horizon: int = 5_000
    seed: int = 0

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Economics:
        """The economics named in ``values`` (a form's, a query's), defaults for the rest."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass
class Trace:
    """Episodes of the first few slots, for an animation: one entry per engine started.

    Arrays of equal length: ``slot``, ``start`` (cycle the engine started), ``run``
    (cycles it runs before its event, which may lie past the horizon),
    ``maintained`` (else it fails) and ``engine`` (index into the pool).
    """

    slot: np.ndarray
    start: np.ndarray
    run: np.ndarray
    maintained: np.ndarray
    engine: np.ndarray


@dataclass
class StrategyResult:
    """What one strategy earned over the horizon.

    ``curve`` is the cumulative profit at the :attr:`SimulationResult.times`.
    ``life_wasted`` is the sum, over maintenances, of the cycles each engine still
    had (its true RUL when taken out).
    """

    profit: float
    revenue: float
    maintenance_spend: float
    failure_spend: float
    running_cycles: int
    uptime: float
    maintenances: int
    failures: int
    engines: int
    life_wasted: int
    curve: np.ndarray
    trace: Trace | None = None


@dataclass
class SimulationResult:
    times: np.ndarray
    strategies: dict[str, StrategyResult] = field(default_factory=dict)


# --- rules: when is each engine taken out? -------------------------------------


def corrective_triggers(lives: np.ndarray) -> np.ndarray:
    """Run to failure: no engine is ever maintained."""
    return np.full(len(lives), NEVER, dtype=np.int32)


def preventive_triggers(lives: np.ndarray, age: int) -> np.ndarray:
    """Maintain every engine once it has run ``age`` cycles."""
    if age < 1:
        raise ValueError(f"preventive age must be at least 1 cycle, got {age}")
    return np.full(len(lives), age, dtype=np.int32)


def predictive_triggers(predicted: np.ndarray, threshold: float) -> np.ndarray:
    """First cycle at which the predicted RUL falls below ``threshold``, per engine.

    Parameters
    ----------
    predicted : (engines, cycles) predicted RUL after cycle 1, 2, ... of each
        engine (each from the window ending there); NaN past an engine's last cycle
    threshold : maintain when the prediction is strictly below it

    Returns
    -------
    int32 (engines,), 1-based cycles; :data:`NEVER` where the prediction never
    falls below the threshold.
    """
    predicted = np.asarray(predicted)
    below = predicted < threshold  # NaN padding compares False: never a trigger
    first = below.argmax(axis=1).astype(np.int32) + 1
    return np.where(below.any(axis=1), first, NEVER).astype(np.int32)


def outcomes(lives: np.ndarray, triggers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cycles each engine runs and whether it is maintained (else it fails)."""
    lives = np.asarray(lives, dtype=np.int32)
    maintained = np.asarray(triggers) < lives
    return np.where(maintained, triggers, lives).astype(np.int32), maintained


def engine_sequence(n_pool: int, fleet_size: int, draws: int, seed: int) -> np.ndarray:
    """The first ``draws`` engines of every slot, (draws, fleet_size) pool indices.

    Row k is the k-th engine of each slot. Dealt row by row from one seeded stream of
    shuffled passes over the pool, so a longer sequence starts with a shorter one
    (:func:`simulate` draws in blocks).
    """
    return _Draws(n_pool, fleet_size, seed).next(draws)


class _Draws:
    """Blocks of rows of the engine sequence, continuing one seeded stream.

    The stream deals the pool out without replacement, one shuffled pass after another,
    row by row across the slots: no engine comes back before every other has run once
    (with a pool of 10 and 4 slots, one engine never fills two slots of a row).
    """

    def __init__(self, n_pool: int, fleet_size: int, seed: int) -> None:
        if n_pool < 1:
            raise ValueError("the engine pool is empty")
        self.n_pool, self.fleet_size = n_pool, fleet_size
        self.rng = np.random.default_rng(seed)
        self.dealt = np.empty(0, dtype=np.intp)

    def next(self, rows: int) -> np.ndarray:
        needed = rows * self.fleet_size
        have = len(self.dealt)
        stream = self.dealt
        if have < needed:
            # Every new pass at once: shuffling the rows of a (passes, pool) table one after
            # another draws exactly what as many calls of ``permutation`` would, so the
            # stream does not depend on the block sizes.
            passes = -(-(needed - have) // self.n_pool)
            table = np.broadcast_to(np.arange(self.n_pool), (passes, self.n_pool))
            stream = np.concatenate([self.dealt, self.rng.permuted(table, axis=1).ravel()])
        self.dealt = stream[needed:]
        return stream[:needed].reshape(rows, self.fleet_size)


def sequence_profits(
    lives: np.ndarray,
    triggers: Mapping[str, np.ndarray],
    economics: Economics,
    *,
    sequences: int,
) -> dict[str, np.ndarray]:
    """Each strategy's profit over ``sequences`` engine sequences (seeds ``economics.seed``
    onward), every strategy on the same sequence each time: any two give a paired
    difference per sequence."""
    profits: dict[str, list[float]] = {name: [] for name in triggers}
    for k in range(sequences):
        result = simulate(
            lives, triggers, replace(economics, seed=economics.seed + k), curve_points=2
        )
        for name in triggers:
            profits[name].append(result.strategies[name].profit)
    return {name: np.asarray(values) for name, values in profits.items()}


def difference_interval(
    first: np.ndarray, second: np.ndarray, level: float = 0.9
) -> tuple[float, float]:
    """The central ``level`` interval of ``first - second`` over paired sequences."""
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(first) - np.asarray(second), [alpha, 1 - alpha])
    return float(low), float(high)


# --- the replay ------------------------------------------------------------------


def simulate(
    lives: np.ndarray,
    triggers: Mapping[str, np.ndarray],
    economics: Economics,
    *,
    curve_points: int = 500,
    trace_slots: int = 0,
) -> SimulationResult:
    """Replay every strategy on the same engine sequence.

    Parameters
    ----------
    lives : (engines,) cycles each engine of the pool runs before it fails
    triggers : strategy name -> (engines,) cycle after which the strategy
        maintains each engine (see the ``*_triggers`` functions)
    economics : money, downtimes, fleet size, horizon and seed
    curve_points : the cumulative-profit curves are sampled at about this many cycles
    trace_slots : keep the episodes of this many slots (for an animation)

    Returns
    -------
    SimulationResult with one :class:`StrategyResult` per strategy, in the order given.
    """
    lives = np.asarray(lives, dtype=np.int64)
    if np.any(lives < 1):
        raise ValueError("every engine must run at least one cycle")
    if economics.horizon < 1 or economics.fleet_size < 1:
        raise ValueError("horizon and fleet size must be at least 1")
    names = list(triggers)
    run, maintained = outcomes(lives, np.stack([np.asarray(triggers[n]) for n in names]))
    replay = _Replay(lives, run, maintained, economics, min(trace_slots, economics.fleet_size))
    draws = _Draws(len(lives), economics.fleet_size, economics.seed)
    # The strategy with the shortest episodes needs the most engines per slot.
    mean_length = replay.mean_length
    remaining = economics.horizon
    while remaining > 0:
        width = len(names) * economics.fleet_size
        replay.step(draws.next(_block_rows(remaining, mean_length, width)))
        remaining = economics.horizon - int(replay.clock.min())
    return replay.result(names, curve_points)


def _block_rows(remaining: int, mean_length: float, width: int) -> int:
    """Rows to draw so that most slots pass the horizon in one block.

    ``width`` is strategies x slots: a block holds at most about ``_BLOCK_ELEMENTS``.
    """
    wanted = math.ceil(1.1 * remaining / mean_length) + 2
    return int(max(4, min(wanted, _MAX_BLOCK, _BLOCK_ELEMENTS // width)))


def expected_engines(
    lives: np.ndarray, triggers: Mapping[str, np.ndarray], economics: Economics
) -> float:
    """About how many engines a replay starts, all strategies together (its cost)."""
    lives = np.asarray(lives, dtype=np.int64)
    total = 0.0
    for rule in triggers.values():
        run, maintained = outcomes(lives, np.asarray(rule))
        down = np.where(maintained, economics.maintenance_downtime, economics.failure_downtime)
        total += economics.fleet_size * (economics.horizon / float(np.mean(run + down)) + 1)
    return total


class _Replay:
    """Running totals of a replay, advanced one block of engine draws at a time.

    Times are cycles from the start. The one histogram kept is of the times engines
    stop running (one row per strategy, failures and maintenances apart; bin
    ``horizon + 1`` collects stops after the horizon). Everything else follows from
    it: a downtime has a fixed length, so the next engine of a slot starts
    ``downtime`` cycles after a stop, and engines running = starts minus stops.
    """

    def __init__(
        self,
        lives: np.ndarray,
        run: np.ndarray,
        maintained: np.ndarray,
        economics: Economics,
        trace_slots: int,
    ) -> None:
        self.economics = economics
        self.h = h = int(economics.horizon)
        n_strategies = len(run)
        down = np.where(maintained, economics.maintenance_downtime, economics.failure_downtime)
        self.bins = n_strategies * (h + 2)
        self.maintained = maintained
        # One int64 per strategy and engine packs what a replay needs of it, so each
        # block gathers once: episode length, downtime, life wasted, maintained.
        length = run + down
        if max(length.max(), lives.max()) >= 1 << _FIELD_BITS:
            raise ValueError("an engine life plus downtime must stay below a million cycles")
        self.wasted = np.where(maintained, lives - run, 0).astype(np.int64)
        self.packed = (
            length.astype(np.int64)
            | down.astype(np.int64) << _FIELD_BITS
            | self.wasted << 2 * _FIELD_BITS
            | maintained.astype(np.int64) << 3 * _FIELD_BITS
        )
        self.mean_length = float(length.mean(axis=1).min())
        self.offset = (np.arange(n_strategies, dtype=np.int64) * (h + 2))[:, None, None]
        self.clock = np.zeros((n_strategies, 1, economics.fleet_size), dtype=np.int64)
        self.stops = np.zeros(2 * self.bins, dtype=np.int64)  # failures, then maintenances
        self.life_wasted = np.zeros(n_strategies, dtype=np.int64)
        self.trace_slots = trace_slots
        self.traces: list[list[np.ndarray]] = [[] for _ in range(n_strategies)]

    def step(self, engines: np.ndarray) -> None:
        """Add a block of draws: ``engines`` is (rows, fleet), the next engine of each slot.

        Only slots still short of the horizon in some strategy are replayed; the
        others' draws are skipped, which leaves every slot's sequence as it was. The
        slots go through in groups small enough for the processor's cache: every pass
        over a group's arrays then reads memory once.
        """
        busy = np.flatnonzero((self.clock[:, 0, :] < self.h).any(axis=0))
        group = max(64, _CACHE_ELEMENTS // (len(self.clock) * len(engines)))
        for first in range(0, len(busy), group):
            slots = busy[first : first + group]
            self._step(engines[:, slots], slots)

    def _step(self, engines: np.ndarray, slots: np.ndarray) -> None:
        h = self.h
        code = np.take(self.packed, engines, axis=1)  # (strategies, rows, slots)
        ends = code & _FIELD
        ends[:, 0] += self.clock[:, 0, slots]
        for row in range(1, len(engines)):  # faster than cumsum along a middle axis
            np.add(ends[:, row - 1], ends[:, row], out=ends[:, row])
        stops = (code >> _FIELD_BITS) & _FIELD
        np.subtract(ends, stops, out=stops)  # an engine stops a downtime before its slot's end
        if self.trace_slots:
            self._keep_trace(engines, code, ends, stops, slots)
        self._add_wasted(engines, code, stops)
        np.minimum(stops, h + 1, out=stops)
        stops += self.offset
        code >>= 3 * _FIELD_BITS  # maintained: its stop counts in the second half
        code *= self.bins
        stops += code
        self.stops += np.bincount(stops.ravel(), minlength=2 * self.bins)
        self.clock[:, 0, slots] = ends[:, -1, :]

    def _add_wasted(self, engines: np.ndarray, code: np.ndarray, stops: np.ndarray) -> None:
        """Life wasted by the block's maintenances that happen within the horizon.

        Every drawn engine's waste (counted once per engine of the pool), less that of
        the few engines that stop after the horizon.
        """
        drawn = np.bincount(engines.ravel(), minlength=self.wasted.shape[1])
        self.life_wasted += self.wasted @ drawn
        late = stops > self.h  # each slot's last engines, in the last blocks only
        if late.any():
            wasted = (code >> 2 * _FIELD_BITS) & _FIELD
            self.life_wasted -= np.sum(wasted, axis=(1, 2), where=late)

    def _keep_trace(
        self,
        engines: np.ndarray,
        code: np.ndarray,
        ends: np.ndarray,
        stops: np.ndarray,
        slots: np.ndarray,
    ) -> None:
        columns = np.flatnonzero(slots < self.trace_slots)
        if not len(columns):
            return
        slot = np.broadcast_to(slots[columns], (engines.shape[0], len(columns)))
        for s, kept in enumerate(self.traces):
            start = ends[s][:, columns] - (code[s][:, columns] & _FIELD)
            active = start < self.h
            run = (stops[s][:, columns] - start)[active]
            kept.append(np.stack([slot[active], start[active], run, engines[:, columns][active]]))

    def result(self, names: list[str], curve_points: int) -> SimulationResult:
        h, n = self.h, len(names)
        economics = self.economics
        failures = self.stops[: self.bins].reshape(n, h + 2)
        maintenances = self.stops[self.bins :].reshape(n, h + 2)
        starts = np.zeros((n, h), dtype=np.int64)
        starts[:, 0] = economics.fleet_size
        # The next engine starts when the downtime after a stop is over.
        for stops, down in (
            (failures, economics.failure_downtime),
            (maintenances, economics.maintenance_downtime),
        ):
            if down < h:
                starts[:, down:] += stops[:, : h - down]
        running = np.cumsum(starts - failures[:, :h] - maintenances[:, :h], axis=1)
        # After t cycles, t = 0..h: engine-cycles run, maintenances and failures so far.
        cum_running = np.concatenate([np.zeros((n, 1), np.int64), running.cumsum(axis=1)], axis=1)
        cum_maint = maintenances[:, : h + 1].cumsum(axis=1)
        cum_fail = failures[:, : h + 1].cumsum(axis=1)
        times = np.unique(np.round(np.linspace(0, h, max(2, curve_points) + 1)).astype(np.int64))
        curves = (
            economics.revenue_per_cycle * cum_running[:, times]
            - economics.maintenance_cost * cum_maint[:, times]
            - economics.failure_cost * cum_fail[:, times]
        )
        result = SimulationResult(times=times)
        for s, name in enumerate(names):
            counts = int(cum_running[s, h]), int(cum_maint[s, h]), int(cum_fail[s, h])
            result.strategies[name] = StrategyResult(
                **_money(economics, *counts),
                engines=int(starts[s].sum()),
                life_wasted=int(self.life_wasted[s]),
                curve=curves[s],
                trace=self._trace(s) if self.trace_slots else None,
            )
        return result

    def _trace(self, s: int) -> Trace:
        parts = np.concatenate(self.traces[s], axis=1) if self.traces[s] else np.zeros((4, 0))
        parts = parts.astype(np.int64)
        order = np.lexsort((parts[1], parts[0]))  # by slot, then start
        slot, start, run, engine = parts[:, order]
        return Trace(slot, start, run, self.maintained[s, engine], engine)


def _money(economics: Economics, running: int, maintenances: int, failures: int) -> dict[str, Any]:
    """The profit formula and its terms, from the counts over the horizon."""
    revenue = economics.revenue_per_cycle * running
    maintenance_spend = economics.maintenance_cost * maintenances
    failure_spend = economics.failure_cost * failures
    return {
        "profit": revenue - maintenance_spend - failure_spend,
        "revenue": revenue,
        "maintenance_spend": maintenance_spend,
        "failure_spend": failure_spend,
        "running_cycles": running,
        "uptime": running / (economics.fleet_size * economics.horizon),
        "maintenances": maintenances,
        "failures": failures,
    }
