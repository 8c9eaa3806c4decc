"""The coordinator's side of a round: the work each site gets, the checks on what it
sends, the end of each stage, and the sum (what the sum decodes into is :mod:`.state`'s).

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

from federation.core import messages as m
from federation.core.engine.rounds import RoundParameters, following
from federation.core.secagg import protocol as p
from federation.core.secagg import wire
from federation.core.secagg.client import check_advertised
from federation.core.secagg.primitives import SecAggError
from federation.core.secagg.primitives import verify as verify_signature
from federation.core.secagg.server import SecAggServer, judge_complaints, revealed_share_problem

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


def blamed(store: MessageStore) -> dict[int, str]:
    """The sites a complaint proved at fault in the round so far, and why: they are out
    of the sum (a false complainer, or a site whose shares did not hold)."""
    found: dict[int, str] = {}
    for message in store.messages(p.MASKED_INPUT):
        for site, reason in message.body.get(p.BLAMED, {}).items():
            found.setdefault(int(site), reason)
    return found


def alive_and_dropped(store: MessageStore) -> tuple[set[int], set[int]]:
    """Sites whose masked input is in the sum, and sites that shared keys but whose input
    is not (they sent none, or a complaint excluded them)."""
    sharers = store.senders(p.SHARE_KEYS)
    alive = store.senders(p.MASKED_INPUT) - set(blamed(store))
    return alive, sharers - alive


def answered(stage: str, store: MessageStore) -> set[int]:
    """The sites that answered ``stage`` and are still in the round (not excluded)."""
    return store.senders(stage) - set(blamed(store))


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
        shared = [
            message
            for message in store.messages(p.SHARE_KEYS)
            if str(site) in message.body[p.SEALED]
        ]
        part[m.SEALED] = {str(s.site): s.body[p.SEALED][str(site)] for s in shared}
        part[m.COMMITMENTS] = {str(s.site): s.body[p.COMMITMENTS][str(site)] for s in shared}
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
    faults: dict[int, str] = field(default_factory=dict)  # site: what it was shown to do


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
        check_advertised(settings, site, message, secure.identities[site])
        return Checked(wire.keys_to_json(message))
    if stage == p.SHARE_KEYS:
        message = wire.shares_from_json(body, settings)
        _same_site(message[p.SITE], site)
        expected = set(settings.graph()[site]) & store.senders(p.ADVERTISE_KEYS)
        if set(message[p.SEALED]) != expected:
            raise SecAggError(
                f"shares for sites {sorted(message[p.SEALED])}; the round expects one for "
                f"each neighbour that advertised keys: {sorted(expected)}"
            )
        return Checked(wire.shares_to_json(message, settings.round_id))
    if stage == p.MASKED_INPUT:
        message = wire.masked_from_json(body, settings, secure.quantiser, parameters.length)
        _same_site(message[p.SITE], site)
        return _masked_input(parameters, site, body, message, store)
    if stage == p.UNMASK:
        alive, dropped = alive_and_dropped(store)
        message = wire.unmask_from_json(body, settings, alive, dropped)
        _same_site(message[p.SITE], site)
        if site not in alive:
            raise SecAggError("only sites whose masked input is in the sum take part in unmasking")
        return _revealed(parameters, message, store)
    raise SecAggError(f"unknown stage {stage!r}")


def _server_view(
    parameters: RoundParameters, store: MessageStore
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The round's advertised keys and shares with their commitments, as the secure
    aggregation server reads them."""
    assert parameters.secure is not None
    settings = parameters.secure.settings
    advertised = {
        s.site: wire.keys_from_json(s.body, settings) for s in store.messages(p.ADVERTISE_KEYS)
    }
    shared = {s.site: wire.shares_from_json(s.body, settings) for s in store.messages(p.SHARE_KEYS)}
    return advertised, shared


def _masked_input(
    parameters: RoundParameters,
    site: int,
    body: dict[str, Any],
    message: dict[str, Any],
    store: MessageStore,
) -> Checked:
    """A masked input and the complaints beside it, each judged on what the round holds:
    the neighbour whose shares did not hold is excluded, or the complainer, if the
    complaint is false. An excluded site's input is not kept."""
    assert parameters.secure is not None
    settings = parameters.secure.settings
    complaints: dict[int, bytes] = message[p.COMPLAINTS]
    earlier = blamed(store)
    found: dict[int, str] = {}
    if complaints:
        advertised, shared = _server_view(parameters, store)
        found = judge_complaints(settings, advertised, shared, site, complaints, earlier)
    checked = _with_metadata(p.MASKED_INPUT, parameters, site, body, message[p.MASKED])
    kept = {**checked.body}
    if complaints:
        kept[p.COMPLAINTS] = {str(j): m.b64(key) for j, key in complaints.items()}
    if found:
        kept[p.BLAMED] = {str(j): reason for j, reason in found.items()}
    if site in earlier or site in found:  # out of the round: its input is not kept
        return replace(checked, body=kept, vector=None, faults=found)
    return replace(checked, body=kept, faults=found)


def _revealed(parameters: RoundParameters, message: dict[str, Any], store: MessageStore) -> Checked:
    """A site's revealed shares, each checked against its dealer's commitment: the ones
    that fail are not kept, and the site is named for each."""
    assert parameters.secure is not None
    round_id = parameters.round_id
    holder = message[p.SITE]
    # Only the commitments made to this holder are needed: read those, not every share.
    shared = {
        s.site: {p.COMMITMENTS: {holder: m.unb64(s.body[p.COMMITMENTS][str(holder)])}}
        for s in store.messages(p.SHARE_KEYS)
        if str(holder) in s.body[p.COMMITMENTS]
    }
    faults: dict[int, str] = {}
    for key, kind in ((p.SEED_SHARES, p.SEED), (p.KEY_SHARES, p.KEY)):
        for owner, share in list(message[key].items()):
            problem = revealed_share_problem(round_id, shared, owner, holder, kind, share)
            if problem:
                del message[key][owner]
                faults.setdefault(holder, problem)
    return Checked(wire.unmask_to_json(message, round_id), faults=faults)


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
    return _with_metadata(m.PLAIN_INPUT, parameters, site, body, vector)


def _with_metadata(
    stage: str, parameters: RoundParameters, site: int, body: dict[str, Any], vector: np.ndarray
) -> Checked:
    """Beside its input a site says how many examples it trained on, how long it took, and
    (when the round scores a candidate model) its signed vote, and nothing else (its
    training error is a fact about its data)."""
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
        **_vote(parameters, site, body),
    }
    return Checked(kept, vector, examples, timing)


def _vote(parameters: RoundParameters, site: int, body: dict[str, Any]) -> dict[str, Any]:
    """A site's vote on the round's candidate: 0 or 1, signed with its identity key in a
    secure round (one site, one vote, and nobody votes for another)."""
    if m.KEY_VOTE not in body:
        return {}
    vote = body[m.KEY_VOTE]
    if isinstance(vote, bool) or vote not in (0, 1):
        raise SecAggError(f"'{m.KEY_VOTE}' must be 0 or 1")
    signature = body.get(m.KEY_VOTE_SIGNATURE)
    if parameters.secure is not None:
        if not isinstance(signature, str):
            raise SecAggError(f"a vote needs its '{m.KEY_VOTE_SIGNATURE}' (base64)")
        try:
            raw = m.unb64(signature)
        except m.WireError:
            raise SecAggError(f"'{m.KEY_VOTE_SIGNATURE}' must be base64") from None
        signed = p.signed_vote(parameters.round_id, site, vote)
        verify_signature(parameters.secure.identities[site], raw, signed, who="the site's vote")
    return {m.KEY_VOTE: vote, m.KEY_VOTE_SIGNATURE: signature}


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


def _input_stage(parameters: RoundParameters) -> str:
    return p.MASKED_INPUT if parameters.secure is not None else m.PLAIN_INPUT


def contributors(parameters: RoundParameters, store: MessageStore) -> set[int]:
    """The sites whose inputs are in the round's sum."""
    if parameters.secure is not None:
        return alive_and_dropped(store)[0]
    return store.senders(m.PLAIN_INPUT)


def votes(parameters: RoundParameters, store: MessageStore) -> dict[int, int]:
    """Each site's vote on the round's candidate model (the sites that voted)."""
    stored = store.messages(_input_stage(parameters))
    return {s.site: int(s.body[m.KEY_VOTE]) for s in stored if m.KEY_VOTE in s.body}


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
    alive, dropped = server.collect_masked(  # the complaints were judged as they came
        [{p.SITE: s.site, p.MASKED: s.vector} for s in store.messages(p.MASKED_INPUT)],
        excluded=blamed(store),
    )
    return server.finish(
        [wire.unmask_from_json(s.body, settings, alive, dropped) for s in store.messages(p.UNMASK)]
    )
