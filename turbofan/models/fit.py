"""Recipes that turn training rows into a :class:`RulModel`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from turbofan.data.features import DEFAULT_WINDOW, REGIMES_BY_SUBSET, FeaturePipeline
from turbofan.models.artefact import BASELINE, HYBRID, NETWORK, TREES, RulModel
from turbofan.models.baseline import fit_baseline
from turbofan.models.training import TrainConfig, seed_everything, train_network
from turbofan.models.trees import BoostingSettings, Ensemble, best_share, fit_trees, summaries


@dataclass
class NetworkRecipe:
    """Inputs, architecture, training settings and ensemble size of a network model.

    ``window``, ``cycle_channel`` and ``pad_training`` set up the feature pipeline
    (see :class:`FeaturePipeline`); the baseline uses the same inputs.
    """

    architecture: str = "window-mlp"
    net_options: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: int = 1
    val_fraction: float = 0.15
    window: int = DEFAULT_WINDOW
    cycle_channel: bool = False
    pad_training: bool = False

    def pipeline(
        self, subset: str | None = None, *, n_regimes: int | None = None
    ) -> FeaturePipeline:
        """An unfitted pipeline for a subset (its number of regimes) or an explicit count."""
        if n_regimes is None:
            n_regimes = REGIMES_BY_SUBSET.get((subset or "").upper(), 1)
        return FeaturePipeline(
            n_regimes=n_regimes,
            window=self.window,
            cycle_channel=self.cycle_channel,
            pad_training=self.pad_training,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkRecipe:
        fields = dict(data)
        fields["train"] = TrainConfig(**fields.get("train", {}))
        return cls(**fields)


def split_engines(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows, split by engine (never by row: windows overlap)."""
    units = frame["unit"].unique()
    if fraction <= 0 or len(units) < 2:
        return frame, frame.iloc[0:0]
    rng = np.random.default_rng(seed)
    n_val = min(len(units) - 1, max(1, round(fraction * len(units))))
    val_units = rng.choice(units, size=n_val, replace=False)
    is_val = frame["unit"].isin(val_units).to_numpy()
    return frame[~is_val], frame[is_val]


def new_network_model(pipeline: FeaturePipeline, recipe: NetworkRecipe) -> RulModel:
    """An untrained network model on a fitted pipeline (weights filled in by training)."""
    return RulModel(
        kind=NETWORK,
        pipeline=pipeline,
        architecture=recipe.architecture,
        net_options=dict(recipe.net_options),
    )


def fit_network_model(
    frame: pd.DataFrame,
    pipeline: FeaturePipeline,
    recipe: NetworkRecipe,
    *,
    seed: int = 0,
    progress: bool = False,
    description: str = "network",
) -> RulModel:
    """Fit the pipeline (if needed) and train ``recipe.ensemble`` networks on ``frame``.

    Each member starts from its own seed and is early-stopped on the same
    validation engines; predictions average the members.
    """
    train_rows, val_rows = split_engines(frame, recipe.val_fraction, seed)
    if pipeline.regimes is None:
        pipeline.fit(train_rows)
    x, y = pipeline.training_windows(train_rows)
    x_val, y_val = pipeline.training_windows(val_rows) if len(val_rows) else (None, None)
    model = new_network_model(pipeline, recipe)
    histories = []
    for member in range(recipe.ensemble):
        member_seed = seed * 1000 + member
        seed_everything(member_seed)
        net = model.new_net()
        config = TrainConfig(**{**recipe.train.to_dict(), "seed": member_seed})
        result = train_network(
            net,
            x,
            y,
            config,
            x_val=x_val,
            y_val=y_val,
            progress=progress,
            description=f"{description} {member + 1}/{recipe.ensemble}",
        )
        model.members.append(result.weights)
        histories.append(
            {
                "best_epoch": result.best_epoch,
                "seconds": round(result.seconds, 2),
                "history": result.history,
            }
        )
    model.meta.update(
        recipe=recipe.to_dict(),
        seed=seed,
        training=histories,
        train_engines=int(train_rows["unit"].nunique()),
        val_engines=int(val_rows["unit"].nunique()),
    )
    return model


def fit_baseline_model(
    frame: pd.DataFrame, pipeline: FeaturePipeline, *, seed: int = 0, val_fraction: float = 0.15
) -> RulModel:
    """Gradient boosting on window summaries, early-stopped on validation engines."""
    train_rows, val_rows = split_engines(frame, val_fraction, seed)
    if pipeline.regimes is None:
        pipeline.fit(train_rows)
    x, y = pipeline.training_windows(train_rows)
    x_val, y_val = pipeline.training_windows(val_rows) if len(val_rows) else (None, None)
    estimator = fit_baseline(x, y, val_windows=x_val, val_labels=y_val, seed=seed)
    return RulModel(
        kind=BASELINE,
        pipeline=pipeline,
        estimator=estimator,
        meta={"seed": seed, "iterations": int(estimator.n_iter_)},
    )


def fit_trees_model(
    frame: pd.DataFrame,
    pipeline: FeaturePipeline,
    settings: BoostingSettings,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    members: int = 1,
) -> RulModel:
    """Boosted trees on window summaries of ``frame``, in one place: ``members`` models,
    each sampling its rows with its own seed, each kept at its best number of trees on the
    same validation engines (split by engine); predictions average the members."""
    train_rows, val_rows = split_engines(frame, val_fraction, seed)
    if pipeline.regimes is None:
        pipeline.fit(train_rows)
    x, y = pipeline.training_windows(train_rows)
    x_val, y_val = pipeline.training_windows(val_rows) if len(val_rows) else (None, None)
    features = summaries(x)
    val_features = summaries(x_val) if x_val is not None else None
    model = RulModel(kind=TREES, pipeline=pipeline)
    grown, histories = [], []
    for member in range(members):
        member_settings = BoostingSettings.from_dict(
            {**settings.to_dict(), "seed": seed * 1000 + member}
        )
        result = fit_trees(
            features,
            y,
            member_settings,
            limit=float(pipeline.rul_cap or 125),
            x_val=val_features,
            y_val=y_val,
        )
        model.members.append(result.ensemble.to_arrays())
        grown.append(result.best_trees)
        histories.append(result.history)
    model.meta.update(
        boosting=settings.to_dict(),
        seed=seed,
        trees=grown,
        history=histories,
        train_engines=int(train_rows["unit"].nunique()),
        val_engines=int(val_rows["unit"].nunique()),
    )
    return model


def fit_hybrid_model(
    frame: pd.DataFrame,
    pipeline: FeaturePipeline,
    recipe: NetworkRecipe,
    settings: BoostingSettings,
    *,
    seed: int = 0,
    progress: bool = False,
    description: str = "hybrid",
) -> RulModel:
    """A network and boosted trees on the same engines, in one place, blended at the share
    of trees their validation engines prefer (what a hybrid federation trains)."""
    network = fit_network_model(
        frame, pipeline, recipe, seed=seed, progress=progress, description=description
    )
    trees = fit_trees_model(
        frame,
        network.pipeline,
        settings,
        seed=seed,
        val_fraction=recipe.val_fraction,
        members=recipe.ensemble,
    )
    _, val_rows = split_engines(frame, recipe.val_fraction, seed)
    x_val, y_val = network.pipeline.training_windows(val_rows)
    cap = float(network.pipeline.rul_cap or 125)
    features = summaries(x_val)
    grown = np.mean([Ensemble.from_arrays(t).predict(features) for t in trees.members], axis=0)
    share = best_share(network.network_predictions(x_val), grown, y_val, cap)
    model = RulModel(
        kind=HYBRID,
        pipeline=network.pipeline,
        architecture=network.architecture,
        net_options=network.net_options,
        members=network.members,
        trees=trees.members,
        share=share,
        meta={**network.meta, "boosting": settings.to_dict(), "trees": trees.meta["trees"]},
    )
    return model


def fit_model(
    frame: pd.DataFrame,
    pipeline: FeaturePipeline,
    recipe: NetworkRecipe,
    *,
    boosting: BoostingSettings | None = None,
    network: bool = True,
    seed: int = 0,
    progress: bool = False,
    description: str = "model",
) -> RulModel:
    """A model of a federation's family trained on ``frame`` in one place: the network
    (without ``boosting``), boosted trees (with ``boosting`` and not ``network``) or the
    hybrid of both, ``recipe.ensemble`` members each."""
    if boosting is None:
        return fit_network_model(
            frame, pipeline, recipe, seed=seed, progress=progress, description=description
        )
    if network:
        return fit_hybrid_model(
            frame, pipeline, recipe, boosting, seed=seed, progress=progress, description=description
        )
    return fit_trees_model(
        frame,
        pipeline,
        boosting,
        seed=seed,
        val_fraction=recipe.val_fraction,
        members=recipe.ensemble,
    )
