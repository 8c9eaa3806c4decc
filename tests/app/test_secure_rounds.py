"""Secure training rounds on the database: four stages, dropouts, refusals, what is stored."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from federation.core import messages as m
from federation.core.engine.training import LocalResult, encode_training
from federation.core.fixed_point import CLIP, STEP
from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import SecAggError
from federation.errors import FederationError
from federation.models import (
    Contribution,
    Fault,
    Federation,
    Membership,
    ModelVersion,
    Round,
    Site,
    StageMessage,
)
from federation.services import federations, rounds, sites, stages
from federation.services.versions import version_weights
from tests.rounds import EXAMPLES, SITES, VAL_COUNT, VAL_SSE, aggregated_weights, close_enough
from worker.keystore import Keystore

pytestmark = pytest.mark.django_db


def test_a_training_round_walks_the_four_stages_and_yields_the_weighted_average(fleet):
    round_ = fleet.open()
    assert round_.stage == p.ADVERTISE_KEYS

    for stage in p.STAGES[1:]:
        fleet.stage(round_)
        assert round_.stage == stage
    fleet.stage(round_)  # the unmask stage closes the round
    assert round_.status == Round.Status.AGGREGATING
    stages.round_aggregate(round_=round_)

    round_.refresh_from_db()
    assert round_.status == Round.Status.DONE
    assert close_enough(aggregated_weights(fleet.federation, 1), fleet.expected(SITES))
    received = round_.contributions.filter(status=Contribution.Status.RECEIVED)
    assert received.count() == 4
    # The pooled validation error of the incoming model came through the sum too.
    version0 = ModelVersion.objects.get(federation=fleet.federation, version=0)
    assert version0.metrics["federated_val_rmse"] == pytest.approx(5.0, abs=1e-3)


def test_a_site_lost_after_sharing_its_keys_is_recovered_through_the_shares(fleet):
    round_ = fleet.open()
    fleet.stage(round_)  # keys
    fleet.stage(round_)  # shares
    fleet.answer("alpha")
    fleet.answer("beta")
    fleet.answer("delta")  # gamma trained but never sent its masked input
    Round.objects.filter(id=round_.id).update(deadline=timezone.now() - timedelta(seconds=1))
    round_.refresh_from_db()
    stages.stage_close(round_=round_)
    round_.refresh_from_db()
    assert round_.stage == p.UNMASK

    _, work = fleet.work("alpha")
    assert work[m.KEY_PROTOCOL][m.DROPPED] == [fleet.sites["gamma"].id]
    fleet.stage(round_, names=("alpha", "beta", "delta"))
    stages.round_aggregate(round_=round_)

    round_.refresh_from_db()
    assert round_.status == Round.Status.DONE, round_.reason
    survivors = ("alpha", "beta", "delta")
    assert close_enough(aggregated_weights(fleet.federation, 1), fleet.expected(survivors))
    dropped = round_.contributions.get(status=Contribution.Status.DROPPED)
    assert dropped.site.name == "gamma"


def test_below_the_threshold_the_round_fails_with_its_reason_and_nothing_is_aggregated(fleet):
    round_ = fleet.open()
    fleet.stage(round_)
    fleet.stage(round_)
    fleet.answer("alpha")
    fleet.answer("beta")  # gamma and delta never send their masked inputs
    Round.objects.filter(id=round_.id).update(deadline=timezone.now() - timedelta(seconds=1))
    round_.refresh_from_db()

    stages.stage_close(round_=round_)

    round_.refresh_from_db()
    assert round_.status == Round.Status.FAILED
    assert round_.reason == (
        "2 of 4 sites answered the masked_input stage by its deadline; secure aggregation "
        "needs 3 and the federation 3: nothing is aggregated"
    )
    assert not ModelVersion.objects.filter(federation=fleet.federation, version=1).exists()


def test_a_site_without_a_registered_identity_sits_secure_rounds_out(fleet):
    Site.objects.filter(name="gamma").update(identity_key="")

    round_ = fleet.open()

    assert sorted(round_.contributions.values_list("site__name", flat=True)) == [
        "alpha",
        "beta",
        "delta",
    ]
    assert stages.work_next(site=fleet.sites["gamma"]) is None


def test_a_plain_federation_runs_one_stage_in_the_clear_through_the_same_engine(fleet):
    Federation.objects.filter(id=fleet.federation.id).update(secure_aggregation=False)
    fleet.federation.refresh_from_db()

    round_ = fleet.open()
    assert round_.stage == m.PLAIN_INPUT
    _, work = fleet.work("alpha")
    assert m.KEY_WEIGHTS in work and work[m.KEY_PROTOCOL][m.PARAMETERS]["mode"] == "plain"
    fleet.run(round_)

    assert round_.status == Round.Status.DONE, round_.reason
    assert close_enough(aggregated_weights(fleet.federation, 1), fleet.expected(SITES))
    assert "plain aggregation, for debugging" in fleet.federation.privacy_label


def test_the_coordinator_stores_no_sites_update_in_the_clear(fleet):
    round_ = fleet.open()
    for _ in p.STAGES:
        fleet.stage(round_)
    stages.round_aggregate(round_=round_)

    # Everything the coordinator keeps: rows of every table of the app, and every file.
    stored_rows = json.dumps(
        [
            list(model.objects.values())
            for model in (Round, Contribution, StageMessage, Federation, Site, ModelVersion)
        ],
        default=str,
    ).encode()
    files = [f.read_bytes() for f in Path(settings.MEDIA_ROOT).rglob("*") if f.is_file()]
    scale = round_.parameters["weight_scale"]
    for name in SITES:
        update = np.concatenate([w.ravel() for w in fleet.trained[name]])
        trained = LocalResult(fleet.trained[name], EXAMPLES[name], VAL_SSE, VAL_COUNT, 0.5)
        vector = encode_training(trained, scale)
        clipped = np.clip(vector, -CLIP, CLIP)
        quantised = np.rint((clipped + CLIP) / STEP).astype(np.uint64)
        for needle in (update.astype(np.float32), update.astype(np.float64), quantised):
            chunk = needle[:16].tobytes()  # any 16 consecutive values, in any stored byte
            assert chunk not in stored_rows and all(chunk not in data for data in files)
        assert repr(float(update[0]))[:10].encode() not in stored_rows
    # The masked vectors look nothing like the inputs: each is uniform noise on its own.
    for message in StageMessage.objects.filter(stage=p.MASKED_INPUT):
        masked = np.frombuffer(message.vector.read(), dtype=np.uint64)
        assert masked.std() > 2**61  # uniform words: about 2**62; quantised inputs: 2**39
    kinds = set(StageMessage.objects.values_list("stage", flat=True))
    assert kinds == set(p.STAGES)


def test_a_forged_key_signature_is_refused_with_a_400(fleet):
    round_ = fleet.open()
    body = fleet.step("alpha")
    signature = bytearray(base64.b64decode(body[p.SIGNATURE]))
    signature[0] ^= 1
    body[p.SIGNATURE] = base64.b64encode(bytes(signature)).decode()
    contribution, _ = fleet.work("alpha")

    with pytest.raises(FederationError, match=r"signature of site \d+ does not verify"):
        stages.stage_submit(contribution=contribution, body=body)
    assert not StageMessage.objects.filter(round=round_).exists()


def test_keys_replayed_from_an_earlier_round_are_refused(fleet):
    first = fleet.open()
    old = fleet.step("alpha")
    rounds.round_fail(round_=first, reason="test")
    Federation.objects.filter(id=fleet.federation.id).update(status="running")
    fleet.open()
    contribution, _ = fleet.work("alpha")

    with pytest.raises(FederationError, match="a replay from another round"):
        stages.stage_submit(contribution=contribution, body=old)


def test_a_site_answers_each_stage_once(fleet):
    fleet.open()
    contribution, _ = fleet.work("alpha")
    body = fleet.step("alpha")
    stages.stage_submit(contribution=contribution, body=body)
    contribution.refresh_from_db()

    with pytest.raises(FederationError, match="answered the advertise_keys stage"):
        stages.stage_submit(contribution=contribution, body=body)
    assert stages.work_next(site=fleet.sites["alpha"]) is None  # until the next stage


def test_a_share_tampered_with_on_its_way_is_complained_about_by_its_addressee(fleet):
    round_ = fleet.open()
    fleet.stage(round_)
    fleet.stage(round_)
    _, work = fleet.work("alpha")
    part = work[m.KEY_PROTOCOL]
    sender = str(fleet.sites["beta"].id)
    sealed = bytearray(base64.b64decode(part[m.SEALED][sender]))
    sealed[-1] ^= 1
    part[m.SEALED][sender] = base64.b64encode(bytes(sealed)).decode()

    body = fleet.step("alpha", work)

    assert list(body[p.COMPLAINTS]) == [sender]


# --- a member that lies is named, excluded, and the federation goes on ----------------------


def _share_stage_with_a_liar(fleet, round_, liar: str, victim: str) -> None:
    """The share stage, with ``liar`` sealing zeros to ``victim`` instead of its shares."""
    for name in SITES:
        contribution, _ = fleet.work(name)
        body = fleet.step(name)
        if name == liar:
            body[p.SEALED][str(fleet.sites[victim].id)] = base64.b64encode(bytes(168)).decode()
        stages.stage_submit(contribution=contribution, body=body)
    round_.refresh_from_db()
    stages.stage_close(round_=round_)
    round_.refresh_from_db()


def _aggregate_as_the_worker_does(round_) -> None:
    from worker.tasks import round_aggregate

    round_aggregate(round_.id)
    round_.refresh_from_db()


def test_a_member_that_seals_garbage_is_named_excluded_then_suspended_and_the_federation_goes_on(
    fleet,
):
    honest = ("alpha", "gamma", "delta")
    beta = fleet.sites["beta"]
    for attempt in (1, 2):
        if attempt == 1:
            round_ = fleet.open()
        else:
            round_ = Round.objects.get(federation=fleet.federation, number=1, status="collecting")
        fleet.stage(round_)
        _share_stage_with_a_liar(fleet, round_, "beta", victim="alpha")
        fleet.stage(round_, honest)  # alpha complains; beta is out and gets no more work

        fault = Fault.objects.get(round=round_, site=beta)
        assert fault.stage == p.MASKED_INPUT
        assert f"shares for site {fleet.sites['alpha'].id} are bad" in fault.detail
        assert Contribution.objects.get(round=round_, site=beta).status == "excluded"
        assert stages.work_next(site=beta) is None
        fleet.stage(round_, honest)
        # In a federation of four, beta's mask key is out of reach (two good shares of
        # three needed): the round fails naming the fault, and is run again.
        _aggregate_as_the_worker_does(round_)
        assert round_.status == "failed" and "good shares for site" in round_.reason
        assert "(at fault: beta; the round runs again)" in round_.reason
        fleet.federation.refresh_from_db()
        assert fleet.federation.status != "failed"

    membership = Membership.objects.get(federation=fleet.federation, site=beta)
    assert membership.status == "suspended"  # at fault in two rounds
    third = Round.objects.get(federation=fleet.federation, number=1, status="collecting")
    assert not Contribution.objects.filter(round=third, site=beta).exists()
    fleet.run(third, honest)
    assert third.status == "done"
    assert close_enough(aggregated_weights(fleet.federation, 1), fleet.expected(honest), 3)


def test_a_false_complaint_names_the_complainer(fleet):
    round_ = fleet.open()
    fleet.stage(round_)
    fleet.stage(round_)
    contribution, work = fleet.work("alpha")
    body = fleet.step("alpha", work)
    gamma = fleet.sites["gamma"].id
    # alpha reveals its channel key with gamma, whose shares were fine
    state = fleet.states[("alpha", work[m.KEY_PROTOCOL][m.PARAMETERS][p.ROUND])]
    body[p.COMPLAINTS] = {str(gamma): state["share_private"][str(gamma)]}

    stages.stage_submit(contribution=contribution, body=body)

    fault = Fault.objects.get(round=round_)
    assert fault.site == fleet.sites["alpha"] and "a false complaint" in fault.detail
    assert Contribution.objects.get(round=round_, site=fleet.sites["alpha"]).status == "excluded"
    assert (
        StageMessage.objects.get(
            round=round_, site=fleet.sites["alpha"], stage=p.MASKED_INPUT
        ).vector.name
        == ""
    )


def test_a_share_set_missing_a_neighbour_is_refused_at_once(fleet):
    round_ = fleet.open()
    fleet.stage(round_)
    contribution, _ = fleet.work("alpha")
    body = fleet.step("alpha")
    del body[p.SEALED][str(fleet.sites["beta"].id)]
    del body[p.COMMITMENTS][str(fleet.sites["beta"].id)]

    with pytest.raises(FederationError, match="one for each neighbour that advertised keys"):
        stages.stage_submit(contribution=contribution, body=body)


def test_a_false_revealed_share_is_a_fault_and_the_round_completes(fleet):
    round_ = fleet.open()
    for _ in range(3):
        fleet.stage(round_)
    contribution, _ = fleet.work("alpha")
    body = fleet.step("alpha")
    beta = str(fleet.sites["beta"].id)
    x, y = body[p.SEED_SHARES][beta].split(":")
    body[p.SEED_SHARES][beta] = f"{x}:{int(y, 16) ^ 1:0{len(y)}x}"
    stages.stage_submit(contribution=contribution, body=body)
    fleet.stage(round_, ("beta", "gamma", "delta"))

    stages.round_aggregate(round_=round_)

    round_.refresh_from_db()
    assert round_.status == "done"
    fault = Fault.objects.get(round=round_)
    assert fault.site == fleet.sites["alpha"] and fault.stage == p.UNMASK
    assert close_enough(aggregated_weights(fleet.federation, 1), fleet.expected(SITES))


def test_a_request_to_reveal_both_shares_of_a_site_is_refused(fleet):
    round_ = fleet.open()
    for _ in range(3):
        fleet.stage(round_)
    _, work = fleet.work("alpha")
    part = work[m.KEY_PROTOCOL]
    part[m.DROPPED] = [fleet.sites["beta"].id]  # beta is alive: both of its shares

    with pytest.raises(SecAggError, match="would reveal their input"):
        fleet.step("alpha", work)


def test_a_reveal_of_the_wrong_kind_of_share_is_refused_by_the_coordinator(fleet):
    round_ = fleet.open()
    for _ in range(3):
        fleet.stage(round_)
    contribution, work = fleet.work("alpha")
    body = fleet.step("alpha")
    beta = str(fleet.sites["beta"].id)
    body[p.KEY_SHARES] = {beta: body[p.SEED_SHARES][beta]}  # a mask-key share of the living

    with pytest.raises(FederationError, match="did not ask site"):
        stages.stage_submit(contribution=contribution, body=body)


def test_a_message_whose_post_failed_is_sent_again_unchanged(fleet):
    fleet.open()
    first = fleet.step("alpha")  # computed and kept, as if its post had failed

    again = fleet.step("alpha")

    assert again == first  # the same keys: new ones would not match what may have landed


def test_the_keystore_keeps_the_identity_and_round_secrets_for_the_site_only(tmp_path):
    keystore = Keystore(tmp_path)
    identity = keystore.identity()
    keystore.save_round("abc123", {"secret": 1})

    assert Keystore(tmp_path).identity().public == identity.public
    assert Keystore(tmp_path).load_round("abc123") == {"secret": 1}
    for path in [tmp_path / "keystore", *(tmp_path / "keystore").rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path  # files 0600, folders 0700
    keystore.forget_round("abc123")
    assert keystore.load_round("abc123") is None


def test_the_secrets_of_a_round_nobody_finished_go_an_hour_after_the_last_deadline(tmp_path):
    keystore = Keystore(tmp_path)
    deadline = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    keystore.save_round("dead", {"secret": 1}, deadline=deadline)
    keystore.save_round("alive", {"secret": 2}, deadline=deadline + timedelta(hours=2))

    assert keystore.prune(now=(deadline + timedelta(minutes=59)).timestamp()) == []
    assert keystore.prune(now=(deadline + timedelta(minutes=61)).timestamp()) == ["dead"]
    assert keystore.load_round("dead") is None
    assert keystore.load_round("alive") == {"secret": 2}


def test_a_deadline_check_that_read_the_round_before_its_stage_ended_drops_nobody(fleet):
    round_ = fleet.open()
    stale = Round.objects.get(id=round_.id)  # a check that loaded the round in stage 1 ...
    fleet.stage(round_)  # ... while every site answered it and stage 2 opened
    fleet.answer("alpha")  # and alpha answered stage 2 already
    Round.objects.filter(id=round_.id).update(deadline=timezone.now() - timedelta(seconds=1))

    assert stages.stage_close(round_=stale, stage=p.ADVERTISE_KEYS) is False

    round_.refresh_from_db()
    assert round_.stage == p.SHARE_KEYS and round_.status == Round.Status.COLLECTING
    assert not round_.contributions.filter(status=Contribution.Status.DROPPED).exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("examples", 10**30, "'examples' must be a whole number from 0 to 2147483647"),
        ("metrics", {"seconds": float("inf")}, "'seconds' must be a finite number >= 0"),
        ("site", float("inf"), "inf is not a site id"),
    ],
)
def test_metadata_out_of_range_is_refused_with_a_400_and_nothing_is_kept(
    fleet, settings, field, value, message
):
    round_ = fleet.open()
    fleet.stage(round_)
    fleet.stage(round_)  # the masked-input stage
    contribution, _ = fleet.work("alpha")
    body = {**fleet.step("alpha"), field: value}

    with pytest.raises(FederationError, match=message) as refusal:
        stages.stage_submit(contribution=contribution, body=body)

    assert refusal.value.status == 400
    assert not StageMessage.objects.filter(round=round_, stage=p.MASKED_INPUT).exists()
    assert not [
        f for f in Path(settings.MEDIA_ROOT).rglob("*") if f.is_file() and "vectors" in str(f)
    ]


def test_a_site_that_leaves_after_its_masked_input_stays_in_the_sum(fleet):
    round_ = fleet.open()
    fleet.stage(round_)
    fleet.stage(round_)
    fleet.stage(round_)  # every masked input is in
    membership = fleet.federation.memberships.get(site=fleet.sites["gamma"])

    sites.membership_leave(membership=membership)
    fleet.stage(round_, names=("alpha", "beta", "delta"))
    stages.round_aggregate(round_=round_)

    round_.refresh_from_db()
    assert round_.status == Round.Status.DONE, round_.reason
    assert round_.contributions.get(site=fleet.sites["gamma"]).status == "received"
    assert close_enough(aggregated_weights(fleet.federation, 1), fleet.expected(SITES))


def test_a_candidate_most_sites_find_worse_is_rejected_and_training_goes_on_from_the_last_accepted(
    fleet,
):
    Federation.objects.filter(id=fleet.federation.id).update(rounds=3)
    versions = ModelVersion.objects.filter(federation=fleet.federation)
    fleet.run(fleet.open())  # training round 1: version 1, a candidate
    candidate = versions.get(version=1)
    assert candidate.status == ModelVersion.Status.CANDIDATE
    assert Path(candidate.file.path).stat().st_mode & 0o077 == 0  # the coordinator's alone
    fleet.worse = {"alpha", "beta", "gamma"}  # three of four sites find it worse

    second = Round.objects.get(federation=fleet.federation, kind="train", number=2)
    fleet.stage(second)
    fleet.stage(second)  # keys and shares: the masked-input stage, which carries the task
    _, work = fleet.work("alpha")
    fleet.run(second)

    assert m.KEY_ACCEPTED in work  # the sites compared it with the accepted version 0
    rejected = versions.get(version=1)
    assert rejected.status == ModelVersion.Status.REJECTED
    assert rejected.verdict.startswith("3 of 4 sites found it worse than the accepted model")
    assert rejected.suspects == [fleet.sites["delta"].id]  # in its sum, and did not see it
    assert not versions.filter(version=2).exists()  # trained from the rejected
    third = Round.objects.get(federation=fleet.federation, kind="train", number=3)
    fleet.stage(third)
    fleet.stage(third)
    _, work = fleet.work("alpha")
    start = version_weights(versions.get(version=0))
    assert m.weights_from_bytes(m.unb64(work[m.KEY_WEIGHTS]))[0].tolist() == start[0].tolist()
    assert m.KEY_ACCEPTED not in work  # version 0 is accepted: nothing to compare
    fleet.worse = set()
    fleet.run(third)  # version 3, a candidate, scored in a last round
    evaluation = Round.objects.get(federation=fleet.federation, kind="evaluate")
    fleet.run(evaluation)

    assert versions.get(version=3).status == ModelVersion.Status.ACCEPTED
    fleet.federation.refresh_from_db()
    assert fleet.federation.status == Federation.Status.FINISHED


def test_a_vote_is_one_bit_signed_by_its_site(fleet):
    Federation.objects.filter(id=fleet.federation.id).update(rounds=2)
    fleet.run(fleet.open())
    second = Round.objects.get(federation=fleet.federation, kind="train", number=2)
    for _ in range(2):
        fleet.stage(second)  # keys and shares
    contribution, _ = fleet.work("alpha")
    body = fleet.step("alpha")
    assert body[m.KEY_VOTE] == 0 and m.KEY_VOTE_SIGNATURE in body

    for forged, message in (
        ({m.KEY_VOTE: 1}, "signature of the site's vote does not verify"),
        ({m.KEY_VOTE: 5}, "'vote' must be 0 or 1"),
        ({m.KEY_VOTE_SIGNATURE: None}, "a vote needs its 'vote_signature'"),
    ):
        with pytest.raises(FederationError, match=message):
            stages.stage_submit(contribution=contribution, body={**body, **forged})
    stages.stage_submit(contribution=contribution, body=body)


def test_a_finished_federation_runs_more_rounds_from_its_model(fleet):
    fleet.run(fleet.open())
    fleet.run(Round.objects.get(federation=fleet.federation, kind="evaluate"))
    fleet.federation.refresh_from_db()
    assert fleet.federation.status == Federation.Status.FINISHED
    with pytest.raises(FederationError, match="run from 1 to 200 more rounds"):
        federations.federation_extend(federation=fleet.federation, rounds=0)

    second = federations.federation_extend(federation=fleet.federation, rounds=2)

    fleet.federation.refresh_from_db()
    assert fleet.federation.status == Federation.Status.RUNNING
    assert fleet.federation.rounds == 3
    assert (second.kind, second.number, second.status) == ("train", 2, Round.Status.COLLECTING)
    fleet.stage(second)  # the sites' keys: then the model to train from is handed out
    fleet.stage(second)
    _, work = fleet.work("alpha")
    latest = ModelVersion.objects.filter(federation=fleet.federation).order_by("-version")[0]
    assert latest.version == 1 and latest.status == ModelVersion.Status.ACCEPTED
    given = m.weights_from_bytes(m.unb64(work[m.KEY_WEIGHTS]))
    assert [w.tolist() for w in given] == [w.tolist() for w in version_weights(latest)]
    with pytest.raises(FederationError, match="only a finished federation can run more"):
        federations.federation_extend(federation=fleet.federation, rounds=2)


def test_a_federation_that_never_trained_cannot_be_extended(fleet):
    with pytest.raises(FederationError, match="has trained no round yet"):
        federations.federation_extend(federation=fleet.federation, rounds=2)
