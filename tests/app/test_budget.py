"""The privacy budget of live rounds: noise in shares, the ledger, refusals, site caps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from federation import budget
from federation.core.privacy import PrivacySettings, Spend, epsilon_spent
from federation.errors import FederationError
from federation.models import Federation, Membership, ModelVersion, PrivacySpend, Round
from federation.services import stages
from tests.rounds import SITES, aggregated_weights

pytestmark = pytest.mark.django_db


def with_privacy(fleet, **settings):
    privacy = PrivacySettings(**{"noise_multiplier": 1.0, "clip": 0.5, **settings})
    Federation.objects.filter(id=fleet.federation.id).update(privacy=privacy.to_dict())
    fleet.federation.refresh_from_db()
    return privacy


def run_round(fleet) -> Round:
    round_ = fleet.open()
    fleet.run(round_)
    return round_


def test_each_site_sends_its_clipped_update_and_a_share_of_the_noise(fleet):
    privacy = with_privacy(fleet, noise_multiplier=1e-9, clip=0.5, epsilon=1e300)

    round_ = run_round(fleet)

    assert round_.status == Round.Status.DONE, round_.reason
    assert round_.parameters["privacy"] == {
        "clip": 0.5,
        "noise_multiplier": 1e-9,
        "noise_sites": 3,  # the fewest sites the round can end with
    }
    start = np.concatenate([w.ravel() for w in fleet.start]).astype(np.float64)
    clipped = []
    for name in SITES:  # each site's update, clipped to 0.5; one site, one vote
        update = np.concatenate([w.ravel() for w in fleet.trained[name]]) - start
        clipped.append(update * min(1.0, privacy.clip / np.linalg.norm(update)))
    result = np.concatenate([w.ravel() for w in aggregated_weights(fleet.federation, 1)])
    assert np.allclose(result, start + np.mean(clipped, axis=0), atol=1e-6)
    # The sites kept their validation errors home.
    assert (
        "federated_val_rmse"
        not in ModelVersion.objects.get(federation=fleet.federation, version=0).metrics
    )


def test_the_noise_in_the_sum_has_the_configured_strength(fleet):
    privacy = with_privacy(fleet, noise_multiplier=0.8, clip=0.5, epsilon=100.0)
    for name in SITES:  # no update at all: what reaches the model is the noise
        fleet.trained[name] = [w.copy() for w in fleet.start]

    run_round(fleet)

    start = np.concatenate([w.ravel() for w in fleet.start]).astype(np.float64)
    noise = np.concatenate([w.ravel() for w in aggregated_weights(fleet.federation, 1)]) - start
    # 4 shares of std sigma*C/sqrt(3) sum to std sigma*C*sqrt(4/3); the mean divides by 4.
    expected = privacy.noise_multiplier * privacy.clip * np.sqrt(4 / 3) / 4
    assert np.std(noise) == pytest.approx(expected, rel=0.05)


def test_every_training_round_is_in_the_ledger_of_the_federation_and_of_each_site(fleet):
    privacy = with_privacy(fleet, epsilon=50.0)

    fleet.open()

    one_round = epsilon_spent([Spend(privacy.noise_multiplier)], privacy.delta)
    lines = PrivacySpend.objects.filter(federation=fleet.federation)
    assert lines.count() == 5
    assert {line.site.name if line.site else None for line in lines} == {None, *SITES}
    assert all(line.epsilon == pytest.approx(one_round) for line in lines)
    assert budget.spent(federation=fleet.federation) == pytest.approx(one_round)
    assert budget.spent(federation=fleet.federation, site=fleet.sites["beta"]) == pytest.approx(
        one_round
    )


def test_a_round_that_would_overspend_the_budget_does_not_start(fleet):
    with_privacy(fleet, noise_multiplier=1.0, epsilon=1.0)  # one round costs about 4.4

    round_ = fleet.open()

    assert round_.status == Round.Status.FAILED
    assert round_.reason.startswith(
        "the privacy budget would be exceeded: training round 1 would take epsilon to 4."
    )
    assert round_.reason.endswith("past the federation's target of 1")
    assert not round_.contributions.exists()
    assert not PrivacySpend.objects.exists()


def test_a_site_is_left_out_of_work_that_would_pass_its_own_cap(fleet):
    with_privacy(fleet, epsilon=50.0)
    membership = Membership.objects.get(site=fleet.sites["alpha"])
    budget.membership_set_cap(membership=membership, epsilon_cap=1.0)

    round_ = fleet.open()

    names = sorted(round_.contributions.values_list("site__name", flat=True))
    assert names == ["beta", "delta", "gamma"]
    assert not PrivacySpend.objects.filter(site=fleet.sites["alpha"]).exists()
    assert stages.work_next(site=fleet.sites["alpha"]) is None


def test_a_cap_must_be_a_positive_epsilon(fleet):
    membership = Membership.objects.get(site=fleet.sites["alpha"])

    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(FederationError, match="positive epsilon"):
            budget.membership_set_cap(membership=membership, epsilon_cap=bad)


def test_a_cap_above_the_federations_target_or_below_what_is_spent_is_refused(fleet):
    with_privacy(fleet, epsilon=8.0)
    membership = Membership.objects.get(site=fleet.sites["alpha"])
    PrivacySpend.objects.create(
        federation=fleet.federation,
        site=fleet.sites["alpha"],
        kind="training",
        description="a round",
        noise_multiplier=1.0,
        sample_fraction=1.0,
        delta=1e-5,
        epsilon=2.5,
    )

    with pytest.raises(FederationError, match="above the federation's own target epsilon 8"):
        budget.membership_set_cap(membership=membership, epsilon_cap=100.0)
    with pytest.raises(FederationError, match="has spent epsilon 2.5 .* set at least 2.5"):
        budget.membership_set_cap(membership=membership, epsilon_cap=1.0)
    budget.membership_set_cap(membership=membership, epsilon_cap=4.0)
    assert membership.epsilon_cap == 4.0
    budget.membership_set_cap(membership=membership, epsilon_cap=None)
    assert membership.epsilon_cap is None


def test_differential_privacy_needs_secure_aggregation(fleet):
    with_privacy(fleet)
    Federation.objects.filter(id=fleet.federation.id).update(secure_aggregation=False)
    fleet.federation.refresh_from_db()

    round_ = fleet.open()

    assert round_.status == Round.Status.FAILED
    assert "turn secure aggregation on" in round_.reason


def test_the_fixed_point_range_of_a_dp_round_holds_the_noise_shares(fleet):
    with_privacy(fleet, noise_multiplier=30.0, clip=1.0, epsilon=1e6)

    round_ = fleet.open()

    # Six standard deviations of a share (30 / sqrt(3)) plus the weights, over 4 sites.
    assert round_.parameters["clip"] > 6 * 30.0 / np.sqrt(3) / 4
