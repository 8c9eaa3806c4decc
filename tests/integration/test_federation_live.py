"""Whole federations over HTTP and Celery: real processes, real broker, real database."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from federation.core.engine.training import CHOICE_CONFIDENCE, CHOICES, head_of
from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import fingerprint
from federation.models import Contribution, Federation, ModelVersion, Round, Site, StageMessage
from federation.services import federations, sites
from federation.services.versions import version_weights
from tests.stack import Stack
from turbofan.data.files import read_engine_file
from turbofan.data.partition import plan_iid, write_fleets, write_partition
from turbofan.models.artefact import TREES, RulModel
from turbofan.models.trees import BoostingSettings, Ensemble
from worker.console import app as console
from worker.console.state import console_secret
from worker.peers import PeerBook
from worker.site_runtime import read_outbox

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def site_dirs(tmp_path_factory, cmapss_dir):
    units = read_engine_file(cmapss_dir / "train_FD001.txt")["unit"].to_numpy()
    plan = plan_iid("FD001", units, 4, seed=3)
    out = write_partition(plan, cmapss_dir, tmp_path_factory.mktemp("data") / "sites")
    folders = [out / share.name for share in plan.sites]
    write_fleets(cmapss_dir, "FD001", folders, seed=3)  # each site's engines in service
    return folders


def make_federation(
    name: str,
    *,
    rounds: int,
    min_sites: int,
    deadline: int,
    members: list[str],
    local_epochs: int = 1,
    personal_epochs: int = 0,
    private_head: bool = False,
    boosting: BoostingSettings | None = None,
) -> tuple[Federation, dict[str, str]]:
    users = get_user_model()
    federation = federations.federation_create(
        name=name,
        admin=users.objects.create(username=f"admin-{name}"),
        rounds=rounds,
        min_sites=min_sites,
        deadline=deadline,
        local_epochs=local_epochs,
        personal_epochs=personal_epochs,
        private_head=private_head,
        boosting=boosting,
    )
    credentials = {}
    for site_name in members:
        site = sites.site_create(
            owner=users.objects.create(username=f"owner-{site_name}"), name=site_name
        )
        sites.membership_approve(
            membership=sites.membership_request(federation=federation, site=site)
        )
        credentials[site_name] = sites.site_issue_credential(site=site)
    return federation, credentials


def wait_for(federation: Federation, stack: Stack, seconds: float) -> Federation:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        federation.refresh_from_db()
        if federation.status in (Federation.Status.FINISHED, Federation.Status.FAILED):
            return federation
        time.sleep(0.5)
    logs = "\n".join(f"--- {n}\n{stack.log(n)}" for n in stack.processes)
    raise AssertionError(f"the federation did not finish in {seconds} s:\n{logs}")


def wait_for_sites(names: list[str], stack: Stack, seconds: float = 120) -> None:
    """Until every site's worker has reported its data and registered its identity key
    (a secure round leaves out a site without one)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready = Site.objects.filter(name__in=names, data_summary__isnull=False).exclude(
            identity_key=""
        )
        if ready.count() == len(names):
            return
        time.sleep(0.3)
    logs = "\n".join(f"--- {n}\n{stack.log(n)}" for n in stack.processes)
    raise AssertionError(f"the sites did not come up in {seconds} s:\n{logs}")


def run_live(
    tmp_path: Path,
    federation: Federation,
    credentials: dict[str, str],
    folders: dict[str, Path],
    seconds: float = 300,
) -> Federation:
    """Web, coordinator and one real site worker per folder; the federation started and
    followed until it finishes or fails."""
    with Stack(tmp_path) as stack:
        stack.start_web()
        stack.start("coordinator", "coordinator_worker")
        for name, folder in folders.items():
            stack.start_site(name, folder, credentials[name])
        wait_for_sites(list(folders), stack)
        federations.federation_start(federation=federation)
        return wait_for(federation, stack, seconds)


def names(count: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"site-{tag}-{i}" for i in range(1, count + 1)]


def assert_chosen_by_the_rule(figures: dict) -> None:
    """The federation's model, unless another beat it with confidence (then the best of
    those), as the site's choice.json says."""
    sure = {n for n, c in figures["confidence"].items() if c >= CHOICE_CONFIDENCE}
    if figures["choice"] == "global":
        assert not sure
    else:
        assert figures["val_rmse"][figures["choice"]] == min(figures["val_rmse"][n] for n in sure)


def test_three_sites_run_three_rounds_and_the_global_model_improves(tmp_path, site_dirs):
    site_names = names(3)
    federation, credentials = make_federation(
        "live", rounds=3, min_sites=3, deadline=120, members=site_names
    )
    federation = run_live(
        tmp_path, federation, credentials, dict(zip(site_names, site_dirs[:3], strict=True))
    )

    assert federation.status == Federation.Status.FINISHED, federation.reason
    versions = list(ModelVersion.objects.filter(federation=federation).order_by("version"))
    assert [v.version for v in versions] == [0, 1, 2, 3]
    for version in versions:  # each is a whole model file whose hash matches the record
        assert RulModel.from_bytes(version.file.read()).hash == version.sha256
    # Each site scores the incoming global model on its own validation engines.
    val = [v.metrics["federated_val_rmse"] for v in versions[:3]]
    assert val[0] > val[1] > val[2]
    assert versions[3].metrics["test"]["literature"]["rmse"] < 30
    rounds = Round.objects.filter(federation=federation)
    # ... and a last round scores the last candidate; the honest sites accept each one.
    assert [r.kind for r in rounds] == ["points", "moments", "train", "train", "train", "evaluate"]
    assert all(v.status == ModelVersion.Status.ACCEPTED for v in versions[1:]), [
        v.verdict for v in versions
    ]
    assert versions[3].metrics["federated_val_rmse"] < val[0]
    for name in site_names:  # each site's optimiser went on from round to round, at home
        (kept,) = (tmp_path / "sites" / name).glob("private-optimiser-*.npz")
        with np.load(kept) as arrays:
            steps = int(arrays["t0"][0])
        assert steps > 0 and steps % 3 == 0  # the same local steps in each of three rounds
    assert all(r.stage == p.UNMASK for r in rounds)  # every round went through the secure sum
    assert all(r.status == Round.Status.DONE for r in rounds)
    assert (
        Contribution.objects.filter(
            round__federation=federation, status=Contribution.Status.RECEIVED
        ).count()
        == 18
    )


def test_a_site_killed_mid_round_is_dropped_and_recovered_through_the_shares(tmp_path, site_dirs):
    site_names = names(4)
    tolerant, credentials = make_federation(
        "tolerant", rounds=2, min_sites=3, deadline=25, members=site_names
    )
    strict, _ = make_federation("strict", rounds=1, min_sites=4, deadline=15, members=[])
    for name in site_names:  # the same four sites, all approved in the strict federation too
        membership = sites.membership_request(
            federation=strict, site=tolerant.memberships.get(site__name=name).site
        )
        sites.membership_approve(membership=membership)
    with Stack(tmp_path) as stack:
        stack.start_web()
        stack.start("coordinator", "coordinator_worker")
        for name, folder in zip(site_names, site_dirs, strict=True):
            stack.start_site(name, folder, credentials[name])
        wait_for_sites(site_names, stack)
        federations.federation_start(federation=tolerant)
        # Killed once it has shared its keys in the first training round, while it trains
        # (the setup rounds' inputs are computed too fast to be caught): the others' masks
        # with it cancel only if the coordinator rebuilds its mask key from their shares.
        while not StageMessage.objects.filter(
            round__federation=tolerant,
            round__kind="train",
            site__name=site_names[2],
            stage=p.SHARE_KEYS,
        ).exists():
            time.sleep(0.02)
        stack.kill(site_names[2])

        tolerant = wait_for(tolerant, stack, 240)
        federations.federation_start(federation=strict)
        strict = wait_for(strict, stack, 120)
        failed_status, failed_reason = strict.status, strict.reason
        federations.federation_start(federation=strict)  # the admin may try again at once

        assert strict.round_set.filter(status=Round.Status.COLLECTING).exists()

    assert tolerant.status == Federation.Status.FINISHED, tolerant.reason
    # It died in the first training round, after sharing its keys.
    first = Round.objects.get(federation=tolerant, kind="train", number=1)
    assert first.status == Round.Status.DONE
    assert first.contributions.filter(status="dropped").get().site.name == site_names[2]
    assert first.contributions.filter(status="received").count() == 3
    unmasked = StageMessage.objects.filter(round=first, stage=p.UNMASK)
    assert all(m.body[p.KEY_SHARES] for m in unmasked)  # its mask key was rebuilt
    for round_ in Round.objects.filter(federation=tolerant, kind="train"):
        assert round_.status == Round.Status.DONE
        assert round_.contributions.filter(status="received").count() == 3
    assert failed_status == Federation.Status.FAILED
    assert "3 of 4 sites answered the advertise_keys stage by its deadline" in failed_reason
    assert "the federation 4: nothing is aggregated" in failed_reason


def console_rul(state: Path, settings, client) -> dict[int, float]:
    """The predicted RUL of each engine in service, as the site's console plans with it."""
    settings.ROOT_URLCONF = "worker.console.urls"
    console.configure(state)
    client.get(f"/?key={console_secret(state)}")
    exported = client.get("/fleet.csv").content.decode()
    return {
        int(r["unit"]): float(r["predicted_rul"]) for r in csv.DictReader(io.StringIO(exported))
    }


def predicted_rul(state: Path, site_dirs: list[Path]) -> dict[int, float]:
    """``manage.py predict --site-state`` on the site's fleet file."""
    data = Path(json.loads((state / "site.json").read_text())["data_dir"])
    assert data.resolve() in [folder.resolve() for folder in site_dirs]
    out = io.StringIO()
    call_command("predict", site_state=state, test_file=data / "test_FD001.txt", stdout=out)
    return {
        int(r["unit"]): float(r["predicted_rul"])
        for r in csv.DictReader(io.StringIO(out.getvalue()))
    }


def test_with_personalisation_each_site_keeps_its_chosen_model_and_the_sum_counts(
    tmp_path, site_dirs, settings, client
):
    """With private heads (FedPer) too: each site's head stays in its state folder."""
    site_names = names(3)
    federation, credentials = make_federation(
        "personal",
        rounds=2,
        min_sites=3,
        deadline=120,
        members=site_names,
        personal_epochs=2,
        private_head=True,
    )
    federation = run_live(
        tmp_path, federation, credentials, dict(zip(site_names, site_dirs[:3], strict=True))
    )

    assert federation.status == Federation.Status.FINISHED, federation.reason
    rounds = Round.objects.filter(federation=federation)
    assert [r.kind for r in rounds][-2:] == ["evaluate", "personalise"]
    last = rounds.get(kind="personalise")
    assert last.stage == p.UNMASK and last.status == Round.Status.DONE
    # Only the bodies were summed: the federation's head is still its initial one.
    versions = list(federation.versions.order_by("version"))
    first, final = version_weights(versions[0]), version_weights(versions[-1])
    assert versions[-1].version > 0
    assert all(np.array_equal(a, b) for a, b in zip(head_of(first), head_of(final), strict=True))
    assert not np.array_equal(first[0], final[0])
    chosen = []
    for name in site_names:
        state = tmp_path / "sites" / name
        (head_file,) = state.glob("private-head-*.npz")
        with np.load(head_file) as kept:
            assert not np.array_equal(kept["t0"], head_of(final)[0])  # trained here
        figures = json.loads((state / "choice.json").read_text())
        assert_chosen_by_the_rule(figures)
        model = RulModel.load(state / "chosen.rulmodel")
        assert model.meta["choice"] == figures["choice"]
        chosen.append(figures["choice"])
        # Beside it, for the site's console: its local model, the federation's, and the
        # engines it kept back for validation (none of which it trained on).
        assert RulModel.load(state / "local.rulmodel").meta["choice"] == "alone"
        assert RulModel.load(state / "federation.rulmodel").meta["choice"] == "global"
        assert figures["val_units"] and len(figures["val_units"]) < 10
        assert figures["federation"] == {"id": federation.id, "name": federation.name}
        # Its console plans with that model: the same RULs as `predict` on its fleet.
        assert console_rul(state, settings, client) == predicted_rul(state, site_dirs)
        # Each secure round the site noted its peers' keys: the ones the coordinator
        # registered for them, fingerprint for fingerprint.
        peers = PeerBook(state).entries()
        assert peers and all(not e["changed"] for e in peers)
        others = Site.objects.filter(name__in=site_names).exclude(name=name)
        registered = {fingerprint(base64.b64decode(o.identity_key)) for o in others}
        assert all(set(e["peers"].values()) == registered for e in peers)
        # The site's choice and figures stay home: nothing it sent holds them.
        sent = json.dumps([e for e in read_outbox(state) if e["method"] == "POST"])
        assert "val_rmse" not in sent and "choice" not in sent
    assert last.outcome["choices"] == {c: chosen.count(c) for c in CHOICES}


def test_three_sites_grow_boosted_trees_from_the_secure_sum_of_their_histograms(
    tmp_path, site_dirs, settings, client
):
    site_names = names(3)
    boosting = BoostingSettings(trees=3, depth=2, learning_rate=0.3, bins=16, patience=0)
    federation, credentials = make_federation(
        "trees",
        rounds=0,
        min_sites=3,
        deadline=120,
        members=site_names,
        personal_epochs=1,
        boosting=boosting,
    )
    federation = run_live(
        tmp_path, federation, credentials, dict(zip(site_names, site_dirs[:3], strict=True))
    )

    assert federation.status == Federation.Status.FINISHED, federation.reason
    kinds = list(Round.objects.filter(federation=federation).values_list("kind", flat=True))
    assert kinds[:3] == ["points", "moments", "sketch"] and kinds[-2:] == [
        "evaluate",
        "personalise",
    ]
    assert kinds.count("boost") == 3 * 2 + 1  # a round a level, and one that ends growing
    trees = [v for v in federation.versions.order_by("version") if v.version > 0]
    assert [v.version for v in trees] == [1, 2, 3]
    assert all(v.status == ModelVersion.Status.ACCEPTED for v in trees)
    final = RulModel.from_bytes(trees[-1].file.read())
    assert final.kind == TREES and Ensemble.from_arrays(final.members[0]).trees == 3
    assert trees[-1].metrics["test"]["literature"]["rmse"] < 40
    # What the coordinator kept of a boost round: masked vectors, never a histogram.
    boost = StageMessage.objects.filter(round__federation=federation, round__kind="boost")
    assert {m.stage for m in boost} == set(p.STAGES)
    assert all(m.stage == p.MASKED_INPUT for m in boost if m.vector)
    for name in site_names:
        state = tmp_path / "sites" / name
        chosen = RulModel.load(state / "chosen.rulmodel")
        assert chosen.kind == TREES
        figures = json.loads((state / "choice.json").read_text())
        assert_chosen_by_the_rule(figures)
        assert console_rul(state, settings, client) == predicted_rul(state, site_dirs)
