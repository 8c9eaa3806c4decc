"""Model versions: the global model after each round, stored once, read many times; and the
federation's state as the round engine takes it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db.models import QuerySet

from federation.core import messages as m
from federation.core.engine.state import FederationState
from federation.core.engine.training import NETWORK_FAMILY
from federation.core.secagg import protocol as p
from federation.core.strategies import Weights
from federation.models import Federation, ModelVersion, Round, StageMessage
from federation.specs import evaluate_version, federation_recipe, federation_training
from turbofan.data.features import FeaturePipeline
from turbofan.models.artefact import HYBRID, TREES, RulModel
from turbofan.models.fit import new_network_model


def latest_version(
    federation: Federation, versions: QuerySet[ModelVersion] | None = None
) -> ModelVersion | None:
    """The newest model version not rejected (of ``versions``, else of all): the one the
    next round starts from."""
    among = federation.versions.all() if versions is None else versions
    return among.exclude(status=ModelVersion.Status.REJECTED).order_by("-version").first()


def latest_accepted(federation: Federation) -> ModelVersion | None:
    """The federation's model: its newest accepted version."""
    return (
        federation.versions.filter(status=ModelVersion.Status.ACCEPTED).order_by("-version").first()
    )


def federation_state(federation: Federation) -> FederationState:
    """What the round engine needs to know of the federation: its settings, the shared
    preprocessing, the model to start from (and the last accepted one while that is a
    candidate), the strategy's state, and its boosted trees between rounds."""
    recipe = federation_recipe(federation)
    training = federation_training(federation)
    current = latest_version(federation)
    accepted, accepted_version = None, 0
    # A federation with trees: its network's versions are the first (version 0 alone for
    # trees only); the trees' and the blend's follow.
    networks = federation.versions.all()
    if training.family != NETWORK_FAMILY:
        networks = networks.filter(version__lte=training.rounds)
    network = latest_version(federation, networks)
    if current is not None and current.status == ModelVersion.Status.CANDIDATE:
        last_accepted = latest_accepted(federation)
        if last_accepted is not None:
            accepted_version = last_accepted.version
            if network is not None and current.version == network.version:
                accepted = version_weights(last_accepted)
    strategy_state: Weights = []
    if federation.strategy_state:
        with federation.strategy_state.open("rb") as handle:
            strategy_state = m.weights_from_bytes(handle.read())
    return FederationState(
        template=recipe.pipeline(federation.subset),
        recipe=recipe,
        training=training,
        regimes=federation.regimes,
        pipeline=federation.pipeline,
        weights=version_weights(network) if network is not None else None,
        version=current.version if current is not None else 0,
        strategy_state=strategy_state,
        accepted=accepted,
        accepted_version=accepted_version,
        network_rejections=networks.filter(status=ModelVersion.Status.REJECTED).count(),
        **_boosting_fields(federation.boosting_state or {}),
    )


# --- boosted trees between rounds -------------------------------------------------------------


def boosting_state(state: FederationState) -> dict[str, Any]:
    """The boosted trees' part of ``state``, as the federation's row keeps it."""

    def packed(arrays: Weights | None) -> str | None:
        return None if arrays is None else m.b64(m.weights_to_bytes(arrays))

    return {
        "trees": packed(state.trees),
        "growing": packed(state.growing),
        "accepted_trees": packed(state.accepted_trees),
        "best": list(state.boost_best) if state.boost_best is not None else None,
        "rejections": state.boost_rejections,
        "boosted": state.boosted,
        "share": state.share,
    }


def _boosting_fields(data: dict[str, Any]) -> dict[str, Any]:
    if not data:
        return {}

    def unpacked(key: str) -> Weights | None:
        text = data.get(key)
        return None if text is None else m.weights_from_bytes(m.unb64(text))

    best = data.get("best")
    return {
        "trees": unpacked("trees"),
        "growing": unpacked("growing"),
        "accepted_trees": unpacked("accepted_trees"),
        "boost_best": (float(best[0]), int(best[1])) if best else None,
        "boost_rejections": int(data.get("rejections", 0)),
        "boosted": bool(data.get("boosted", False)),
        "share": data.get("share"),
    }


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
    federation: Federation,
    pipeline: dict[str, Any],
    number: int,
    weights: Weights,
    *,
    trees: bool = False,
    blend: tuple[Weights, float] | None = None,
) -> NewVersion:
    """The global model file of ``weights`` (a network's, or with ``trees`` a boosted
    model's arrays; with ``blend``, the network blended with those trees at that share)
    and its scores on the public test engines."""
    model = new_network_model(FeaturePipeline.from_dict(pipeline), federation_recipe(federation))
    model.members = [weights]
    if trees:
        model.kind = TREES
    if blend is not None:
        model.kind, model.trees, model.share = HYBRID, [blend[0]], blend[1]
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
