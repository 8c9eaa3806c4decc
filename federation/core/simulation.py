"""Federated training of N sites in one process: no HTTP, no Celery.

The research and benchmark path. It calls the very functions a real federation
calls: :mod:`federation.core.client` where a site would, and
:mod:`federation.core.server` and the strategies where the coordinator would.

Under differential privacy (``SimulationConfig.privacy``) each round Poisson-samples
the sites at the settings' ``sample_fraction``; every sampled site sends
:func:`federation.core.privacy.private_result` (its update clipped, plus its share of
the noise, weighing as one site), the function a live site calls, so the secure sum
carries noise of the configured multiplier. Rounds stop before one that would take
the accountant's epsilon past the target, and the last round's model is kept (see
:func:`run_simulation`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from federation.core import client, server
from federation.core.privacy import (
    PrivacyError,
    PrivacySettings,
    Spend,
    epsilon_spent,
    private_result,
)
from federation.core.secagg.aggregate import DEFAULT_CLIP, secure_average
from federation.core.strategies import SiteResult, Strategy, Weights, make_strategy
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
    patience : stop after this many rounds without a better validation RMSE (0: never;
        ignored under DP)
    secure : aggregate through the secure-aggregation protocol (False: plain sums, for
        debugging)
    privacy : :meth:`PrivacySettings.to_dict` for DP-FedAvg across sites, or None. The
        budget covers every round of every ensemble member (each member is another
        training run on the same sites).
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
    secure: bool = True
    privacy: dict[str, float] | None = None

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

    def privacy_settings(self) -> PrivacySettings | None:
        return PrivacySettings.from_dict(self.privacy) if self.privacy else None

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
    # Under DP: the epsilon spent by all the rounds run (at the settings' delta).
    epsilon: float | None = None


# A DP round needs this many sampled sites: the secure sum needs two, and a live
# round below its minimum fails.
MIN_DP_SITES = 2
# The secure sum's fixed-point range is set so that a site's noise share passes it
# only beyond this many standard deviations (twice in 10^9 values): clipping
# the shares would cut the noise the accountant counts on.
NOISE_RANGE_SIGMAS = 6.0


@dataclass
class PrivacyBudget:
    """The rounds run under one set of privacy settings, and what they spent."""

    settings: PrivacySettings
    rounds: int = 0

    def epsilon_after(self, rounds: int) -> float:
        s = self.settings
        return epsilon_spent([Spend(s.noise_multiplier, s.sample_fraction, rounds)], s.delta)

    def allows_another_round(self) -> bool:
        return self.epsilon_after(self.rounds + 1) <= self.settings.epsilon

    def spend_round(self) -> float:
        """Count one more round; the epsilon spent so far."""
        self.rounds += 1
        return self.epsilon_after(self.rounds)


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

    Under DP (``config.privacy``) the model of the last round run is kept instead:
    choosing a round by the sites' plain validation errors would use their data
    outside the privacy accounting (live DP rounds keep those errors at the sites).
    ``val_rmse`` is still recorded in the history, for plots only; each record also
    holds the round's sampled ``sites`` and the ``epsilon`` spent after it. A round
    that samples fewer than :data:`MIN_DP_SITES` sites is skipped (the global model
    stays) but counted as spent: the sample was drawn. The shared preprocessing is
    fitted from the sites' operating points and sensor moments in plain, as in live
    federations: outside the accounting.
    """
    started = time.perf_counter()
    settings = config.privacy_settings()
    budget = PrivacyBudget(settings) if settings else None
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
        if budget is not None and not budget.allows_another_round():
            break  # the budget is spent: the ensemble has the members trained so far
        member_seed = config.seed * 1000 + member
        weights, member_history = _train_member(
            model,
            data,
            config,
            member_seed,
            progress,
            f"federated {member + 1}/{recipe.ensemble}",
            budget,
        )
        if not member_history:
            break
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
    epsilon = None
    if budget is not None:
        if not model.members:
            raise PrivacyError(
                f"the privacy budget (epsilon {budget.settings.epsilon:g}) allows no round "
                f"at noise multiplier {budget.settings.noise_multiplier:g}: raise the noise "
                "or the budget"
            )
        epsilon = budget.epsilon_after(budget.rounds)
        model.meta["privacy"] = {
            **budget.settings.to_dict(),
            "rounds": budget.rounds,
            "epsilon_spent": epsilon,
        }
    return SimulationResult(
        model=model, history=history, seconds=time.perf_counter() - started, epsilon=epsilon
    )


def _train_member(
    model: RulModel,
    data: dict[str, client.LocalData],
    config: SimulationConfig,
    seed: int,
    progress: bool,
    description: str,
    budget: PrivacyBudget | None = None,
) -> tuple[Weights, list[dict[str, float]]]:
    seed_everything(seed)
    weights = get_weights(model.new_net())
    strategy = make_strategy(config.strategy, **config.strategy_settings)
    if config.secure:
        strategy.average = secure_average()  # type: ignore[attr-defined]
    # Seeded, so that a simulation repeats; a live site draws its noise from the OS.
    rng = np.random.default_rng([config.seed, seed])
    best = (math.inf, weights, 0)
    history: list[dict[str, float]] = []
    bar = tqdm(range(1, config.rounds + 1), desc=description, disable=not progress, leave=False)
    for round_number in bar:
        if budget is not None and not budget.allows_another_round():
            break
        local = config.local_config(round_number, seed)
        sites = _sample_sites(data, budget, rng)
        results = [
            client.local_update(model, weights, data[name], local, proximal_mu=strategy.proximal_mu)
            for name in sites
        ]
        record: dict[str, float] = {"round": round_number}
        if budget is None:
            weights = strategy.aggregate(weights, results)
        else:
            weights = _private_round(
                strategy, weights, results, budget.settings, config.secure, rng
            )
            record.update(sites=len(sites), epsilon=budget.spend_round())
        val_rmse = server.merge_validation(
            [client.local_evaluate(model, weights, site) for site in data.values()]
        )
        record.update(val_rmse=val_rmse, lr=local.lr)
        history.append(record)
        bar.set_postfix(val_rmse=round(val_rmse, 2))
        if budget is not None:
            continue  # under DP the last round's model is kept: see run_simulation
        if val_rmse < best[0]:
            best = (val_rmse, weights, round_number)
        if config.patience and round_number - best[2] >= config.patience:
            break
    return (weights if budget is not None else best[1]), history


def _sample_sites(
    data: dict[str, client.LocalData], budget: PrivacyBudget | None, rng: np.random.Generator
) -> list[str]:
    """The sites of a round: all of them, or under DP a Poisson sample (each site in
    with probability ``sample_fraction``, independently), as the accountant assumes."""
    if budget is None or budget.settings.sample_fraction >= 1:
        return list(data)
    return [name for name in data if rng.random() < budget.settings.sample_fraction]


def _private_round(
    strategy: Strategy,
    weights: Weights,
    results: list[SiteResult],
    settings: PrivacySettings,
    secure: bool,
    rng: np.random.Generator,
) -> Weights:
    """Aggregate the sampled sites' :func:`private_result` s; with too few sites, skip."""
    if len(results) < MIN_DP_SITES:
        return weights
    # Every sampled site's noise ends up in the sum: each adds 1/len(results) of the variance.
    private = [private_result(r, weights, settings, len(results), rng) for r in results]
    if secure:
        strategy.average = secure_average(  # type: ignore[attr-defined]
            clip=_secure_range(weights, settings, len(results))
        )
    return strategy.aggregate(weights, private)


def _secure_range(weights: Weights, settings: PrivacySettings, sites: int) -> float:
    """The secure sum's fixed-point range for a DP round, from public numbers only.

    Each site puts ``1/sites`` of its weights under masks: the global weights, plus an
    update of norm at most ``clip``, plus its noise share.
    """
    largest = max(float(np.abs(w).max()) for w in weights)
    share = settings.noise_multiplier * settings.clip / math.sqrt(sites)
    return max(DEFAULT_CLIP, (largest + settings.clip + NOISE_RANGE_SIGMAS * share) / sites)
