"""The Tycoon replay core: hand-computed engines, the profit formula, pairing, packs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from turbofan import tycoon
from turbofan.tycoon import (
    NEVER,
    Economics,
    corrective_triggers,
    engine_sequence,
    expected_engines,
    outcomes,
    predictive_triggers,
    preventive_triggers,
    simulate,
)
from turbofan.tycoon_pack import (
    EngineSet,
    ModelInfo,
    PackError,
    PredictionPack,
    engine_set,
    trajectories,
)

ONE_ENGINE = Economics(fleet_size=1, horizon=1000)  # $300/cycle, $10k + 20, $60k + 60


def perfect_predictions(lives: np.ndarray, cap: float = 125) -> np.ndarray:
    """The true capped RUL after each cycle, NaN past each engine's life."""
    cycles = np.arange(1, lives.max() + 1)
    rul = lives[:, None] - cycles[None, :]
    return np.where(rul >= 0, np.minimum(rul, cap), np.nan).astype(np.float32)


def replay_one(rule: np.ndarray):
    """One engine of life 100 under ``rule``."""
    return simulate(np.array([100]), {"rule": rule}, ONE_ENGINE, trace_slots=1).strategies["rule"]


# --- one engine of life 100, fleet of one, 1000 cycles, worked by hand ---------------


def test_corrective_runs_the_engine_to_failure_each_time():
    # Episodes of 100 + 60 cycles start at 0, 160, ..., 960; the last runs 40 cycles.
    result = replay_one(corrective_triggers(np.array([100])))

    assert result.failures == 6
    assert result.maintenances == 0
    assert result.running_cycles == 6 * 100 + 40
    assert result.engines == 7
    assert result.profit == 640 * 300 - 6 * 60_000 == -168_000
    assert result.uptime == pytest.approx(0.64)
    assert result.life_wasted == 0


def test_preventive_maintains_at_the_age_and_wastes_the_rest():
    # Episodes of 50 + 20: starts at 0, 70, ..., 980; the 15th runs 20 cycles, unmaintained.
    result = replay_one(preventive_triggers(np.array([100]), 50))

    assert result.maintenances == 14
    assert result.failures == 0
    assert result.running_cycles == 14 * 50 + 20
    assert result.profit == 720 * 300 - 14 * 10_000 == 76_000
    assert result.life_wasted == 14 * 50


def test_preventive_later_than_the_life_is_corrective():
    assert replay_one(preventive_triggers(np.array([100]), 150)).profit == -168_000


def test_predictive_maintains_after_the_first_cycle_below_the_threshold():
    # Perfect predictions: RUL 9 after cycle 91, so episodes of 91 + 20 = 111 cycles.
    lives = np.array([100])
    result = replay_one(predictive_triggers(perfect_predictions(lives), 10))

    assert result.maintenances == 9
    assert result.failures == 0
    assert result.running_cycles == 9 * 91 + 1  # the 10th engine starts at 999
    assert result.profit == 820 * 300 - 9 * 10_000 == 156_000
    assert result.life_wasted == 9 * 9


def test_a_maintenance_due_at_the_last_cycle_comes_too_late():
    run, maintained = outcomes(np.array([100, 100]), np.array([99, 100]))

    assert run.tolist() == [99, 100]
    assert maintained.tolist() == [True, False]


def test_an_event_after_the_horizon_is_not_counted():
    economics = Economics(fleet_size=1, horizon=99)
    result = simulate(np.array([100]), {"c": corrective_triggers(np.array([100]))}, economics)

    assert result.strategies["c"].failures == 0
    assert result.strategies["c"].profit == 99 * 300


# --- rules ---------------------------------------------------------------------------


def test_predictive_triggers_take_the_first_cycle_strictly_below():
    predicted = np.array(
        [
            [30.0, 12.0, 10.0, 9.0, 20.0],  # 10 is not below 10: cycle 4
            [5.0, 50.0, 1.0, np.nan, np.nan],  # already below at cycle 1
            [80.0, 70.0, 60.0, np.nan, np.nan],  # never: the NaN padding never triggers
        ]
    )

    triggers = predictive_triggers(predicted, 10)

    assert triggers.tolist() == [4, 1, int(NEVER)]


def test_a_threshold_of_zero_never_maintains():
    assert (predictive_triggers(perfect_predictions(np.array([50, 80])), 0) == NEVER).all()


def test_preventive_age_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        preventive_triggers(np.array([100]), 0)


# --- the formula and pairing -----------------------------------------------------------


def reference(lives, triggers, economics):
    """A plain loop over slots and engines: what :func:`simulate` must agree with."""
    sequence = engine_sequence(
        len(lives), economics.fleet_size, 2 * economics.horizon, economics.seed
    )
    totals = dict(running=0, maintenances=0, failures=0, wasted=0)
    for slot in range(economics.fleet_size):
        clock, k = 0, 0
        while clock < economics.horizon:
            engine = sequence[k, slot]
            life, trigger = int(lives[engine]), int(triggers[engine])
            run = trigger if trigger < life else life
            totals["running"] += min(run, economics.horizon - clock)
            if clock + run <= economics.horizon:
                if trigger < life:
                    totals["maintenances"] += 1
                    totals["wasted"] += life - run
                else:
                    totals["failures"] += 1
            down = economics.maintenance_downtime if trigger < life else economics.failure_downtime
            clock += run + down
            k += 1
    return totals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulate_agrees_with_a_plain_loop_and_the_profit_formula(seed):
    rng = np.random.default_rng(seed)
    lives = rng.integers(5, 60, size=7)
    economics = Economics(
        revenue_per_cycle=7,
        maintenance_cost=50,
        maintenance_downtime=int(rng.integers(0, 4)),
        failure_cost=400,
        failure_downtime=int(rng.integers(0, 9)),
        fleet_size=5,
        horizon=700,
        seed=seed,
    )
    rules = {
        "corrective": corrective_triggers(lives),
        "preventive": preventive_triggers(lives, 30),
        "noisy": rng.integers(1, 70, size=7).astype(np.int32),
    }

    result = simulate(lives, rules, economics)

    for name, rule in rules.items():
        expected = reference(lives, rule, economics)
        got = result.strategies[name]
        assert got.running_cycles == expected["running"], name
        assert got.maintenances == expected["maintenances"], name
        assert got.failures == expected["failures"], name
        assert got.life_wasted == expected["wasted"], name
        assert got.profit == 7 * got.running_cycles - 50 * got.maintenances - 400 * got.failures
        assert got.curve[-1] == got.profit
        assert result.times[-1] == economics.horizon


def test_small_blocks_of_draws_give_the_same_replay(monkeypatch):
    lives = np.array([10, 35, 80, 120])
    rules = {"corrective": corrective_triggers(lives), "preventive": preventive_triggers(lives, 30)}
    economics = Economics(fleet_size=9, horizon=900, seed=5)
    whole = simulate(lives, rules, economics)

    monkeypatch.setattr(tycoon, "_MAX_BLOCK", 1)  # blocks of 4 rows: several, some slots done
    blocks = simulate(lives, rules, economics)

    for name in rules:
        assert blocks.strategies[name].profit == whole.strategies[name].profit
        assert blocks.strategies[name].life_wasted == whole.strategies[name].life_wasted
        assert np.array_equal(blocks.strategies[name].curve, whole.strategies[name].curve)


def test_every_strategy_sees_the_same_engines_in_each_slot():
    lives = np.array([40, 90, 150, 210])
    economics = Economics(fleet_size=6, horizon=3000, seed=7)
    rules = {
        "corrective": corrective_triggers(lives),
        "preventive": preventive_triggers(lives, 60),
        "predictive": predictive_triggers(perfect_predictions(lives), 10),
    }

    result = simulate(lives, rules, economics, trace_slots=6)

    sequence = engine_sequence(len(lives), 6, 200, seed=7)
    for name in rules:
        trace = result.strategies[name].trace
        assert trace is not None  # asked for with trace_slots
        for slot in range(6):
            engines = trace.engine[trace.slot == slot]
            assert engines.tolist() == sequence[: len(engines), slot].tolist(), (name, slot)


def test_the_engine_sequence_depends_on_the_seed_only_not_on_how_much_is_drawn():
    short = engine_sequence(10, 4, 5, seed=3)
    long = engine_sequence(10, 4, 50, seed=3)

    assert (long[:5] == short).all()
    assert not (engine_sequence(10, 4, 5, seed=4) == short).all()


def test_engines_are_dealt_without_replacement_within_each_pass_over_the_pool():
    sequence = engine_sequence(10, 4, 25, seed=0).ravel()  # 100 draws: 10 passes of 10

    for start in range(0, 100, 10):
        assert sorted(sequence[start : start + 10].tolist()) == list(range(10))
    assert len({tuple(row) for row in sequence.reshape(-1, 4)[:2]}) == 2
    assert all(len(set(row)) == 4 for row in sequence.reshape(-1, 4)[:2])  # first pass


def test_paired_sequences_give_an_interval_for_a_difference():
    from turbofan.tycoon import difference_interval, sequence_profits

    lives = np.array([150, 180, 200, 220, 250, 170, 190, 210, 230, 160])
    rules = {
        "perfect": predictive_triggers(perfect_predictions(lives), 5),
        "late": predictive_triggers(perfect_predictions(lives) + np.float32(15), 5),
    }

    profits = sequence_profits(lives, rules, Economics(), sequences=30)

    assert profits["perfect"].shape == (30,)
    low, high = difference_interval(profits["perfect"], profits["late"])
    assert 0 < low <= high  # the late model always fails where the perfect one does not
    same = difference_interval(profits["perfect"], profits["perfect"])
    assert same == (0.0, 0.0)


def test_a_fleet_of_identical_slots_earns_the_sum_of_its_slots():
    lives = np.array([100])
    rule = {"c": corrective_triggers(lives)}
    one = simulate(lives, rule, ONE_ENGINE).strategies["c"]
    four = simulate(lives, rule, Economics(fleet_size=4, horizon=1000)).strategies["c"]

    assert four.profit == 4 * one.profit
    assert four.uptime == one.uptime


def test_expected_engines_estimates_the_work():
    lives = np.array([100])
    estimate = expected_engines(lives, {"c": corrective_triggers(lives)}, ONE_ENGINE)

    assert estimate == pytest.approx(1000 / 160 + 1)


# --- prediction packs --------------------------------------------------------------------


class _Pipeline:
    window = 3

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        return frame[["cycle"]].to_numpy(dtype=np.float32)


class _LastCycleModel:
    """Predicts 100 minus the last cycle of each window: shows which window was used."""

    pipeline = _Pipeline()

    def predict_windows(self, windows: np.ndarray) -> np.ndarray:
        return 100 - windows[:, -1, 0]


def test_trajectories_predict_after_every_cycle_from_the_window_ending_there():
    frame = pd.DataFrame({"unit": [1, 1, 1, 2, 2, 2, 2, 2], "cycle": [1, 2, 3, 1, 2, 3, 4, 5]})

    predicted = trajectories(_LastCycleModel(), frame)  # type: ignore[arg-type]

    assert predicted.shape == (2, 5)
    assert predicted[0, :3].tolist() == [99, 98, 97]
    assert np.isnan(predicted[0, 3:]).all()
    assert predicted[1].tolist() == [99, 98, 97, 96, 95]


def test_a_pack_survives_saving_and_loading(tmp_path):
    frame = pd.DataFrame({"unit": [1, 1, 2], "cycle": [1, 2, 1]})
    holdout = engine_set(frame)
    holdout.predicted["federated"] = np.array([[5, 1], [3, np.nan]], dtype=np.float32)
    test = EngineSet(np.array([1]), np.array([1]), np.array([40.0]), {"federated": np.ones((1, 1))})
    pack = PredictionPack(
        subset="FD001",
        models=[ModelInfo("federated", "federated", "Federated", "a federation")],
        holdout=holdout,
        test=test,
    )

    loaded = PredictionPack.load(pack.save(tmp_path / "pack.npz"))

    assert loaded.lives.tolist() == [2, 1]
    assert loaded.models[0].label == "Federated"
    assert np.array_equal(
        loaded.holdout.predicted["federated"], holdout.predicted["federated"], equal_nan=True
    )
    assert loaded.test is not None and loaded.test.true_rul(0).tolist() == [40.0]
    assert not list(tmp_path.glob(".pack.npz.*"))  # no temporary file left behind


def test_loading_something_else_says_it_is_no_pack(tmp_path):
    (tmp_path / "pack.npz").write_text("hello")

    with pytest.raises(PackError, match="not a prediction pack"):
        PredictionPack.load(tmp_path / "pack.npz")
