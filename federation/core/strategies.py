"""Aggregation strategies: the server's step from the current global model to the next.

A round produces the mean of the sites' models (weighted by their examples, summed
plainly or under secure aggregation: see :mod:`federation.core.engine`); a strategy
turns the current global weights and that mean into the next global weights:
``step(current, mean) -> new``. The same objects serve the simulation and the
coordinator of a live federation, which keeps a strategy's state between rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Weights = list[np.ndarray]


def weighted_mean(models: Sequence[Weights], examples: Sequence[float]) -> Weights:
    """The mean of the models, each weighted by its number of examples (what a round's
    sum gives; here in the clear, for tests and reference)."""
    total = float(sum(examples))
    if not models or total <= 0:
        raise ValueError("a weighted mean needs models and a positive number of examples")
    weights = [n / total for n in examples]
    return [
        np.sum(
            [model[i].astype(np.float64) * w for model, w in zip(models, weights, strict=True)], 0
        ).astype(models[0][i].dtype)
        for i in range(len(models[0]))
    ]


class Strategy(Protocol):
    name: str
    proximal_mu: float  # > 0: sites add FedProx's proximal term to their local loss

    def step(self, current: Weights, mean: Weights) -> Weights: ...

    def state(self) -> Weights: ...

    def load_state(self, arrays: Weights) -> None: ...


@dataclass
class FedAvg:
    """McMahan et al. 2017: the next global model is the sites' mean."""

    name: str = "fedavg"
    proximal_mu: float = 0.0

    def step(self, current: Weights, mean: Weights) -> Weights:
        return [m.astype(c.dtype) for c, m in zip(current, mean, strict=True)]

    def state(self) -> Weights:
        return []  # stateless

    def load_state(self, arrays: Weights) -> None:
        pass


@dataclass
class FedProx(FedAvg):
    """Li et al. 2020: FedAvg's step; sites keep close to the global model."""

    name: str = "fedprox"
    proximal_mu: float = 0.01


@dataclass
class FedAdam:
    """Reddi et al. 2021: Adam on the server, with ``mean - current`` as its gradient."""

    name: str = "fedadam"
    proximal_mu: float = 0.0
    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    _m: Weights | None = field(default=None, repr=False)
    _v: Weights | None = field(default=None, repr=False)

    def state(self) -> Weights:
        """The server optimiser's moments, kept between rounds (empty before the first)."""
        return [*self._m, *self._v] if self._m is not None and self._v is not None else []

    def load_state(self, arrays: Weights) -> None:
        if arrays:
            half = len(arrays) // 2
            self._m, self._v = list(arrays[:half]), list(arrays[half:])

    def step(self, current: Weights, mean: Weights) -> Weights:
        delta = [m.astype(np.float64) - c for m, c in zip(mean, current, strict=True)]
        if self._m is None or self._v is None:
            self._m = [np.zeros_like(d) for d in delta]
            self._v = [np.full_like(d, self.tau**2) for d in delta]
        self._m = [
            self.beta1 * m + (1 - self.beta1) * d for m, d in zip(self._m, delta, strict=True)
        ]
        self._v = [
            self.beta2 * v + (1 - self.beta2) * d**2 for v, d in zip(self._v, delta, strict=True)
        ]
        return [
            (c + self.server_lr * m / (np.sqrt(v) + self.tau)).astype(c.dtype)
            for c, m, v in zip(current, self._m, self._v, strict=True)
        ]


STRATEGIES: dict[str, type[Strategy]] = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam}


def make_strategy(name: str, **settings: Any) -> Strategy:
    """A strategy by name with its settings, e.g. ``make_strategy("fedprox", proximal_mu=0.1)``."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}") from None
    return cls(**settings)
