"""Boosted trees grown from histograms: bins, histograms, splits, growth and whole fits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from turbofan.models.trees import (
    LEAF,
    BoostingSettings,
    Ensemble,
    GrowingTree,
    best_splits,
    bin_codes,
    edges_from_counts,
    fit_trees,
    grid_counts,
    grow,
    histograms,
    rebase,
    sample,
)

ONE_LEVEL = BoostingSettings(depth=1, learning_rate=1.0, l2=0.0, min_child=1, subsample=1.0)


def test_histograms_sum_gradient_and_hessian_by_node_feature_and_bin():
    codes = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], dtype=np.uint8)
    gradient = np.array([1.0, 2.0, 3.0, 4.0])
    position = np.array([0, 0, 1, -1])  # the last row is in no open node

    histogram = histograms(codes, gradient, np.ones(4), position, 2, 2)

    assert histogram.shape == (2, 2, 2, 2)
    assert histogram[0, 0, :, 0].tolist() == [1.0, 2.0]  # node 0, feature 0: rows 0 and 1
    assert histogram[0, 1, :, 0].tolist() == [0.0, 3.0]  # node 0, feature 1: both in bin 1
    assert histogram[1, 0, :, 0].tolist() == [0.0, 3.0]
    assert histogram[..., 1].sum() == 3 * 2  # three rows counted once per feature


def test_a_row_that_is_not_sampled_adds_nothing():
    codes = np.zeros((3, 1), dtype=np.uint8)
    histogram = histograms(codes, np.array([1.0, 5.0, 7.0]), np.array([1, 0, 1]), np.zeros(3), 1, 1)

    assert histogram[0, 0, 0].tolist() == [8.0, 2.0]


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(2, 4))
def test_the_histograms_of_sites_add_up_to_the_histogram_of_their_pooled_rows(seed, n_sites):
    rng = np.random.default_rng(seed)
    parts = [
        (
            rng.integers(0, 8, (n, 3)).astype(np.uint8),
            rng.normal(size=n),
            rng.integers(0, 2, n).astype(float),
            rng.integers(-1, 3, n),
        )
        for n in rng.integers(1, 40, n_sites)
    ]
    pooled = [np.concatenate(column) for column in zip(*parts, strict=True)]

    summed = sum(histograms(*part, 3, 8) for part in parts)

    codes, gradient, hessian, position = pooled
    np.testing.assert_allclose(summed, histograms(codes, gradient, hessian, position, 3, 8))


def test_the_best_split_separates_rows_whose_gradients_differ():
    # One feature in four bins: rows in bins 0-1 have gradient -1, in bins 2-3 +1.
    histogram = np.zeros((1, 1, 4, 2))
    histogram[0, 0, :, 0] = [-2.0, -2.0, 2.0, 2.0]
    histogram[0, 0, :, 1] = [2.0, 2.0, 2.0, 2.0]

    splits = best_splits(histogram, ONE_LEVEL)

    assert splits.ok[0] and splits.feature[0] == 0 and splits.bin[0] == 1
    assert splits.left[0].tolist() == [-4.0, 4.0]
    assert splits.gain[0] == pytest.approx(4**2 / 4 + 4**2 / 4 - 0)


def test_a_node_does_not_split_below_the_fewest_rows_or_without_gain():
    flat = np.zeros((1, 1, 4, 2))
    flat[0, 0, :, 1] = 5.0  # gradients all zero: nothing to gain
    few = np.zeros((1, 1, 2, 2))
    few[0, 0, :, 0] = [-1.0, 1.0]
    few[0, 0, :, 1] = [1.0, 1.0]

    assert not best_splits(flat, ONE_LEVEL).ok[0]
    strict = BoostingSettings(depth=1, min_child=2, subsample=1.0)
    assert not best_splits(few, strict).ok[0]


def test_tied_gains_go_to_the_first_feature_however_their_last_digits_fall():
    histogram = np.zeros((1, 2, 2, 2))
    histogram[0, :, :, 0] = [[-3.0, 3.0], [-3.0, 3.0 + 1e-9]]  # a last-digit difference
    histogram[0, :, :, 1] = 2.0

    assert best_splits(histogram, ONE_LEVEL).feature[0] == 0


def test_a_tree_grows_one_level_per_histogram_and_finishes_at_its_depth():
    settings = BoostingSettings(depth=2, learning_rate=0.5, l2=0.0, min_child=1, subsample=1.0)
    codes = np.array([[0], [1], [2], [3]], dtype=np.uint8)
    gradient = np.array([-4.0, -2.0, 2.0, 4.0])
    tree = GrowingTree.new(settings)

    first, done = grow(
        tree, histograms(codes, gradient, np.ones(4), tree.position(codes), 1, 4), settings, 125
    )
    assert not done and first.open_nodes.tolist() == [1, 2] and first.feature[0] == 0
    assert first.value[1] == pytest.approx(0.5 * 3.0) and first.value[2] == pytest.approx(-1.5)

    position = first.position(codes)
    assert position.tolist() == [0, 0, 1, 1]
    second, done = grow(
        first, histograms(codes, gradient, np.ones(4), position, 2, 4), settings, 125
    )
    assert done
    leaves = second.value[[3, 4, 5, 6]]
    np.testing.assert_allclose(leaves, [2.0, 1.0, -1.0, -2.0])  # -lr * G / H, one row each


def test_leaf_values_are_held_within_the_label_range():
    settings = BoostingSettings(depth=1, learning_rate=0.1, l2=0.0, min_child=1, subsample=1.0)
    histogram = np.zeros((1, 1, 2, 2))
    histogram[0, 0, :, 0] = [-1e9, 1e9]  # what a lying site could put in the sum
    histogram[0, 0, :, 1] = [1.0, 1.0]

    grown, _ = grow(GrowingTree.new(settings), histogram, settings, limit=125)

    assert np.abs(grown.value).max() == pytest.approx(0.1 * 125)


def test_rebasing_the_first_histogram_moves_the_start_to_the_labels_mean():
    histogram = np.zeros((1, 1, 2, 2))
    histogram[0, 0, :, 0] = [50.0 - 10.0, 50.0 - 30.0]  # start 50, labels 10 and 30
    histogram[0, 0, :, 1] = [1.0, 1.0]

    base, shifted = rebase(histogram, 50.0)

    assert base == pytest.approx(20.0)
    assert shifted[0, 0, :, 0].tolist() == [pytest.approx(10.0), pytest.approx(-10.0)]  # 20 - y


def test_bins_are_read_off_grid_counts_at_the_quantiles():
    values = np.linspace(-3, 3, 4001)[:, None]

    edges = edges_from_counts(grid_counts(values), 4)

    np.testing.assert_allclose(edges[0], [-1.5, 0.0, 1.5], atol=0.05)
    codes = bin_codes(values, edges)
    assert np.bincount(codes[:, 0]).tolist() == pytest.approx([1000, 1000, 1000, 1001], abs=30)


def test_a_feature_with_few_values_gets_few_bins():
    values = np.repeat([[1.0], [2.0]], 50, axis=0)

    edges = edges_from_counts(grid_counts(values), 8)

    assert np.isfinite(edges[0]).sum() == 1  # one edge between the two values
    assert sorted(set(bin_codes(values, edges)[:, 0].tolist())) == [0, 1]


def test_the_sample_of_rows_is_seeded_by_tree_and_stream():
    settings = BoostingSettings(subsample=0.5, seed=3)

    assert np.array_equal(sample(100, settings, 4, 1), sample(100, settings, 4, 1))
    assert not np.array_equal(sample(100, settings, 4, 1), sample(100, settings, 4, 2))
    assert not np.array_equal(sample(100, settings, 4, 1), sample(100, settings, 5, 1))
    assert sample(10, BoostingSettings(subsample=1.0), 0).tolist() == [1.0] * 10


def _data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 4))
    y = np.clip(60 + 30 * np.tanh(x[:, 0]) - 20 * (x[:, 1] > 0.5), 0, 125)
    return x, y + rng.normal(0, 2, n)


def test_boosting_learns_a_function_and_keeps_its_best_number_of_trees():
    rng = np.random.default_rng(0)
    x, y = _data(rng, 2000)
    x_val, y_val = _data(rng, 500)
    settings = BoostingSettings(trees=200, depth=3, learning_rate=0.2, patience=10)

    result = fit_trees(x, y, settings, limit=125, x_val=x_val, y_val=y_val)

    error = np.sqrt(np.mean((result.ensemble.predict(x_val) - y_val) ** 2))
    assert error < 4.0  # the noise is 2; the mean alone would be off by about 23
    best = min(result.history, key=lambda r: r["val_rmse"])
    assert result.ensemble.trees == best["trees"] < 200  # stopped, and cut back to the best
    assert error == pytest.approx(best["val_rmse"])


def test_boosting_on_from_a_model_never_leaves_it_worse_on_validation():
    rng = np.random.default_rng(1)
    x, y = _data(rng, 1000)
    x_val, y_val = _data(rng, 300)
    settings = BoostingSettings(trees=30, depth=3, learning_rate=0.2, patience=5)
    start = fit_trees(x, y, settings, limit=125).ensemble
    shifted = y + 15  # another fleet: the same shape, later failures

    tuned = fit_trees(x, shifted, settings, limit=125, x_val=x_val, y_val=y_val + 15, start=start)

    def error(model: Ensemble) -> float:
        return float(np.sqrt(np.mean((model.predict(x_val) - y_val - 15) ** 2)))

    assert tuned.ensemble.trees > start.trees
    assert error(tuned.ensemble) < error(start) - 5
    np.testing.assert_array_equal(tuned.ensemble.edges, start.edges)  # the same bins


def test_an_ensemble_travels_as_plain_arrays_and_refuses_arrays_that_do_not_fit():
    rng = np.random.default_rng(2)
    x, y = _data(rng, 300)
    model = fit_trees(x, y, BoostingSettings(trees=5, depth=2), limit=125).ensemble

    again = Ensemble.from_arrays([np.array(a) for a in model.to_arrays()])
    np.testing.assert_array_equal(again.predict(x), model.predict(x))

    arrays = model.to_arrays()
    with pytest.raises(ValueError, match="5 arrays"):
        Ensemble.from_arrays(arrays[:4])
    bad = [a.copy() for a in arrays]
    bad[2][0, 0] = 99  # a split on a feature the model does not have
    with pytest.raises(ValueError, match="feature the model does not have"):
        Ensemble.from_arrays(bad)
    with pytest.raises(ValueError, match="not a full binary tree"):
        Ensemble.from_arrays([arrays[0], arrays[1], *(a[:, :4] for a in arrays[2:])])


def test_a_growing_tree_travels_as_arrays_and_its_level_is_checked():
    settings = BoostingSettings(depth=3)
    tree = GrowingTree.new(settings)
    again = GrowingTree.from_arrays(tree.to_arrays(), settings)
    assert again.open_nodes.tolist() == [0] and again.feature.tolist() == [LEAF] * 15

    arrays = tree.to_arrays()
    arrays[4] = np.array([3])
    with pytest.raises(ValueError, match="outside 0..2"):
        GrowingTree.from_arrays(arrays, settings)
    with pytest.raises(ValueError, match="does not fit"):
        GrowingTree.from_arrays(tree.to_arrays(), BoostingSettings(depth=4))


def test_settings_out_of_range_are_refused_by_name():
    with pytest.raises(ValueError, match="depth must be between 1 and 8; subsample"):
        BoostingSettings(depth=0, subsample=0)
    with pytest.raises(ValueError, match="unknown colour"):
        BoostingSettings.from_dict({"colour": "red"})


def test_a_hybrid_blends_half_and_half_unless_validation_clearly_prefers_another_share():
    from turbofan.models.trees import DEFAULT_SHARE, SHARES, share_from_errors

    half = SHARES.index(DEFAULT_SHARE)
    slightly = [100.0] * len(SHARES)
    slightly[-1] = 95.0  # 2.5 % lower RMSE: not enough to leave the equal blend
    clearly = [100.0] * len(SHARES)
    clearly[-1] = 81.0  # 10 % lower RMSE

    assert share_from_errors(slightly) == DEFAULT_SHARE
    assert share_from_errors(clearly) == 1.0
    assert share_from_errors([0.0] * len(SHARES)) == DEFAULT_SHARE  # nobody could score
    assert slightly[half] == 100.0
