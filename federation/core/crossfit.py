"""Out-of-fold predictions for the Turbofan Tycoon: every engine that ran to failure
replayed, each predicted only by models that never trained on it.

The subset's run-to-failure engines are dealt into ``folds`` folds (seeded). For each
fold, three models train on the other folds' engines and predict every cycle of the
fold's engines:

* ``centralised``: all those engines in one place (the oracle a federation stands in for);
* ``local:single-site``: a single site's worth of them (as many as one of ``sites``
  sites would hold), drawn at random: what the coordinator may show as "local", since it
  never holds a model of one real site's data;
* ``federated``: those engines split among ``sites`` sites (IID, seeded) and trained by
  the in-process simulation, which runs the deployment's own round engine and secure sum.

Stitched together, each model has one prediction per cycle of every engine, none from a
model that saw it. The test engines are predicted by every fold's model, averaged.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from federation.core.engine.simulation import PROCESSES_ENV, run_simulation
from federation.core.engine.training import FederatedTraining
from turbofan.models.artefact import RulModel
from turbofan.models.fit import NetworkRecipe, fit_model
from turbofan.tycoon_pack import (
    CENTRALISED,
    FEDERATED,
    LOCAL,
    EngineSet,
    ModelInfo,
    add_sensors,
    engine_set,
    trajectories,
)

SINGLE_SITE = "single-site"
KEYS = (CENTRALISED, f"{LOCAL}:{SINGLE_SITE}", FEDERATED)


@dataclass(frozen=True)
class CrossfitConfig:
    folds: int = 5
    sites: int = 4  # the federated folds' sites, and the size of "a single site's worth"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"cross-fitting needs at least 2 folds, got {self.folds}")
        if self.sites < 2:
            raise ValueError(f"a federation needs at least 2 sites, got {self.sites}")


def fold_of(units: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each unit: a seeded shuffle dealt round-robin (sizes differ by <= 1)."""
    order = np.random.default_rng(seed).permutation(len(units))
    fold = np.empty(len(units), dtype=np.int64)
    fold[order] = np.arange(len(units)) % folds
    return fold


@dataclass
class FoldModels:
    """One fold's three models and what they predicted of its held-out engines."""

    fold: int
    hashes: dict[str, str]
    held: dict[str, np.ndarray]  # key -> (fold engines, cycles) trajectories
    test: dict[str, np.ndarray]  # key -> (test engines, cycles)
    seconds: float


def _split_sites(frame: pd.DataFrame, sites: int, seed: int) -> dict[str, pd.DataFrame]:
    units = frame["unit"].unique()
    site_of = fold_of(units, sites, seed)
    return {f"site-{i + 1}": frame[frame["unit"].isin(units[site_of == i])] for i in range(sites)}


def train_fold(
    fold: int,
    *,
    frame: pd.DataFrame,
    folds: np.ndarray,
    units: np.ndarray,
    test: pd.DataFrame | None,
    subset: str,
    recipe: NetworkRecipe,
    training: FederatedTraining,
    config: CrossfitConfig,
) -> FoldModels:
    """Train the three models on every fold but ``fold`` and predict ``fold``'s engines."""
    started = time.perf_counter()
    seed = config.seed * 1000 + fold
    train = frame[frame["unit"].isin(units[folds != fold])]
    held = frame[frame["unit"].isin(units[folds == fold])]
    pool = train["unit"].unique()
    size = max(2, len(pool) // config.sites)
    chosen = np.random.default_rng(seed).choice(pool, size, replace=False)

    def in_one_place(rows: pd.DataFrame) -> RulModel:  # of the federation's family
        pipeline = recipe.pipeline(subset)
        return fit_model(rows, pipeline, recipe, **training.family_settings(), seed=seed)

    models: dict[str, RulModel] = {
        CENTRALISED: in_one_place(train),
        f"{LOCAL}:{SINGLE_SITE}": in_one_place(train[train["unit"].isin(chosen)]),
        FEDERATED: run_simulation(
            _split_sites(train, config.sites, seed),
            recipe.pipeline(subset),
            recipe,
            training,
        ).model,
    }
    return FoldModels(
        fold=fold,
        hashes={key: model.hash for key, model in models.items()},
        held={key: trajectories(model, held) for key, model in models.items()},
        test={key: trajectories(model, test) for key, model in models.items()}
        if test is not None
        else {},
        seconds=round(time.perf_counter() - started, 1),
    )


def crossfit(
    frame: pd.DataFrame,
    subset: str,
    recipe: NetworkRecipe,
    training: FederatedTraining,
    config: CrossfitConfig,
    *,
    test: pd.DataFrame | None = None,
    test_rul: np.ndarray | None = None,
    say: Callable[[str], None] = lambda line: None,
    processes: int | None = None,
) -> tuple[list[ModelInfo], EngineSet, EngineSet | None]:
    """Out-of-fold predictions of every engine of ``frame`` (run-to-failure engines of
    ``subset``, units unique) by the three models; the folds train side by side in
    ``processes`` processes (default: one per core). Returns the models' provenance, the
    engines with their predictions, and the test engines' (each fold's model, averaged)."""
    engines = engine_set(frame)
    add_sensors(engines, frame)  # what the game's turbofans show
    units = engines.units
    folds = fold_of(units, config.folds, config.seed)
    job = functools.partial(
        train_fold,
        frame=frame,
        folds=folds,
        units=units,
        test=test,
        subset=subset,
        recipe=recipe,
        training=training,
        config=config,
    )
    processes = processes or min(config.folds, os.cpu_count() or 1)
    say(
        f"Cross-fitting {len(units)} {subset} engines in {config.folds} folds "
        f"({processes} at a time): centralised, a single site's worth, federated "
        f"({config.sites} sites, {training.rounds} rounds) per fold"
    )
    results: list[FoldModels] = []
    if processes > 1:
        context = multiprocessing.get_context("spawn")
        # Each fold is a process of its own; its simulation trains in that process.
        before = os.environ.get(PROCESSES_ENV)
        os.environ[PROCESSES_ENV] = "1"
        try:
            with ProcessPoolExecutor(processes, mp_context=context) as pool:
                for done in pool.map(job, range(config.folds)):
                    results.append(done)
                    say(f"  fold {done.fold + 1}/{config.folds} done in {done.seconds:.0f} s")
        finally:
            if before is None:
                os.environ.pop(PROCESSES_ENV, None)
            else:
                os.environ[PROCESSES_ENV] = before
    else:
        for fold in range(config.folds):
            results.append(job(fold))
            say(f"  fold {fold + 1}/{config.folds} done in {results[-1].seconds:.0f} s")
    longest = int(engines.cycles.max())
    for key in KEYS:
        stitched = np.full((len(units), longest), np.nan, dtype=np.float32)
        for done in results:
            rows = np.flatnonzero(folds == done.fold)
            stitched[rows, : done.held[key].shape[1]] = done.held[key]
        engines.predicted[key] = stitched
    tested = None
    if test is not None:
        tested = engine_set(test, test_rul)
        for key in KEYS:
            tested.predicted[key] = np.mean([done.test[key] for done in results], axis=0)
    return _provenance(results, folds, config, training), engines, tested


def _provenance(
    results: list[FoldModels],
    folds: np.ndarray,
    config: CrossfitConfig,
    training: FederatedTraining,
) -> list[ModelInfo]:
    labels = {
        CENTRALISED: "Centralised (the other folds' engines in one place)",
        f"{LOCAL}:{SINGLE_SITE}": "A single site's worth of public engines",
        FEDERATED: f"Federated ({config.sites} sites of the other folds' engines, simulated)",
    }
    kinds = {CENTRALISED: CENTRALISED, f"{LOCAL}:{SINGLE_SITE}": LOCAL, FEDERATED: FEDERATED}
    details: dict[str, Any] = {
        "folds": config.folds,
        "fold_of_engine": folds.tolist(),
        "seed": config.seed,
    }
    return [
        ModelInfo(
            key=key,
            kind=kinds[key],
            label=labels[key],
            source=f"cross-fitted: {config.folds} folds, each engine predicted by the fold "
            "model that never trained on it",
            site=SINGLE_SITE if kinds[key] == LOCAL else None,
            details={
                **details,
                "fold_hashes": [done.hashes[key] for done in results],
                **({"rounds": training.rounds} if key == FEDERATED else {}),
            },
        )
        for key in KEYS
    ]
