"""Aggregation strategies: pure functions and small classes over lists of numpy arrays.

Every strategy takes the current global weights and the sites' results and
returns the next global weights. The same objects serve the in-process
simulation and the coordinator of a real federation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Weights = list[np.ndarray]


@dataclass(frozen=True)
class SiteResult:
    """What a site returns from a round: new weights, how many examples, its metrics."""

    weights: Weights
    examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def weighted_average(results: list[SiteResult]) -> Weights:
    """Average of the sites' weights, each weighted by its number of examples."""
    if not results:
        raise ValueError("cannot aggregate an empty round")
    total = sum(r.examples for r in results)
    if total <= 0:
        raise ValueError("the sites reported no training examples")
    return [
        sum(r.weights[i].astype(np.float64) * (r.examples / total) for r in results).astype(
            results[0].weights[i].dtype
        )
        for i in range(len(results[0].weights))
    ]


class Strategy(Protocol):
    name: str
    proximal_mu: float  # > 0: sites add FedProx's proximal term to their local loss

    def aggregate(self, current: Weights, results: list[SiteResult]) -> Weights: ...

    def state(self) -> Weights: ...

    def load_state(self, arrays: Weights) -> None: ...


Average = Callable[[list[SiteResult]], Weights]


@dataclass
class FedAvg:
    """McMahan et al. 2017: the example-weighted mean of the sites' models.

    ``average`` computes that mean: in the clear by default, or as a secure sum
    (:func:`federation.core.secagg.aggregate.secure_average`).
    """

    name: str = "fedavg"
    proximal_mu: float = 0.0
    average: Average = field(default=weighted_average, repr=False)

    def aggregate(self, current: Weights, results: list[SiteResult]) -> Weights:
        return self.average(results)

    def state(self) -> Weights:
        return []  # stateless: each round's average depends on that round only

    def load_state(self, arrays: Weights) -> None:
        pass


@dataclass
class FedProx(FedAvg):
    """Li et al. 2020: FedAvg's aggregation; sites keep close to the global model."""

    name: str = "fedprox"
    proximal_mu: float = 0.01


@dataclass
class FedAdam:
    """Reddi et al. 2021: Adam on the server, with the mean site update as its gradient."""

    name: str = "fedadam"
    proximal_mu: float = 0.0
    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    average: Average = field(default=weighted_average, repr=False)
    _m: Weights | None = field(default=None, repr=False)
    _v: Weights | None = field(default=None, repr=False)

    def state(self) -> Weights:
        """The server optimiser's moments, to keep between rounds (empty before the first)."""
        return [*self._m, *self._v] if self._m is not None and self._v is not None else []

    def load_state(self, arrays: Weights) -> None:
        if arrays:
            half = len(arrays) // 2
            self._m, self._v = list(arrays[:half]), list(arrays[half:])

    def aggregate(self, current: Weights, results: list[SiteResult]) -> Weights:
        mean = self.average(results)
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


STRATEGIES: dict[str, type] = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam}


def make_strategy(name: str, **settings: Any) -> Strategy:
    """A strategy by name with its settings, e.g. ``make_strategy("fedprox", proximal_mu=0.1)``."""
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}") from None
    return cls(**settings)  # type: ignore[no-any-return]
