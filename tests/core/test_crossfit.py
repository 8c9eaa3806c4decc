"""Cross-fitting for the Tycoon: every engine predicted only by models that never
trained on it, stitched into one prediction per cycle of every engine."""

from __future__ import annotations

import numpy as np
import pytest

from federation.core import crossfit as cf
from federation.core.crossfit import CrossfitConfig, crossfit, fold_of
from federation.core.engine.training import FederatedTraining
from turbofan.data.files import read_engine_file
from turbofan.models.fit import NetworkRecipe
from turbofan.models.training import TrainConfig
from turbofan.tycoon_pack import SHOWN_SENSORS


@pytest.fixture(scope="module")
def engines(cmapss_dir):
    frame = read_engine_file(cmapss_dir / "train_FD001.txt")
    return frame[frame["unit"] <= 24].reset_index(drop=True)


def test_folds_are_seeded_and_even():
    units = np.arange(1, 24)

    folds = fold_of(units, 5, seed=3)

    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]
    assert (fold_of(units, 5, seed=3) == folds).all()
    assert not (fold_of(units, 5, seed=4) == folds).all()


def test_no_engine_is_predicted_by_a_model_that_trained_on_it(engines, monkeypatch):
    """Stand-in trainers note what each model trained on, and each model predicts its
    own number at every cycle: every engine's predictions must come from models that
    never saw it."""
    seen: list[set[int]] = []  # model number -> the units it trained on
    sizes: dict[str, list[int]] = {"fit": [], "federated": []}

    class Marked:
        def __init__(self, units: set[int]) -> None:
            seen.append(units)
            self.number, self.hash = len(seen) - 1, f"h{len(seen)}"

    def fit(frame, pipeline, recipe, *, seed=0, **kwargs):
        sizes["fit"].append(frame["unit"].nunique())
        return Marked(set(frame["unit"].unique().tolist()))

    def simulate(site_frames, template, recipe, training, **kwargs):
        assert len(site_frames) == 3
        units = set().union(*(set(f["unit"].unique().tolist()) for f in site_frames.values()))
        sizes["federated"].append(len(units))

        class Result:
            model = Marked(units)

        return Result()

    def predict(model, frame):
        rows = frame.groupby("unit", sort=False).size()
        out = np.full((len(rows), rows.max()), np.nan, dtype=np.float32)
        for i, n in enumerate(rows):
            out[i, :n] = model.number
        return out

    monkeypatch.setattr(cf, "fit_model", fit)
    monkeypatch.setattr(cf, "run_simulation", simulate)
    monkeypatch.setattr(cf, "trajectories", predict)
    config = CrossfitConfig(folds=4, sites=3, seed=1)

    models, pooled, _ = crossfit(
        engines, "FD001", NetworkRecipe(), FederatedTraining(rounds=1), config, processes=1
    )

    for key in cf.KEYS:
        predicted = pooled.predicted[key]
        for row, unit in enumerate(pooled.units):
            life = pooled.cycles[row]
            assert np.isfinite(predicted[row, :life]).all()
            assert np.isnan(predicted[row, life:]).all()
            assert unit not in seen[int(predicted[row, 0])], (key, unit)
    centralised, single = sizes["fit"][0::2], sizes["fit"][1::2]
    assert single == [n // 3 for n in centralised]  # a single site's worth of them
    assert sizes["federated"] == centralised
    assert [m.key for m in models] == ["centralised", "local:single-site", "federated"]
    assert models[0].details["fold_of_engine"] == fold_of(pooled.units, 4, seed=1).tolist()
    assert len(models[2].details["fold_hashes"]) == 4


def test_a_small_real_cross_fit_predicts_every_cycle(engines, cmapss_dir):
    recipe = NetworkRecipe(train=TrainConfig(epochs=1, patience=0), window=20, val_fraction=0.0)
    training = FederatedTraining(rounds=1, local_epochs=1, patience=0)
    test = read_engine_file(cmapss_dir / "test_FD001.txt", "test")
    test = test[test["unit"] <= 5]

    models, pooled, tested = crossfit(
        engines[engines["unit"] <= 16],
        "FD001",
        recipe,
        training,
        CrossfitConfig(folds=2, sites=2),
        test=test,
        test_rul=np.arange(5, dtype=float),
        processes=1,
    )

    assert len(pooled.units) == 16 and tested is not None and len(tested.units) == 5
    for key in (m.key for m in models):
        for row, life in enumerate(pooled.cycles):
            assert np.isfinite(pooled.predicted[key][row, :life]).all()
        assert np.isfinite(tested.last_predictions(key)).all()
    # The game's sparklines: every engine's shown sensors, hour by hour, scaled to 0-255.
    assert pooled.sensors is not None
    assert pooled.sensors.shape == (16, int(pooled.cycles.max()), len(SHOWN_SENSORS))
    first = engines[engines["unit"] == pooled.units[0]]
    t30 = first["s_3"].to_numpy()
    shown = pooled.sensors[0, : len(first), 3].astype(float)  # T30
    assert np.corrcoef(t30, shown)[0, 1] > 0.99
