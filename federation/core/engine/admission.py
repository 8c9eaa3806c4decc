"""Why a round may not open: pure functions of public numbers, each returning the reason
in the words the admin reads ("" when there is none).

The privacy budget's admission (the epsilon a round would spend, the sites' own caps,
the sampling of sites) is :func:`federation.core.privacy.admit`.
"""

from __future__ import annotations

import math

from federation.core.engine.rounds import CLIP, MIN_CONTRIBUTORS, NOISE_RANGE_SIGMAS, Noise
from federation.core.messages import Kind


def too_few_sites(count: int, minimum: int) -> str:
    if count < minimum:
        return f"only {count} approved, active sites; the federation needs {minimum} per round"
    return ""


def too_few_contributors(minimum: int, *, secure: bool) -> str:
    """A secure federation publishes no aggregate of fewer than MIN_CONTRIBUTORS sites'
    inputs: with two, either could subtract its own from the sum and read the other's.
    Plain mode, for debugging, may go lower."""
    if secure and minimum < MIN_CONTRIBUTORS:
        return (
            f"a secure federation publishes no sum of fewer than {MIN_CONTRIBUTORS} sites' "
            f"inputs: its minimum of sites must be at least {MIN_CONTRIBUTORS}, not {minimum}"
        )
    return ""


def needs_secure_aggregation(kind: Kind, *, secure: bool, noise: Noise | None) -> str:
    """Differential privacy and analytics run over the secure sum only."""
    if secure:
        return ""
    if noise is not None:
        return (
            "differential privacy adds its noise in shares inside the secure sum: turn "
            "secure aggregation on"
        )
    if kind == Kind.ANALYTICS:
        return "analytics run over the secure sum only: turn secure aggregation on"
    return ""


def too_few_identities(ready: int, minimum: int) -> str:
    """A secure round takes the sites with a registered identity key, at least two."""
    needed = max(minimum, 2)
    if ready < needed:
        return (
            f"only {ready} approved, active sites have registered an identity key (a site's "
            f"worker registers one when it starts); secure aggregation needs {needed}"
        )
    return ""


def query_noise_too_large(kind: Kind, noise: Noise | None, *, noise_sites: int, sites: int) -> str:
    """An analytics query's encoding keeps a site's noise share within its fixed-point
    range for six standard deviations: a larger multiplier would be clipped."""
    if kind != Kind.ANALYTICS or noise is None:
        return ""
    largest = (CLIP - 1) / NOISE_RANGE_SIGMAS / noise.clip * math.sqrt(noise_sites)
    if noise.multiplier > largest:
        return (
            f"a noise multiplier of {noise.multiplier:g} is too large for the fixed-point "
            f"range of a query over {sites} sites: at most {largest:.3g}"
        )
    return ""
