"""Strategies: the server's step from the current global model and the sites' mean."""

from __future__ import annotations

import numpy as np
import pytest

from federation.core.strategies import FedAdam, FedAvg, FedProx, make_strategy, weighted_mean


def arrays(*values: float) -> list[np.ndarray]:
    return [np.array([v], dtype=np.float32) for v in values]


def test_the_weighted_mean_weighs_each_site_by_its_examples():
    models = [arrays(1.0, 10.0), arrays(4.0, 40.0)]

    mean = weighted_mean(models, [1, 3])

    assert [float(a[0]) for a in mean] == pytest.approx([3.25, 32.5])
    assert mean[0].dtype == np.float32


def test_fedavg_steps_to_the_mean_keeping_the_models_dtype():
    mean = [np.array([3.25], dtype=np.float64)]

    new = FedAvg().step(arrays(0.0), mean)

    assert float(new[0][0]) == 3.25 and new[0].dtype == np.float32


def test_fedprox_steps_like_fedavg_and_asks_sites_for_a_proximal_term():
    assert float(FedProx(proximal_mu=0.1).step(arrays(0.0), arrays(3.0))[0][0]) == 3.0
    assert FedProx(proximal_mu=0.1).proximal_mu == 0.1 and FedAvg().proximal_mu == 0


def test_fedadam_moves_the_global_model_towards_the_sites_mean():
    strategy = FedAdam(server_lr=0.5)

    first = strategy.step(arrays(0.0), arrays(1.0))
    second = strategy.step(first, arrays(1.0))

    assert 0 < float(first[0][0]) < float(second[0][0])


def test_a_mean_of_nothing_is_refused():
    with pytest.raises(ValueError, match="needs models and a positive number"):
        weighted_mean([], [])


def test_strategies_are_made_by_name_and_an_unknown_name_is_refused():
    assert make_strategy("fedprox", proximal_mu=0.5).proximal_mu == 0.5
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'"):
        make_strategy("fedsgd")


def test_fedadam_resumed_from_its_saved_state_continues_where_it_left_off():
    mean = arrays(1.0, -2.0)
    running = FedAdam(server_lr=0.3)
    first = running.step(arrays(0.0, 0.0), mean)
    saved = running.state()  # what the coordinator stores between rounds
    expected = running.step(first, mean)

    resumed = FedAdam(server_lr=0.3)
    resumed.load_state(saved)

    np.testing.assert_array_equal(
        np.concatenate(resumed.step(first, mean)), np.concatenate(expected)
    )
