"""PyTorch networks over windows of shape (batch, window, features)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class RulCnn(nn.Module):
    """A 1D-CNN over time in the style of Li, Ding & Sun (2018).

    ``n_conv`` convolutions of ``filters`` channels and width ``kernel`` along the
    time axis, a one-channel convolution, then a dense head on the flattened
    sequence. Outputs RUL in cycles.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        *,
        filters: int = 10,
        kernel: int = 10,
        n_conv: int = 4,
        hidden: int = 100,
        dropout: float = 0.5,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__()
        # The head works in units of output_scale (the RUL cap), so its outputs and
        # gradients are of order one whatever the label range.
        self.output_scale = output_scale
        layers: list[nn.Module] = []
        channels = n_features
        for _ in range(n_conv):
            layers += [nn.Conv1d(channels, filters, kernel, padding="same"), nn.Tanh()]
            channels = filters
        layers += [nn.Conv1d(channels, 1, 3, padding="same"), nn.Tanh()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(window, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x.transpose(1, 2))).squeeze(-1)
        return out * self.output_scale


ARCHITECTURES: dict[str, type[nn.Module]] = {"cnn": RulCnn}


def build_net(architecture: str, n_features: int, window: int, **options: Any) -> nn.Module:
    """A fresh network by name, e.g. ``build_net("cnn", 14, 30)``."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}"
        ) from None
    return cls(n_features, window, **options)
