"""Differential privacy across sites: noise added in shares inside the secure sum, and
the accounting of what it costs.

Site-level DP-FedAvg (McMahan et al. 2018) with distributed noise: each site clips its
model update (its weights minus the global weights) to L2 norm ``clip`` and adds
Gaussian noise of standard deviation ``noise_multiplier * clip / sqrt(noise_sites)``,
where ``noise_sites`` is the fewest sites a round can end with. The secure sum of at
least that many sites carries noise of standard deviation at least
``noise_multiplier * clip``, though no party added it all and nobody saw one site's
share unmixed. Sites weigh equally (one site, one vote), so one site changes the sum
by at most ``clip``: the Gaussian mechanism's sensitivity.

The privacy spent is counted by Google's ``dp_accounting`` (its RDP accountant): a
training round is a Gaussian mechanism with that multiplier, Poisson-sampled at the
fraction of sites sampled per round; an analytics query with noise is one Gaussian
mechanism on everyone. Training and analytics share one budget.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

import dp_accounting
import numpy as np
from dp_accounting.rdp import RdpAccountant

from federation.core.strategies import Weights


class PrivacyError(ValueError):
    """Privacy settings that cannot work; the message says which and why."""


@dataclass(frozen=True)
class PrivacySettings:
    """A federation's differential-privacy settings.

    Parameters
    ----------
    noise_multiplier : noise standard deviation in units of ``clip`` (> 0; no DP: no
        settings at all)
    clip : L2 bound of one site's model update
    epsilon, delta : the budget: no round or query starts that would take the
        federation past ``epsilon`` at this ``delta``
    sample_fraction : the fraction of sites sampled into each round (Poisson)
    """

    noise_multiplier: float
    clip: float = 1.0
    epsilon: float = 8.0
    delta: float = 1e-5
    sample_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise PrivacyError("the noise multiplier must be > 0 (no DP: leave privacy off)")
        if not self.clip > 0:
            raise PrivacyError("the clipping bound must be > 0")
        if not self.epsilon > 0:
            raise PrivacyError("the target epsilon must be > 0")
        if not 0 < self.delta < 1:
            raise PrivacyError("delta must be between 0 and 1 (typically below 1/sites)")
        if not 0 < self.sample_fraction <= 1:
            raise PrivacyError("the sample fraction must be in (0, 1]")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacySettings:
        names = list(cls.__dataclass_fields__)
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise PrivacyError(
                f"unknown privacy setting(s) {', '.join(unknown)}: use {', '.join(names)}"
            )
        if "noise_multiplier" not in data:
            raise PrivacyError("privacy settings need a noise_multiplier")
        values = {}
        for name in names:
            if name in data:
                try:
                    values[name] = float(data[name])
                except (TypeError, ValueError):
                    raise PrivacyError(f"{name} must be a number, not {data[name]!r}") from None
        return cls(**values)


# --- the site's side ------------------------------------------------------------------------


def clip_and_noise(
    weights: Weights,
    reference: Weights,
    *,
    clip: float,
    noise_multiplier: float,
    noise_sites: int,
    rng: np.random.Generator | None = None,
) -> Weights:
    """``reference`` plus this site's update, clipped to L2 norm ``clip``, plus its share
    of the noise (standard deviation ``noise_multiplier * clip / sqrt(noise_sites)``)."""
    if noise_sites < 1:
        raise PrivacyError("noise_sites (the fewest sites whose noise is summed) must be >= 1")
    rng = rng or np.random.default_rng(secrets.randbits(128))
    base = np.concatenate([r.astype(np.float64).ravel() for r in reference])
    update = np.concatenate([w.astype(np.float64).ravel() for w in weights]) - base
    norm = float(np.linalg.norm(update))
    if norm > clip:
        update *= clip / norm
    update += rng.normal(0.0, noise_multiplier * clip / math.sqrt(noise_sites), update.size)
    out, start = [], 0
    for r in reference:
        out.append((base[start : start + r.size] + update[start : start + r.size]).reshape(r.shape))
        out[-1] = out[-1].astype(r.dtype)
        start += r.size
    return out


# --- accounting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spend:
    """``count`` runs of a Gaussian mechanism, each on a Poisson sample of the sites."""

    noise_multiplier: float
    sample_fraction: float = 1.0
    count: int = 1


def epsilon_spent(spends: Sequence[Spend], delta: float) -> float:
    """The epsilon at ``delta`` of all ``spends`` together (RDP composition)."""
    if not spends:
        return 0.0
    # Equal mechanisms compose as one event run ``count`` times: the same RDP, and one
    # (costly, for sampled events) evaluation per kind instead of one per ledger line.
    counts: Counter[tuple[float, float]] = Counter()
    for spend in spends:
        counts[spend.noise_multiplier, spend.sample_fraction] += spend.count
    accountant = RdpAccountant()
    for (noise_multiplier, sample_fraction), count in counts.items():
        event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
        if sample_fraction < 1:
            event = dp_accounting.PoissonSampledDpEvent(sample_fraction, event)
        accountant.compose(event, count)
    return float(accountant.get_epsilon(delta))


def noise_for_budget(
    epsilon: float, delta: float, rounds: int, sample_fraction: float = 1.0
) -> float:
    """The smallest noise multiplier (to 0.1 %) with which ``rounds`` rounds spend at
    most ``epsilon``: for choosing settings, e.g. a report's epsilon column."""
    low, high = 1e-3, 1.0
    while epsilon_spent([Spend(high, sample_fraction, rounds)], delta) > epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise PrivacyError(f"no noise multiplier reaches epsilon {epsilon} in {rounds} rounds")
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        if epsilon_spent([Spend(middle, sample_fraction, rounds)], delta) > epsilon:
            low = middle
        else:
            high = middle
    return high


@functools.lru_cache(maxsize=256)
def rounds_within_budget(
    noise_multiplier: float, sample_fraction: float, epsilon: float, delta: float, rounds: int
) -> int:
    """How many of ``rounds`` training rounds at these settings stay within ``epsilon``
    (0 to ``rounds``): what a federation's admin should see before it starts."""

    def spent(count: int) -> float:
        return epsilon_spent([Spend(noise_multiplier, sample_fraction, count)], delta)

    if rounds < 1 or spent(1) > epsilon:
        return 0
    low, high = 1, rounds  # spent(low) <= epsilon
    while low < high:
        middle = (low + high + 1) // 2
        if spent(middle) <= epsilon:
            low = middle
        else:
            high = middle - 1
    return low


def budget_preview(settings: PrivacySettings, rounds: int) -> str:
    """In words: how many of a federation's training rounds its budget allows, and what
    noise would let it run them all (remembered: a federation's page asks often)."""
    return _budget_preview(
        settings.noise_multiplier,
        settings.sample_fraction,
        settings.epsilon,
        settings.delta,
        rounds,
    )


@functools.lru_cache(maxsize=256)
def _budget_preview(
    noise_multiplier: float, sample_fraction: float, epsilon: float, delta: float, rounds: int
) -> str:
    allowed = rounds_within_budget(noise_multiplier, sample_fraction, epsilon, delta, rounds)
    at = f"At noise x{noise_multiplier:g} the budget (epsilon {epsilon:g})"
    if allowed >= rounds:
        return f"{at} allows all {rounds} training rounds."
    try:
        needed = noise_for_budget(epsilon, delta, rounds, sample_fraction)
        remedy = f"; all {rounds} would need noise x{needed:.3g} or more"
    except PrivacyError:
        remedy = ""
    return (
        f"{at} allows only {allowed} of the {rounds} training rounds: training stops there, "
        f"far from a trained model{remedy}. More noise costs accuracy too: with a handful "
        "of sites, site-level DP leaves the model far worse than without (the README "
        "measures it)."
    )


# --- admission ---------------------------------------------------------------------------

Key = TypeVar("Key")
# Poisson sampling may draw fewer sites than a round needs: draw again, at most this often
# (the accounting assumes one draw per round; with a fraction near 1 a redraw is rare).
MAX_DRAWS = 100


@dataclass(frozen=True)
class Admission(Generic[Key]):
    """Who takes part in a mechanism run, what it costs, or why it cannot start."""

    spend: Spend
    epsilon_after: float
    sites: list[Key] = field(default_factory=list)  # sampled into the run
    eligible: list[Key] = field(default_factory=list)  # could have been sampled: all spend
    refusal: str = ""


def admit(
    *,
    settings: PrivacySettings,
    spent: Sequence[Spend],
    site_spent: Mapping[Key, Sequence[Spend]],
    caps: Mapping[Key, float | None],
    sites: Sequence[Key],
    spend: Spend,
    minimum: int,
    what: str,
    rng: np.random.Generator | None = None,
) -> Admission[Key]:
    """The sites that may take part in a run costing ``spend``, sampled at its fraction.

    Refuses (``refusal`` says why) when the run would take the federation past its target
    epsilon, or when too few sites remain under their own caps. ``spent`` is what the
    federation spent so far, ``site_spent`` and ``caps`` each site's own.
    """
    after = epsilon_spent([*spent, spend], settings.delta)
    if after > settings.epsilon:
        return Admission(
            spend,
            after,
            refusal=f"the privacy budget would be exceeded: {what} would take epsilon to "
            f"{after:.3g}, past the federation's target of {settings.epsilon:g}",
        )
    within = [
        s
        for s in sites
        if caps.get(s) is None
        or epsilon_spent([*site_spent.get(s, ()), spend], settings.delta) <= caps[s]  # type: ignore[operator]
    ]
    if len(within) < minimum:
        return Admission(
            spend,
            after,
            refusal=f"{what} would pass the privacy cap of {len(sites) - len(within)} site(s); "
            f"{len(within)} remain and {minimum} are needed",
        )
    sampled = poisson_sample(within, spend.sample_fraction, minimum, rng)
    if sampled is None:
        return Admission(
            spend,
            after,
            refusal=f"sampling {spend.sample_fraction:g} of {len(within)} sites rarely gives the "
            f"{minimum} a round needs: raise the sample fraction or lower the minimum",
        )
    return Admission(spend, after, sampled, within)


def poisson_sample(
    sites: Sequence[Key], fraction: float, minimum: int, rng: np.random.Generator | None = None
) -> list[Key] | None:
    """Each site in with probability ``fraction``, independently; drawn again while fewer
    than ``minimum`` are in (None after :data:`MAX_DRAWS` draws)."""
    if fraction >= 1:
        return list(sites)
    rng = rng or np.random.default_rng(secrets.randbits(128))
    for _ in range(MAX_DRAWS):
        drawn = [s for s in sites if rng.random() < fraction]
        if len(drawn) >= minimum:
            return drawn
    return None
