from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from turbofan.data.features import (
    FeaturePipeline,
    RegimeModel,
    informative_sensors,
    rul_labels,
    windows,
)
from turbofan.data.files import SENSOR_COLUMNS, SETTING_COLUMNS, read_engine_file

FD001_SENSORS = [
    "s_2", "s_3", "s_4", "s_7", "s_8", "s_9", "s_11",
    "s_12", "s_13", "s_14", "s_15", "s_17", "s_20", "s_21",
]  # fmt: skip
SET_POINTS = np.array([[0.0, 0.0, 100.0], [20.0, 0.7, 100.0], [42.0, 0.84, 60.0]])


def engine_frame(*lengths: int) -> pd.DataFrame:
    """Units 1, 2, ... with the given run lengths, cycles 1..n, zero readings."""
    units = np.repeat(np.arange(1, len(lengths) + 1), lengths)
    cycles = np.concatenate([np.arange(1, n + 1) for n in lengths])
    frame = pd.DataFrame(0.0, index=range(len(units)), columns=[*SETTING_COLUMNS, *SENSOR_COLUMNS])
    frame.insert(0, "cycle", cycles)
    frame.insert(0, "unit", units)
    return frame


def noisy_settings(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """The set point of each label plus noise far below the gap between set points."""
    rng = np.random.default_rng(seed)
    return SET_POINTS[labels] + rng.normal(0, 0.001, size=(len(labels), 3))


# --- labels -------------------------------------------------------------------------


def test_training_labels_count_down_to_zero_at_each_units_last_cycle():
    frame = engine_frame(3, 5)

    labels = rul_labels(frame, cap=None)

    assert labels.tolist() == [2, 1, 0, 4, 3, 2, 1, 0]
    assert labels.dtype == np.float32


def test_the_cap_flattens_the_start_of_each_unit():
    frame = engine_frame(3, 5)

    labels = rul_labels(frame, cap=2)

    assert labels.tolist() == [2, 1, 0, 2, 2, 2, 1, 0]


def test_test_labels_add_the_rul_left_after_each_units_last_cycle():
    frame = engine_frame(3, 5)

    plain = rul_labels(frame, cap=None, final_rul=np.array([10, 1]))
    capped = rul_labels(frame, cap=4, final_rul=np.array([10, 1]))

    assert plain.tolist() == [12, 11, 10, 5, 4, 3, 2, 1]
    assert capped.tolist() == [4, 4, 4, 4, 4, 3, 2, 1]


def test_final_rul_of_the_wrong_length_is_refused():
    frame = engine_frame(3, 5)

    with pytest.raises(ValueError, match="1 final RUL values for 2 units"):
        rul_labels(frame, final_rul=np.array([10]))


# --- windows --------------------------------------------------------------------------

# Unit 1 has two rows (10, 11), unit 2 four rows (20..23); one feature per row.
FEATURES = np.array([[10], [11], [20], [21], [22], [23]], dtype=np.float32)
UNITS = np.array([1, 1, 2, 2, 2, 2])


def test_windows_without_padding_need_a_full_history_inside_the_unit():
    x, ends = windows(FEATURES, UNITS, 3)

    assert x[..., 0].tolist() == [[20, 21, 22], [21, 22, 23]]
    assert ends.tolist() == [4, 5]


def test_padded_windows_repeat_the_units_first_row_at_the_front():
    x, ends = windows(FEATURES, UNITS, 3, pad=True)

    assert x[..., 0].tolist() == [
        [10, 10, 10],
        [10, 10, 11],
        [20, 20, 20],
        [20, 20, 21],
        [20, 21, 22],
        [21, 22, 23],
    ]
    assert ends.tolist() == [0, 1, 2, 3, 4, 5]


def test_last_windows_give_one_per_unit_including_a_short_one_when_padded():
    x, ends = windows(FEATURES, UNITS, 3, last_only=True, pad=True)

    assert x[..., 0].tolist() == [[10, 10, 11], [21, 22, 23]]
    assert ends.tolist() == [1, 5]


def test_last_windows_without_padding_skip_a_unit_shorter_than_the_window():
    x, ends = windows(FEATURES, UNITS, 3, last_only=True)

    assert x[..., 0].tolist() == [[21, 22, 23]]
    assert ends.tolist() == [5]


def test_a_window_never_mixes_rows_of_two_units():
    units = np.repeat([7, 3, 9, 4], [1, 4, 2, 5])
    features = units[:, None].astype(np.float32)

    x, ends = windows(features, units, 3, pad=True)

    assert (x[..., 0] == units[ends][:, None]).all()


def test_a_window_shorter_than_one_cycle_is_refused():
    with pytest.raises(ValueError, match="window must be at least 1, got 0"):
        windows(FEATURES, UNITS, 0)


# --- operating regimes -----------------------------------------------------------------


def test_each_row_is_assigned_the_regime_of_its_set_point():
    labels = np.random.default_rng(1).integers(0, 3, size=300)
    settings = noisy_settings(labels)

    model = RegimeModel.fit(settings, 3)

    # Set points are listed in lexicographic order, as regimes are numbered.
    assert model.assign(settings).tolist() == labels.tolist()
    assert model.assign(SET_POINTS).tolist() == [0, 1, 2]


def test_regime_numbers_do_not_depend_on_row_order():
    labels = np.random.default_rng(2).integers(0, 3, size=300)
    settings = noisy_settings(labels)
    shuffled = settings[np.random.default_rng(3).permutation(len(settings))]

    model = RegimeModel.fit(settings, 3)
    reordered = RegimeModel.fit(shuffled, 3)

    np.testing.assert_array_equal(reordered.centres, model.centres)
    assert reordered.assign(settings).tolist() == model.assign(settings).tolist()


def test_a_single_regime_puts_every_row_in_regime_zero():
    settings = noisy_settings(np.array([0, 1, 2, 1, 0]))

    model = RegimeModel.fit(settings, 1)

    assert model.assign(settings).tolist() == [0, 0, 0, 0, 0]


def test_more_regimes_than_distinct_settings_is_refused_with_the_reason():
    settings = noisy_settings(np.array([0, 1, 2, 0, 1, 2]))

    with pytest.raises(ValueError, match="cannot find 4 operating regimes .* only 3 distinct"):
        RegimeModel.fit(settings, 4)


def test_a_saved_regime_model_assigns_exactly_as_the_original():
    labels = np.random.default_rng(4).integers(0, 3, size=100)
    settings = noisy_settings(labels)
    model = RegimeModel.fit(settings, 3)

    restored = RegimeModel.from_dict(json.loads(json.dumps(model.to_dict())))

    assert restored.assign(settings).tolist() == model.assign(settings).tolist()
    np.testing.assert_array_equal(restored.centres, model.centres)


def test_a_sensor_constant_within_each_regime_is_dropped_even_if_regimes_differ():
    frame = engine_frame(6)
    regimes = np.array([0, 0, 0, 1, 1, 1])
    frame["s_1"] = [5.0, 5.0, 5.0, 9.0, 9.0, 9.0]  # differs only between regimes
    frame["s_2"] = [1.0, 2.0, 3.0, 1.0, 1.0, 1.0]  # varies inside regime 0

    kept = informative_sensors(frame, regimes)

    assert kept == ["s_2"]


# --- the pipeline on the shared files ----------------------------------------------------


@pytest.fixture(scope="module")
def fd001(cmapss_dir):
    train = read_engine_file(cmapss_dir / "train_FD001.txt")
    test = read_engine_file(cmapss_dir / "test_FD001.txt", "test")
    return train, test, FeaturePipeline.for_subset("FD001").fit(train)


@pytest.fixture(scope="module")
def fd004(cmapss_dir):
    train = read_engine_file(cmapss_dir / "train_FD004.txt")
    test = read_engine_file(cmapss_dir / "test_FD004.txt", "test")
    return train, test, FeaturePipeline.for_subset("FD004").fit(train)


def test_fd001_keeps_the_fourteen_sensors_the_literature_uses(fd001):
    _, _, pipeline = fd001

    assert pipeline.sensors == FD001_SENSORS


def test_fd001_training_features_are_standardised_per_sensor(fd001):
    train, _, pipeline = fd001

    features = pipeline.transform(train).astype(np.float64)

    assert features.shape == (20631, 14)
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(features.std(axis=0), 1, atol=1e-4)


def test_fd001_training_windows_have_capped_labels_at_their_last_cycle(fd001):
    train, _, pipeline = fd001

    x, y = pipeline.training_windows(train)

    assert x.shape == (17731, 30, 14)  # 20631 rows less 29 per unit
    assert y.min() == 0 and y.max() == 125
    # Unit 1 runs 192 cycles: its first window ends at cycle 30 (RUL 162, capped),
    # its 163rd and last at cycle 192 (RUL 0).
    assert (y[0], y[161], y[162]) == (125, 1, 0)


def test_fd001_test_file_gives_one_last_window_per_unit_in_unit_order(fd001):
    _, test, pipeline = fd001

    x, units = pipeline.last_windows(test)

    assert x.shape == (100, 30, 14)
    assert units.tolist() == list(range(1, 101))
    last_rows = pipeline.transform(test.groupby("unit").tail(1))
    np.testing.assert_array_equal(x[:, -1, :], last_rows)


def test_fd004_features_are_standardised_within_each_regime(fd004):
    train, _, pipeline = fd004
    regime = pipeline.regimes.assign(train[SETTING_COLUMNS].to_numpy())

    features = pipeline.transform(train).astype(np.float64)

    assert pipeline.regimes.n_regimes == 6
    assert sorted(set(regime.tolist())) == [0, 1, 2, 3, 4, 5]
    for k in range(6):
        np.testing.assert_allclose(features[regime == k].mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(features[regime == k].std(axis=0), 1, atol=1e-4)


def test_fd004_last_windows_pad_test_units_shorter_than_the_window(fd004):
    _, test, pipeline = fd004
    lengths = test.groupby("unit").size()
    short = int(lengths.idxmin())
    n = int(lengths[short])

    x, units = pipeline.last_windows(test)

    assert x.shape[:2] == (248, 30)
    assert units.tolist() == list(range(1, 249))
    assert n < 30
    rows = pipeline.transform(test[test["unit"] == short])
    window = x[short - 1]
    np.testing.assert_array_equal(window[: 30 - n], np.repeat(rows[:1], 30 - n, axis=0))
    np.testing.assert_array_equal(window[30 - n :], rows)


@pytest.mark.parametrize("subset", ["fd001", "fd004"])
def test_a_pipeline_saved_as_json_transforms_bit_identically(request, subset):
    _, test, pipeline = request.getfixturevalue(subset)

    restored = FeaturePipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))

    assert restored.sensors == pipeline.sensors
    assert (restored.window, restored.rul_cap) == (pipeline.window, pipeline.rul_cap)
    np.testing.assert_array_equal(restored.transform(test), pipeline.transform(test))


def test_an_unfitted_pipeline_refuses_to_transform_or_save():
    pipeline = FeaturePipeline()

    with pytest.raises(RuntimeError, match="fit"):
        pipeline.transform(engine_frame(2))
    with pytest.raises(RuntimeError, match="fitted"):
        pipeline.to_dict()
