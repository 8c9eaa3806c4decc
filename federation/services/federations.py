"""Writes about a federation as a whole: creating it, and starting (or resuming) it."""

from __future__ import annotations

import math
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from federation.core.engine import admission
from federation.core.engine.rounds import MIN_CONTRIBUTORS
from federation.core.engine.training import MAX_DITTO_MU, TREES_FAMILY
from federation.core.messages import Kind
from federation.core.privacy import PrivacySettings
from federation.core.strategies import STRATEGIES
from federation.errors import FederationError
from federation.models import Federation, Round
from federation.services.rounds import round_open
from federation.specs import default_model_spec, federation_training
from turbofan.models.trees import BoostingSettings

# The most epochs a site may fine-tune the federation's model for.
MAX_PERSONAL_EPOCHS = 50
# The most training rounds one extension of a finished federation may add.
MAX_MORE_ROUNDS = 200


def federation_create(
    *,
    name: str,
    admin: User,
    subset: str = "FD001",
    rounds: int = 10,
    min_sites: int = MIN_CONTRIBUTORS,
    deadline: int = 300,
    local_epochs: int = 2,
    secure: bool = True,
    privacy: PrivacySettings | None = None,
    strategy: str = "fedavg",
    strategy_settings: dict[str, Any] | None = None,
    model_spec: dict[str, Any] | None = None,
    personal_epochs: int = 0,
    private_head: bool = False,
    ditto_mu: float = 0.0,
    boosting: BoostingSettings | None = None,
    site_optimiser: bool = True,
) -> Federation:
    """A new federation, run by ``admin``, with the tuned model recipe by default.

    ``secure=False`` is the plain mode, for debugging: the coordinator sees every site's
    update. Differential privacy (``privacy``) needs secure aggregation.
    ``personal_epochs`` > 0: after the last round each site adapts the final model for up
    to that many epochs and keeps the best of it, the federation's model and its model
    trained alone (see ``FederatedTraining.personal_epochs``). ``private_head``: each site
    keeps the network's output layer to itself (FedPer, see
    ``FederatedTraining.private_head``); it needs personalisation, where each site keeps
    its own model. ``ditto_mu`` > 0: each site trains a personal model alongside, pulled
    toward the global one (Ditto, see ``FederatedTraining.ditto_mu``); it needs
    personalisation too. ``boosting``: the federation grows boosted trees, one tree level
    a round from the secure sum of the sites' histograms: instead of a network (``rounds``
    0), or after its network's rounds, the two blended at the share the sites' validation
    prefers (a hybrid). ``site_optimiser`` False: each site's optimiser starts afresh every
    round instead of going on from its last one (see ``FederatedTraining.site_optimiser``).
    """
    if not 0 <= personal_epochs <= MAX_PERSONAL_EPOCHS:
        raise FederationError(
            f"personalisation epochs must be from 0 (none) to {MAX_PERSONAL_EPOCHS}", status=400
        )
    if personal_epochs and privacy is not None:
        raise FederationError(
            "personalisation scores models on the sites' validation engines, which under "
            "differential privacy stay out of every round: drop one of the two",
            status=400,
        )
    if not (math.isfinite(ditto_mu) and 0 <= ditto_mu <= MAX_DITTO_MU):
        raise FederationError(
            f"the Ditto weight must be from 0 (none) to {MAX_DITTO_MU:g}", status=400
        )
    if ditto_mu and private_head:
        raise FederationError(
            "choose one way to personalise during training: a private head or Ditto",
            status=400,
        )
    if ditto_mu and not personal_epochs:
        raise FederationError(
            "a Ditto model is chosen in the personalisation round: it needs personalisation epochs",
            status=400,
        )
    if private_head and not personal_epochs:
        raise FederationError(
            "a private head makes each site's model its own: it needs personalisation "
            "epochs, the round in which each site keeps its model",
            status=400,
        )
    spec = model_spec if model_spec is not None else default_model_spec()
    if boosting is not None:
        if privacy is not None:
            raise FederationError(
                "boosted trees do not run with differential privacy: their histograms would "
                "need noise of their own; train a network for a DP federation",
                status=400,
            )
        if private_head or ditto_mu:
            raise FederationError(
                "a private head and Ditto personalise a network, not boosted trees",
                status=400,
            )
        spec = {**spec, "training": {**spec.get("training", {}), "boosting": boosting.to_dict()}}
    if not site_optimiser:
        spec = {**spec, "training": {**spec.get("training", {}), "site_optimiser": False}}
    if personal_epochs:
        spec = {
            **spec,
            "training": {
                **spec.get("training", {}),
                "personal_epochs": personal_epochs,
                **({"private_head": True} if private_head else {}),
                **({"ditto_mu": ditto_mu} if ditto_mu else {}),
            },
        }
    if privacy is not None and not secure:
        raise FederationError(
            "differential privacy adds its noise inside the secure sum: it needs secure "
            "aggregation",
            status=400,
        )
    refusal = admission.too_few_contributors(min_sites, secure=secure)
    if refusal:
        raise FederationError(refusal + " (or create it plain, for debugging)", status=400)
    if strategy not in STRATEGIES:
        raise FederationError(
            f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}", status=400
        )
    if (rounds < 1 and boosting is None) or min_sites < 1 or deadline < 1 or local_epochs < 1:
        raise FederationError(
            "rounds, the minimum of sites, the deadline and local epochs must be at least 1",
            status=400,
        )
    try:
        with transaction.atomic():
            return Federation.objects.create(
                name=name,
                admin=admin,
                subset=subset,
                rounds=rounds,
                min_sites=min_sites,
                round_deadline=deadline,
                local_epochs=local_epochs,
                secure_aggregation=secure,
                privacy=privacy.to_dict() if privacy is not None else None,
                strategy=strategy,
                strategy_settings=strategy_settings or {},
                model_spec=spec,
            )
    except IntegrityError:
        raise FederationError(
            f"a federation named {name!r} exists already: pick another name", status=400
        ) from None


def federation_start(*, federation: Federation) -> Round:
    """Start (or, after a failure, resume) a federation from its first unfinished step."""
    with transaction.atomic():
        changed = Federation.objects.filter(
            id=federation.id, status__in=[Federation.Status.DRAFT, Federation.Status.FAILED]
        ).update(status=Federation.Status.RUNNING, reason="")
        if not changed:
            raise FederationError(f"the federation is {federation.status}: it cannot start")
        federation.refresh_from_db()
        # After a failure, the failed step runs again (training from the latest model).
        failed = (
            federation.round_set.filter(status=Round.Status.FAILED)
            .exclude(kind=Round.Kind.ANALYTICS)
            .order_by("-id")
            .first()
        )
        if failed is not None:
            return round_open(federation=federation, kind=Kind(failed.kind), number=failed.number)
        return round_open(federation=federation, kind=Kind.POINTS, number=0)


def federation_extend(*, federation: Federation, rounds: int) -> Round:
    """Run ``rounds`` more training rounds of a finished federation, from its model, then
    its closing rounds again (the last candidate scored, and each site's choice with
    personalisation). Sites approved since it finished take part. Returns the first new
    round (failed at once, with the reason, if it may not run: too few sites, no privacy
    budget left, ...)."""
    if not 1 <= rounds <= MAX_MORE_ROUNDS:
        raise FederationError(
            f"run from 1 to {MAX_MORE_ROUNDS} more rounds at a time (asked: {rounds})",
            status=400,
        )
    if federation_training(federation).family == TREES_FAMILY:
        raise FederationError(
            "a federation of boosted trees grows its trees once, until its sites' validation "
            "stops improving: create a new federation to grow others",
            status=409,
        )
    with transaction.atomic():
        trained = (
            federation.round_set.filter(kind=Round.Kind.TRAIN, status=Round.Status.DONE)
            .order_by("-number")
            .values_list("number", flat=True)
            .first()
        )
        if trained is None:
            raise FederationError(
                "the federation has trained no round yet: start it instead", status=409
            )
        changed = Federation.objects.filter(
            id=federation.id, status=Federation.Status.FINISHED
        ).update(status=Federation.Status.RUNNING, reason="", rounds=trained + rounds)
        if not changed:
            federation.refresh_from_db()
            raise FederationError(
                f"the federation is {federation.get_status_display()}: only a finished "
                "federation can run more rounds",
                status=409,
            )
        federation.refresh_from_db()
        return round_open(federation=federation, kind=Kind.TRAIN, number=trained + 1)
