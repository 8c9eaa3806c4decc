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


def window_statistics(x: torch.Tensor, tail: int = 5) -> torch.Tensor:
    """Per channel: last value, mean, std, least-squares slope, mean of the last ``tail``.

    (batch, window, channels) -> (batch, 5 * channels).
    """
    t = torch.arange(x.shape[1], dtype=x.dtype, device=x.device)
    t = t - t.mean()
    t = t / (t * t).sum().clamp_min(1.0)
    slope = (x * t[None, :, None]).sum(dim=1)
    return torch.cat(
        [x[:, -1], x.mean(dim=1), x.std(dim=1), slope, x[:, -tail:].mean(dim=1)], dim=1
    )


class WindowMlp(nn.Module):
    """Summary statistics of each channel over the window, then a two-layer perceptron.

    The statistics (level, trend, noise, recent level) are computed inside the
    network, so the model takes the same windows as the CNN and trains, saves and
    federates the same way. On C-MAPSS it beats the CNN in accuracy and time (see
    the README's accuracy table): degradation is a slow trend that these
    statistics capture directly, and 9k weights overfit less than convolutions.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        *,
        hidden: int = 64,
        dropout: float = 0.1,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.output_scale = output_scale
        self.mlp = nn.Sequential(
            nn.Linear(5 * n_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(window_statistics(x)).squeeze(-1) * self.output_scale


ARCHITECTURES: dict[str, type[nn.Module]] = {"window-mlp": WindowMlp, "cnn": RulCnn}


def build_net(architecture: str, n_features: int, window: int, **options: Any) -> nn.Module:
    """A fresh network by name, e.g. ``build_net("window-mlp", 15, 60)``."""
    try:
        cls = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}"
        ) from None
    return cls(n_features, window, **options)
