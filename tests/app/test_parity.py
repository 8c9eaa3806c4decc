"""One engine, two drivers: a live federation and the in-process simulation, given the same
sites, data and seeds, train the same global model bit for bit and exchange the same
messages.

The live federation runs on the database and the site API (the sites are the real site
runtime, talking to the API through Django's test client; the coordinator's queued work
is run in line). The simulation runs the same rounds in memory. Secure aggregation's sums
are exact, so keys and masks may differ while every sum, and so every model, is the same.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from django.test import Client

from federation.core.engine import coordinator as c
from federation.core.engine import state as fs
from federation.core.engine.simulation import Simulation, run_simulation
from federation.core.engine.training import FederatedTraining
from federation.core.messages import Kind
from federation.models import Federation, Round, StageMessage
from federation.services import federations, stages
from federation.services.versions import latest_accepted, version_weights
from turbofan.data.checks import training_rows
from turbofan.data.files import read_engine_file
from turbofan.data.partition import plan_iid, write_partition
from turbofan.models.fit import NetworkRecipe
from turbofan.models.training import TrainConfig
from worker.site_runtime import SiteRuntime

pytestmark = pytest.mark.django_db

SITES = ("alpha", "beta", "gamma")
RECIPE = NetworkRecipe(
    net_options={"hidden": 16},
    train=TrainConfig(epochs=1, batch_size=128),
    ensemble=1,
    window=30,
    cycle_channel=True,
    pad_training=True,
)
TRAINING = FederatedTraining(rounds=2, local_epochs=1, lr=3e-3, lr_final=1e-3, patience=0, seed=4)


@pytest.fixture(scope="module")
def site_dirs(cmapss_dir, tmp_path_factory) -> dict[str, Path]:
    """Twelve FD001 engines each for alpha, beta and gamma, as ordinary C-MAPSS files."""
    units = read_engine_file(cmapss_dir / "train_FD001.txt")["unit"].to_numpy()
    plan = plan_iid("FD001", units[units <= 36], 3, seed=2, holdout=0)
    out = write_partition(plan, cmapss_dir, tmp_path_factory.mktemp("parity") / "sites")
    return {name: out / share.name for name, share in zip(SITES, plan.sites, strict=True)}


class ClientRuntime(SiteRuntime):
    """The site's own runtime, whose HTTP goes through Django's test client."""

    client: Client

    def transport(self, method, url, data, headers):
        path = url.removeprefix(self.coordinator.rstrip("/"))
        response = getattr(self.client, method.lower())(
            path,
            data=data,
            content_type=headers["Content-Type"],
            HTTP_AUTHORIZATION=headers["Authorization"],
        )
        return response.status_code, response.content


def run_live(
    cast, site_dirs: dict[str, Path], keys: Path, training: FederatedTraining = TRAINING
) -> Federation:
    spec = {"recipe": RECIPE.to_dict(), "training": training.to_dict()}
    federation = federations.federation_create(
        name="parity",
        admin=cast.admin,
        rounds=training.rounds,
        local_epochs=1,
        model_spec=spec,
        boosting=training.boosting_settings(),
    )
    runtimes = {}
    for name, folder in site_dirs.items():
        rows = len(training_rows(folder))
        member = cast.add_member(name, rows=rows, keys=keys, federation=federation)
        runtime = ClientRuntime("http://coordinator", member.credential, folder, keys / name)
        runtime.client = Client()
        runtimes[name] = runtime
    federations.federation_start(federation=federation)
    while federation.status == Federation.Status.RUNNING:
        for runtime in runtimes.values():  # each site answers the stage it is asked for
            status, work = runtime.request("GET", "/api/v1/work")
            if status == 200:
                runtime.answer(work)
        for round_ in Round.objects.filter(federation=federation, status=Round.Status.AGGREGATING):
            stages.round_aggregate(round_=round_)  # what the coordinator's worker does
        federation.refresh_from_db()
    return federation


def run_simulated(site_dirs: dict[str, Path]) -> tuple[fs.FederationState, list]:
    frames = {name: training_rows(folder) for name, folder in site_dirs.items()}
    simulation = Simulation(
        frames, template=RECIPE.pipeline("FD001"), recipe=RECIPE, training=TRAINING
    )
    state = simulation.setup()
    for number in (1, 2):
        outcome = simulation.run_round(Kind.TRAIN, number, state)
        state = fs.advance(state, Kind.TRAIN, outcome, number=number)
    state = fs.advance(state, Kind.EVALUATE, simulation.run_round(Kind.EVALUATE, 2, state))
    return state, simulation.log


def live_messages(federation: Federation) -> list[tuple[str, str, str, int]]:
    messages = StageMessage.objects.filter(round__federation=federation).select_related(
        "round", "site"
    )
    return sorted(
        (
            m.site.name,
            m.stage,
            m.round.kind,
            m.vector.size if m.vector else c.message_bytes(m.stage, m.body),
        )
        for m in messages
    )


def test_a_live_federation_and_the_simulation_train_the_same_model_bit_for_bit(
    cast, site_dirs, tmp_path, scheduled
):
    live = run_live(cast, site_dirs, tmp_path / "keys")
    simulated, log = run_simulated(site_dirs)

    assert live.status == Federation.Status.FINISHED, live.reason
    assert live.regimes == simulated.regimes
    assert json.dumps(live.pipeline, sort_keys=True) == json.dumps(
        simulated.pipeline, sort_keys=True
    )
    accepted = latest_accepted(live)
    assert accepted is not None
    final = version_weights(accepted)
    assert simulated.weights is not None
    assert len(final) == len(simulated.weights)
    for live_array, simulated_array in zip(final, simulated.weights, strict=True):
        assert live_array.dtype == simulated_array.dtype
        assert np.array_equal(live_array, simulated_array)  # bit for bit
    # And the same messages: by site, stage, kind of round and bytes of content.
    assert live_messages(live) == sorted((e.site, e.stage, e.kind, e.bytes) for e in log)
    # 5 rounds (2 setup, 2 training, 1 scoring the last candidate), 4 stages, 3 sites
    assert len(log) == 5 * 4 * len(SITES)


def test_the_training_settings_a_live_federation_runs_are_its_spec_and_its_own_fields(cast):
    spec = {"recipe": RECIPE.to_dict(), "training": replace(TRAINING, rounds=99).to_dict()}
    federation = federations.federation_create(
        name="settings", admin=cast.admin, rounds=2, local_epochs=1, model_spec=spec
    )

    from federation.specs import federation_training

    assert federation_training(federation) == TRAINING


TREES = FederatedTraining(
    rounds=0,
    patience=0,
    seed=4,
    # Every row in every tree: a site samples its rows by its id, which a live site and a
    # simulated one do not share.
    boosting={
        "trees": 3,
        "depth": 2,
        "learning_rate": 0.3,
        "bins": 16,
        "min_child": 10,
        "subsample": 1.0,
    },
)


def test_a_live_federation_and_the_simulation_grow_the_same_trees(
    cast, site_dirs, tmp_path, scheduled
):
    live = run_live(cast, site_dirs, tmp_path / "keys", TREES)
    frames = {name: training_rows(folder) for name, folder in site_dirs.items()}
    simulated = run_simulation(frames, RECIPE.pipeline("FD001"), RECIPE, TREES)

    assert live.status == Federation.Status.FINISHED, live.reason
    accepted = latest_accepted(live)
    assert accepted is not None and accepted.version == 3  # a version a tree
    grown = version_weights(accepted)
    for live_array, simulated_array in zip(grown, simulated.model.members[0], strict=True):
        assert np.array_equal(live_array, simulated_array)  # bit for bit
    kinds = Round.objects.filter(federation=live).values_list("kind", flat=True)
    assert list(kinds).count("boost") == 3 * 2 + 1  # a round a level, then one that stops
    assert live_messages(live) == sorted((e.site, e.stage, e.kind, e.bytes) for e in simulated.log)
