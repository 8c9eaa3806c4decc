"""A site's folders as its worker leaves them after a personalisation round, built
quickly for the console's tests: its data (run-to-failure engines and engines in
service), and in its state folder the chosen, local and federation models with the
choice and validation engines beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from turbofan.data.files import read_engine_file
from turbofan.models.fit import NetworkRecipe, fit_network_model, split_engines
from turbofan.models.training import TrainConfig
from worker.console.state import CHOICE_FILE, MODEL_FILES, write_site_file

VAL_FRACTION, SPLIT_SEED = 0.25, 3
# Test engines in service: five near their end (true RUL 7-10) and seven healthier ones.
FLEET_UNITS = (1, 2, 3, 4, 5, 6, 7, 31, 34, 68, 76, 81)


def _write_engines(frame, path: Path) -> None:
    np.savetxt(path, frame.to_numpy(), fmt="%.6g")


def make_site_state(root: Path, cmapss_dir: Path, *, epochs: int = 4) -> tuple[Path, Path]:
    """``root/data`` (engines 1-24 of FD001 to train on, 12 test engines in service)
    and ``root/state``; returns both."""
    data, state = root / "data", root / "state"
    data.mkdir(parents=True)
    train = read_engine_file(cmapss_dir / "train_FD001.txt")
    test = read_engine_file(cmapss_dir / "test_FD001.txt")
    mine = train[train["unit"] <= 24]
    _write_engines(mine, data / "train_FD001.txt")
    _write_engines(test[test["unit"].isin(FLEET_UNITS)], data / "test_FD001.txt")
    recipe = NetworkRecipe(train=TrainConfig(epochs=epochs, patience=0), val_fraction=0.0)
    site_rows, val_rows = split_engines(mine, VAL_FRACTION, SPLIT_SEED)
    others = train[(train["unit"] > 24) & (train["unit"] <= 84)]
    pipeline = recipe.pipeline("FD001").fit(train)  # one, as a federation's sites share
    local = fit_network_model(site_rows, pipeline, recipe, seed=1)
    federation = fit_network_model(others, pipeline, recipe, seed=2)
    chosen = federation
    state.mkdir(parents=True)
    for role, model in (("chosen", chosen), ("local", local), ("federation", federation)):
        model.save(state / MODEL_FILES[role])
    choice = {
        "at": "2026-11-30T00:00:00+00:00",
        "where": "Demo FD001 fleet personalise round 12",
        "choice": "global",
        "val_rmse": {"global": 20.0, "personal": 21.0, "alone": 25.0, "mixture": 22.0},
        "val_units": sorted(int(u) for u in val_rows["unit"].unique()),
    }
    (state / CHOICE_FILE).write_text(json.dumps(choice))
    write_site_file(state, name="site-7", coordinator="http://127.0.0.1:8001/", data_dir=data)
    return data, state
