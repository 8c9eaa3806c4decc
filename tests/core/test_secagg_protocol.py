"""The secure sum equals the plain sum for any dropout the threshold allows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.core.secagg import protocol as p
from federation.core.secagg.client import SecAggClient
from federation.core.secagg.primitives import Misbehaviour, Quantiser, SecAggError, SigningKey
from federation.core.secagg.server import SecAggServer

SIZE = 6


def run(
    n,
    threshold,
    k,
    inputs,
    drop_before_share=(),
    drop_before_mask=(),
    silent_at_unmask=(),
    round_id="r1",
):
    """One secure sum with sites dropping out at the given stages; returns it."""
    sites = tuple(range(1, n + 1))
    keys = {s: SigningKey.generate() for s in sites}
    identities = {s: keys[s].public for s in sites}
    config = p.Settings(round_id=round_id, sites=sites, threshold=threshold, neighbours=k)
    quantiser = Quantiser(clip=4.0, levels=2**20, n_sites=n)
    clients = {s: SecAggClient(config, s, keys[s], identities, quantiser) for s in sites}
    server = SecAggServer(config, identities, quantiser)

    advertised = server.collect_keys([c.advertise() for c in clients.values()])
    live = [s for s in sites if s not in drop_before_share]
    routed = server.collect_shares([clients[s].share(advertised) for s in live])
    live = [s for s in live if s not in drop_before_mask]
    alive, dropped = server.collect_masked(
        [clients[s].mask(inputs[s], routed.get(s, {}), server.commitments_to(s)) for s in live]
    )
    answers = [
        clients[s].unmask(alive, dropped) for s in sorted(alive) if s not in silent_at_unmask
    ]
    return server.finish(answers), alive, quantiser


@settings(max_examples=25, deadline=None)
@given(data=st.data(), n=st.integers(3, 9), complete=st.booleans())
def test_the_unmasked_sum_is_the_plain_sum_of_the_survivors(data, n, complete):
    k = 0 if complete else min(p.secagg_plus_degree(n), n - 1 - (n - 1) % 2)
    degree = n - 1 if k == 0 else k
    threshold = data.draw(st.integers(2, max(2, degree // 2 + 1)))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    inputs = {s: rng.uniform(-3, 3, SIZE) for s in range(1, n + 1)}
    droppable = data.draw(st.integers(0, max(0, (degree + 1 - threshold) // 2)))
    order = data.draw(st.permutations(list(range(1, n + 1))))
    early, late = order[: droppable // 2], order[droppable // 2 : droppable]

    try:
        total, alive, quantiser = run(
            n, threshold, k, inputs, drop_before_share=early, drop_before_mask=late
        )
    except SecAggError as error:  # a dropout pattern the threshold does not allow
        assert "threshold" in str(error)
        return

    expected = np.sum([inputs[s] for s in alive], axis=0)
    assert np.all(np.abs(total - expected) <= len(alive) * quantiser.step)


def test_sites_dropping_at_every_stage_are_recovered():
    rng = np.random.default_rng(0)
    inputs = {s: rng.uniform(-3, 3, SIZE) for s in range(1, 11)}

    total, alive, quantiser = run(
        10, 4, 0, inputs, drop_before_share=[2], drop_before_mask=[5, 7], silent_at_unmask=[9]
    )

    assert alive == {1, 3, 4, 6, 8, 9, 10}
    expected = np.sum([inputs[s] for s in alive], axis=0)
    np.testing.assert_allclose(total, expected, atol=len(alive) * quantiser.step)


def test_a_thousand_sites_sum_in_one_round_with_the_sparse_graph():
    n = 1000
    inputs = {s: np.full(4, 0.001 * s) for s in range(1, n + 1)}

    total, alive, _ = run(n, 6, p.secagg_plus_degree(n), inputs, drop_before_mask=[3, 500])

    assert len(alive) == 998
    np.testing.assert_allclose(total, sum(0.001 * s for s in alive), atol=1e-2)


def test_below_the_threshold_the_round_fails_and_nothing_is_aggregated():
    inputs = {s: np.ones(SIZE) for s in range(1, 6)}

    with pytest.raises(SecAggError, match="fewer than the threshold"):
        run(5, 4, 0, inputs, drop_before_mask=[1, 2])


def test_weighted_averaging_happens_inside_the_sum():
    updates = {1: np.array([1.0, 2.0]), 2: np.array([3.0, 6.0]), 3: np.array([0.0, 0.0])}
    weights = {1: 0.1, 2: 0.3, 3: 0.0}
    inputs = {s: np.append(weights[s] * updates[s], weights[s]) for s in updates}

    total, _, _ = run(3, 2, 0, inputs)

    np.testing.assert_allclose(total[:2] / total[2], [2.5, 5.0], atol=1e-4)


# --- refusals ---------------------------------------------------------------------------


def setup(n=4, threshold=2, round_id="r1"):
    sites = tuple(range(1, n + 1))
    keys = {s: SigningKey.generate() for s in sites}
    identities = {s: keys[s].public for s in sites}
    config = p.Settings(round_id=round_id, sites=sites, threshold=threshold)
    quantiser = Quantiser(clip=4.0, levels=2**16, n_sites=n)
    clients = {s: SecAggClient(config, s, keys[s], identities, quantiser) for s in sites}
    return clients, SecAggServer(config, identities, quantiser), keys


def test_a_forged_key_advertisement_is_refused():
    clients, server, _ = setup()
    messages = [c.advertise() for c in clients.values()]
    messages[1][p.MASK_PUBLIC] = clients[1].mask_keys.public  # site 2 claims site 1's key

    with pytest.raises(SecAggError, match="the signature of site 2 does not verify"):
        server.collect_keys(messages)
    with pytest.raises(SecAggError, match="the signature of site 2 does not verify"):
        clients[3].share({m[p.SITE]: m for m in messages})


def test_keys_replayed_from_an_earlier_round_are_refused():
    old, _, keys = setup(round_id="r1")
    old_keys = old[2].advertise()
    clients, server, _ = setup(round_id="r2")
    messages = [c.advertise() for c in clients.values()]

    with pytest.raises(SecAggError, match="not for round r2"):
        server.collect_keys([old_keys, *messages[2:]])


def test_a_tampered_share_is_refused_by_its_addressee():
    clients, server, _ = setup()
    advertised = server.collect_keys([c.advertise() for c in clients.values()])
    routed = server.collect_shares([c.share(advertised) for c in clients.values()])
    box = dict(routed[1])
    box[2] = box[2][:-1] + bytes([box[2][-1] ^ 1])

    masked = clients[1].mask(np.zeros(SIZE), box, server.commitments_to(1))

    assert set(masked[p.COMPLAINTS]) == {2}
    assert 2 not in clients[1].held


# --- blame: a lying member is named and left out, the honest finish ----------------------


def stages_until_masked(clients, server, *, tamper=None):
    """Stages 1-3 with every site honest except what ``tamper(shared)`` changes in the
    sites' share messages (the lie of a dealer); returns the masked messages."""
    advertised = server.collect_keys([c.advertise() for c in clients.values()])
    shared = {s: c.share(advertised) for s, c in clients.items()}
    if tamper:
        tamper(shared)
    routed = server.collect_shares(list(shared.values()))
    return [c.mask(INPUTS[s], routed[s], server.commitments_to(s)) for s, c in clients.items()]


INPUTS = {s: np.full(SIZE, float(s) / 10) for s in range(1, 6)}


def finish(clients, server, masked, *, lie=None):
    alive, dropped = server.collect_masked(masked)
    answers = [clients[s].unmask(alive, dropped) for s in sorted(alive)]
    if lie:
        lie(answers)
    return server.finish(answers), alive


def test_a_dealer_whose_share_does_not_open_is_excluded_and_the_others_finish():
    clients, server, _ = setup(n=5, threshold=3)

    def garble(shared):  # site 2 seals zeros to site 1
        shared[2][p.SEALED][1] = bytes(len(shared[2][p.SEALED][1]))

    total, alive = finish(clients, server, stages_until_masked(clients, server, tamper=garble))

    assert alive == {1, 3, 4, 5}
    assert server.excluded.keys() == {2} and "shares for site 1 are bad" in server.excluded[2]
    np.testing.assert_allclose(total, sum(INPUTS[s] for s in alive), atol=1e-3)


def test_a_share_that_does_not_match_its_commitment_is_blamed_on_its_dealer():
    clients, server, _ = setup(n=5, threshold=3)
    advertised = server.collect_keys([c.advertise() for c in clients.values()])
    shared = [c.share(advertised) for c in clients.values()]
    shared[2][p.COMMITMENTS][4] = bytes(64)  # site 3 commits to other shares than it sends
    routed = server.collect_shares(shared)
    masked = [c.mask(INPUTS[s], routed[s], server.commitments_to(s)) for s, c in clients.items()]

    total, alive = finish(clients, server, masked)

    assert set(masked[3][p.COMPLAINTS]) == {3}
    assert "do not match its commitment" in server.excluded[3]
    np.testing.assert_allclose(total, sum(INPUTS[s] for s in alive), atol=1e-3)


def test_a_false_complaint_excludes_the_complainer():
    clients, server, _ = setup(n=5, threshold=3)
    masked = stages_until_masked(clients, server)
    masked[0][p.COMPLAINTS] = {3: clients[1].share_keys[3].private_bytes()}  # 3 was honest

    total, alive = finish(clients, server, masked)

    assert alive == {2, 3, 4, 5}
    assert server.excluded.keys() == {1} and "a false complaint" in server.excluded[1]
    np.testing.assert_allclose(total, sum(INPUTS[s] for s in alive), atol=1e-3)


def test_a_complaint_that_reveals_another_key_excludes_the_complainer():
    clients, server, _ = setup(n=5, threshold=3)
    masked = stages_until_masked(clients, server)
    masked[0][p.COMPLAINTS] = {3: clients[1].share_keys[2].private_bytes()}

    finish(clients, server, masked)

    assert "not the one it advertised" in server.excluded[1]


def test_a_false_revealed_share_is_attributed_and_the_secret_rebuilt_from_the_honest():
    clients, server, _ = setup(n=5, threshold=3)
    masked = stages_until_masked(clients, server)

    def lie(answers):  # site 3 reveals a wrong share of site 1's self-mask seed
        x, y = answers[2][p.SEED_SHARES][1]
        answers[2][p.SEED_SHARES][1] = (x, y + 1)

    total, alive = finish(clients, server, masked, lie=lie)

    assert [site for site, _ in server.faults] == [3]
    assert "not the one site 1 committed to" in server.faults[0][1]
    np.testing.assert_allclose(total, sum(INPUTS[s] for s in alive), atol=1e-3)


def test_a_dealer_of_shares_that_rebuild_no_committed_secret_is_named():
    clients, server, _ = setup(n=5, threshold=3)
    advertised = server.collect_keys([c.advertise() for c in clients.values()])
    clients[2].self_seed = bytes(32)  # shares of another seed than the one it committed to
    routed = server.collect_shares([c.share(advertised) for c in clients.values()])
    masked = [c.mask(INPUTS[s], routed[s], server.commitments_to(s)) for s, c in clients.items()]

    with pytest.raises(Misbehaviour, match="site 2 dealt inconsistent shares") as raised:
        finish(clients, server, masked)
    assert raised.value.culprit == 2


def test_a_request_to_reveal_both_shares_of_one_peer_is_refused():
    clients, server, _ = setup()
    advertised = server.collect_keys([c.advertise() for c in clients.values()])
    routed = server.collect_shares([c.share(advertised) for c in clients.values()])
    server.collect_masked(
        [c.mask(np.zeros(SIZE), routed[s], server.commitments_to(s)) for s, c in clients.items()]
    )

    with pytest.raises(SecAggError, match=r"sites \[2\] are both alive and dropped"):
        clients[1].unmask({1, 2, 3, 4}, {2})
    clients[1].unmask({1, 2, 3, 4}, set())
    with pytest.raises(SecAggError, match="answered the unmask request of the round already"):
        clients[1].unmask({1, 3, 4}, {2})  # a second request could combine with the first
