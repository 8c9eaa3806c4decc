"""The site's side of federated training: what runs where the data is.

Used as-is by the in-process simulation and by a site's worker. Nothing here
returns rows: operating points and counts, summed moments, weights, and errors
summed over the site's validation engines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from federation.core import analytics, messages
from federation.core.privacy import PrivacySettings, private_result
from federation.core.secagg import session
from federation.core.secagg.aggregate import training_input
from federation.core.strategies import SiteResult, Weights
from turbofan.data.features import (
    SETTING_COLUMNS,
    FeaturePipeline,
    RegimeModel,
    SensorMoments,
    setting_points,
)
from turbofan.models.artefact import RulModel
from turbofan.models.fit import NetworkRecipe, new_network_model, split_engines
from turbofan.models.training import (
    TrainConfig,
    predict,
    seed_everything,
    set_weights,
    train_network,
)


@dataclass
class LocalData:
    """A site's training and validation windows under the federation's pipeline."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def operating_points(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Step 1 of fitting the shared pipeline: this site's operating points and counts."""
    return setting_points(frame[SETTING_COLUMNS].to_numpy())


def sensor_moments(frame: pd.DataFrame, regimes: RegimeModel) -> SensorMoments:
    """Step 2: per-regime sensor moments under the federation's regimes."""
    regime = regimes.assign(frame[SETTING_COLUMNS].to_numpy())
    return SensorMoments.of(frame, regime, regimes.n_regimes)


def prepare_local_data(
    frame: pd.DataFrame, pipeline: FeaturePipeline, *, val_fraction: float, seed: int
) -> LocalData:
    """Windows of this site's engines, with some engines kept back for validation."""
    train_rows, val_rows = split_engines(frame, val_fraction, seed)
    x, y = pipeline.training_windows(train_rows)
    x_val, y_val = pipeline.training_windows(val_rows)
    return LocalData(x, y, x_val, y_val)


def local_update(
    model: RulModel,
    weights: Weights,
    data: LocalData,
    config: TrainConfig,
    *,
    proximal_mu: float = 0.0,
) -> SiteResult:
    """Train from the global weights for ``config.epochs`` epochs on this site's windows."""
    seed_everything(config.seed)
    net = model.new_net()
    set_weights(net, weights)
    local = TrainConfig(**{**config.to_dict(), "prox_mu": proximal_mu, "patience": 0})
    result = train_network(net, data.x, data.y, local, reference=weights if proximal_mu else None)
    train_rmse = result.history[-1]["train_rmse"] if result.history else float("nan")
    return SiteResult(
        weights=result.weights,
        examples=len(data.x),
        metrics={"train_rmse": train_rmse, "seconds": result.seconds},
    )


def local_evaluate(model: RulModel, weights: Weights, data: LocalData) -> tuple[float, int]:
    """Sum of squared errors of the global model on this site's validation windows, and count."""
    if len(data.x_val) == 0:
        return 0.0, 0
    net = model.new_net()
    set_weights(net, weights)
    error = predict(net, data.x_val) - data.y_val
    return float(np.sum(error.astype(np.float64) ** 2)), len(data.x_val)


def run_work(frame: pd.DataFrame, work: dict[str, Any]) -> dict[str, Any]:
    """Do one piece of work from the coordinator on this site's rows; the result message.

    ``points``: operating points and counts. ``moments``: per-regime sensor
    moments under the federation's regimes. ``train``: score the incoming global
    model on this site's validation engines, then train from it.
    """
    kind = work[messages.KEY_KIND]
    if kind == messages.POINTS:
        points, counts = operating_points(frame)
        return {
            messages.KEY_EXAMPLES: len(frame),
            messages.KEY_METRICS: {},
            messages.KEY_PAYLOAD: messages.points_to_json(points, counts),
        }
    if kind == messages.MOMENTS:
        regimes = RegimeModel.from_dict(work[messages.KEY_REGIMES])
        moments = sensor_moments(frame, regimes)
        return {
            messages.KEY_EXAMPLES: len(frame),
            messages.KEY_METRICS: {},
            messages.KEY_PAYLOAD: messages.moments_to_json(moments),
        }
    if kind == messages.TRAIN:
        return _train_work(frame, work)
    raise ValueError(f"unknown kind of work {kind!r}")


def _train_work(frame: pd.DataFrame, work: dict[str, Any]) -> dict[str, Any]:
    recipe = NetworkRecipe.from_dict(work[messages.KEY_RECIPE])
    pipeline = FeaturePipeline.from_dict(work[messages.KEY_PIPELINE])
    model = new_network_model(pipeline, recipe)
    weights = messages.weights_from_bytes(messages.unb64(work[messages.KEY_WEIGHTS]))
    config = TrainConfig(**work[messages.KEY_LOCAL])
    data = prepare_local_data(frame, pipeline, val_fraction=recipe.val_fraction, seed=config.seed)
    started = time.perf_counter()
    val_sse, val_count = local_evaluate(model, weights, data)
    result = local_update(model, weights, data, config, proximal_mu=work[messages.KEY_PROXIMAL_MU])
    metrics = {
        **result.metrics,
        "val_sse": val_sse,
        "val_count": val_count,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return {
        messages.KEY_EXAMPLES: result.examples,
        messages.KEY_METRICS: metrics,
        messages.KEY_PAYLOAD: messages.b64(messages.weights_to_bytes(result.weights)),
    }


def secure_training_input(
    result: dict[str, Any], work: dict[str, Any], parameters: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    """What this site puts under masks in a secure training round, and the plain
    metadata beside it (how long it trained; its number of examples unless under DP).

    Under differential privacy it sends its update clipped and noised
    (:func:`private_result`), weighing as one site, and keeps its validation error home.
    """
    weights = messages.weights_from_bytes(messages.unb64(result[messages.KEY_PAYLOAD]))
    metrics, examples = result[messages.KEY_METRICS], result[messages.KEY_EXAMPLES]
    scale = parameters[session.WEIGHT_SCALE]
    timing = {"seconds": metrics["seconds"]}
    dp = parameters.get(session.PRIVACY)
    if dp is None:
        vector = training_input(weights, examples, metrics["val_sse"], metrics["val_count"], scale)
        return vector, {messages.KEY_EXAMPLES: examples, messages.KEY_METRICS: timing}
    reference = messages.weights_from_bytes(messages.unb64(work[messages.KEY_WEIGHTS]))
    settings = PrivacySettings(noise_multiplier=dp["noise_multiplier"], clip=dp["clip"])
    private = private_result(SiteResult(weights, examples), reference, settings, dp["noise_sites"])
    vector = training_input(private.weights, private.examples, 0.0, 0, scale)
    return vector, {messages.KEY_EXAMPLES: 0, messages.KEY_METRICS: timing}


def secure_input(
    frame: pd.DataFrame,
    work: dict[str, Any],
    parameters: dict[str, Any],
    trained: Callable[[], dict[str, Any]],
) -> tuple[np.ndarray, dict[str, Any]]:
    """This site's vector for the masked-input stage of a secure round of any kind, and
    the plain metadata beside it. ``trained`` runs the training work (training rounds
    only); statistics are encoded straight from the site's rows
    (:mod:`federation.core.analytics`), scaled by the round's public scale."""
    kind = work[messages.KEY_KIND]
    if kind == messages.TRAIN:
        return secure_training_input(trained(), work, parameters)
    scale = parameters[session.WEIGHT_SCALE]
    if kind == messages.POINTS:
        vector = analytics.encode_points(frame[SETTING_COLUMNS].to_numpy(), scale=scale)
    elif kind == messages.MOMENTS:
        regimes = RegimeModel.from_dict(work[messages.KEY_REGIMES])
        vector = analytics.encode_moments(frame, regimes, scale=scale)
    elif kind == messages.ANALYTICS:
        query = analytics.Query.from_dict(work[messages.KEY_QUERY])
        regimes = work.get(messages.KEY_REGIMES)
        dp = parameters.get(session.PRIVACY)
        vector = analytics.encode_query(
            frame,
            query,
            scale=scale,
            regimes=RegimeModel.from_dict(regimes) if query.per_regime and regimes else None,
            privacy=analytics.QueryPrivacy.from_dict(dp) if dp else None,
        )
    else:
        raise ValueError(f"unknown kind of work {kind!r}")
    return vector, {messages.KEY_EXAMPLES: 0, messages.KEY_METRICS: {}}
