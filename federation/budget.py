"""The privacy budget: who may take part in work that spends it, and the ledger.

Every mechanism run on the sites' data (a DP training round, an analytics query
with noise) is a line of the ledger, for the federation and for each site whose data
was in the running, with the epsilon spent so far after it (federation.core.privacy
does the accounting and the admission). Work that would take the federation past its
target epsilon does not start; a site whose own cap it would pass is left out of it.
"""

from __future__ import annotations

import math

from federation.core import privacy
from federation.core.privacy import Admission, PrivacySettings, Spend, epsilon_spent
from federation.errors import FederationError
from federation.models import Federation, Membership, PrivacySpend, Round, Site


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
) -> Admission[Site]:
    """The sites that may take part in a run costing ``spend``, sampled at its fraction:
    :func:`federation.core.privacy.admit` on the federation's ledger and the sites' caps.
    """
    settings = privacy_of(federation)
    assert settings is not None
    caps = {
        m.site_id: m.epsilon_cap
        for m in Membership.objects.filter(federation=federation, site__in=sites)
    }
    return privacy.admit(
        settings=settings,
        spent=_spends(federation, None),
        site_spent={s: _spends(federation, s) for s in sites if caps.get(s.id) is not None},
        caps={s: caps.get(s.id) for s in sites},
        sites=sites,
        spend=spend,
        minimum=minimum,
        what=what,
    )


def record(
    *,
    federation: Federation,
    admission: Admission[Site],
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
    """A site owner's own limit on what the site spends in this federation: a positive,
    finite epsilon no higher than the federation's target (above it, the target binds
    and the cap would only mislead) and no lower than what the site has spent already
    (a limit it is past already stops nothing); or none."""
    if epsilon_cap is None:
        Membership.objects.filter(id=membership.id).update(epsilon_cap=None)
        membership.refresh_from_db()
        return
    if not math.isfinite(epsilon_cap) or not epsilon_cap > 0:
        raise FederationError("the cap must be a positive epsilon, or empty for none", status=400)
    settings = privacy_of(membership.federation)
    if settings is not None and epsilon_cap > settings.epsilon:
        raise FederationError(
            f"the cap {epsilon_cap:g} is above the federation's own target epsilon "
            f"{settings.epsilon:g}, which binds first: set at most {settings.epsilon:g}, or "
            "none",
            status=400,
        )
    already = spent(federation=membership.federation, site=membership.site)
    if epsilon_cap < already:
        raise FederationError(
            f"the site has spent epsilon {already:.3g} in this federation already: a cap of "
            f"{epsilon_cap:g} would stop nothing that has run; set at least {already:.3g}",
            status=400,
        )
    Membership.objects.filter(id=membership.id).update(epsilon_cap=epsilon_cap)
    membership.refresh_from_db()
