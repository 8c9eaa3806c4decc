"""The privacy budget: who may take part in work that spends it, and the ledger.

Every mechanism run on the sites' data (a DP training round, an analytics query
with noise) is a line of the ledger, for the federation and for each site whose data
was in the running, with the epsilon spent so far after it (federation.core.privacy
does the accounting). Work that would take the federation past its target epsilon
does not start; a site whose own cap it would pass is left out of it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from federation.core.privacy import PrivacySettings, Spend, epsilon_spent
from federation.errors import FederationError
from federation.models import Federation, Membership, PrivacySpend, Round, Site

# Poisson sampling may draw fewer sites than a round needs: draw again, at most this
# often (the accounting assumes one draw per round; with q close to 1 a redraw is rare).
MAX_DRAWS = 100


@dataclass(frozen=True)
class Admission:
    """Who takes part in a mechanism run, what it costs, or why it cannot start."""

    sites: list[Site]  # sampled into the run
    eligible: list[Site]  # could have been sampled: all of them spend
    spend: Spend
    epsilon_after: float
    refusal: str = ""


def privacy_of(federation: Federation) -> PrivacySettings | None:
    return PrivacySettings.from_dict(federation.privacy) if federation.privacy else None


def spent(*, federation: Federation, site: Site | None = None) -> float:
    """Epsilon spent so far by the federation, or by one site in it: its ledger's last
    line, which :func:`record` wrote as the composition of every line before it (cheap
    enough for a page polled every two seconds)."""
    last = (
        PrivacySpend.objects.filter(federation=federation, site=site)
        .order_by("-id")
        .values_list("epsilon", flat=True)
        .first()
    )
    return float(last) if last is not None else 0.0


def _spends(federation: Federation, site: Site | None) -> list[Spend]:
    lines = PrivacySpend.objects.filter(federation=federation, site=site)
    return [Spend(line.noise_multiplier, line.sample_fraction) for line in lines]


def admit(
    *, federation: Federation, sites: list[Site], spend: Spend, minimum: int, what: str
) -> Admission:
    """The sites that may take part in a run costing ``spend``, sampled at its fraction.

    Refuses (``refusal`` says why) when the run would take the federation past its
    target epsilon, or when too few sites remain under their own caps.
    """
    settings = privacy_of(federation)
    assert settings is not None
    after = epsilon_spent([*_spends(federation, None), spend], settings.delta)
    if after > settings.epsilon:
        return Admission([], [], spend, after, _over_budget(what, after, settings.epsilon))
    caps = {
        m.site_id: m.epsilon_cap
        for m in Membership.objects.filter(federation=federation, site__in=sites)
    }
    within = [
        s
        for s in sites
        if caps.get(s.id) is None
        or epsilon_spent([*_spends(federation, s), spend], settings.delta) <= caps[s.id]
    ]
    if len(within) < minimum:
        capped = len(sites) - len(within)
        return Admission(
            [],
            [],
            spend,
            after,
            f"{what} would pass the privacy cap of {capped} site(s); {len(within)} "
            f"remain and {minimum} are needed",
        )
    return Admission(_sample(within, spend.sample_fraction, minimum), within, spend, after)


def _over_budget(what: str, after: float, target: float) -> str:
    return (
        f"the privacy budget would be exceeded: {what} would take epsilon to "
        f"{after:.3g}, past the federation's target of {target:g}"
    )


def _sample(sites: list[Site], fraction: float, minimum: int) -> list[Site]:
    if fraction >= 1:
        return sites
    rng = np.random.default_rng(secrets.randbits(128))
    for _ in range(MAX_DRAWS):
        drawn = [s for s in sites if rng.random() < fraction]
        if len(drawn) >= minimum:
            return drawn
    raise FederationError(
        f"sampling {fraction:g} of {len(sites)} sites rarely gives the {minimum} a round "
        "needs: raise the sample fraction or lower the minimum"
    )


def record(
    *,
    federation: Federation,
    admission: Admission,
    kind: str,
    description: str,
    round_: Round | None = None,
) -> None:
    """Write the run into the ledger: the federation's line, and one per eligible site
    (with sampling, every site that could have been drawn spends)."""
    settings = privacy_of(federation)
    assert settings is not None
    common = {
        "federation": federation,
        "round": round_,
        "kind": kind,
        "description": description,
        "noise_multiplier": admission.spend.noise_multiplier,
        "sample_fraction": admission.spend.sample_fraction,
        "delta": settings.delta,
    }
    lines = [PrivacySpend(site=None, epsilon=admission.epsilon_after, **common)]
    for site in admission.eligible:
        after = epsilon_spent([*_spends(federation, site), admission.spend], settings.delta)
        lines.append(PrivacySpend(site=site, epsilon=after, **common))
    PrivacySpend.objects.bulk_create(lines)


def membership_set_cap(*, membership: Membership, epsilon_cap: float | None) -> None:
    """A site owner's own limit on what the site spends in this federation."""
    if epsilon_cap is not None and not epsilon_cap > 0:
        raise FederationError("the cap must be a positive epsilon, or empty for none", status=400)
    Membership.objects.filter(id=membership.id).update(epsilon_cap=epsilon_cap)
    membership.refresh_from_db()
