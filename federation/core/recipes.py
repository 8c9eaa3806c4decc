"""The tuned defaults: which network, how it trains, how the federation trains it.

Chosen with benchmark runs on FD001 (see the README's accuracy table); every
value can be overridden where these are used.
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.core.simulation import SimulationConfig
from turbofan.models.fit import NetworkRecipe
from turbofan.models.training import TrainConfig


def default_recipe() -> NetworkRecipe:
    return NetworkRecipe(
        architecture="cnn",
        net_options={},
        train=TrainConfig(epochs=40, batch_size=256, lr=2e-3, weight_decay=1e-4, patience=10),
        ensemble=1,
        val_fraction=0.15,
    )


def default_simulation() -> SimulationConfig:
    return SimulationConfig(rounds=40, local_epochs=1, lr=2e-3, lr_final=2e-4, patience=10)


@dataclass(frozen=True)
class Preset:
    recipe: NetworkRecipe
    simulation: SimulationConfig


# Seconds, not accuracy: for tests and smoke runs of the whole report.
QUICK = Preset(
    recipe=NetworkRecipe(train=TrainConfig(epochs=2, patience=0), ensemble=1),
    simulation=SimulationConfig(rounds=2, local_epochs=1, patience=0),
)
