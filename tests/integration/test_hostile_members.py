"""A member that lies, against real site processes over HTTP: four honest site workers
and one modified worker (``tests/integration/liar.py``) with a real credential.

The liar spoils the model of training round 1, seals garbage to a victim in round 2 and
reveals false shares in round 3. The federation rejects the spoiled candidate, names the
liar and leaves it out of round 2, rebuilds round 3's secrets from the honest shares,
suspends the liar, and finishes within 10% of the test RMSE of the same federation with
every member honest.
"""

from __future__ import annotations

from typing import Any

import pytest

from federation.core.secagg import protocol as p
from federation.models import (
    Contribution,
    Fault,
    Federation,
    Membership,
    ModelVersion,
    Round,
)
from federation.services import federations
from tests.integration.test_federation_live import (
    make_federation,
    names,
    wait_for,
    wait_for_sites,
)
from tests.stack import Stack
from turbofan.data.files import read_engine_file
from turbofan.data.partition import plan_iid, write_partition

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

# Enough rounds for both federations to come close to where they level off: the liar
# costs the hostile one two rounds (the spoiled candidate, and the round trained from it).
ROUNDS = 8
SETTINGS: dict[str, Any] = {"rounds": ROUNDS, "min_sites": 3, "deadline": 60, "local_epochs": 3}


@pytest.fixture(scope="module")
def five_sites(tmp_path_factory, cmapss_dir):
    units = read_engine_file(cmapss_dir / "train_FD001.txt")["unit"].to_numpy()
    plan = plan_iid("FD001", units, 5, seed=11)
    out = write_partition(plan, cmapss_dir, tmp_path_factory.mktemp("data") / "sites")
    return [out / share.name for share in plan.sites]


def final_test_rmse(federation: Federation) -> float:
    newest = (
        ModelVersion.objects.filter(federation=federation, status=ModelVersion.Status.ACCEPTED)
        .order_by("-version")
        .first()
    )
    assert newest is not None
    return float(newest.metrics["test"]["literature"]["rmse"])


def run(tmp_path, folders, *, liar: bool) -> tuple[Federation, list[str], Stack]:
    site_names = names(5)
    federation, credentials = make_federation(
        "hostile" if liar else "honest", members=site_names, **SETTINGS
    )
    folder = tmp_path / ("hostile" if liar else "honest")
    folder.mkdir()
    with Stack(folder) as stack:
        stack.start_web()
        stack.start("coordinator", "coordinator_worker")
        for name, folder in zip(site_names[:4], folders[:4], strict=True):
            stack.start_site(name, folder, credentials[name])
        if liar:
            victim = federation.memberships.get(site__name=site_names[0]).site_id
            stack.start_module(
                site_names[4],
                "tests.integration.liar",
                "--coordinator",
                stack.url,
                "--data-dir",
                str(folders[4]),
                "--state-dir",
                str(stack.tmp / "sites" / site_names[4]),
                "--victim",
                str(victim),
                "--plan",
                "1=poison,2=garble,3=unmask",
                env={"SITE_CREDENTIAL": credentials[site_names[4]]},
            )
        else:
            stack.start_site(site_names[4], folders[4], credentials[site_names[4]])
        wait_for_sites(site_names, stack)
        federations.federation_start(federation=federation)
        federation = wait_for(federation, stack, 600)
        logs = {name: stack.log(name) for name in stack.processes}
    assert federation.status == Federation.Status.FINISHED, (federation.reason, logs)
    return federation, site_names, stack


def test_a_lying_member_learns_nothing_spoils_nothing_and_stops_nothing(tmp_path, five_sites):
    honest, _, _ = run(tmp_path, five_sites, liar=False)
    hostile, site_names, _ = run(tmp_path, five_sites, liar=True)
    liar = hostile.memberships.get(site__name=site_names[4]).site
    victim = hostile.memberships.get(site__name=site_names[0]).site
    training = {
        r.number: r for r in Round.objects.filter(federation=hostile, kind="train", status="done")
    }

    # Round 1's spoiled candidate is never adopted: the next round's sites reject it.
    first = ModelVersion.objects.get(federation=hostile, version=1)
    assert first.status == ModelVersion.Status.REJECTED, first.verdict
    assert liar.id in first.suspects  # its input made the candidate

    # Round 2: the liar is named and excluded, and the others complete the very round.
    garbled = Fault.objects.get(round=training[2], site=liar)
    assert garbled.stage == p.MASKED_INPUT
    assert f"shares for site {victim.id} are bad" in garbled.detail
    assert Contribution.objects.get(round=training[2], site=liar).status == "excluded"
    summed = Contribution.objects.filter(round=training[2], status="received")
    assert victim.id in summed.values_list("site_id", flat=True) and summed.count() == 4

    # Round 3: its false shares are attributed and the secrets rebuilt from the honest ones.
    revealed = Fault.objects.get(round=training[3], site=liar)
    assert revealed.stage == p.UNMASK and "committed to" in revealed.detail

    # At fault in two rounds: suspended, and the federation went on without it.
    assert Membership.objects.get(federation=hostile, site=liar).status == "suspended"
    assert not Contribution.objects.filter(round=training[ROUNDS], site=liar).exists()
    assert not Fault.objects.exclude(site=liar).filter(federation=hostile).exists()

    # No round published fewer than three sites' inputs, and none stopped the federation.
    for round_ in training.values():
        assert Contribution.objects.filter(round=round_, status="received").count() >= 3
    assert not Round.objects.filter(federation=hostile, status="failed").exists()

    # And the model is as good as the honest federation's, within 10%.
    print(
        f"test RMSE: honest {final_test_rmse(honest):.2f}, hostile {final_test_rmse(hostile):.2f}"
    )
    assert final_test_rmse(hostile) <= 1.1 * final_test_rmse(honest), (
        final_test_rmse(hostile),
        final_test_rmse(honest),
    )
