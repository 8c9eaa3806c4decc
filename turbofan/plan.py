"""A maintenance plan for engines in service, how sure it is, and what a model is worth.

Everything a site's console computes about its own engines, Django-free:

* :class:`Calibration`: a model's errors (true minus predicted RUL) on windows of engines
  it never trained on, by band of predicted RUL (Mondrian split conformal), giving an
  interval around a prediction and the chance that an engine fails within so many
  cycles. The windows of one engine are correlated, so the coverage holds per engine
  only roughly; with few engines the interval is wider, as it should be.
* :func:`plan_engine`: when to pull an engine (the age-replacement rule on its chances of
  failing, or a predictive threshold), and the expected spend of that plan against
  running it to failure over a horizon.
* :func:`replay_worth`: the maintenance replay of :mod:`turbofan.tycoon` on engines that
  ran to failure, to put a number (with an interval) on one model against another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from turbofan.tycoon import Economics, difference_interval, predictive_triggers, simulate

LEVEL = 0.9  # the intervals' nominal coverage
# Bands of predicted RUL with errors of their own: near the end of life a model errs less
# than on a healthy engine (whose label is capped).
BAND_EDGES = (15.0, 30.0, 60.0, 90.0)
MIN_PER_BAND = 30  # fewer errors in a band: use every error instead
REPLICATES = 200  # engine pools resampled for the interval of a difference
LONGEST_PULL = 400  # cycles ahead best_pull looks (no C-MAPSS engine runs longer)


@dataclass(frozen=True)
class Calibration:
    """A model's errors on engines it never trained on.

    Parameters
    ----------
    predicted : (windows,) the model's predicted RUL of each window
    errors : (windows,) true (capped) minus predicted RUL of the same windows
    engines : how many engines the windows come from
    """

    predicted: np.ndarray
    errors: np.ndarray
    engines: int

    @classmethod
    def of(cls, predicted: np.ndarray, true: np.ndarray, engines: int) -> Calibration:
        predicted = np.asarray(predicted, dtype=np.float64)
        return cls(predicted, np.asarray(true, dtype=np.float64) - predicted, engines)

    def _band(self, value: float) -> np.ndarray:
        """The errors of windows predicted in the same band as ``value``."""
        edges = np.asarray(BAND_EDGES)
        band = np.searchsorted(edges, self.predicted, side="right")
        mine = self.errors[band == np.searchsorted(edges, value, side="right")]
        return mine if len(mine) >= MIN_PER_BAND else self.errors

    def interval(self, predicted: float, level: float = LEVEL) -> tuple[float, float]:
        """An interval for the true RUL of an engine predicted at ``predicted`` (split
        conformal, with the finite-sample correction), never below 0."""
        errors = np.sort(self._band(predicted))
        n = len(errors)
        if n == 0:
            return math.nan, math.nan
        alpha = (1.0 - level) / 2
        # The k-th smallest and largest, k = floor((n + 1) * alpha): a hair of slack so that
        # 0.1 / 2 * 40 counts as the 2 it is, not 1.999...
        low = errors[max(0, math.floor((n + 1) * alpha + 1e-9) - 1)]
        high = errors[min(n - 1, math.ceil((n + 1) * (1 - alpha) - 1e-9) - 1)]
        return max(0.0, predicted + float(low)), max(0.0, predicted + float(high))

    def remaining(self, predicted: float) -> np.ndarray:
        """Draws of the true RUL of a running engine predicted at ``predicted``: the
        prediction plus the band's errors, given that it still runs (RUL >= 0; if no
        error allows that, the prediction itself)."""
        draws = predicted + self._band(predicted)
        running = draws[draws >= 0]
        return running if len(running) else np.array([max(predicted, 0.0)])

    def failure_chance(self, predicted: float, cycles: float) -> float:
        """The chance that a running engine predicted at ``predicted`` fails within the
        next ``cycles`` cycles (0: it is pulled now, before it can fail)."""
        if cycles <= 0:
            return 0.0
        return float(np.mean(self.remaining(predicted) < cycles))

    def expected_left(self, predicted: float, cycles: float) -> float:
        """Expected cycles of life an engine still has when pulled after ``cycles``."""
        return float(np.mean(np.maximum(self.remaining(predicted) - cycles, 0.0)))


def engine_costs(economics: Economics) -> tuple[float, float]:
    """What one maintenance and one failure cost, downtime counted as lost revenue."""
    revenue = economics.revenue_per_cycle
    maintenance = economics.maintenance_cost + economics.maintenance_downtime * revenue
    failure = economics.failure_cost + economics.failure_downtime * revenue
    return maintenance, failure


@dataclass(frozen=True)
class PlannedEngine:
    """One engine's part of a plan.

    ``pull_in`` is the cycles from now after which it is pulled (0: now), None when it
    stays in service through the horizon; ``fail_chance`` is the chance it fails first
    (before its pull, or within the horizon when not pulled); ``plan_cost`` and
    ``run_cost`` the expected spend on it within the horizon, planned and run to failure
    (downtime counted as lost revenue); ``life_left_at_pull`` the cycles of life a pull
    is expected to give up.
    """

    pull_in: int | None
    fail_chance: float
    run_fail_chance: float
    plan_cost: float
    run_cost: float
    life_left_at_pull: float


def pull_in(predicted: float, threshold: float) -> int:
    """Cycles from now until the prediction falls below ``threshold``, at one cycle of
    RUL per cycle run (0 when it already has)."""
    return 0 if predicted < threshold else math.floor(predicted - threshold) + 1


def best_pull(
    predicted: float,
    age: int,
    calibration: Calibration,
    economics: Economics,
    *,
    longest: int = LONGEST_PULL,
) -> int | None:
    """The pull that earns most per cycle of the engine's slot: the classic
    age-replacement rule, on this engine's chances of failing.

    Pulled after ``k`` more cycles, an engine of ``age`` cycles with true RUL ``T`` runs
    ``age + min(T, k)`` cycles, then is maintained (if ``k < T``) or fails, and its slot
    is down for the downtime. Over the draws of ``T``, the rate is::

        (revenue * E[cycles run] - E[maintenance or failure cost])
            / (E[cycles run] + E[downtime])

    Returns the best ``k`` (0: now), or None when running it to failure is best.
    """
    draws = calibration.remaining(predicted)[:, None]
    k = np.arange(longest + 1)[None, :]
    fails = draws < k  # it fails before a pull after k more cycles
    ran = age + np.minimum(draws, k)
    e = economics
    cost = np.where(fails, e.failure_cost, e.maintenance_cost).mean(axis=0)
    down = np.where(fails, e.failure_downtime, e.maintenance_downtime).mean(axis=0)
    rate = (e.revenue_per_cycle * ran.mean(axis=0) - cost) / (ran.mean(axis=0) + down)
    # Running to failure: every draw fails at the end of its life.
    to_failure = (e.revenue_per_cycle * (age + draws.mean()) - e.failure_cost) / (
        age + draws.mean() + e.failure_downtime
    )
    best = int(np.argmax(rate))
    return best if rate[best] > to_failure else None


def plan_engine(
    predicted: float,
    age: int,
    calibration: Calibration,
    economics: Economics,
    *,
    horizon: int,
    threshold: float | None = None,
) -> PlannedEngine:
    """When to pull one engine of ``age`` cycles predicted at ``predicted`` cycles of RUL,
    and the expected spend on it over the next ``horizon`` cycles, planned and run to
    failure. The pull comes from ``threshold`` (maintain once the prediction falls below
    it) if given, else from :func:`best_pull` under ``economics``."""
    maintenance, failure = engine_costs(economics)
    run_fail = calibration.failure_chance(predicted, horizon)
    run_cost = run_fail * failure
    if threshold is not None:
        when: int | None = pull_in(predicted, threshold)
    else:
        when = best_pull(predicted, age, calibration, economics)
    if when is None or when > horizon:
        return PlannedEngine(None, run_fail, run_fail, run_cost, run_cost, math.nan)
    fail = calibration.failure_chance(predicted, when)
    return PlannedEngine(
        pull_in=when,
        fail_chance=fail,
        run_fail_chance=run_fail,
        plan_cost=fail * failure + (1 - fail) * maintenance,
        run_cost=run_cost,
        life_left_at_pull=calibration.expected_left(predicted, when),
    )


@dataclass(frozen=True)
class Worth:
    """What one strategy earns over another in the replay, per factory of
    ``economics.fleet_size`` engines over ``economics.horizon`` cycles.

    ``profit`` holds each strategy's profit on the pool as it is (sequence seed of the
    economics); ``difference`` is first minus second there; ``low`` and ``high`` bound
    it at ``level`` over resampled pools and sequences.
    """

    profit: dict[str, float]
    difference: float
    low: float
    high: float
    level: float
    engines: int


def replay_worth(
    lives: np.ndarray,
    predicted: Mapping[str, np.ndarray],
    economics: Economics,
    *,
    thresholds: Mapping[str, float],
    replicates: int = REPLICATES,
    level: float = LEVEL,
) -> Worth:
    """The first model of ``predicted`` against the second, each maintaining when its
    predicted RUL falls below its threshold in ``thresholds``, replayed on the same engines.

    The interval resamples the pool of engines (with replacement: a site has few) and the
    engine sequence together, ``replicates`` times; both strategies always see the same
    engines, so it is the interval of a paired difference.
    """
    names = list(predicted)
    if len(names) != 2:
        raise ValueError("replay_worth compares exactly two models")
    lives = np.asarray(lives)
    triggers = {n: predictive_triggers(predicted[n], thresholds[n]) for n in names}
    base = simulate(lives, triggers, economics, curve_points=2)
    profit = {n: base.strategies[n].profit for n in names}
    rng = np.random.default_rng(economics.seed)
    first, second = np.empty(replicates), np.empty(replicates)
    for i in range(replicates):
        pool = rng.integers(0, len(lives), len(lives))
        result = simulate(
            lives[pool],
            {n: t[pool] for n, t in triggers.items()},
            replace(economics, seed=economics.seed + 1 + i),
            curve_points=2,
        )
        first[i] = result.strategies[names[0]].profit
        second[i] = result.strategies[names[1]].profit
    low, high = difference_interval(first, second, level)
    return Worth(
        profit=profit,
        difference=profit[names[0]] - profit[names[1]],
        low=low,
        high=high,
        level=level,
        engines=len(lives),
    )
