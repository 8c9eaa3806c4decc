"""Model versions: the global model after each round, stored once, read many times; and the
federation's state as the round engine takes it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from federation.core import messages as m
from federation.core.engine.coordinator import FederationState
from federation.core.secagg import protocol as p
from federation.core.strategies import Weights
from federation.models import Federation, ModelVersion, Round, StageMessage
from federation.specs import evaluate_version, federation_recipe, federation_training
from turbofan.data.features import FeaturePipeline
from turbofan.models.artefact import RulModel
from turbofan.models.fit import new_network_model


def latest_version(federation: Federation) -> ModelVersion | None:
    """The newest model version not rejected: the one the next round starts from."""
    return (
        federation.versions.exclude(status=ModelVersion.Status.REJECTED)
        .order_by("-version")
        .first()
    )


def latest_accepted(federation: Federation) -> ModelVersion | None:
    """The federation's model: its newest accepted version."""
    return (
        federation.versions.filter(status=ModelVersion.Status.ACCEPTED).order_by("-version").first()
    )


def federation_state(federation: Federation) -> FederationState:
    """What the round engine needs to know of the federation: its settings, the shared
    preprocessing, the model to start from (and the last accepted one while that is a
    candidate) and the strategy's state."""
    recipe = federation_recipe(federation)
    current = latest_version(federation)
    accepted, accepted_version = None, 0
    if current is not None and current.status == ModelVersion.Status.CANDIDATE:
        last_accepted = latest_accepted(federation)
        if last_accepted is not None:
            accepted, accepted_version = version_weights(last_accepted), last_accepted.version
    strategy_state: Weights = []
    if federation.strategy_state:
        with federation.strategy_state.open("rb") as handle:
            strategy_state = m.weights_from_bytes(handle.read())
    return FederationState(
        template=recipe.pipeline(federation.subset),
        recipe=recipe,
        training=federation_training(federation),
        regimes=federation.regimes,
        pipeline=federation.pipeline,
        weights=version_weights(current) if current is not None else None,
        version=current.version if current is not None else 0,
        strategy_state=strategy_state,
        accepted=accepted,
        accepted_version=accepted_version,
    )


def version_weights(version: ModelVersion) -> Weights:
    return list(_weights_of(version.file.name, version.sha256))


# A model version never changes once stored (its hash is in the key): every site's fetch
# of a round's work and every round planned from it reuse one decoding.
@lru_cache(maxsize=8)
def _weights_of(name: str, sha256: str) -> tuple[np.ndarray, ...]:
    with default_storage.open(name, "rb") as handle:
        return tuple(RulModel.from_bytes(handle.read(), source=name).members[0])


@dataclass
class NewVersion:
    """A global model computed by an aggregation, written once its round is done."""

    number: int
    content: bytes
    sha256: str
    metrics: dict[str, Any]

    def store(
        self, federation: Federation, round_: Round | None, *, status: str, verdict: str = ""
    ) -> ModelVersion:
        version, created = ModelVersion.objects.get_or_create(
            federation=federation,
            version=self.number,
            defaults={
                "round": round_,
                "sha256": self.sha256,
                "metrics": self.metrics,
                "status": status,
                "verdict": verdict,
            },
        )
        if created:
            version.file.save(f"{federation.id}-v{self.number}.rulmodel", ContentFile(self.content))
        return version


def version_build(
    federation: Federation, pipeline: dict[str, Any], number: int, weights: Weights
) -> NewVersion:
    """The global model file of ``weights`` and its scores on the public test engines."""
    model = new_network_model(FeaturePipeline.from_dict(pipeline), federation_recipe(federation))
    model.members = [weights]
    model.meta.update(federation=federation.name, version=number, setup="federated")
    content, digest = model.to_bytes()
    return NewVersion(number, content, digest, evaluate_version(model, federation.subset))


def version_judge(
    *, version: ModelVersion, verdict: str, reason: str, found_worse: frozenset[int]
) -> list[int]:
    """A candidate's verdict from the sites' votes: accepted, or rejected with the reason
    and its suspects (returned): the sites whose inputs made it that did not find it
    worse. One of them sent a spoiled model, or several did (secure aggregation cannot
    say which), or the honest sites' data disagree."""
    suspects: list[int] = []
    if verdict == ModelVersion.Status.REJECTED and version.round_id is not None:
        makers = StageMessage.objects.filter(
            round_id=version.round_id, stage__in=[p.MASKED_INPUT, m.PLAIN_INPUT]
        ).values_list("site_id", flat=True)
        suspects = sorted(set(makers) - found_worse)
    ModelVersion.objects.filter(id=version.id, status=ModelVersion.Status.CANDIDATE).update(
        status=verdict, verdict=reason, suspects=suspects
    )
    return suspects


def version_record_validation(*, version: ModelVersion, val_rmse: float) -> None:
    """The version's RMSE over the sites' validation engines, which they computed in the
    round that started from it (inside the sum)."""
    ModelVersion.objects.filter(id=version.id).update(
        metrics={**version.metrics, "federated_val_rmse": val_rmse}
    )
