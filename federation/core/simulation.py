"""Federated training of N sites in one process: no HTTP, no Celery.

The research and benchmark path. It calls the very functions a real federation
calls: :mod:`federation.core.client` where a site would, and
:mod:`federation.core.server` and the strategies where the coordinator would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from tqdm import tqdm

from federation.core import client, server
from federation.core.secagg.aggregate import secure_average
from federation.core.strategies import make_strategy
from turbofan.data.features import FeaturePipeline
from turbofan.models.artefact import RulModel
from turbofan.models.fit import NetworkRecipe, new_network_model
from turbofan.models.training import TrainConfig, get_weights, seed_everything


@dataclass
class SimulationConfig:
    """How the federation trains.

    Parameters
    ----------
    rounds : the most rounds (fewer with early stopping)
    local_epochs : epochs each site trains per round, from the global weights
    lr, lr_final : local learning rate, decayed along a cosine from ``lr`` to
        ``lr_final`` over the rounds
    strategy, strategy_settings : aggregation, see :func:`make_strategy`
    val_fraction : share of each site's engines kept back for federated validation
    patience : stop after this many rounds without a better validation RMSE (0: never)
    """

    rounds: int = 40
    local_epochs: int = 1
    batch_size: int = 256
    lr: float = 2e-3
    lr_final: float = 2e-4
    weight_decay: float = 1e-4
    strategy: str = "fedavg"
    strategy_settings: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.15
    patience: int = 10
    seed: int = 0
    # Aggregate through the secure-aggregation protocol (False: plain sums, for debugging).
    secure: bool = True

    def round_lr(self, round_number: int) -> float:
        progress = (round_number - 1) / max(1, self.rounds - 1)
        return self.lr_final + 0.5 * (self.lr - self.lr_final) * (1 + math.cos(math.pi * progress))

    def local_config(self, round_number: int, seed: int) -> TrainConfig:
        """What every site trains with in a round (the same for all sites)."""
        return TrainConfig(
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.round_lr(round_number),
            weight_decay=self.weight_decay,
            schedule="constant",
            seed=seed * 100 + round_number,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulationConfig:
        return cls(**data)


@dataclass
class SimulationResult:
    model: RulModel
    history: list[dict[str, float]]
    seconds: float


def federated_pipeline(
    site_frames: dict[str, pd.DataFrame], template: FeaturePipeline, seed: int = 0
) -> FeaturePipeline:
    """The shared pipeline, fitted from the sites' points and moments, never their rows."""
    regimes = server.merge_regimes(
        [client.operating_points(f) for f in site_frames.values()], template.n_regimes, seed
    )
    moments = [client.sensor_moments(f, regimes) for f in site_frames.values()]
    return server.merge_pipeline(template, regimes, moments)


def run_simulation(
    site_frames: dict[str, pd.DataFrame],
    template: FeaturePipeline,
    recipe: NetworkRecipe,
    config: SimulationConfig,
    *,
    progress: bool = False,
    on_round: Callable[[dict[str, float]], None] | None = None,
) -> SimulationResult:
    """Train ``recipe.ensemble`` global networks with federated rounds.

    Every round each site trains from the global weights and returns weights and
    its example count; the strategy aggregates; each site then scores the new
    global model on its validation engines, and the coordinator keeps the global
    weights of the round with the lowest pooled validation RMSE.
    """
    started = time.perf_counter()
    pipeline = federated_pipeline(site_frames, template, config.seed)
    data = {
        name: client.prepare_local_data(
            frame, pipeline, val_fraction=config.val_fraction, seed=config.seed + i
        )
        for i, (name, frame) in enumerate(sorted(site_frames.items()))
    }
    model = new_network_model(pipeline, recipe)
    history: list[dict[str, float]] = []
    for member in range(recipe.ensemble):
        member_seed = config.seed * 1000 + member
        weights, member_history = _train_member(
            model, data, config, member_seed, progress, f"federated {member + 1}/{recipe.ensemble}"
        )
        model.members.append(weights)
        history += [{"member": member, **h} for h in member_history]
        if on_round is not None:
            for record in member_history:
                on_round(record)
    model.meta.update(
        setup="federated",
        sites=sorted(site_frames),
        simulation=config.to_dict(),
        recipe=recipe.to_dict(),
    )
    return SimulationResult(model=model, history=history, seconds=time.perf_counter() - started)


def _train_member(
    model: RulModel,
    data: dict[str, client.LocalData],
    config: SimulationConfig,
    seed: int,
    progress: bool,
    description: str,
) -> tuple[list, list[dict[str, float]]]:  # type: ignore[type-arg]
    seed_everything(seed)
    weights = get_weights(model.new_net())
    strategy = make_strategy(config.strategy, **config.strategy_settings)
    if config.secure:
        strategy.average = secure_average()  # type: ignore[attr-defined]
    best = (math.inf, weights, 0)
    history = []
    bar = tqdm(range(1, config.rounds + 1), desc=description, disable=not progress, leave=False)
    for round_number in bar:
        local = config.local_config(round_number, seed)
        results = [
            client.local_update(model, weights, site, local, proximal_mu=strategy.proximal_mu)
            for site in data.values()
        ]
        weights = strategy.aggregate(weights, results)
        val_rmse = server.merge_validation(
            [client.local_evaluate(model, weights, site) for site in data.values()]
        )
        record = {"round": round_number, "val_rmse": val_rmse, "lr": local.lr}
        history.append(record)
        bar.set_postfix(val_rmse=round(val_rmse, 2))
        if val_rmse < best[0]:
            best = (val_rmse, weights, round_number)
        if config.patience and round_number - best[2] >= config.patience:
            break
    return best[1], history
