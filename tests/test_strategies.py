from __future__ import annotations

import numpy as np
import pytest

from federation.core.strategies import FedAdam, FedAvg, FedProx, SiteResult, make_strategy


def arrays(*values: float) -> list[np.ndarray]:
    return [np.array([v], dtype=np.float32) for v in values]


def test_fedavg_weights_each_site_by_its_examples():
    results = [SiteResult(arrays(1.0, 10.0), examples=1), SiteResult(arrays(4.0, 40.0), examples=3)]

    merged = FedAvg().aggregate(arrays(0.0, 0.0), results)

    assert [float(a[0]) for a in merged] == pytest.approx([3.25, 32.5])
    assert merged[0].dtype == np.float32


def test_fedprox_aggregates_like_fedavg_and_asks_sites_for_a_proximal_term():
    results = [SiteResult(arrays(2.0), examples=1), SiteResult(arrays(4.0), examples=1)]

    assert float(FedProx(proximal_mu=0.1).aggregate(arrays(0.0), results)[0][0]) == 3.0
    assert FedProx(proximal_mu=0.1).proximal_mu == 0.1 and FedAvg().proximal_mu == 0


def test_fedadam_moves_the_global_model_towards_the_sites_mean():
    strategy = FedAdam(server_lr=0.5)
    current = arrays(0.0)

    first = strategy.aggregate(current, [SiteResult(arrays(1.0), examples=5)])
    second = strategy.aggregate(first, [SiteResult(arrays(1.0), examples=5)])

    assert 0 < float(first[0][0]) < float(second[0][0])


def test_an_empty_round_cannot_be_aggregated():
    with pytest.raises(ValueError, match="empty round"):
        FedAvg().aggregate(arrays(0.0), [])


def test_strategies_are_made_by_name_and_an_unknown_name_is_refused():
    assert make_strategy("fedprox", proximal_mu=0.5).proximal_mu == 0.5
    with pytest.raises(ValueError, match="unknown strategy 'fedsgd'"):
        make_strategy("fedsgd")


def test_fedadam_resumed_from_its_saved_state_continues_where_it_left_off():
    site = [SiteResult(arrays(1.0, -2.0), examples=5)]
    running = FedAdam(server_lr=0.3)
    first = running.aggregate(arrays(0.0, 0.0), site)
    saved = running.state()  # what the coordinator stores between rounds
    expected = running.aggregate(first, site)

    resumed = FedAdam(server_lr=0.3)
    resumed.load_state(saved)

    np.testing.assert_array_equal(
        np.concatenate(resumed.aggregate(first, site)), np.concatenate(expected)
    )
