"""A federation's settings as the Django-free core takes them, and its evaluation."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from federation.core.engine.training import FederatedTraining
from federation.core.recipes import default_recipe, default_training
from federation.core.report import TestSet, load_test_set
from federation.models import Federation
from turbofan.data.source import find_data_dir
from turbofan.metrics import evaluate
from turbofan.models.artefact import RulModel
from turbofan.models.fit import NetworkRecipe


def default_model_spec() -> dict[str, Any]:
    """The tuned recipe with one network (a live federation trains one global model)."""
    recipe = default_recipe()
    recipe.ensemble = 1
    return {"recipe": recipe.to_dict(), "training": default_training().to_dict()}


def federation_recipe(federation: Federation) -> NetworkRecipe:
    spec = federation.model_spec or default_model_spec()
    return NetworkRecipe.from_dict(spec.get("recipe", default_model_spec()["recipe"]))


def federation_training(federation: Federation) -> FederatedTraining:
    """How the federation trains: its spec's schedule, with the settings the federation's
    own fields hold (rounds, local epochs, strategy, secure aggregation, privacy)."""
    spec = federation.model_spec or default_model_spec()
    settings = {**spec.get("training", default_model_spec()["training"])}
    settings.update(
        rounds=federation.rounds,
        local_epochs=federation.local_epochs,
        strategy=federation.strategy,
        strategy_settings=federation.strategy_settings or {},
        secure=federation.secure_aggregation,
        privacy=federation.privacy,
    )
    return FederatedTraining.from_dict(settings)


@lru_cache(maxsize=4)
def _test_set(subset: str) -> TestSet:
    # The coordinator scores on the public test engines only: no training file is read.
    return load_test_set(find_data_dir(), subset)


def evaluate_version(model: RulModel, subset: str) -> dict[str, Any]:
    """Scores of a global model on the subset's public test engines (both label variants)."""
    test = _test_set(subset)
    predicted = model.predict_frame(test.frame)["predicted_rul"].to_numpy()
    return {"test": evaluate(predicted, test.rul, cap=model.pipeline.rul_cap or 125)}
