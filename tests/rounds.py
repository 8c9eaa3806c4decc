"""A federation at its first training round with three member sites, and those sites
answering its stages through the services, as their workers would (without HTTP).

Shared by the tests of rounds, statistics and the privacy budget on the database.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from federation.core import messages as m
from federation.core.engine.rounds import RoundParameters
from federation.core.engine.site import (
    SiteData,
    beside_input,
    site_input,
    site_step,
    training_input,
)
from federation.core.engine.training import LocalResult, encode_scores, initial_weights
from federation.core.fixed_point import STEP
from federation.core.messages import Kind
from federation.models import Contribution, Federation, ModelVersion, Round
from federation.services import rounds, stages
from federation.services.versions import version_build, version_weights
from federation.specs import federation_recipe, federation_training
from tests.cast import Cast, Member
from turbofan.data.features import FeaturePipeline
from turbofan.data.files import read_engine_file
from turbofan.models.artefact import RulModel

SITES = ("alpha", "beta", "gamma", "delta")
# Each site's examples, which it reports as its rows: its public weight in training.
EXAMPLES = {"alpha": 200, "beta": 300, "gamma": 600, "delta": 900}
VAL_SSE, VAL_COUNT = 7500.0, 300  # each site's error on its validation windows: RMSE 5


@pytest.fixture(scope="module")
def pipeline_dict(cmapss_dir):
    frame = read_engine_file(cmapss_dir / "train_FD001.txt")
    template = federation_recipe(Federation(name="x")).pipeline("FD001")
    return template.fit(frame[frame["unit"] <= 30]).to_dict()


class Fleet:
    """The cast's federation after its setup rounds, with members alpha, beta, gamma and
    delta (a secure round may lose one and still sum three inputs)."""

    def __init__(self, cast: Cast, members: dict[str, Member]) -> None:
        self.cast, self.federation, self.members = cast, cast.federation, members
        self.sites = {name: member.site for name, member in members.items()}
        # Each site's keystore entry per round, as a worker keeps it.
        self.states: dict[tuple[str, str], dict] = {}
        self.start = version_weights(self.federation.versions.get(version=0))
        rng = np.random.default_rng(7)
        # What each site "trained": the start plus its own change.
        self.trained = {
            name: [w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in self.start]
            for name in members
        }
        self.frames: dict[str, pd.DataFrame] = {}  # the sites' rows, for statistics rounds
        # The sites that find a candidate model worse than the accepted one (they vote so).
        self.worse: set[str] = set()

    def open(self, kind: Kind = Kind.TRAIN, number: int = 1) -> Round:
        return rounds.round_open(federation=self.federation, kind=kind, number=number)

    def work(self, name: str) -> tuple[Contribution, dict]:
        contribution = stages.work_next(site=self.sites[name])
        assert contribution is not None, f"no work for {name}"
        return contribution, stages.work_message(contribution)

    def step(self, name: str, work: dict | None = None) -> dict:
        """What site ``name`` would send in the current stage (nothing is sent)."""
        if work is None:
            _, work = self.work(name)
        parameters = RoundParameters.from_json(work[m.KEY_PROTOCOL][m.PARAMETERS])

        def compute():
            kind = work[m.KEY_KIND]
            if kind not in (Kind.TRAIN, Kind.EVALUATE):
                return site_input(work, SiteData(self.frames[name]), parameters)
            accepted = None  # with a candidate to judge: the accepted model's error here
            if m.KEY_ACCEPTED in work:
                accepted = VAL_SSE / 4 if name in self.worse else VAL_SSE
            trained = LocalResult(
                self.trained[name], EXAMPLES[name], VAL_SSE, VAL_COUNT, 0.5, accepted
            )
            site = self.sites[name].id
            if kind == Kind.EVALUATE:
                return encode_scores(trained, parameters.weight_of((site,))), beside_input(trained)
            reference = m.weights_from_bytes(m.unb64(work[m.KEY_WEIGHTS]))
            return training_input(trained, reference, parameters, site)

        key = (name, parameters.round_id)
        keystore = self.members[name].keystore
        assert keystore is not None, f"{name} was added without keys"
        identity = keystore.identity()
        body, self.states[key] = site_step(
            work, self.sites[name].id, identity, self.states.get(key), compute
        )
        return body

    def answer(self, name: str) -> None:
        contribution, _ = self.work(name)
        stages.stage_submit(contribution=contribution, body=self.step(name))

    def stage(self, round_: Round, names=SITES) -> None:
        """Every named site answers the current stage; then the stage is checked."""
        for name in names:
            self.answer(name)
        round_.refresh_from_db()
        stages.stage_close(round_=round_)
        round_.refresh_from_db()

    def run(self, round_: Round, names=SITES) -> None:
        """Every stage of the round, answered by the named sites, then aggregated."""
        while round_.status == Round.Status.COLLECTING:
            self.stage(round_, names)
        stages.round_aggregate(round_=round_)
        round_.refresh_from_db()

    def expected(self, names) -> list[np.ndarray]:
        total = sum(EXAMPLES[n] for n in names)
        return [
            sum(self.trained[n][i].astype(np.float64) * EXAMPLES[n] / total for n in names)
            for i in range(len(self.start))
        ]


@pytest.fixture
def fleet(cast, pipeline_dict, tmp_path, scheduled) -> Fleet:
    # One training round: what a round leaves is easiest to see when nothing follows it.
    Federation.objects.filter(id=cast.federation.id).update(pipeline=pipeline_dict, rounds=1)
    cast.federation.refresh_from_db()
    members = {
        name: cast.add_member(name, rows=EXAMPLES[name], keys=tmp_path / "keys") for name in SITES
    }
    pipeline = FeaturePipeline.from_dict(pipeline_dict)
    training = federation_training(cast.federation)
    weights = initial_weights(pipeline, federation_recipe(cast.federation), training.member_seed())
    version = version_build(cast.federation, pipeline_dict, 0, weights)
    version.store(cast.federation, None, status=ModelVersion.Status.ACCEPTED)
    return Fleet(cast, members)


def aggregated_weights(federation: Federation, version: int) -> list[np.ndarray]:
    model = ModelVersion.objects.get(federation=federation, version=version)
    return RulModel.from_bytes(model.file.read()).members[0]


def close_enough(weights, expected, sites: int = len(SITES)) -> bool:
    # Each site's weighted value is off by half a step; dividing by the summed weight
    # (0.3 here: examples / the reported rows) scales the error up; then float32.
    return all(
        np.max(np.abs(w - e)) < sites * STEP / 0.3 + 1e-6 * np.abs(e).max()
        for w, e in zip(weights, expected, strict=True)
    )
