"""Secure training rounds: the coordinator's side of the four stages, over the API.

A secure round is a training round whose ``stage`` field walks through
:data:`protocol.STAGES`. Each stage collects one message per site (a
:class:`StageMessage`) until every site has answered or the stage's deadline
passes; the silent are dropped, and below the threshold the round fails with that
reason and nothing is aggregated. The coordinator keeps public keys, shares
encrypted to other sites, masked vectors and the shares revealed for unmasking:
from these only the sum can be computed (see :mod:`federation.core.secagg`).
"""

from __future__ import annotations

import base64
import logging
import math
import secrets
from datetime import timedelta
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from federation.core.secagg import protocol as p
from federation.core.secagg import session, wire
from federation.core.secagg.aggregate import (
    DEFAULT_CLIP,
    PRECISE_LEVELS,
    PRECISE_MODULUS_BITS,
)
from federation.core.secagg.primitives import Quantiser, SecAggError, verify
from federation.core.secagg.server import SecAggServer
from federation.errors import FederationError
from federation.models import Contribution, Round, Site, StageMessage

log = logging.getLogger(__name__)


# --- identities ---------------------------------------------------------------------------


def site_register_identity(*, site: Site, public_key: Any) -> None:
    """Record the Ed25519 public key a site signs its round keys with."""
    try:
        raw = wire.public_key_from_json(public_key)
    except SecAggError as error:
        raise FederationError(str(error), status=400) from None
    Site.objects.filter(id=site.id).update(identity_key=base64.b64encode(raw).decode("ascii"))
    site.refresh_from_db()


# --- opening ------------------------------------------------------------------------------


def round_begin(
    *,
    round_: Round,
    sites: list[Site],
    length: int,
    noise: tuple[float, float] | None = None,
    minimum: int = 2,
    reference_max: float = 0.0,
) -> list[Site]:
    """Set a round up for secure aggregation of ``length``-long vectors; the sites that
    take part.

    Only sites that registered an identity can sign their round keys; the others sit
    this round out (their worker registers one when it starts). With ``noise``
    (multiplier, clipping bound) each site adds the noise share that makes the sum of
    the fewest sites the round can end with carry the configured noise.
    """
    ready = [s for s in sites if s.identity_key]
    if len(ready) < 2:
        return ready  # the caller fails the round below its minimum
    settings = p.plan(secrets.token_hex(16), tuple(s.id for s in ready))
    noise_sites = max(settings.threshold, minimum)
    quantiser = Quantiser(
        clip=_value_range(round_, noise, noise_sites, len(ready), reference_max),
        levels=PRECISE_LEVELS,
        n_sites=len(ready),
        modulus_bits=PRECISE_MODULUS_BITS,
    )
    identities = {s.id: base64.b64decode(s.identity_key) for s in ready}
    parameters = wire.round_to_json(settings, quantiser, identities, length)
    # A public number of the order of the total examples: the sites weight by it.
    rows = [int((s.data_summary or {}).get("train_rows", 0)) for s in ready]
    parameters[session.WEIGHT_SCALE] = max(sum(rows), 1)
    if noise is not None:
        parameters[session.PRIVACY] = {
            "noise_multiplier": noise[0],
            "clip": noise[1],
            "noise_sites": noise_sites,
        }
        if round_.kind == Round.Kind.TRAIN:
            parameters[session.WEIGHT_SCALE] = len(ready)  # one site, one vote
    Round.objects.filter(id=round_.id).update(stage=p.ADVERTISE_KEYS, secagg=parameters)
    round_.refresh_from_db()
    return ready


def _value_range(
    round_: Round,
    noise: tuple[float, float] | None,
    noise_sites: int,
    n_sites: int,
    reference_max: float,
) -> float:
    """The fixed-point range of the round's inputs, from public numbers only.

    A DP training input is (global weights + clipped update + noise share) / n: its
    range must hold six standard deviations of a noise share, or clipping would cut
    the noise the accountant counts on. Statistics keep the analytics encoding's range.
    """
    if noise is None or round_.kind != Round.Kind.TRAIN:
        return DEFAULT_CLIP
    multiplier, clip = noise
    bound = (reference_max + clip + 6 * multiplier * clip / math.sqrt(noise_sites)) / n_sites
    return max(DEFAULT_CLIP, bound)


# --- what each site gets ------------------------------------------------------------------------


def work_part(contribution: Contribution) -> dict[str, Any]:
    """The secure-aggregation part of a site's work in the round's current stage."""
    round_ = contribution.round
    site, stage = contribution.site_id, round_.stage
    settings = wire.round_from_json(round_.secagg)[0]
    part: dict[str, Any] = {
        p.STAGE: stage,
        p.SITE: site,
        session.ROUND_PARAMETERS: round_.secagg,
    }
    if stage == p.SHARE_KEYS:
        neighbours = set(settings.graph()[site])
        part[session.ADVERTISED] = {
            str(m.site_id): m.body
            for m in _messages(round_, p.ADVERTISE_KEYS)
            if m.site_id in neighbours
        }
    elif stage == p.MASKED_INPUT:
        part[session.SEALED] = {
            str(m.site_id): m.body[p.SEALED][str(site)]
            for m in _messages(round_, p.SHARE_KEYS)
            if str(site) in m.body[p.SEALED]
        }
    elif stage == p.UNMASK:
        alive, dropped = _alive_and_dropped(round_)
        part[session.ALIVE], part[session.DROPPED] = sorted(alive), sorted(dropped)
    return part


def _messages(round_: Round, stage: str) -> QuerySet[StageMessage]:
    return StageMessage.objects.filter(round=round_, stage=stage).order_by("site_id")


def _alive_and_dropped(round_: Round) -> tuple[set[int], set[int]]:
    """Sites whose masked input arrived, and sites that shared keys but sent none."""
    sharers = set(_messages(round_, p.SHARE_KEYS).values_list("site_id", flat=True))
    alive = set(_messages(round_, p.MASKED_INPUT).values_list("site_id", flat=True))
    return alive, sharers - alive


# --- what each site sends ---------------------------------------------------------------------


def submit(*, contribution: Contribution, body: dict[str, Any]) -> None:
    """Check and keep a site's message for the current stage; close the stage when all
    sites have answered. Anything forged, replayed, misaddressed or of another stage is
    refused with a 400 that says what is wrong."""
    round_ = contribution.round
    stage = round_.stage
    if round_.status != Round.Status.COLLECTING:
        raise FederationError(f"the round is {round_.status}: results are closed")
    if contribution.status != Contribution.Status.ASSIGNED:
        raise FederationError(f"this site's part in the round is {contribution.status}")
    if contribution.stage == stage:
        raise FederationError(f"this site answered the {stage} stage of the round already")
    try:
        stored, vector = _check(round_, contribution, body)
    except SecAggError as error:
        raise FederationError(f"refused: {error}", status=400) from None
    _store(round_, contribution, stage, stored, vector)
    if not _pending(round_).exists():
        _last_answer(round_)


def _last_answer(round_: Round) -> None:
    """Everyone answered the stage: open the next one at once, in this request (a hop
    through the coordinator's queue would cost a broker poll per stage). The last
    stage, and a stage that ends the round, go to the coordinator's worker."""
    from worker.tasks import enqueue_close, schedule_deadline

    if round_.stage != p.UNMASK:
        with transaction.atomic():
            _, failure = close_stage(round_=round_, minimum=round_.federation.min_sites)
        if not failure:
            transaction.on_commit(lambda: schedule_deadline(round_))
            return
    transaction.on_commit(lambda: enqueue_close(round_.id))


def _check(
    round_: Round, contribution: Contribution, body: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The message in the form the coordinator keeps, and the masked vector if any."""
    settings, quantiser, identities, length = wire.round_from_json(round_.secagg)
    stage = round_.stage
    if stage == p.ADVERTISE_KEYS:
        message = wire.keys_from_json(body, settings)
        _same_site(message, contribution)
        signed = p.signed_keys(
            settings.round_id, message[p.SITE], message[p.SHARE_PUBLIC], message[p.MASK_PUBLIC]
        )
        verify(identities[message[p.SITE]], message[p.SIGNATURE], signed, who="the site")
        return wire.keys_to_json(message), None
    if stage == p.SHARE_KEYS:
        message = wire.shares_from_json(body, settings)
        _same_site(message, contribution)
        return wire.shares_to_json(message, settings.round_id), None
    if stage == p.MASKED_INPUT:
        message = wire.masked_from_json(body, settings, quantiser, length)
        _same_site(message, contribution)
        examples = body.get("examples")
        if isinstance(examples, bool) or not isinstance(examples, int) or examples < 0:
            raise SecAggError("'examples' must be a whole number >= 0")
        kept = {
            p.STAGE: stage,
            p.ROUND: settings.round_id,
            "examples": examples,
            "metrics": _timing_only(body.get("metrics")),
        }
        return kept, message[p.MASKED]
    alive, dropped = _alive_and_dropped(round_)
    message = wire.unmask_from_json(body, settings, alive, dropped)
    _same_site(message, contribution)
    if message[p.SITE] not in alive:
        raise SecAggError("only sites whose masked input is in the sum take part in unmasking")
    return wire.unmask_to_json(message, settings.round_id), None


def _timing_only(metrics: Any) -> dict[str, float]:
    """Beside a masked input, a site may say how long it trained, and nothing else
    (its training error is a fact about its data)."""
    metrics = metrics or {}
    if not isinstance(metrics, dict) or set(metrics) - {"seconds"}:
        raise SecAggError("beside a masked input, 'metrics' may only hold 'seconds'")
    seconds = metrics.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise SecAggError("'seconds' must be a number >= 0")
    return {"seconds": float(seconds)} if metrics else {}


def _same_site(message: dict[str, Any], contribution: Contribution) -> None:
    if message[p.SITE] != contribution.site_id:
        raise SecAggError(f"the message says it is from site {message[p.SITE]}")


def _store(
    round_: Round,
    contribution: Contribution,
    stage: str,
    stored: dict[str, Any],
    vector: np.ndarray | None,
) -> None:
    """Keep the message, then mark the stage answered, in one transaction."""
    message = StageMessage(round=round_, site_id=contribution.site_id, stage=stage, body=stored)
    if vector is not None:  # the file first: whoever sees the message can read it
        name = f"{round_.id}-{contribution.site_id}.u{vector.dtype.itemsize * 8}"
        message.vector.save(name, ContentFile(vector.tobytes()), save=False)
    try:
        with transaction.atomic():
            message.save()
            fields: dict[str, Any] = {"stage": stage}
            if vector is not None:
                fields.update(
                    examples=stored["examples"],
                    metrics=stored["metrics"],
                    received_at=timezone.now(),
                )
            changed = (
                Contribution.objects.filter(
                    id=contribution.id,
                    status=Contribution.Status.ASSIGNED,
                    round__status=Round.Status.COLLECTING,
                    round__stage=stage,
                )
                .exclude(stage=stage)
                .update(**fields)
            )
            if not changed:
                raise IntegrityError("the stage moved on meanwhile")
    except IntegrityError:
        if message.vector:
            message.vector.delete(save=False)
        raise FederationError(
            f"this site's {stage} message was received already, or the stage has closed"
        ) from None
    contribution.refresh_from_db()


# --- closing stages --------------------------------------------------------------------------


def _pending(round_: Round) -> QuerySet[Contribution]:
    return Contribution.objects.filter(round=round_, status=Contribution.Status.ASSIGNED).exclude(
        stage=round_.stage
    )


def close_stage(*, round_: Round, minimum: int) -> tuple[bool, str]:
    """End the current stage once every site answered or its deadline passed.

    Returns ``(closed, failure)``: ``closed`` when the last stage ended and the round
    can be aggregated; ``failure`` the reason the round must fail ("" if none). The
    round stays collecting, in the next stage with a fresh deadline, otherwise.
    """
    now = timezone.now()
    stage = round_.stage
    if _pending(round_).exists() and now < round_.deadline:
        return False, ""
    if stage == p.UNMASK:
        # The silent keep their input in the sum: it is masked in already.
        changed = Round.objects.filter(
            id=round_.id, status=Round.Status.COLLECTING, stage=stage
        ).update(status=Round.Status.AGGREGATING, closed_at=now)
        if changed:
            Contribution.objects.filter(round=round_, status=Contribution.Status.ASSIGNED).update(
                status=Contribution.Status.RECEIVED
            )
        round_.refresh_from_db()
        return bool(changed), ""
    # The silent are dropped first: a late message of this stage then finds its
    # contribution dropped, and nobody can answer the next stage before the drop.
    dropped = _pending(round_).update(status=Contribution.Status.DROPPED)
    answered = Contribution.objects.filter(
        round=round_, status=Contribution.Status.ASSIGNED, stage=stage
    ).count()
    threshold = round_.secagg["threshold"]
    needed = max(threshold, minimum)  # fewer now cannot reach the minimum later
    if answered < needed:
        return False, (
            f"{answered} of {answered + dropped} sites answered the {stage} stage by its "
            f"deadline; secure aggregation needs {threshold} and the federation {minimum}: "
            "nothing is aggregated"
        )
    following = p.STAGES[p.STAGES.index(stage) + 1]
    changed = Round.objects.filter(
        id=round_.id, status=Round.Status.COLLECTING, stage=stage
    ).update(stage=following, deadline=now + timedelta(seconds=round_.federation.round_deadline))
    round_.refresh_from_db()
    if not changed:
        return False, ""
    log.info(
        "secure stage closed round=%s stage=%s answered=%d dropped=%d next=%s",
        round_.id,
        stage,
        answered,
        dropped,
        following,
    )
    return False, ""


# --- the sum -----------------------------------------------------------------------------------


def unmasked_sum(*, round_: Round) -> np.ndarray:
    """The sum of the surviving sites' inputs, from what the round stored: the one
    vector the coordinator ever sees in the clear."""
    settings, quantiser, identities, length = wire.round_from_json(round_.secagg)
    server = SecAggServer(settings, identities, quantiser)
    server.collect_keys(
        [wire.keys_from_json(m.body, settings) for m in _messages(round_, p.ADVERTISE_KEYS)]
    )
    server.collect_shares(
        [wire.shares_from_json(m.body, settings) for m in _messages(round_, p.SHARE_KEYS)]
    )
    masked = []
    for message in _messages(round_, p.MASKED_INPUT):
        with message.vector.open("rb") as handle:
            vector = np.frombuffer(handle.read(), dtype=quantiser.dtype)
        masked.append({p.SITE: message.site_id, p.MASKED: vector})
    alive, dropped = server.collect_masked(masked)
    return server.finish(
        [
            wire.unmask_from_json(m.body, settings, alive, dropped)
            for m in _messages(round_, p.UNMASK)
        ]
    )
