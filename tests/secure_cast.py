"""A federation ready for secure rounds, driven through the services as sites would:
shared by the tests of secure training, statistics and the privacy budget."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from federation import secure, services
from federation.core import messages
from federation.core.client import secure_input
from federation.core.secagg import protocol as p
from federation.core.secagg import session
from federation.core.secagg.aggregate import DEFAULT_CLIP, PRECISE_LEVELS
from federation.models import (
    Contribution,
    Federation,
    ModelVersion,
    Round,
    Site,
)
from federation.specs import federation_recipe
from turbofan.data.files import read_engine_file
from turbofan.models.artefact import RulModel
from worker.keystore import Keystore

SITES = ("alpha", "beta", "gamma")


@pytest.fixture(scope="module")
def pipeline_dict(cmapss_dir):
    frame = read_engine_file(cmapss_dir / "train_FD001.txt")
    template = federation_recipe(Federation(name="x")).pipeline("FD001")
    return template.fit(frame[frame["unit"] <= 30]).to_dict()


@pytest.fixture
def scheduled(monkeypatch):
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(
        "worker.tasks.schedule_deadline", lambda r: calls.append(("deadline", r.id))
    )
    monkeypatch.setattr("worker.tasks.enqueue_aggregate", lambda i: calls.append(("aggregate", i)))
    monkeypatch.setattr("worker.tasks.enqueue_close", lambda i: calls.append(("close", i)))
    return calls


class Cast:
    """A federation at its first training round, three sites with keystores."""

    def __init__(self, federation: Federation, sites: dict[str, Site], keys: dict[str, Keystore]):
        self.federation, self.sites, self.keys = federation, sites, keys
        # Each site's keystore entry per secure round, as a worker keeps it.
        self.states: dict[tuple[str, str], dict] = {}
        version = federation.versions.get(version=0)
        self.start = RulModel.from_bytes(version.file.read()).members[0]
        rng = np.random.default_rng(7)
        # What each site "trained": the start plus its own change, and its examples.
        self.trained = {
            name: [w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in self.start]
            for name in sites
        }
        self.examples = {"alpha": 100, "beta": 300, "gamma": 600}
        self.frames: dict[str, pd.DataFrame] = {}  # the sites' rows, for statistics rounds

    def open(self) -> Round:
        return services.round_open(federation=self.federation, kind=Round.Kind.TRAIN, number=1)

    def work(self, name: str) -> tuple[Contribution, dict]:
        contribution = services.work_next(site=self.sites[name])
        assert contribution is not None, f"no work for {name}"
        return contribution, services.work_message(contribution)

    def step(self, name: str, part: dict | None = None) -> dict:
        """What site ``name`` would send in the current stage (nothing is sent)."""
        contribution, work = self.work(name)
        part = part or work[session.WORK_KEY]

        def masked_input():  # what a site's worker computes after training
            result = {
                "examples": self.examples[name],
                "metrics": {"val_sse": 7500.0, "val_count": 300, "seconds": 0.5},
                "payload": messages.b64(messages.weights_to_bytes(self.trained[name])),
            }
            frame = self.frames.get(name)
            return secure_input(frame, work, part[session.ROUND_PARAMETERS], lambda: result)

        key = (name, part[session.ROUND_PARAMETERS][p.ROUND])
        body, self.states[key] = session.site_step(
            part,
            self.sites[name].id,
            self.keys[name].identity(),
            self.states.get(key),
            masked_input,
        )
        return body

    def answer(self, name: str) -> None:
        contribution, _ = self.work(name)
        services.contribution_submit(contribution=contribution, result=self.step(name))

    def stage(self, round_: Round, names=SITES) -> None:
        for name in names:
            self.answer(name)
        round_.refresh_from_db()
        services.round_close(round_=round_)
        round_.refresh_from_db()

    def expected(self, names) -> list[np.ndarray]:
        total = sum(self.examples[n] for n in names)
        return [
            sum(self.trained[n][i].astype(np.float64) * self.examples[n] / total for n in names)
            for i in range(len(self.start))
        ]


@pytest.fixture
def cast(django_user_model, pipeline_dict, tmp_path, scheduled):
    admin = django_user_model.objects.create_user("admin")
    federation = Federation.objects.create(
        name="fleet", admin=admin, min_sites=2, rounds=1, pipeline=pipeline_dict
    )
    sites, keys = {}, {}
    for name in SITES:
        site = services.site_create(owner=django_user_model.objects.create_user(name), name=name)
        services.membership_approve(
            membership=services.membership_request(federation=federation, site=site)
        )
        services.site_report_data(
            site=site, summary={"train_rows": 1000, "train_engines": 5, "subsets": ["FD001"]}
        )
        keys[name] = Keystore(tmp_path / name)
        public = base64.b64encode(keys[name].identity().public).decode()
        secure.site_register_identity(site=site, public_key=public)
        sites[name] = site
    from federation.core.strategies import SiteResult  # noqa: F401  (the strategies' input)
    from federation.services import _initial_weights, _new_version
    from turbofan.data.features import FeaturePipeline

    pipeline = FeaturePipeline.from_dict(pipeline_dict)
    _new_version(federation, pipeline, 0, _initial_weights(federation, pipeline)).store(
        federation, None
    )
    return Cast(federation, sites, keys)


def aggregated_weights(federation: Federation, version: int) -> list[np.ndarray]:
    model = ModelVersion.objects.get(federation=federation, version=version)
    return RulModel.from_bytes(model.file.read()).members[0]


def close_enough(weights, expected) -> bool:
    step = 2 * DEFAULT_CLIP / PRECISE_LEVELS
    # Each site's weighted value is off by half a step; dividing by the summed weight
    # (0.3 here: examples / the reported rows) scales the error up; then float32.
    return all(
        np.max(np.abs(w - e)) < len(SITES) * step / 0.3 + 1e-6 * np.abs(e).max()
        for w, e in zip(weights, expected, strict=True)
    )
