"""Site-level differential privacy: the accountant, the site's clipping and noise share,
and DP-FedAvg in the in-process simulation (federation.core.privacy, .simulation)."""

from __future__ import annotations

import dataclasses

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant

from federation.core.engine.simulation import run_simulation
from federation.core.engine.training import (
    FederatedTraining,
    LocalResult,
    encode_private_training,
)
from federation.core.privacy import (
    PrivacyError,
    PrivacySettings,
    Spend,
    admit,
    clip_and_noise,
    epsilon_spent,
    noise_for_budget,
)
from federation.core.recipes import QUICK
from turbofan.data.files import read_engine_file

# --- the accountant ---------------------------------------------------------------------------


def _library_epsilon(events: list[tuple[float, float, int]], delta: float) -> float:
    """dp_accounting's RDP epsilon, composed here by hand: (q, sigma, steps) per event."""
    accountant = RdpAccountant()
    for q, sigma, steps in events:
        gaussian = dp_accounting.GaussianDpEvent(sigma)
        event = gaussian if q == 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        accountant.compose(event, steps)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "delta"),
    [
        (1.0, 1.0, 1, 1e-5),
        (1.0, 3.5, 90, 1e-5),
        (0.5, 1.1, 30, 1e-5),
        (0.1, 0.8, 200, 1e-6),
        (0.01, 4.0, 1000, 1e-3),
    ],
)
def test_epsilon_spent_is_dp_accountings_for_the_same_steps(q, sigma, steps, delta):
    spent = epsilon_spent([Spend(sigma, q, steps)], delta)

    assert spent == pytest.approx(_library_epsilon([(q, sigma, steps)], delta), rel=1e-12)


def test_training_rounds_and_queries_compose_in_one_budget():
    spends = [Spend(1.2, 0.5, 20), Spend(5.0, 1.0, 3)]

    spent = epsilon_spent(spends, 1e-5)

    assert spent == pytest.approx(_library_epsilon([(0.5, 1.2, 20), (1.0, 5.0, 3)], 1e-5))
    assert spent > epsilon_spent(spends[:1], 1e-5)
    assert epsilon_spent([], 1e-5) == 0.0


def test_sampling_fewer_sites_per_round_spends_less():
    assert epsilon_spent([Spend(1.0, 0.1, 50)], 1e-5) < epsilon_spent([Spend(1.0, 1.0, 50)], 1e-5)


@pytest.mark.parametrize(
    ("epsilon", "rounds", "q"), [(8.0, 30, 1.0), (1.0, 90, 1.0), (4.0, 100, 0.2)]
)
def test_noise_for_budget_is_the_least_noise_within_the_budget(epsilon, rounds, q):
    noise = noise_for_budget(epsilon, 1e-5, rounds, q)

    assert epsilon_spent([Spend(noise, q, rounds)], 1e-5) <= epsilon
    # Within its 0.1 % tolerance, a little less noise would overspend.
    assert epsilon_spent([Spend(noise * 0.999, q, rounds)], 1e-5) > epsilon


def test_a_budget_no_noise_can_reach_is_refused():
    with pytest.raises(PrivacyError, match="no noise multiplier reaches epsilon"):
        noise_for_budget(1e-6, 1e-12, 1000)


# --- the site's side --------------------------------------------------------------------------


def test_an_update_above_the_bound_is_scaled_down_to_it():
    reference = [np.array([1.0, 1.0], np.float32), np.zeros((1, 1), np.float32)]
    weights = [np.array([4.0, 1.0], np.float32), np.array([[4.0]], np.float32)]  # update (3, 0, 4)

    out = clip_and_noise(weights, reference, clip=1.0, noise_multiplier=1e-9, noise_sites=1)

    np.testing.assert_allclose(out[0], [1.6, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[1], [[0.8]], atol=1e-6)
    assert [o.dtype for o in out] == [np.float32, np.float32]
    update = np.concatenate([(o - r).ravel() for o, r in zip(out, reference, strict=True)])
    assert np.linalg.norm(update) <= 1.0 + 1e-6


def test_an_update_within_the_bound_is_kept():
    reference = [np.array([1.0, 2.0])]
    weights = [np.array([1.3, 2.4])]  # norm 0.5

    out = clip_and_noise(weights, reference, clip=1.0, noise_multiplier=1e-9, noise_sites=1)

    np.testing.assert_allclose(out[0], [1.3, 2.4], atol=1e-6)


def test_the_sum_of_the_sites_noise_shares_has_the_configured_deviation():
    sites, size, clip, multiplier = 4, 40_000, 0.5, 2.0
    reference = [np.zeros(size)]
    rng = np.random.default_rng(7)

    shares = [
        clip_and_noise(
            reference, reference, clip=clip, noise_multiplier=multiplier, noise_sites=sites, rng=rng
        )[0]
        for _ in range(sites)
    ]

    # Standard error of a deviation from 40,000 draws: 0.35 %; allow 2 %.
    assert np.std(shares[0]) == pytest.approx(multiplier * clip / 2, rel=0.02)
    assert np.std(np.sum(shares, axis=0)) == pytest.approx(multiplier * clip, rel=0.02)
    assert abs(np.mean(np.sum(shares, axis=0))) < 0.02


def test_a_private_training_vector_weighs_as_one_site_and_keeps_the_validation_error_home():
    reference = [np.zeros(3)]
    result = LocalResult([np.array([0.0, 3.0, 4.0])], 1234, val_sse=81.0, val_count=9, seconds=1)
    privacy = {"noise_multiplier": 0.5, "clip": 2.0, "noise_sites": 2}

    vector = encode_private_training(result, reference, privacy, 0.25, np.random.default_rng(1))

    expected = clip_and_noise(
        result.weights,
        reference,
        clip=2.0,
        noise_multiplier=0.5,
        noise_sites=2,
        rng=np.random.default_rng(1),
    )
    np.testing.assert_array_equal(vector[:3], expected[0] / 4.0)
    assert vector[3:].tolist() == [0.0, 0.0]  # its public weight, 1/4; no validation error


# --- admission --------------------------------------------------------------------------------


def test_a_run_past_the_target_is_refused_saying_how_far_it_would_go():
    settings = PrivacySettings(noise_multiplier=1.0, epsilon=1.0)

    admission = admit(
        settings=settings,
        spent=[Spend(1.0, 1.0, 10)],
        site_spent={},
        caps={},
        sites=["a", "b"],
        spend=Spend(1.0),
        minimum=2,
        what="training round 11",
    )

    assert admission.refusal.startswith(
        "the privacy budget would be exceeded: training round 11 would take epsilon to"
    )
    assert admission.sites == []


def test_a_site_whose_own_cap_would_be_passed_is_left_out():
    settings = PrivacySettings(noise_multiplier=1.0, epsilon=100.0)
    one = epsilon_spent([Spend(1.0)], settings.delta)

    admission = admit(
        settings=settings,
        spent=[],
        site_spent={"a": [Spend(1.0)]},
        caps={"a": 1.05 * one, "b": None, "c": 10 * one},
        sites=["a", "b", "c"],
        spend=Spend(1.0),
        minimum=2,
        what="training round 2",
    )

    assert admission.refusal == "" and admission.sites == ["b", "c"]
    assert admission.eligible == ["b", "c"]


def test_noise_shares_need_at_least_one_site():
    with pytest.raises(PrivacyError, match="noise_sites"):
        clip_and_noise([np.zeros(1)], [np.zeros(1)], clip=1, noise_multiplier=1, noise_sites=0)


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"noise_multiplier": 0}, "noise multiplier must be > 0"),
        ({"noise_multiplier": float("nan")}, "noise multiplier must be > 0"),
        ({"noise_multiplier": 1, "clip": -1}, "clipping bound must be > 0"),
        ({"noise_multiplier": 1, "epsilon": 0}, "target epsilon must be > 0"),
        ({"noise_multiplier": 1, "delta": 1}, "delta must be between 0 and 1"),
        ({"noise_multiplier": 1, "sample_fraction": 1.5}, "sample fraction must be in"),
        ({"noise_multiplier": 1, "noise": 2}, "unknown privacy setting.*noise: use"),
        ({"clip": 1}, "need a noise_multiplier"),
        ({"noise_multiplier": "lots"}, "noise_multiplier must be a number, not 'lots'"),
    ],
)
def test_settings_that_cannot_work_are_refused_saying_why(values, message):
    with pytest.raises(PrivacyError, match=message):
        PrivacySettings.from_dict(values)


def test_settings_survive_a_round_trip_through_json_types():
    settings = PrivacySettings(noise_multiplier=1.5, clip=0.8, epsilon=4, sample_fraction=0.5)

    assert PrivacySettings.from_dict(settings.to_dict()) == settings
    config = FederatedTraining(privacy=settings.to_dict())
    assert FederatedTraining.from_dict(config.to_dict()).privacy_settings() == settings


# --- DP-FedAvg in the simulation --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sites(cmapss_dir):
    """Three sites of two FD001 engines each."""
    train = read_engine_file(cmapss_dir / "train_FD001.txt")
    return {f"site-{i + 1}": train[train["unit"].isin([2 * i + 1, 2 * i + 2])] for i in range(3)}


def _simulate(sites, rounds, settings, ensemble=1):
    recipe = dataclasses.replace(QUICK.recipe, ensemble=ensemble)
    config = FederatedTraining(
        rounds=rounds, local_epochs=1, patience=0, val_fraction=0.34, privacy=settings.to_dict()
    )
    return run_simulation(sites, recipe.pipeline("FD001"), recipe, config)


def test_the_simulation_stops_before_the_round_that_would_pass_the_budget(tiny_sites):
    noise = 2.0
    allowed = [epsilon_spent([Spend(noise, 1.0, r)], 1e-5) for r in (1, 2, 3, 4)]
    settings = PrivacySettings(
        noise_multiplier=noise, clip=0.5, epsilon=(allowed[2] + allowed[3]) / 2
    )

    # Two members of two rounds each would be four rounds; the budget has three.
    result = _simulate(tiny_sites, rounds=2, settings=settings, ensemble=2)

    assert [(h["member"], h["round"]) for h in result.history] == [(0, 1), (0, 2), (1, 1)]
    assert [h["epsilon"] for h in result.history] == pytest.approx(allowed[:3])
    assert all(h["sites"] == 3 for h in result.history)
    assert result.epsilon == pytest.approx(allowed[2]) and result.epsilon <= settings.epsilon
    assert len(result.model.members) == 2
    assert result.model.meta["privacy"]["rounds"] == 3


def test_a_budget_that_allows_no_round_is_refused(tiny_sites):
    settings = PrivacySettings(noise_multiplier=0.1, clip=0.5, epsilon=0.01)

    with pytest.raises(PrivacyError, match="allows no round"):
        _simulate(tiny_sites, rounds=2, settings=settings)


def test_sampled_rounds_draw_again_until_a_round_has_two_sites_as_live_rounds_do(tiny_sites):
    settings = PrivacySettings(noise_multiplier=1.0, clip=0.5, epsilon=100, sample_fraction=0.4)

    history = _simulate(tiny_sites, rounds=6, settings=settings).history

    counts = [h["sites"] for h in history]
    assert len(history) == 6 and all(2 <= n <= 3 for n in counts)
    assert all(b["epsilon"] > a["epsilon"] for a, b in zip(history, history[1:], strict=False))
