"""Choose the recipes' hyperparameters on validation engines only, never on test scores.

    python benchmarks/tune.py [--subset FD001] [--sites 4] [--seed 0] [--readme README.md]

Three small grids, each scored on validation engines that no model trains on:

- the centralised network (15 % of the training engines held back, split by engine):
  learning rate x epochs, scored by the best epoch's validation RMSE; its default is
  judged among the rows of its own epochs (the compute of one site in the federation);
- the federation (4 sites, one model, as a live federation trains): local learning
  rate x local epochs per round x whether each site's optimiser goes on from its last
  round, scored by the best pooled validation RMSE the sites report inside the secure
  sum (their own validation engines); and, at the default learning rate and epochs,
  whether sites keep their optimisers, over seeds 0, 1 and 2 (one yes or no deserves
  more than one seed's validation engines);
- boosted trees (on the same 15 % held back): depth x learning rate x the share of rows
  each tree samples, scored by the validation RMSE at the best number of trees. A
  federation grows the very trees of its pooled rows, so this grid is the federation's.

The test set is not read. It prints both tables with the choice of each grid and the
recipes' current defaults beside it; ``--readme`` writes them between the ``tuning``
markers of that file. It exits 1 when a grid's best differs from the current default
by more than the noise margin (a default that validation no longer supports).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.readme import write_between_markers  # noqa: E402
from federation.core.engine.simulation import run_simulation  # noqa: E402
from federation.core.recipes import (  # noqa: E402
    default_boosting,
    default_recipe,
    default_training,
)
from turbofan.data.files import read_engine_file  # noqa: E402
from turbofan.data.partition import plan_iid  # noqa: E402
from turbofan.data.source import find_data_dir  # noqa: E402
from turbofan.models.fit import fit_network_model, fit_trees_model  # noqa: E402

CENTRAL_GRID = [(lr, epochs) for lr in (1e-3, 3e-3, 1e-2) for epochs in (15, 30)]
FEDERATED_GRID = [
    (lr, local, kept) for lr in (1e-3, 3e-3, 1e-2) for local in (1, 2) for kept in (False, True)
]
FEDERATED_KEYS = ["lr", "local_epochs", "site_optimiser"]
TREES_GRID = [
    (depth, lr, subsample) for depth in (4, 5, 6) for lr in (0.05, 0.1) for subsample in (0.5, 1.0)
]
# A grid's best must beat the default by more than this (relative validation RMSE) to
# count as a different choice: one seed on a few validation engines is noisy.
MARGIN = 0.03
MARKER = "tuning"
OPTIMISER_SEEDS = (0, 1, 2)


def central(train: Any, subset: str, seed: int) -> list[dict[str, Any]]:
    recipe = dataclasses.replace(default_recipe(), ensemble=1)
    rows = []
    for lr, epochs in CENTRAL_GRID:
        tuned = dataclasses.replace(
            recipe, train=dataclasses.replace(recipe.train, lr=lr, epochs=epochs)
        )
        started = time.perf_counter()
        model = fit_network_model(train, tuned.pipeline(subset), tuned, seed=seed)
        history = model.meta["training"][0]["history"]
        best = min(record["val_rmse"] for record in history)
        rows.append(
            {"lr": lr, "epochs": epochs, "val_rmse": best, "seconds": time.perf_counter() - started}
        )
        print(f"  centralised lr {lr:g}, {epochs} epochs: validation RMSE {best:.2f}", flush=True)
    return rows


def federated(
    train: Any, subset: str, sites: int, seed: int, grid: list[tuple[float, int, bool]]
) -> list[dict[str, Any]]:
    recipe = dataclasses.replace(default_recipe(), ensemble=1)
    plan = plan_iid(subset, train["unit"].to_numpy(), sites, seed=seed, holdout=0)
    frames = {s.name: train[train["unit"].isin(s.engines[subset])] for s in plan.sites}
    rows = []
    for lr, local, kept in grid:
        # The same budget of local epochs: fewer per round, more rounds.
        rounds = default_training().rounds * default_training().local_epochs // local
        training = dataclasses.replace(
            default_training(),
            lr=lr,
            lr_final=lr / 10,
            local_epochs=local,
            rounds=rounds,
            seed=seed,
            site_optimiser=kept,
        )
        started = time.perf_counter()
        result = run_simulation(frames, recipe.pipeline(subset), recipe, training)
        best = min(r["val_rmse"] for r in result.history)
        rows.append(
            {
                "lr": lr,
                "local_epochs": local,
                "rounds": rounds,
                "site_optimiser": kept,
                "val_rmse": best,
                "seconds": time.perf_counter() - started,
            }
        )
        print(
            f"  federated lr {lr:g}, {local} local epochs x {rounds} rounds, "
            f"{'kept' if kept else 'fresh'} site optimisers: pooled validation RMSE {best:.2f}",
            flush=True,
        )
    return rows


def trees(train: Any, subset: str, seed: int) -> list[dict[str, Any]]:
    recipe = default_recipe()
    rows = []
    for depth, lr, subsample in TREES_GRID:
        settings = dataclasses.replace(
            default_boosting(), depth=depth, learning_rate=lr, subsample=subsample
        )
        started = time.perf_counter()
        model = fit_trees_model(
            train, recipe.pipeline(subset), settings, seed=seed, val_fraction=recipe.val_fraction
        )
        best = min(record["val_rmse"] for record in model.meta["history"][0])
        rows.append(
            {
                "depth": depth,
                "learning_rate": lr,
                "subsample": subsample,
                "trees": model.meta["trees"][0],
                "val_rmse": best,
                "seconds": time.perf_counter() - started,
            }
        )
        print(
            f"  trees depth {depth}, learning rate {lr:g}, subsample {subsample:g}: "
            f"validation RMSE {best:.2f} at {model.meta['trees'][0]} trees",
            flush=True,
        )
    return rows


def table(title: str, rows: list[dict[str, Any]], keys: list[str], default: dict[str, Any]) -> str:
    best = min(rows, key=lambda r: r["val_rmse"])
    lines = [
        title,
        "",
        f"| {' | '.join(keys)} | validation RMSE | seconds | |",
        f"|{'---:|' * len(keys)}---:|---:|---|",
    ]
    for row in rows:
        marks = []
        if row is best:
            marks.append("best")
        if all(row[k] == default[k] for k in keys):
            marks.append("default")
        cells = " | ".join(_cell(row[k]) for k in keys)
        lines.append(
            f"| {cells} | {row['val_rmse']:.2f} | {row['seconds']:.0f} | {', '.join(marks)} |"
        )
    return "\n".join(lines)


def optimisers(
    train: Any, subset: str, sites: int, grid_seed: int, grid_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The federation at its default learning rate and local epochs with fresh and kept
    site optimisers, over :data:`OPTIMISER_SEEDS` (the grid's own seed reuses its rows)."""
    training = default_training()
    pair = [(training.lr, training.local_epochs, kept) for kept in (False, True)]
    rows = []
    for seed in OPTIMISER_SEEDS:
        if seed == grid_seed:
            runs = [r for r in grid_rows if (r["lr"], r["local_epochs"]) == pair[0][:2]]
        else:
            runs = federated(train, subset, sites, seed, pair)
        rows += [{**row, "seed": seed} for row in runs]
    return rows


def _optimiser_means(rows: list[dict[str, Any]]) -> dict[bool, float]:
    return {
        kept: float(np.mean([r["val_rmse"] for r in rows if r["site_optimiser"] == kept]))
        for kept in (False, True)
    }


def optimiser_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "The same federation at its default learning rate and local epochs, each site's "
        "optimiser fresh every round or going on from its last round, over seeds "
        f"{', '.join(str(s) for s in OPTIMISER_SEEDS)}:",
        "",
        "| seed | fresh | kept |",
        "|---:|---:|---:|",
    ]
    for seed in OPTIMISER_SEEDS:
        by = {r["site_optimiser"]: r["val_rmse"] for r in rows if r["seed"] == seed}
        lines.append(f"| {seed} | {by[False]:.2f} | {by[True]:.2f} |")
    means = _optimiser_means(rows)
    lines.append(f"| mean | {means[False]:.2f} | {means[True]:.2f} |")
    return "\n".join(lines)


def optimiser_supported(rows: list[dict[str, Any]], default: bool) -> bool:
    """Whether the default's mean validation RMSE over the seeds is the lower one, or
    within the noise margin of it."""
    means = _optimiser_means(rows)
    ok = means[default] <= min(means.values()) * (1 + MARGIN)
    print(
        f"  [{'ok' if ok else 'MISSED'}] default site_optimiser={default}: mean "
        f"{means[default]:.2f}, the other {means[not default]:.2f} (margin {MARGIN:.0%})"
    )
    return ok


def _cell(value: Any) -> str:
    return ("yes" if value else "no") if isinstance(value, bool) else f"{value:g}"


def supported(
    rows: list[dict[str, Any]],
    keys: list[str],
    default: dict[str, Any],
    budget: str | None = None,
) -> bool:
    """Whether the default is the best, or within the noise margin of it, among the rows
    of the default's ``budget`` (e.g. its epochs: more compute is another comparison)."""
    if budget is not None:
        rows = [r for r in rows if r[budget] == default[budget]]
    best = min(r["val_rmse"] for r in rows)
    chosen = [r for r in rows if all(r[k] == default[k] for k in keys)]
    if not chosen:
        print(f"  the default {default} is not in the grid")
        return False
    ok = chosen[0]["val_rmse"] <= best * (1 + MARGIN)
    print(
        f"  [{'ok' if ok else 'MISSED'}] default {default}: {chosen[0]['val_rmse']:.2f}, "
        f"best {best:.2f} (margin {MARGIN:.0%})"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="FD001")
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--readme", type=Path, default=None, help="rewrite its tables here")
    args = parser.parse_args()
    train = read_engine_file(find_data_dir() / f"train_{args.subset}.txt")
    central_rows = central(train, args.subset, args.seed)
    federated_rows = federated(train, args.subset, args.sites, args.seed, FEDERATED_GRID)
    # Whether sites keep their optimisers is one yes or no: more seeds than the grid's.
    optimiser_rows = optimisers(train, args.subset, args.sites, args.seed, federated_rows)
    trees_rows = trees(train, args.subset, args.seed)
    recipe, training, boosting = default_recipe(), default_training(), default_boosting()
    trees_keys = ["depth", "learning_rate", "subsample"]
    trees_default = {key: getattr(boosting, key) for key in trees_keys}
    central_default = {"lr": recipe.train.lr, "epochs": recipe.train.epochs}
    federated_default = {key: getattr(training, key) for key in FEDERATED_KEYS}
    text = "\n\n".join(
        [
            table(
                f"Centralised network, {args.subset}, seed {args.seed}: best epoch's RMSE on "
                "15 % of the training engines held back (`python benchmarks/tune.py`):",
                central_rows,
                ["lr", "epochs"],
                central_default,
            ),
            table(
                f"Federation of {args.sites} sites, one model: best pooled RMSE on the sites' "
                "own validation engines, the same local epochs in all (fewer per round, more "
                "rounds); `site_optimiser`: each site's optimiser goes on from its last round:",
                federated_rows,
                FEDERATED_KEYS,
                federated_default,
            ),
            optimiser_table(optimiser_rows),
            table(
                f"Boosted trees, {args.subset}, seed {args.seed}: RMSE on the same 15 % of "
                "the training engines at the best number of trees (at most "
                f"{boosting.trees}, stopping {boosting.patience} after the best; a "
                "federation grows the trees of its pooled rows, so this is its choice too):",
                trees_rows,
                trees_keys,
                trees_default,
            ),
        ]
    )
    print(text)
    results = [
        # The centralised model trains as many optimizer steps as each site does in the
        # federation: 15 epochs. More epochs are another budget, not another choice.
        supported(central_rows, ["lr", "epochs"], central_default, budget="epochs"),
        supported(federated_rows, FEDERATED_KEYS, federated_default),
        optimiser_supported(optimiser_rows, training.site_optimiser),
        supported(trees_rows, trees_keys, trees_default),
    ]
    if args.readme is not None:
        write_between_markers(args.readme, MARKER, text)
        print(f"rewrote the tables in {args.readme}")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
