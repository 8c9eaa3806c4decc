"""A site's turn in one stage of a live secure round.

A live round spans four requests, and the site's worker may restart between them:
the site's secrets of the round live in its keystore (``state``), never elsewhere.
What a stage sent is kept too, so a post that failed is sent again unchanged
instead of being computed anew (new keys, or a second reveal, would be refused).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from federation.core.secagg import protocol as p
from federation.core.secagg import wire
from federation.core.secagg.client import SecAggClient
from federation.core.secagg.primitives import SecAggError, SigningKey

# The key of the secure part in a site's work, and the public weight scale in the
# round's parameters (sites weight their input by examples / scale).
WORK_KEY = "secagg"
WEIGHT_SCALE = "weight_scale"
# Differential privacy of the round, if any: clip, noise multiplier, noise_sites.
PRIVACY = "privacy"
# Keys of the work message of a secure stage, beside the round's parameters.
ROUND_PARAMETERS = "parameters"
ADVERTISED = "advertised"
SEALED = "sealed"
ALIVE = "alive"
DROPPED = "dropped"
SENT = "sent"


def site_step(
    work: dict[str, Any],
    site: int,
    identity: SigningKey,
    state: dict[str, Any] | None,
    masked_input: Callable[[], tuple[np.ndarray, dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """This site's message for the stage ``work`` asks for, and its state afterwards.

    ``masked_input`` computes the vector to sum (it trains the model) and any plain
    metadata to send beside it (the number of examples), called only in the
    masked-input stage. Raises :class:`SecAggError` for anything forged, replayed
    or unsafe; the site then sends nothing.
    """
    stage = work[p.STAGE]
    settings, quantiser, identities, length = wire.round_from_json(work[ROUND_PARAMETERS])
    sent = (state or {}).get(SENT, {})
    if stage in sent:
        return sent[stage], state  # type: ignore[return-value]
    if state is None and stage != p.ADVERTISE_KEYS:
        raise SecAggError(
            f"the keystore holds no keys of secure round {settings.round_id}: this site "
            "cannot take part in it any more"
        )
    if state is None:
        client = SecAggClient(settings, site, identity, identities, quantiser)
    else:
        client = SecAggClient.from_state(state, settings, site, identity, identities, quantiser)
    round_id = settings.round_id
    if stage == p.ADVERTISE_KEYS:
        body = wire.keys_to_json(client.advertise())
    elif stage == p.SHARE_KEYS:
        advertised = {
            int(peer): wire.keys_from_json(message, settings)
            for peer, message in work[ADVERTISED].items()
        }
        body = wire.shares_to_json(client.share(advertised), round_id)
    elif stage == p.MASKED_INPUT:
        received = {
            int(sender): wire.sealed_from_json(text, sender)
            for sender, text in work[SEALED].items()
        }
        values, metadata = masked_input()
        if len(values) != length:
            raise SecAggError(f"the input has {len(values)} values; the round sums {length}")
        body = {**metadata, **wire.masked_to_json(client.mask(values, received), round_id)}
    elif stage == p.UNMASK:
        body = wire.unmask_to_json(client.unmask(set(work[ALIVE]), set(work[DROPPED])), round_id)
    else:
        raise SecAggError(f"unknown secure-aggregation stage {stage!r}")
    return body, {**client.to_state(), SENT: {**sent, stage: body}}
