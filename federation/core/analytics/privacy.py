"""Differential privacy of an analytics query: clipping, noise shares, what it spends."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from federation.core.privacy import PrivacyError, Spend


@dataclass(frozen=True)
class QueryPrivacy:
    """Site-level differential privacy of one query, as in training.

    Each site clips its query vector (the scaled values, before the limbs are split) to
    L2 norm ``clip`` and adds Gaussian noise of standard deviation
    ``noise_multiplier * clip / sqrt(noise_sites)`` per entry
    (:func:`federation.core.privacy.clip_and_noise`). Adding or removing one site changes
    the sum of the clipped vectors by at most ``clip`` in L2 norm (the sensitivity), and
    the sum of at least ``noise_sites`` sites carries noise of standard deviation at least
    ``noise_multiplier * clip``: a Gaussian mechanism with multiplier ``noise_multiplier``
    on everyone (:func:`query_spend`). The scaling by public numbers, the limbs, the
    quantiser and the decoding are post-processing: they cost nothing more. ``scale``
    must be public already (e.g. the reported rows); the grid, envelope and bins are
    constants.

    Clipping shrinks a site's whole vector by one factor, so ratios (means, variances,
    quantiles) stay those of the pooled rows with that site weighed less; counts and sums
    are biased down. A site of ``n`` rows, all inside the sensors' envelopes, has a norm of
    at most ``(n / scale) * sqrt(1 + sensors * moments + histograms)``: a clip below that
    of the largest site weighs sites more equally.
    """

    noise_multiplier: float
    clip: float
    noise_sites: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise PrivacyError("the noise multiplier must be > 0 (no DP: leave privacy off)")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise PrivacyError("the clipping bound must be > 0")
        if self.noise_sites < 1:
            raise PrivacyError("the noise is shared by at least one site")

    @property
    def noise_std(self) -> float:
        """The least standard deviation of the noise in each summed (scaled) entry."""
        return self.noise_multiplier * self.clip

    def to_dict(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "noise_sites": self.noise_sites,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryPrivacy:
        return cls(float(data["noise_multiplier"]), float(data["clip"]), int(data["noise_sites"]))


def query_spend(privacy: QueryPrivacy) -> Spend:
    """What a query with ``privacy`` charges to the federation's budget: one Gaussian
    mechanism with its noise multiplier, on every site (no sampling)."""
    return Spend(noise_multiplier=privacy.noise_multiplier, sample_fraction=1.0, count=1)
