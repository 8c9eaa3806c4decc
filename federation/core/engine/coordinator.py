"""The coordinator's side of a round: the work each site gets, the checks on what it
sends, the end of each stage, the sum, and what the sum decodes into.

Storage is the driver's: these functions read the messages a round has kept through a
:class:`MessageStore` (database rows in a live federation, a dictionary in the
simulation) and say what to keep; they never hold one site's input in the clear, except
in a plain round, which exists for debugging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from federation.core import analytics
from federation.core import messages as m
from federation.core.engine.rounds import RoundParameters, following
from federation.core.engine.training import (
    FederatedTraining,
    decode_training,
    initial_weights,
    training_length,
)
from federation.core.messages import Kind
from federation.core.secagg import protocol as p
from federation.core.secagg import wire
from federation.core.secagg.primitives import SecAggError, verify
from federation.core.secagg.server import SecAggServer
from federation.core.strategies import Weights, make_strategy
from turbofan.data.features import FeaturePipeline, RegimeModel
from turbofan.models.fit import NetworkRecipe

# The most training examples a site may say it has (what the database keeps of it).
MAX_EXAMPLES = 2**31 - 1

# --- what a round keeps --------------------------------------------------------------------


@dataclass(frozen=True)
class StoredMessage:
    """One site's message of one stage, as the coordinator keeps it."""

    site: int
    body: dict[str, Any]
    vector: np.ndarray | None = None  # a masked (or, in plain mode, plain) input


class MessageStore(Protocol):
    """The messages a round has kept so far."""

    def messages(self, stage: str) -> list[StoredMessage]:
        """The stage's messages, ordered by site."""
        ...

    def senders(self, stage: str) -> set[int]:
        """The sites that sent a message of the stage (without reading the messages)."""
        ...


def alive_and_dropped(store: MessageStore) -> tuple[set[int], set[int]]:
    """Sites whose masked input is in the sum, and sites that shared keys but sent none."""
    sharers = store.senders(p.SHARE_KEYS)
    alive = store.senders(p.MASKED_INPUT)
    return alive, sharers - alive


# --- the work each site gets ---------------------------------------------------------------


def stage_part(
    parameters: RoundParameters, stage: str, site: int, store: MessageStore
) -> dict[str, Any]:
    """The protocol part of a site's work in ``stage``: the round's parameters and what the
    stage needs from the others (their keys, the shares sealed to this site, who is
    alive), never anything another site sent to someone else."""
    part: dict[str, Any] = {m.STAGE: stage, m.SITE: site, m.PARAMETERS: parameters.to_json()}
    if parameters.secure is None:
        return part
    if stage == p.SHARE_KEYS:
        neighbours = set(parameters.secure.settings.graph()[site])
        part[m.ADVERTISED] = {
            str(message.site): message.body
            for message in store.messages(p.ADVERTISE_KEYS)
            if message.site in neighbours
        }
    elif stage == p.MASKED_INPUT:
        part[m.SEALED] = {
            str(message.site): message.body[p.SEALED][str(site)]
            for message in store.messages(p.SHARE_KEYS)
            if str(site) in message.body[p.SEALED]
        }
    elif stage == p.UNMASK:
        alive, dropped = alive_and_dropped(store)
        part[m.ALIVE], part[m.DROPPED] = sorted(alive), sorted(dropped)
    return part


# --- what each site sends ------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """A site's message as the coordinator keeps it: the body (public keys, sealed shares,
    revealed shares, or the metadata beside an input) and the input vector, if any."""

    body: dict[str, Any]
    vector: np.ndarray | None = None
    examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def check_message(
    parameters: RoundParameters, stage: str, site: int, body: Any, store: MessageStore
) -> Checked:
    """Check a site's message for ``stage`` against the round; what to keep.

    Raises :class:`SecAggError` saying what is wrong: another stage or round (a replay),
    another sender, a forged signature, shares for sites that are no neighbours, a vector
    of the wrong length, shares of a kind the round did not ask for.
    """
    if stage == m.PLAIN_INPUT:
        return _check_plain(parameters, site, body)
    secure = parameters.secure
    if secure is None:
        raise SecAggError(f"a {stage!r} message in a plain round")
    settings = secure.settings
    if stage == p.ADVERTISE_KEYS:
        message = wire.keys_from_json(body, settings)
        _same_site(message[p.SITE], site)
        signed = p.signed_keys(
            settings.round_id, site, message[p.SHARE_PUBLIC], message[p.MASK_PUBLIC]
        )
        verify(secure.identities[site], message[p.SIGNATURE], signed, who="the site")
        return Checked(wire.keys_to_json(message))
    if stage == p.SHARE_KEYS:
        message = wire.shares_from_json(body, settings)
        _same_site(message[p.SITE], site)
        return Checked(wire.shares_to_json(message, settings.round_id))
    if stage == p.MASKED_INPUT:
        message = wire.masked_from_json(body, settings, secure.quantiser, parameters.length)
        _same_site(message[p.SITE], site)
        return _with_metadata(stage, parameters, body, message[p.MASKED])
    if stage == p.UNMASK:
        alive, dropped = alive_and_dropped(store)
        message = wire.unmask_from_json(body, settings, alive, dropped)
        _same_site(message[p.SITE], site)
        if site not in alive:
            raise SecAggError("only sites whose masked input is in the sum take part in unmasking")
        return Checked(wire.unmask_to_json(message, settings.round_id))
    raise SecAggError(f"unknown stage {stage!r}")


def _check_plain(parameters: RoundParameters, site: int, body: Any) -> Checked:
    if parameters.secure is not None:
        raise SecAggError("a plain input in a secure round: refused")
    sender = wire.header(body, m.PLAIN_INPUT, parameters.round_id, parameters.sites)
    _same_site(sender, site)
    try:
        vector = m.vector_from_text(body.get(m.VECTOR), np.float64, parameters.length)
    except m.WireError as error:
        raise SecAggError(f"'{m.VECTOR}': {error}") from None
    if not np.isfinite(vector).all() or np.abs(vector).max(initial=0.0) > parameters.value_range:
        raise SecAggError(
            f"'{m.VECTOR}' must hold finite values within +-{parameters.value_range:g}"
        )
    return _with_metadata(m.PLAIN_INPUT, parameters, body, vector)


def _with_metadata(
    stage: str, parameters: RoundParameters, body: dict[str, Any], vector: np.ndarray
) -> Checked:
    """Beside its input a site says how many examples it trained on and how long it took,
    and nothing else (its training error is a fact about its data)."""
    examples = body.get(m.KEY_EXAMPLES, 0)
    if (
        isinstance(examples, bool)
        or not isinstance(examples, int)
        or not 0 <= examples <= MAX_EXAMPLES
    ):
        raise SecAggError(f"'{m.KEY_EXAMPLES}' must be a whole number from 0 to {MAX_EXAMPLES}")
    metrics = body.get(m.KEY_METRICS) or {}
    if not isinstance(metrics, dict) or set(metrics) - {"seconds"}:
        raise SecAggError(f"beside an input, '{m.KEY_METRICS}' may only hold 'seconds'")
    seconds = metrics.get("seconds", 0.0)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds < math.inf
    ):
        raise SecAggError("'seconds' must be a finite number >= 0")
    timing = {"seconds": float(seconds)} if metrics else {}
    kept = {
        m.STAGE: stage,
        m.ROUND: parameters.round_id,
        m.KEY_EXAMPLES: examples,
        m.KEY_METRICS: timing,
    }
    return Checked(kept, vector, examples, timing)


def _same_site(sender: int, site: int) -> None:
    if sender != site:
        raise SecAggError(f"the message says it is from site {sender}")


def message_bytes(stage: str, body: dict[str, Any]) -> int:
    """The bytes of content a site's message carries, whatever its ids and JSON."""
    if stage == m.PLAIN_INPUT:
        return wire.base64_bytes(body.get(m.VECTOR))
    return wire.payload_bytes(stage, body)


# --- the end of a stage ----------------------------------------------------------------------


@dataclass(frozen=True)
class StageEnd:
    """What happens when a stage ends: the stage that follows (None: the round is
    complete and can be summed), whether its silent sites are dropped, or why the round
    fails (nothing is aggregated)."""

    following: str | None
    drop_silent: bool
    failure: str = ""


def end_stage(parameters: RoundParameters, stage: str, *, answered: int, silent: int) -> StageEnd:
    """The end of ``stage`` once every site answered or its deadline passed.

    The silent are dropped, except in the unmask stage (their input is masked into the sum
    already: the others' shares unmask it). Below the threshold of the secure sum or the
    round's fewest contributors the round fails and nothing is aggregated.
    """
    minimum = parameters.min_contributors
    if stage == p.UNMASK:
        if answered < parameters.threshold:
            return StageEnd(
                None,
                False,
                f"{answered} of {answered + silent} sites revealed their shares by the "
                f"deadline; unmasking the sum needs {parameters.threshold}: nothing is "
                "aggregated",
            )
        return StageEnd(None, drop_silent=False)
    if parameters.secure is None:
        if answered < minimum:
            return StageEnd(
                None,
                True,
                f"{answered} of {answered + silent} sites answered by the deadline; the "
                f"federation needs {minimum}",
            )
        return StageEnd(None, drop_silent=True)
    threshold = parameters.threshold
    if answered < max(threshold, minimum):  # fewer now cannot reach the minimum later
        return StageEnd(
            None,
            True,
            f"{answered} of {answered + silent} sites answered the {stage} stage by its "
            f"deadline; secure aggregation needs {threshold} and the federation {minimum}: "
            "nothing is aggregated",
        )
    return StageEnd(following(stage), drop_silent=True)


# --- the sum -----------------------------------------------------------------------------------


def contributors(parameters: RoundParameters, store: MessageStore) -> set[int]:
    """The sites whose inputs are in the round's sum."""
    return store.senders(p.MASKED_INPUT if parameters.secure is not None else m.PLAIN_INPUT)


def round_sum(parameters: RoundParameters, store: MessageStore) -> np.ndarray:
    """The sum of the surviving sites' inputs, from what the round kept: the one vector
    the coordinator sees in the clear (in a plain round, the sum of plain inputs)."""
    if parameters.secure is None:
        inputs = [s.vector for s in store.messages(m.PLAIN_INPUT) if s.vector is not None]
        if not inputs:
            raise SecAggError("no site sent an input: nothing to sum")
        return np.sum(np.stack(inputs), axis=0)
    settings = parameters.secure.settings
    server = SecAggServer(settings, parameters.secure.identities, parameters.secure.quantiser)
    server.collect_keys(
        [wire.keys_from_json(s.body, settings) for s in store.messages(p.ADVERTISE_KEYS)]
    )
    server.collect_shares(
        [wire.shares_from_json(s.body, settings) for s in store.messages(p.SHARE_KEYS)]
    )
    alive, dropped = server.collect_masked(
        [{p.SITE: s.site, p.MASKED: s.vector} for s in store.messages(p.MASKED_INPUT)]
    )
    return server.finish(
        [wire.unmask_from_json(s.body, settings, alive, dropped) for s in store.messages(p.UNMASK)]
    )


# --- the federation's state, the task, and the outcome -----------------------------------------


@dataclass(frozen=True)
class FederationState:
    """What the coordinator knows between rounds, all of it shared with the members: the
    settings, the shared preprocessing fitted in the setup rounds, the global model."""

    template: FeaturePipeline  # unfitted: the number of regimes, the window, ...
    recipe: NetworkRecipe
    training: FederatedTraining
    regimes: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    weights: Weights | None = None
    version: int = 0
    strategy_state: Weights = field(default_factory=list)

    @property
    def n_regimes(self) -> int:
        return RegimeModel.from_dict(self.regimes).n_regimes if self.regimes else 1


def input_length(kind: Kind, state: FederationState, query: analytics.Query | None = None) -> int:
    """How many values each site's input to a round of ``kind`` has."""
    if kind == Kind.POINTS:
        return analytics.points_length()
    if kind == Kind.MOMENTS:
        return analytics.moments_length(state.n_regimes)
    if kind == Kind.ANALYTICS:
        if query is None:
            raise ValueError("an analytics round needs its query")
        return analytics.query_length(query, state.n_regimes)
    if state.weights is None:
        raise ValueError("a training round needs the global model")
    return training_length(state.weights)


def reference_max(kind: Kind, state: FederationState) -> float:
    """The largest absolute global weight (public): it bounds a DP training input."""
    if kind != Kind.TRAIN or not state.weights:
        return 0.0
    return float(max(np.abs(w).max() for w in state.weights))


def task(
    kind: Kind,
    number: int,
    state: FederationState,
    query: analytics.Query | None = None,
    *,
    member: int = 0,
) -> dict[str, Any]:
    """What a site needs, beside the protocol, to compute its input to the round."""
    if kind == Kind.MOMENTS:
        return {m.KEY_REGIMES: state.regimes}
    if kind == Kind.ANALYTICS:
        assert query is not None
        return {m.KEY_QUERY: query.to_dict(), m.KEY_REGIMES: state.regimes}
    if kind == Kind.POINTS:
        return {}
    assert state.weights is not None and state.pipeline is not None
    training = state.training
    strategy = make_strategy(training.strategy, **training.strategy_settings)
    return {
        m.KEY_PIPELINE: state.pipeline,
        m.KEY_RECIPE: state.recipe.to_dict(),
        m.KEY_WEIGHTS: m.b64(m.weights_to_bytes(state.weights)),
        m.KEY_MODEL_VERSION: state.version,
        m.KEY_LOCAL: training.local_config(number, member).to_dict(),
        m.KEY_PROXIMAL_MU: strategy.proximal_mu,
        m.KEY_VAL_FRACTION: training.val_fraction,
        m.KEY_SPLIT_SEED: training.seed,
    }


@dataclass(frozen=True)
class Outcome:
    """What a round's sum decodes into: the regimes (points), the shared pipeline and the
    initial weights (moments), the next global weights with the incoming model's pooled
    validation RMSE and the strategy's state (training), or a query's answer."""

    regimes: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    weights: Weights | None = None
    val_rmse: float = math.nan
    strategy_state: Weights = field(default_factory=list)
    answer: dict[str, Any] | None = None


def decode(
    kind: Kind,
    summed: np.ndarray,
    parameters: RoundParameters,
    state: FederationState,
    query: analytics.Query | None = None,
    *,
    summed_sites: set[int] | None = None,
) -> Outcome:
    """The outcome of a round from the sum of its sites' inputs and public numbers only
    (``summed_sites``, for a training round: the sites whose inputs are in the sum, see
    :func:`contributors`)."""
    scale = parameters.weight_scale
    if kind == Kind.POINTS:  # the sites' operating points, counted on a public grid
        points, counts = analytics.decode_points(summed, scale=scale)
        regimes = RegimeModel.fit_points(
            points, counts, state.template.n_regimes, state.training.seed
        )
        return Outcome(regimes=regimes.to_dict())
    if kind == Kind.MOMENTS:
        regimes = RegimeModel.from_dict(state.regimes or {})
        moments = analytics.decode_moments(summed, n_regimes=regimes.n_regimes, scale=scale)
        pipeline = state.template.unfitted().fit_moments(regimes, moments)
        weights = initial_weights(pipeline, state.recipe, state.training.member_seed(0))
        return Outcome(pipeline=pipeline.to_dict(), weights=weights)
    if kind == Kind.ANALYTICS:
        assert query is not None
        privacy = parameters.privacy
        answer = analytics.decode_query(
            summed,
            query,
            scale=scale,
            n_regimes=state.n_regimes,
            privacy=analytics.QueryPrivacy.from_dict(privacy) if privacy else None,
        )
        return Outcome(answer=answer)
    assert state.weights is not None and summed_sites is not None
    mean, val_rmse = decode_training(summed, state.weights, parameters.weight_of(summed_sites))
    strategy = make_strategy(state.training.strategy, **state.training.strategy_settings)
    strategy.load_state(state.strategy_state)
    weights = strategy.step(state.weights, mean)
    return Outcome(weights=weights, val_rmse=val_rmse, strategy_state=strategy.state())


def advance(state: FederationState, kind: Kind, outcome: Outcome) -> FederationState:
    """The federation's state after a round's outcome (a query changes nothing)."""
    if kind == Kind.POINTS:
        return replace(state, regimes=outcome.regimes)
    if kind == Kind.MOMENTS:
        return replace(state, pipeline=outcome.pipeline, weights=outcome.weights, version=0)
    if kind == Kind.TRAIN:
        return replace(
            state,
            weights=outcome.weights,
            version=state.version + 1,
            strategy_state=outcome.strategy_state,
        )
    return state
