"""How a federation trains, a site's local update, and the training round's vector.

In a training round each site puts under masks (or sends in plain, for debugging)

    [w * weights..., w * mse / VAL_UNIT, w * has_validation]

with ``w`` its *public* weight (:func:`federation.core.engine.rounds.public_weights`: its
reported rows, bounded, the same number every site and the coordinator see), ``weights``
what it trained from the global model, and ``mse`` the incoming global model's mean
squared error on its own validation engines. The coordinator divides the sum by the summed
public weights of the sites in it: it gets the weighted mean of their models and their
pooled validation RMSE, and nothing about one site (:func:`decode_training`). A site
cannot choose its weight inside the mask. Under differential privacy a site sends its
clipped, noised model, the weights are equal, and it keeps its validation error home.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from federation.core.privacy import PrivacySettings, clip_and_noise
from federation.core.strategies import Weights
from turbofan.data.features import FeaturePipeline
from turbofan.models.artefact import RulModel
from turbofan.models.fit import NetworkRecipe, new_network_model, split_engines
from turbofan.models.training import (
    TrainConfig,
    get_weights,
    predict,
    seed_everything,
    set_weights,
    train_network,
)
from turbofan.models.trees import BoostingSettings

# Validation errors travel in the sum as mean squared errors in this unit, so that they
# fit the fixed-point range (an RMSE of up to 280 cycles).
VAL_UNIT = 1e4
TRAINING_EXTRAS = 2  # w * mse / VAL_UNIT and w * has_validation, after the model
# The share of a site's training engines its own models (fine-tuned, alone) stop on: the
# validation engines choose between the models, so they must not have made them.
STOP_FRACTION = 0.15


NETWORK_FAMILY, TREES_FAMILY, HYBRID_FAMILY = "network", "trees", "hybrid"


@dataclass
class FederatedTraining:
    """How a federation trains: the same settings for a live federation and a simulation.

    Parameters
    ----------
    rounds : training rounds (fewer with early stopping, in a simulation)
    local_epochs : epochs each site trains per round, from the global weights
    local_steps : at least this many optimizer steps a round at every site, in whole
        epochs: a site with few engines makes more passes over them, instead of taking a
        handful of steps a round (0: ``local_epochs`` only)
    lr, lr_final : local learning rate, along a cosine from ``lr`` to ``lr_final``
    strategy, strategy_settings : the server's step, see
        :func:`federation.core.strategies.make_strategy`
    val_fraction : share of each site's engines kept back to validate the global model
    patience : a simulation stops after this many rounds without a better validation
        RMSE (0: never; ignored under DP)
    seed : seeds the initial weights, each round's local training and the sites'
        validation split
    secure : sum through secure aggregation (False: plain sums, for debugging)
    privacy : :meth:`PrivacySettings.to_dict` for site-level DP, or None
    personal_epochs : after the last round, each site fine-tunes the final model for up
        to this many epochs on its own engines, trains a model alone with the same
        budget, and keeps whichever of the :data:`CHOICES` scores best on its validation
        engines (0: no personalisation)
    private_head : FedPer: each site keeps the network's output layer to itself, trains
        it with the shared body every round and puts the head it was given back in the
        sum, so that only the body is averaged; the federation's model is the body, each
        site's is the body with its own head
    ditto_mu : Ditto: each site also trains a personal model of its own every round, from
        where it left it, pulled toward the round's global model with this proximal
        weight; it stays at the site and is a candidate in the personalisation round
        (0: none)
    boosting : :meth:`BoostingSettings.to_dict` to grow boosted trees after the network's
        rounds (``rounds`` 0: trees only), one tree level a round from the secure sum of
        the sites' histograms; None: a network only
    site_optimiser : each site's optimiser (AdamW) goes on from round to round with its own
        running means of the gradient and of its square, as one trainer in one place
        does, instead of starting afresh at each round's global weights; they stay at
        the site like a private head (False: fresh every round, as in plain FedAvg)
    """

    rounds: int = 40
    local_epochs: int = 1
    local_steps: int = 0
    batch_size: int = 256
    lr: float = 2e-3
    lr_final: float = 2e-4
    weight_decay: float = 1e-4
    strategy: str = "fedavg"
    strategy_settings: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.15
    patience: int = 10
    seed: int = 0
    secure: bool = True
    privacy: dict[str, float] | None = None
    personal_epochs: int = 0
    private_head: bool = False
    ditto_mu: float = 0.0
    boosting: dict[str, Any] | None = None
    site_optimiser: bool = True

    def boosting_settings(self) -> BoostingSettings | None:
        """The trees' settings, seeded by the federation's seed; None without trees."""
        if self.boosting is None:
            return None
        return BoostingSettings.from_dict({**self.boosting, "seed": self.seed})

    def family_settings(self) -> dict[str, Any]:
        """``fit_model``'s arguments for a model of this federation's family trained in one
        place: the trees' settings (None without trees) and whether a network is in it."""
        return {"boosting": self.boosting_settings(), "network": self.family != TREES_FAMILY}

    @property
    def family(self) -> str:
        """What the federation's model is: a "network", boosted "trees" (no network rounds
        before them), or a "hybrid" of both, blended."""
        if self.boosting is None:
            return NETWORK_FAMILY
        return TREES_FAMILY if self.rounds == 0 else HYBRID_FAMILY

    def problems(self) -> list[str]:
        """What is wrong with these settings together, in the words a user reads."""
        found = []
        if self.boosting is not None:
            try:
                self.boosting_settings()
            except ValueError as error:
                found.append(str(error))
            if self.privacy:
                found.append(
                    "boosted trees do not run with differential privacy: their histograms "
                    "would need noise of their own; use a network for a DP federation"
                )
            if self.private_head or self.ditto_mu:
                found.append("a private head and Ditto are ways to personalise a network")
        elif self.rounds < 1:
            found.append("a network federation needs at least one training round")
        return found

    @property
    def boost_rounds(self) -> int:
        """The most tree-growing rounds: twice one per level of every tree. Growing ends
        well before, in the round after the most trees (or once validation stalls); the
        margin is for trees grown again after a rejection."""
        settings = self.boosting_settings()
        return 0 if settings is None else 2 * settings.trees * settings.depth + 1

    def personal_settings(self) -> dict[str, Any]:
        """What each site needs to personalise (the task of the personalisation round)."""
        return {
            "epochs": self.personal_epochs,
            "alone_epochs": self.rounds * self.local_epochs,
            "alone_steps": self.rounds * self.local_steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "lr_final": self.lr_final,
            "weight_decay": self.weight_decay,
            "seed": self.member_seed(0),
        }

    def member_seed(self, member: int = 0) -> int:
        """The seed of one independently trained model (a simulation's ensemble member;
        a live federation trains member 0)."""
        return self.seed * 1000 + member

    def round_lr(self, round_number: int) -> float:
        progress = (round_number - 1) / max(1, self.rounds - 1)
        return self.lr_final + 0.5 * (self.lr - self.lr_final) * (1 + math.cos(math.pi * progress))

    def local_config(self, round_number: int, member: int = 0) -> TrainConfig:
        """What every site trains with in a round (the same for all sites)."""
        return TrainConfig(
            epochs=self.local_epochs,
            min_steps=self.local_steps,
            batch_size=self.batch_size,
            lr=self.round_lr(round_number),
            weight_decay=self.weight_decay,
            schedule="constant",
            seed=self.member_seed(member) * 100 + round_number,
        )

    def privacy_settings(self) -> PrivacySettings | None:
        return PrivacySettings.from_dict(self.privacy) if self.privacy else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederatedTraining:
        return cls(**data)


def initial_weights(pipeline: FeaturePipeline, recipe: NetworkRecipe, seed: int) -> Weights:
    """The global model's first weights: the recipe's network, initialised from ``seed``."""
    seed_everything(seed)
    return get_weights(new_network_model(pipeline, recipe).new_net())


# --- a private head (FedPer) ---------------------------------------------------------------

# The output layer's weight and bias: the last two tensors of every network we build.
HEAD_TENSORS = 2


def head_of(weights: Weights) -> Weights:
    """The output layer of ``weights``."""
    return list(weights[-HEAD_TENSORS:])


def with_head(weights: Weights, head: Weights) -> Weights:
    """``weights`` with their output layer replaced by ``head``."""
    if len(head) != HEAD_TENSORS or any(
        a.shape != b.shape for a, b in zip(head, head_of(weights), strict=True)
    ):
        raise ValueError("the private head does not fit this network's output layer")
    return [*weights[:-HEAD_TENSORS], *head]


# --- the site's local work --------------------------------------------------------------


@dataclass
class LocalData:
    """A site's training and validation windows under the federation's pipeline."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_engines: int = 0  # how many engines the validation windows come from
    val_units: np.ndarray | None = None  # the engine of each validation window
    units: np.ndarray | None = None  # the engine of each training window

    @property
    def judging_units(self) -> np.ndarray:
        """The engine of each validation window (each window its own, when unknown)."""
        return self.val_units if self.val_units is not None else np.arange(len(self.y_val))

    def stopping_split(self, seed: int) -> tuple[LocalData, LocalData]:
        """The training windows split by engine into the ones a site's own models train on
        and the ones that say when to stop (:data:`STOP_FRACTION` of its training engines,
        at least one), so that the validation engines that choose between its models
        played no part in making them. With one training engine, both are all of them."""
        units = self.units if self.units is not None else np.arange(len(self.y))
        engines = np.unique(units)
        if len(engines) < 2:
            return self, replace(self, x_val=self.x, y_val=self.y, val_units=units)
        rng = np.random.default_rng([seed, len(engines)])
        count = min(len(engines) - 1, max(1, round(STOP_FRACTION * len(engines))))
        stop = np.isin(units, rng.choice(engines, size=count, replace=False))
        fit = replace(self, x=self.x[~stop], y=self.y[~stop], units=units[~stop])
        return fit, replace(self, x_val=self.x[stop], y_val=self.y[stop], val_units=units[stop])


def prepare_local_data(
    frame: pd.DataFrame, pipeline: FeaturePipeline, *, val_fraction: float, seed: int
) -> LocalData:
    """Windows of this site's engines, with some engines kept back for validation (split
    by engine, the same split in every round)."""
    train_rows, val_rows = split_engines(frame, val_fraction, seed)
    x, y = pipeline.training_windows(train_rows)
    x_val, y_val = pipeline.training_windows(val_rows)
    val_units = pipeline.window_units(val_rows)
    units = pipeline.window_units(train_rows)
    return LocalData(x, y, x_val, y_val, int(val_rows["unit"].nunique()), val_units, units)


@dataclass(frozen=True)
class LocalResult:
    """What a site's training gave: its new weights, its number of training windows,
    the incoming global model's error on its validation windows (and, when that model is
    a candidate, the last accepted model's), and the time taken."""

    weights: Weights
    examples: int
    val_sse: float
    val_count: int
    seconds: float
    accepted_sse: float | None = None
    # The site's optimiser moments after its training: they stay at the site (nothing
    # that encodes a result for the sum reads them).
    moments: Weights | None = field(default=None, repr=False)

    def vote(self) -> int | None:
        """1 if the incoming candidate is worse than the accepted model here, 0 if not,
        None when there is no candidate to judge (or no validation engine to judge on)."""
        if self.accepted_sse is None or not self.val_count:
            return None
        return int(candidate_worse(self.val_sse, self.accepted_sse))


# A candidate is worse than the accepted model when its validation RMSE is more than this
# fraction above the accepted model's (on the same validation engines).
REJECT_MARGIN = 0.05


def candidate_worse(candidate_sse: float, accepted_sse: float) -> bool:
    """Whether a candidate's sum of squared errors is worse than the accepted model's by
    more than the margin (the same windows: RMSEs compare as the roots of the sums)."""
    return math.sqrt(candidate_sse) > (1 + REJECT_MARGIN) * math.sqrt(accepted_sse)


def local_update(
    model: RulModel,
    weights: Weights,
    data: LocalData,
    config: TrainConfig,
    *,
    proximal_mu: float,
    moments: Weights | None = None,
) -> tuple[Weights, Weights]:
    """Train from the global weights for ``config.epochs`` epochs on this site's windows,
    the optimiser starting from ``moments`` (this site's from its last round) when given;
    the trained weights and the optimiser's moments after it."""
    seed_everything(config.seed)
    net = model.new_net()
    set_weights(net, weights)
    local = TrainConfig(**{**config.to_dict(), "prox_mu": proximal_mu, "patience": 0})
    result = train_network(
        net, data.x, data.y, local, reference=weights if proximal_mu else None, moments=moments
    )
    return result.weights, result.moments or []


# The strongest pull toward the global model a Ditto task may ask for (the proximal term
# is in units of the network's output scale, as FedProx's).
MAX_DITTO_MU = 10.0


def ditto_update(
    model: RulModel,
    personal: Weights,
    global_weights: Weights,
    data: LocalData,
    config: TrainConfig,
    *,
    mu: float,
) -> Weights:
    """Ditto's step: train the site's personal model from where it was for
    ``config.epochs`` epochs, pulled toward the round's global model with weight ``mu``."""
    seed_everything(config.seed + 1)
    net = model.new_net()
    set_weights(net, personal)
    local = TrainConfig(**{**config.to_dict(), "prox_mu": mu, "patience": 0})
    return train_network(net, data.x, data.y, local, reference=global_weights).weights


def local_evaluate(model: RulModel, weights: Weights, data: LocalData) -> tuple[float, int]:
    """Sum of squared errors of ``weights`` on this site's validation windows, and count."""
    return ensemble_evaluate(model, [weights], data)


def ensemble_predictions(
    model: RulModel, members: Sequence[Weights], data: LocalData
) -> np.ndarray:
    """The mean prediction of ``members`` on this site's validation windows."""
    if len(data.x_val) == 0:
        return np.zeros(0)
    net = model.new_net()
    predictions = []
    for weights in members:
        set_weights(net, weights)
        predictions.append(predict(net, data.x_val))
    return np.mean(predictions, axis=0)


def ensemble_evaluate(
    model: RulModel, members: Sequence[Weights], data: LocalData
) -> tuple[float, int]:
    """Sum of squared errors of the mean prediction of ``members`` on this site's
    validation windows, and count."""
    if len(data.x_val) == 0:
        return 0.0, 0
    error = ensemble_predictions(model, members, data) - data.y_val
    return float(np.sum(error.astype(np.float64) ** 2)), len(data.x_val)


def train_locally(
    model: RulModel,
    weights: Weights,
    data: LocalData,
    config: TrainConfig | None,
    *,
    proximal_mu: float = 0.0,
    accepted: Weights | None = None,
    moments: Weights | None = None,
) -> LocalResult:
    """Score the incoming global model (and, when it is a candidate, the ``accepted`` one)
    on the validation windows, then train from it (unless ``config`` is None: a round
    that only scores), the optimiser starting from ``moments`` when given."""
    started = time.perf_counter()
    val_sse, val_count = local_evaluate(model, weights, data)
    accepted_sse = local_evaluate(model, accepted, data)[0] if accepted is not None else None
    trained, kept = weights, None
    if config is not None:
        trained, kept = local_update(
            model, weights, data, config, proximal_mu=proximal_mu, moments=moments
        )
    seconds = round(time.perf_counter() - started, 3)
    return LocalResult(trained, len(data.x), val_sse, val_count, seconds, accepted_sse, kept)


# --- personalisation: each site chooses its model ---------------------------------------------

# The models a site chooses between, in the order a tie goes: the federation's model,
# the site's fine-tuned copy of it, the site's model trained alone, the mixture of those
# two (the mean of their predictions: what the site learnt from the federation and what
# it learnt alone, each correcting the other's errors), and, with Ditto, the personal
# model it trained alongside the federation's.
CHOICES = ("global", "personal", "alone", "mixture", "ditto")
# Epochs without a better validation RMSE before a site stops training alone.
ALONE_PATIENCE = 10
# The fewest validation engines on which a site may judge models: on fewer, one engine's
# luck decides (a 20-site split of FD001 leaves one each), so it keeps the federation's.
MIN_JUDGING_ENGINES = 3
# A site leaves the federation's model for one of its own only when that one is better on
# its validation engines with this confidence: the share of resamplings of the engines
# (with replacement, the windows of an engine kept together) in which it has the lower
# RMSE. On a handful of engines a candidate that merely looks better is often luck (on
# an IID split, where the federation's model is the best there is, sites chose their own
# in half the choices on four engines each, and did worse on their test engines).
CHOICE_CONFIDENCE = 0.9
CHOICE_RESAMPLES = 2000


def choose_model(
    predictions: dict[str, np.ndarray],
    data: LocalData,
    *,
    seed: int,
) -> tuple[str, dict[str, float], dict[str, float]]:
    """Which candidate a site uses, from their predictions on its validation windows: the
    one with the lowest RMSE among those better than ``global`` with
    :data:`CHOICE_CONFIDENCE` over the resampled engines, else ``global`` (always, on fewer
    than :data:`MIN_JUDGING_ENGINES` engines). Also each candidate's RMSE (NaN without
    validation windows) and its confidence of beating ``global``.

    The resampling is seeded: the same site, data and candidates choose the same."""
    names = list(predictions)
    count = len(data.y_val)
    if not count:
        nothing = {name: math.nan for name in names}
        return "global", nothing, dict(nothing)
    units = data.judging_units
    engines, engine = np.unique(units, return_inverse=True)
    windows = np.bincount(engine, minlength=len(engines)).astype(np.float64)
    sse = np.stack(
        [
            np.bincount(
                engine,
                weights=(np.asarray(predictions[n], np.float64) - data.y_val) ** 2,
                minlength=len(engines),
            )
            for n in names
        ]
    )
    rmse = {n: float(math.sqrt(sse[i].sum() / count)) for i, n in enumerate(names)}
    rng = np.random.default_rng([seed, len(engines), count])
    draws = rng.integers(0, len(engines), size=(CHOICE_RESAMPLES, len(engines)))
    taken = np.stack([np.bincount(d, minlength=len(engines)) for d in draws]).astype(float)
    resampled = (taken @ sse.T) / (taken @ windows)[:, None]  # (resamples, candidates) MSE
    reference = resampled[:, names.index("global")]
    confidence = {n: float(np.mean(resampled[:, i] < reference)) for i, n in enumerate(names)}
    confidence["global"] = math.nan
    if len(engines) < MIN_JUDGING_ENGINES:
        return "global", rmse, confidence
    sure = [n for n in names if n != "global" and confidence[n] >= CHOICE_CONFIDENCE]
    if not sure:
        return "global", rmse, confidence
    return min(sure, key=lambda n: (rmse[n], CHOICES.index(n))), rmse, confidence


@dataclass(frozen=True)
class Judged:
    """What a site's choice was made on: each candidate's predictions on its validation
    windows, their true RUL and the engine of each window."""

    predictions: dict[str, np.ndarray]
    truth: np.ndarray
    units: np.ndarray

    @classmethod
    def of(cls, predictions: dict[str, np.ndarray], data: LocalData) -> Judged:
        return cls(predictions, np.asarray(data.y_val), np.asarray(data.judging_units))


@dataclass(frozen=True)
class PersonalChoice:
    """What a site chose and why: each candidate's RMSE on its validation windows (NaN
    without any), and the candidates, each as the weight sets whose predictions it
    averages. It stays at the site: the coordinator learns only how many sites chose
    which."""

    choice: str
    val_rmse: dict[str, float]
    candidates: dict[str, list[Weights]]
    seconds: float
    # Each candidate's confidence of beating the federation's model (see choose_model).
    confidence: dict[str, float] = field(default_factory=dict)
    # A hybrid's: each candidate's trees (its networks are ``candidates``), and the share
    # of the trees in every candidate's blend.
    tree_candidates: dict[str, list[Weights]] = field(default_factory=dict)
    share: float | None = None
    judged: Judged | None = None

    @property
    def members(self) -> list[Weights]:
        """The chosen model's weight sets (a model file averages their predictions)."""
        return self.candidates[self.choice]


def personalise_locally(
    model: RulModel,
    global_weights: Weights,
    start: Weights,
    data: LocalData,
    settings: dict[str, Any],
    ditto: Weights | None = None,
) -> PersonalChoice:
    """Fine-tune the federation's model on this site's windows, train a model alone from
    ``start`` (the federation's initial weights) for as many epochs and steps as the
    federation trained, mix the two, and choose between the :data:`CHOICES` (with ``ditto``, the
    site's Ditto model) on the validation windows (:func:`choose_model`). Fine-tuning and
    training alone keep their best epoch on training engines held back for it
    (:meth:`LocalData.stopping_split`), never on the validation engines that choose."""
    started = time.perf_counter()
    has_validation = len(data.x_val) > 0
    fit, stop = data.stopping_split(int(settings["seed"]))
    candidates = {"global": [global_weights]}
    for name, initial, epochs, steps, lr, patience in (
        (
            "personal",
            global_weights,
            settings["epochs"],
            0,
            settings["lr_final"],
            settings["epochs"],
        ),
        (
            "alone",
            start,
            settings["alone_epochs"],
            settings.get("alone_steps", 0),
            settings["lr"],
            ALONE_PATIENCE,
        ),
    ):
        config = TrainConfig(
            epochs=max(1, int(epochs)),
            min_steps=max(0, int(steps)),
            batch_size=int(settings["batch_size"]),
            lr=float(lr),
            weight_decay=float(settings["weight_decay"]),
            schedule="constant" if name == "personal" else "onecycle",
            patience=int(patience) if has_validation else 0,
            seed=int(settings["seed"]),
        )
        seed_everything(config.seed)
        net = model.new_net()
        set_weights(net, initial)
        candidates[name] = [
            train_network(
                net,
                fit.x,
                fit.y,
                config,
                x_val=stop.x_val if has_validation else None,
                y_val=stop.y_val if has_validation else None,
            ).weights
        ]
    combine(candidates)
    if ditto is not None:
        candidates["ditto"] = [ditto]
    predictions = {
        name: ensemble_predictions(model, members, data) for name, members in candidates.items()
    }
    choice, rmse, confidence = choose_model(predictions, data, seed=int(settings["seed"]))
    seconds = round(time.perf_counter() - started, 3)
    return PersonalChoice(
        choice, rmse, candidates, seconds, confidence, judged=Judged.of(predictions, data)
    )


def combine(candidates: dict[str, list[Any]]) -> None:
    """Add the candidate that averages others' predictions (a candidate is the list of
    members whose predictions it averages): the *mixture* of the fine-tuned copy and
    the model alone."""
    candidates["mixture"] = candidates["personal"] + candidates["alone"]


def encode_choice(choice: str) -> np.ndarray:
    """A site's choice as it puts it in the sum: one 1 among zeros (the sum counts)."""
    return np.array([1.0 if name == choice else 0.0 for name in CHOICES])


def decode_choices(summed: np.ndarray) -> dict[str, int]:
    """How many sites chose each model, from the sum of their one-hot choices."""
    return {name: int(round(float(value))) for name, value in zip(CHOICES, summed, strict=True)}


# --- the vector and its sum ----------------------------------------------------------------


def flatten(weights: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.astype(np.float64).ravel() for w in weights])


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> Weights:
    out, start = [], 0
    for array in like:
        out.append(vector[start : start + array.size].reshape(array.shape).astype(array.dtype))
        start += array.size
    return out


def training_length(like: Sequence[np.ndarray]) -> int:
    return sum(w.size for w in like) + TRAINING_EXTRAS


def encode_scores(result: LocalResult, weight: float) -> np.ndarray:
    """The incoming model's validation error as a site puts it in the sum, with its public
    ``weight``: the whole vector of a round that only scores, the tail of a training one."""
    mse = result.val_sse / result.val_count / VAL_UNIT if result.val_count else 0.0
    has_validation = 1.0 if result.val_count else 0.0
    return np.array([weight * mse, weight * has_validation])


def decode_scores(scores: np.ndarray) -> float:
    """The incoming model's RMSE over the validation engines of the sites in the sum (NaN
    where none sent one, as under DP)."""
    val_mse, val_weight = scores
    has_validation = val_weight > 1e-9  # it is a sum of positive weights, or 0 (quantised)
    return math.sqrt(max(val_mse, 0.0) / val_weight * VAL_UNIT) if has_validation else math.nan


def encode_training(result: LocalResult, weight: float) -> np.ndarray:
    """A site's vector in a training round without DP, with its public ``weight`` (see the
    module's docstring)."""
    return np.concatenate([weight * flatten(result.weights), encode_scores(result, weight)])


def encode_private_training(
    result: LocalResult,
    reference: Weights,
    privacy: dict[str, Any],
    weight: float,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A site's vector under DP: its update clipped, plus its share of the noise, with its
    (equal) public weight; no validation error (a fact about its data outside the
    accounting)."""
    private = clip_and_noise(
        result.weights,
        reference,
        clip=float(privacy["clip"]),
        noise_multiplier=float(privacy["noise_multiplier"]),
        noise_sites=int(privacy["noise_sites"]),
        rng=rng,
    )
    return np.concatenate([weight * flatten(private), [0.0, 0.0]])


def decode_training(
    summed: np.ndarray, like: Sequence[np.ndarray], total_weight: float
) -> tuple[Weights, float]:
    """The weighted mean of the sites' models, given the summed public weight of the sites
    in the sum, and the incoming global model's RMSE over the validation engines of those
    that have some (NaN where none sent one, as under DP)."""
    size = len(summed) - TRAINING_EXTRAS
    if not total_weight > 0:
        raise ValueError("the sites in the sum have no weight: nothing to average")
    return unflatten(summed[:size] / total_weight, like), decode_scores(summed[size:])
