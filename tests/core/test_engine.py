"""The round engine without Django: kinds and stages, admission, the training vector, the
site's step, and whole rounds through the in-process driver."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, NoReturn

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.core import messages as m
from federation.core.engine import admission
from federation.core.engine import coordinator as c
from federation.core.engine import state as fs
from federation.core.engine.rounds import (
    Noise,
    Participant,
    RoundParameters,
    following,
    next_round,
    plan_round,
    public_weights,
    value_range,
)
from federation.core.engine.simulation import Member, RoundFailed, run_stages, secure_sum
from federation.core.engine.site import Input, site_step
from federation.core.engine.training import (
    LocalResult,
    decode_training,
    encode_training,
    training_length,
)
from federation.core.fixed_point import CLIP, STEP
from federation.core.messages import Kind
from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import SecAggError, SigningKey
from federation.core.strategies import weighted_mean


def models(rng: np.random.Generator, count: int) -> list[list[np.ndarray]]:
    return [
        [rng.normal(0, 0.5, (4, 3)).astype(np.float32), rng.normal(0, 0.5, 5).astype(np.float32)]
        for _ in range(count)
    ]


def sending(vector: np.ndarray) -> Callable[[dict[str, Any], RoundParameters], Input]:
    """A member's computation: always ``vector``, with no metadata."""
    return lambda work, parameters: (vector, {})


def members_with(inputs: list[np.ndarray]) -> dict[int, Member]:
    return {
        i + 1: Member(i + 1, f"site-{i + 1}", SigningKey.generate(), sending(v))
        for i, v in enumerate(inputs)
    }


def not_called() -> NoReturn:
    """The computation of a site in a stage that sends no input: never called."""
    raise AssertionError("not called")


def parameters_for(members: dict[int, Member], length: int, *, secure: bool):
    participants = [Participant(s, member.identity.public, 100) for s, member in members.items()]
    return plan_round(
        kind=Kind.ANALYTICS, participants=participants, length=length, secure=secure, minimum=2
    )


def work_for(site: int, stage: str, part: dict) -> dict:
    return {m.KEY_KIND: Kind.ANALYTICS, m.KEY_PROTOCOL: part}


# --- kinds and stages ------------------------------------------------------------------------


def test_a_federation_walks_its_setup_rounds_then_its_training_rounds_then_stops():
    steps = [(Kind.POINTS, 0)]
    while (following_round := next_round(*steps[-1], training_rounds=2)) is not None:
        steps.append(following_round)

    assert steps == [
        (Kind.POINTS, 0),
        (Kind.MOMENTS, 0),
        (Kind.TRAIN, 1),
        (Kind.TRAIN, 2),
        (Kind.EVALUATE, 2),  # the last candidate is scored before the federation ends
    ]
    assert next_round(Kind.TRAIN, 2, training_rounds=2, evaluate=False) is None  # under DP
    assert next_round(Kind.ANALYTICS, 7, training_rounds=2) is None


def test_a_secure_round_has_four_stages_and_a_plain_round_one():
    assert [following(s) for s in p.STAGES] == [*p.STAGES[1:], None]
    assert following(m.PLAIN_INPUT) is None


# --- the fixed-point range and admission --------------------------------------------------------


def test_the_value_range_widens_only_for_dp_training_to_hold_six_sigmas_of_a_noise_share():
    noise = Noise(multiplier=30.0, clip=1.0)

    plain = value_range(kind=Kind.TRAIN, noise=None, noise_sites=2, n_sites=3, reference_max=0.5)
    query = value_range(kind=Kind.ANALYTICS, noise=noise, noise_sites=2, n_sites=3, reference_max=0)
    dp = value_range(kind=Kind.TRAIN, noise=noise, noise_sites=2, n_sites=3, reference_max=0.5)

    assert plain == query == CLIP
    assert dp == pytest.approx((0.5 + 1.0 + 6 * 30.0 / math.sqrt(2)) / 3)


def test_each_reason_a_round_may_not_open_is_said_in_the_admins_words():
    assert admission.too_few_sites(1, 2) == (
        "only 1 approved, active sites; the federation needs 2 per round"
    )
    assert admission.too_few_sites(2, 2) == ""
    assert "turn secure aggregation on" in admission.needs_secure_aggregation(
        Kind.TRAIN, secure=False, noise=Noise(1.0, 1.0)
    )
    assert "analytics run over the secure sum only" in admission.needs_secure_aggregation(
        Kind.ANALYTICS, secure=False, noise=None
    )
    assert admission.needs_secure_aggregation(Kind.TRAIN, secure=False, noise=None) == ""
    assert "registered an identity key" in admission.too_few_identities(1, 2)
    refusal = admission.query_noise_too_large(
        Kind.ANALYTICS, Noise(50.0, 1.0), noise_sites=2, sites=3
    )
    assert refusal.endswith("a query over 3 sites: at most 1.65")


def test_a_plain_round_needs_no_identity_and_a_secure_one_every_identity():
    sites = [Participant(1, None, 10), Participant(2, None, 30)]

    plain = plan_round(kind=Kind.POINTS, participants=sites, length=5, secure=False, minimum=2)

    assert plain.secure is None and plain.weight_scale == 40.0 and plain.stages == (m.PLAIN_INPUT,)
    with pytest.raises(SecAggError, match="needs a registered identity key"):
        plan_round(kind=Kind.POINTS, participants=sites, length=5, secure=True, minimum=2)


def test_round_parameters_survive_their_json_form():
    members = members_with([np.zeros(3)] * 3)
    parameters = parameters_for(members, 3, secure=True)

    again = c.RoundParameters.from_json(parameters.to_json())

    assert again == parameters
    with pytest.raises(SecAggError, match="parameters are incomplete"):
        c.RoundParameters.from_json({"mode": "plain"})


# --- the training vector ------------------------------------------------------------------------


def test_the_sum_of_training_vectors_decodes_into_the_weighted_mean_and_the_pooled_error():
    rng = np.random.default_rng(3)
    trained = models(rng, 3)
    results = [
        LocalResult(weights, examples, val_sse=sse, val_count=count, seconds=0.1)
        for weights, examples, sse, count in zip(
            trained, (100, 300, 600), (900.0, 1600.0, 2500.0), (9, 16, 25), strict=True
        )
    ]

    weights = public_weights(
        [Participant(i, None, r.examples) for i, r in enumerate(results)], None
    )
    summed = sum(encode_training(r, weights[i]) for i, r in enumerate(results))
    assert isinstance(summed, np.ndarray)
    mean, rmse = decode_training(summed, trained[0], total_weight=sum(weights.values()))

    for got, want in zip(mean, weighted_mean(trained, [100, 300, 600]), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert rmse == pytest.approx(math.sqrt(5000.0 / 50))
    assert len(summed) == training_length(trained[0])


# --- the site's step --------------------------------------------------------------------------


def test_a_site_answers_a_stage_it_answered_before_with_the_same_message():
    members = members_with([np.zeros(4)] * 3)
    parameters = parameters_for(members, 4, secure=True)
    part = c.stage_part(parameters, p.ADVERTISE_KEYS, 1, _Empty())
    work = work_for(1, p.ADVERTISE_KEYS, part)

    first, state = site_step(work, 1, members[1].identity, None, lambda: (np.zeros(4), {}))
    again, _ = site_step(work, 1, members[1].identity, state, lambda: (np.zeros(4), {}))

    assert again == first  # the same keys: new ones would not match what may have landed


def test_a_site_refuses_parameters_that_changed_since_it_first_saw_them():
    members = members_with([np.zeros(4)] * 3)
    parameters = parameters_for(members, 4, secure=True)
    part = c.stage_part(parameters, p.ADVERTISE_KEYS, 1, _Empty())
    _, state = site_step(work_for(1, "", part), 1, members[1].identity, None, not_called)
    changed = {**parameters.to_json(), "threshold": 1}
    later = {**part, m.STAGE: p.SHARE_KEYS, m.PARAMETERS: changed, m.ADVERTISED: {}}

    with pytest.raises(SecAggError, match="changed since this site first saw them"):
        site_step(work_for(1, "", later), 1, members[1].identity, state, not_called)


def test_a_site_refuses_to_send_an_input_of_another_length_than_the_round_sums():
    members = members_with([np.zeros(3)] * 2)
    parameters = parameters_for(members, 4, secure=False)

    with pytest.raises(SecAggError, match="the input has 3 values"):
        run_stages(parameters, members, work_for)


class _Empty:
    def messages(self, stage: str) -> list:
        return []

    def senders(self, stage: str) -> set[int]:
        return set()


# --- whole rounds in process -----------------------------------------------------------------


def test_plain_and_secure_rounds_of_the_same_inputs_give_the_same_sum_to_the_fixed_point():
    rng = np.random.default_rng(5)
    inputs = [rng.uniform(-2, 2, 50) for _ in range(4)]
    members = members_with(inputs)

    plain, _, _ = run_stages(parameters_for(members, 50, secure=False), members, work_for)
    secure, _, _ = run_stages(parameters_for(members, 50, secure=True), members, work_for)

    np.testing.assert_allclose(plain, np.sum(inputs, axis=0), atol=1e-12)
    np.testing.assert_allclose(secure, plain, atol=4 * STEP)


def test_a_site_lost_after_sharing_its_keys_is_unmasked_from_the_others_shares():
    inputs = [np.full(6, float(i)) for i in range(1, 5)]

    summed = secure_sum(inputs, drop={p.MASKED_INPUT: {4}})

    np.testing.assert_allclose(summed, np.full(6, 1.0 + 2.0 + 3.0), atol=4 * STEP)


def test_below_the_threshold_a_round_fails_as_a_live_one_would():
    inputs = [np.ones(3)] * 3

    with pytest.raises(RoundFailed) as failure:
        secure_sum(inputs, drop={p.MASKED_INPUT: {2, 3}})

    assert str(failure.value) == (
        "1 of 3 sites answered the masked_input stage by its deadline; secure aggregation "
        "needs 2 and the federation 2: nothing is aggregated"
    )


def test_each_site_sends_one_message_per_stage_and_the_log_says_how_big():
    members = members_with([np.zeros(10)] * 3)
    log: list = []

    run_stages(parameters_for(members, 10, secure=True), members, work_for, log=log)

    assert [(e.site, e.stage) for e in log] == [
        (f"site-{s}", stage) for stage in p.STAGES for s in (1, 2, 3)
    ]
    sizes = {e.stage: e.bytes for e in log if e.site == "site-1"}
    # a channel key per neighbour, a mask key, a seed commitment and a signature
    assert sizes[p.ADVERTISE_KEYS] == 2 * 32 + 32 + 32 + 64
    assert sizes[p.SHARE_KEYS] == 2 * (168 + 64)  # per neighbour: sealed shares, commitments
    assert sizes[p.MASKED_INPUT] == 10 * 8  # ten 64-bit words
    assert sizes[p.UNMASK] == 3 * 70  # a self-mask share of each of the three living


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(min_value=3, max_value=10),
    dropped=st.integers(min_value=0, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_the_secure_sum_equals_the_plain_sum_of_the_survivors_for_any_dropout_it_survives(
    n, dropped, seed
):
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(-CLIP, CLIP, 8) for _ in range(n)]
    lost = set(range(n - dropped + 1, n + 1))
    members = members_with(inputs)
    parameters = parameters_for(members, 8, secure=True)
    survivors = n - len(lost)
    # A live round fails below the threshold of any neighbourhood; so does this one.
    enough = survivors >= max(parameters.threshold, 2)

    try:
        summed, _, _ = run_stages(parameters, members, work_for, drop={p.MASKED_INPUT: lost})
    except (RoundFailed, SecAggError):
        assert not enough or parameters.secure.settings.neighbours  # sparse graphs vary
        return

    expected = np.sum([v for i, v in enumerate(inputs, start=1) if i not in lost], axis=0)
    np.testing.assert_allclose(summed, expected, atol=n * STEP)


def answered_stages(
    parameters: RoundParameters,
    members: dict[int, Member],
    stages: tuple[str, ...],
    vector: np.ndarray,
) -> _Stages:
    """Every member answers each of ``stages`` in turn (its input: ``vector``), each
    message checked and kept as the coordinator would; what the round kept."""
    store = _Stages()
    for stage in stages:
        for site, member in members.items():
            work = work_for(site, stage, c.stage_part(parameters, stage, site, store))
            body, member.states["r"] = site_step(
                work, site, member.identity, member.states.get("r"), lambda: (vector, {})
            )
            checked = c.check_message(parameters, stage, site, body, store)
            store.add(stage, c.StoredMessage(site, checked.body, checked.vector))
    return store


def test_a_site_refuses_to_mask_with_shares_from_fewer_neighbours_than_the_threshold():
    inputs = [np.ones(4)] * 3
    members = members_with(inputs)
    parameters = parameters_for(members, 4, secure=True)  # threshold 2 of 3
    store = answered_stages(parameters, members, (p.ADVERTISE_KEYS, p.SHARE_KEYS), inputs[0])
    part = c.stage_part(parameters, p.MASKED_INPUT, 1, store)
    part[m.SEALED] = {}  # a coordinator that withholds every share sent to site 1

    with pytest.raises(SecAggError, match="shares from only 0 neighbours reached this site"):
        site_step(
            work_for(1, p.MASKED_INPUT, part),
            1,
            members[1].identity,
            members[1].states["r"],
            lambda: (inputs[0], {}),
        )


def test_a_site_refuses_a_stage_before_the_stages_that_come_first():
    members = members_with([np.zeros(4)] * 3)
    parameters = parameters_for(members, 4, secure=True)
    first = c.stage_part(parameters, p.ADVERTISE_KEYS, 1, _Empty())
    _, state = site_step(work_for(1, "", first), 1, members[1].identity, None, not_called)
    skipped = {**first, m.STAGE: p.UNMASK, m.ALIVE: [1, 2, 3], m.DROPPED: []}

    with pytest.raises(SecAggError, match="before this site answered the stages that come first"):
        site_step(work_for(1, "", skipped), 1, members[1].identity, state, not_called)


def test_a_simulated_round_refuses_what_a_live_one_refuses():
    from federation.core.engine.simulation import Simulation
    from federation.core.engine.training import FederatedTraining
    from turbofan.models.fit import NetworkRecipe

    frames = {"a": _frame(), "b": _frame()}
    simulation = Simulation(
        frames,
        template=NetworkRecipe().pipeline("FD001"),
        recipe=NetworkRecipe(),
        training=FederatedTraining(secure=False),
    )

    with pytest.raises(RoundFailed, match="differential privacy adds its noise"):
        simulation.run_round(Kind.POINTS, 0, simulation.state(), noise=Noise(1.0, 1.0))


class _Stages:
    def __init__(self) -> None:
        self.kept: dict[str, list] = {}

    def add(self, stage: str, message) -> None:
        self.kept.setdefault(stage, []).append(message)

    def messages(self, stage: str) -> list:
        return sorted(self.kept.get(stage, []), key=lambda s: s.site)

    def senders(self, stage: str) -> set[int]:
        return {message.site for message in self.kept.get(stage, [])}


def _frame():
    import pandas as pd

    from turbofan.data.files import SENSOR_COLUMNS, SETTING_COLUMNS

    columns = ["unit", "cycle", *SETTING_COLUMNS, *SENSOR_COLUMNS]
    return pd.DataFrame([[1, 1] + [0.0] * (len(columns) - 2)], columns=columns)


def test_public_weights_follow_the_reported_rows_within_four_times_the_median():
    honest = [Participant(1, None, 1000), Participant(2, None, 3000), Participant(3, None, 2000)]
    liar = Participant(4, None, 10**7)  # claims far more rows than it has
    tiny = Participant(5, None, 0)  # claims none, to weigh nothing

    weights = public_weights([*honest, liar, tiny], None)

    median = 2000
    assert weights[4] / weights[3] == pytest.approx(4 * median / 2000)  # capped at 4 x median
    assert weights[5] / weights[3] == pytest.approx(median / 4 / 2000)  # floored at median / 4
    assert weights[2] / weights[1] == pytest.approx(3.0)  # honest counts within the band
    assert sum(weights.values()) == pytest.approx(1.0)
    assert list(public_weights(honest, Noise(1.0, 1.0)).values()) == [pytest.approx(1 / 3)] * 3


def test_a_site_helps_unmask_no_sum_of_fewer_inputs_than_the_round_allows():
    inputs = [np.ones(3)] * 3
    members = members_with(inputs)
    participants = [Participant(s, member.identity.public, 1) for s, member in members.items()]
    parameters = plan_round(
        kind=Kind.ANALYTICS, participants=participants, length=3, secure=True, minimum=3
    )
    # A live round fails when fewer than three inputs are in: so does this one ...
    with pytest.raises(RoundFailed, match="secure aggregation needs 2 and the federation 3"):
        run_stages(parameters, members, work_for, drop={p.MASKED_INPUT: {3}})
    # ... and a coordinator that says only two are must not get their shares.
    stages = (p.ADVERTISE_KEYS, p.SHARE_KEYS, p.MASKED_INPUT)
    store = answered_stages(parameters, members, stages, inputs[0])
    part = {**c.stage_part(parameters, p.UNMASK, 1, store), m.ALIVE: [1, 2], m.DROPPED: [3]}

    with pytest.raises(SecAggError, match="publishes none of fewer than 3: refused"):
        site_step(work_for(1, "", part), 1, members[1].identity, members[1].states["r"], not_called)


def test_a_member_that_sends_a_poisoned_model_gets_it_rejected_by_the_others_validation(
    cmapss_dir,
):
    from federation.core.engine.simulation import Simulation
    from federation.core.engine.training import FederatedTraining
    from federation.core.recipes import QUICK
    from turbofan.data.files import read_engine_file

    train = read_engine_file(cmapss_dir / "train_FD001.txt")
    frames = {f"site-{k}": train[train["unit"].between(10 * k - 9, 10 * k)] for k in (1, 2, 3, 4)}
    training = FederatedTraining(rounds=2, local_epochs=2, lr=5e-3, patience=0)
    recipe = QUICK.recipe
    simulation = Simulation(
        frames, template=recipe.pipeline("FD001"), recipe=recipe, training=training
    )
    state = simulation.setup()
    state = fs.advance(state, Kind.TRAIN, simulation.run_round(Kind.TRAIN, 1, state), number=1)
    honest = simulation.members[4].compute
    # Site 4 lies in round 2: it puts a model of zeros under its (public) weight, so the
    # candidate that round makes is the honest average shrunk by a quarter.
    simulation.members[4].compute = lambda work, parameters: (np.zeros(parameters.length), {})
    outcome = simulation.run_round(Kind.TRAIN, 2, state)
    poisoned = fs.advance(state, Kind.TRAIN, outcome, number=2)
    simulation.members[4].compute = honest
    assert poisoned.accepted is not None and poisoned.version == 2

    judged = simulation.run_round(Kind.EVALUATE, 2, poisoned)

    assert judged.verdict == fs.REJECTED and judged.worse >= 3  # the honest sites saw it
    rolled_back = fs.advance(poisoned, Kind.EVALUATE, judged)
    assert rolled_back.accepted is None and rolled_back.version == 1
    assert rolled_back.weights is not None and state.weights is not None
    assert all(
        np.array_equal(a, b) for a, b in zip(rolled_back.weights, state.weights, strict=True)
    )

    # Training goes on with every site's optimiser started afresh, and the moments of the
    # start the rejection ended are gone from each site: one line, one set of moments.
    before = {site: _optimiser_lines(data) for site, data in simulation.data.items()}
    fs.advance(rolled_back, Kind.TRAIN, simulation.run_round(Kind.TRAIN, 3, rolled_back), number=3)
    for site, data in simulation.data.items():
        after = _optimiser_lines(data)
        assert len(before[site]) == len(after) == 1 and after != before[site]


def _optimiser_lines(data) -> list[str]:
    return [key for kind, key in data._private if kind == "optimiser"]


# --- a member that lies --------------------------------------------------------------------


def sealing_zeros_to(victim: int) -> Callable[[str, dict], dict]:
    def tamper(stage: str, body: dict) -> dict:
        if stage == p.SHARE_KEYS:
            body[p.SEALED][str(victim)] = m.b64(bytes(168))
        return body

    return tamper


def test_a_member_whose_share_does_not_open_is_named_and_the_others_complete_the_round():
    inputs = [np.full(6, float(i)) for i in range(1, 6)]
    members = members_with(inputs)
    members[2].tamper = sealing_zeros_to(1)
    faults: list = []

    summed, summed_sites, _ = run_stages(
        parameters_for(members, 6, secure=True), members, work_for, faults=faults
    )

    assert summed_sites == {1, 3, 4, 5}
    assert [site for site, _ in faults] == [2] and "shares for site 1 are bad" in faults[0][1]
    np.testing.assert_allclose(summed, inputs[0] + sum(inputs[2:]), atol=1e-6)


def test_with_too_few_honest_sites_left_the_round_fails_and_publishes_nothing():
    """A liar in a round of three cannot leave the victim's input alone in the sum."""
    members = members_with([np.full(4, float(i)) for i in range(1, 4)])
    members[2].tamper = sealing_zeros_to(1)
    participants = [Participant(s, mb.identity.public, 100) for s, mb in members.items()]
    parameters = plan_round(
        kind=Kind.ANALYTICS, participants=participants, length=4, secure=True, minimum=3
    )
    faults: list = []

    with pytest.raises(RoundFailed, match="the federation 3"):
        run_stages(parameters, members, work_for, faults=faults)
    assert [site for site, _ in faults] == [2]


def test_a_false_complaint_is_the_complainers_fault():
    members = members_with([np.full(3, float(i)) for i in range(1, 6)])

    def complain(stage: str, body: dict) -> dict:
        if stage == p.MASKED_INPUT:  # site 1 accuses site 3, revealing the wrong key
            body[p.COMPLAINTS] = {"3": m.b64(bytes(32))}
        return body

    members[1].tamper = complain
    faults: list = []

    _, summed_sites, _ = run_stages(
        parameters_for(members, 3, secure=True), members, work_for, faults=faults
    )

    assert summed_sites == {2, 3, 4, 5}
    assert faults[0][0] == 1 and "not the one it advertised" in faults[0][1]


# --- the model a round hands out, announced to all ---------------------------------------


def announced_round(model: list[np.ndarray]) -> tuple[RoundParameters, dict[int, SigningKey]]:
    keys = {s: SigningKey.generate() for s in (1, 2, 3)}
    participants = [Participant(s, key.public, 100) for s, key in keys.items()]
    parameters = plan_round(
        kind=Kind.TRAIN,
        participants=participants,
        length=8,
        secure=True,
        minimum=3,
        announcement={"model": m.weights_digest(model)},
    )
    return parameters, keys


def test_the_announcement_survives_the_wire_and_is_bound_into_the_protocol():
    model = models(np.random.default_rng(0), 1)[0]
    parameters, _ = announced_round(model)

    again = RoundParameters.from_json(parameters.to_json())

    assert again.announcement == {"model": m.weights_digest(model)}
    assert again.digest() == parameters.digest()
    assert again.secure is not None
    assert again.secure.settings.context == parameters.digest() != b""


def test_a_site_refuses_a_model_other_than_the_announced_one():
    from federation.core.engine.site import announced_model

    announced, other = models(np.random.default_rng(1), 2)
    parameters, _ = announced_round(announced)
    work = {m.KEY_WEIGHTS: m.b64(m.weights_to_bytes(other))}

    with pytest.raises(SecAggError, match="do not match the round's announced digest"):
        announced_model(work, parameters, m.KEY_WEIGHTS, "model")
    work[m.KEY_WEIGHTS] = m.b64(m.weights_to_bytes(announced))
    assert m.weights_digest(announced_model(work, parameters, m.KEY_WEIGHTS, "model")) == (
        m.weights_digest(announced)
    )


def test_sites_told_different_models_find_out_from_each_others_keys():
    """A coordinator that hands one site a model of its own making (to learn from that
    site's update alone) must announce it to that site: its neighbours see the
    difference in the signed keys."""
    from federation.core.secagg.client import SecAggClient
    from federation.core.secagg.primitives import Quantiser

    honest, crafted = models(np.random.default_rng(2), 2)
    parameters, keys = announced_round(honest)
    told_otherwise = replace(parameters, announcement={"model": m.weights_digest(crafted)}).bound()
    identities = {s: k.public for s, k in keys.items()}
    quantiser = Quantiser(clip=4.0, levels=2**16, n_sites=3)
    told = {s: (told_otherwise if s == 1 else parameters).secure for s in keys}
    clients = {
        s: SecAggClient(
            told[s].settings,  # type: ignore[union-attr]
            s,
            keys[s],
            identities,
            quantiser,
        )
        for s in keys
    }
    advertised = {s: c.advertise() for s, c in clients.items()}

    with pytest.raises(SecAggError, match="told other things about the round"):
        clients[2].share(advertised)
    with pytest.raises(SecAggError, match="told other things about the round"):
        clients[1].share(advertised)
