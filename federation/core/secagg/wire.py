"""The JSON form of secure-aggregation messages, for live rounds over HTTP.

Bytes travel as base64, Shamir shares as hex, masked vectors as base64 of their
little-endian words. Every ``*_from_json`` checks what it reads against the round's
parameters and raises :class:`SecAggError` with what is wrong, so a coordinator can
refuse a message with a 400 and a site can refuse a forged or replayed one.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import (
    NONCE_BYTES,
    PRIME,
    SHARE_BYTES,
    TAG_BYTES,
    Quantiser,
    SecAggError,
)

KEY_BYTES = 32
SIGNATURE_BYTES = 64
# A sealed share: the nonce, a self-mask share and a mask-key share, the tag. Every
# share has this size, so its size says nothing, and nothing else is accepted.
SEALED_SHARE_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES


# --- the round's public parameters ----------------------------------------------------


def round_to_json(
    settings: p.Settings, quantiser: Quantiser, identities: dict[int, bytes], length: int
) -> dict[str, Any]:
    """What every site of the round needs to know, and the coordinator keeps."""
    return {
        p.ROUND: settings.round_id,
        "sites": list(settings.sites),
        "threshold": settings.threshold,
        "neighbours": settings.neighbours,
        "graph_seed": settings.graph_seed,
        "clip": quantiser.clip,
        "levels": quantiser.levels,
        "modulus_bits": quantiser.modulus_bits,
        "length": length,
        "identities": {str(s): _b64(key) for s, key in identities.items()},
    }


def round_from_json(
    data: dict[str, Any],
) -> tuple[p.Settings, Quantiser, dict[int, bytes], int]:
    try:
        settings = p.Settings(
            round_id=str(data[p.ROUND]),
            sites=tuple(int(s) for s in data["sites"]),
            threshold=int(data["threshold"]),
            neighbours=int(data["neighbours"]),
            graph_seed=int(data["graph_seed"]),
        )
        quantiser = Quantiser(
            clip=float(data["clip"]),
            levels=int(data["levels"]),
            n_sites=len(settings.sites),
            modulus_bits=int(data["modulus_bits"]),
        )
        identities = {
            int(s): _bytes(k, KEY_BYTES, "identity") for s, k in data["identities"].items()
        }
        return settings, quantiser, identities, int(data["length"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SecAggError(
            f"the round's secure-aggregation parameters are incomplete: {error}"
        ) from None


def public_key_from_json(value: Any) -> bytes:
    """A site's registered Ed25519 identity: base64 of 32 bytes that parse as a key."""
    raw = _bytes(value, None, "public_key")
    if len(raw) != KEY_BYTES:
        raise SecAggError("'public_key' must be a 32-byte Ed25519 public key (base64)")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SecAggError("'public_key' is not an Ed25519 public key") from None
    return raw


# --- stage 1: keys ------------------------------------------------------------------------


def keys_to_json(message: dict[str, Any]) -> dict[str, Any]:
    return {
        p.STAGE: p.ADVERTISE_KEYS,
        p.ROUND: message[p.ROUND],
        p.SITE: message[p.SITE],
        p.SHARE_PUBLICS: {str(j): _b64(k) for j, k in message[p.SHARE_PUBLICS].items()},
        p.MASK_PUBLIC: _b64(message[p.MASK_PUBLIC]),
        p.SEED_COMMITMENT: _b64(message[p.SEED_COMMITMENT]),
        p.SIGNATURE: _b64(message[p.SIGNATURE]),
    }


def keys_from_json(data: Any, settings: p.Settings) -> dict[str, Any]:
    """A site's signed round keys, with a channel key for each of its neighbours exactly."""
    site = _header(data, p.ADVERTISE_KEYS, settings)
    channels = _per_neighbour(
        data.get(p.SHARE_PUBLICS), p.SHARE_PUBLICS, settings, site, KEY_BYTES, "channel key"
    )
    missing = set(settings.graph()[site]) - set(channels)
    if missing:
        raise SecAggError(
            f"site {site} advertised no channel key for its neighbours {sorted(missing)}"
        )
    return {
        p.SITE: site,
        p.ROUND: settings.round_id,
        p.SHARE_PUBLICS: channels,
        p.MASK_PUBLIC: _bytes(data.get(p.MASK_PUBLIC), KEY_BYTES, p.MASK_PUBLIC),
        p.SEED_COMMITMENT: _bytes(
            data.get(p.SEED_COMMITMENT), p.COMMITMENT_BYTES, p.SEED_COMMITMENT
        ),
        p.SIGNATURE: _bytes(data.get(p.SIGNATURE), SIGNATURE_BYTES, p.SIGNATURE),
    }


# --- stage 2: encrypted shares --------------------------------------------------------------


def shares_to_json(message: dict[str, Any], round_id: str) -> dict[str, Any]:
    return {
        p.STAGE: p.SHARE_KEYS,
        p.ROUND: round_id,
        p.SITE: message[p.SITE],
        p.SEALED: {str(peer): _b64(sealed) for peer, sealed in message[p.SEALED].items()},
        p.COMMITMENTS: {str(peer): _b64(c) for peer, c in message[p.COMMITMENTS].items()},
    }


def shares_from_json(data: Any, settings: p.Settings) -> dict[str, Any]:
    """A site's sealed shares and their commitments: one of each per neighbour it
    shares with, the same neighbours for both."""
    site = _header(data, p.SHARE_KEYS, settings)
    sealed = _per_neighbour(
        data.get(p.SEALED), p.SEALED, settings, site, SEALED_SHARE_BYTES, "share"
    )
    commitments = _per_neighbour(
        data.get(p.COMMITMENTS),
        p.COMMITMENTS,
        settings,
        site,
        2 * p.COMMITMENT_BYTES,
        "commitment",
    )
    if set(sealed) != set(commitments):
        raise SecAggError(
            f"site {site} sealed shares to sites {sorted(sealed)} but committed to shares "
            f"for sites {sorted(commitments)}: one commitment per share"
        )
    return {p.SITE: site, p.SEALED: sealed, p.COMMITMENTS: commitments}


def sealed_from_json(text: Any, sender: Any) -> bytes:
    """One encrypted share as the coordinator forwards it to its addressee."""
    return _bytes(text, None, f"the share from site {sender}")


def commitment_from_json(text: Any, sender: Any) -> bytes:
    """A dealer's commitment to the shares it sealed to the addressee, as forwarded
    (of any length: one that does not match is the dealer's fault, complained about)."""
    return _bytes(text, None, f"the commitment of site {sender}")


# --- stage 3: the masked input ----------------------------------------------------------------


def masked_to_json(message: dict[str, Any], round_id: str) -> dict[str, Any]:
    vector = np.asarray(message[p.MASKED])
    return {
        p.STAGE: p.MASKED_INPUT,
        p.ROUND: round_id,
        p.SITE: message[p.SITE],
        p.MASKED: _b64(vector.astype(vector.dtype.newbyteorder("<")).tobytes()),
        p.COMPLAINTS: {str(peer): _b64(key) for peer, key in message.get(p.COMPLAINTS, {}).items()},
    }


def masked_from_json(
    data: Any, settings: p.Settings, quantiser: Quantiser, length: int
) -> dict[str, Any]:
    site = _header(data, p.MASKED_INPUT, settings)
    dtype = np.dtype(quantiser.dtype).newbyteorder("<")
    raw = _bytes(data.get(p.MASKED), length * dtype.itemsize, p.MASKED)
    vector = np.frombuffer(raw, dtype=dtype).astype(quantiser.dtype)
    complaints = _per_neighbour(
        data.get(p.COMPLAINTS, {}), p.COMPLAINTS, settings, site, KEY_BYTES, "complaint"
    )
    return {p.SITE: site, p.MASKED: vector, p.COMPLAINTS: complaints}


# --- stage 4: the shares revealed for unmasking -----------------------------------------------


def unmask_to_json(message: dict[str, Any], round_id: str) -> dict[str, Any]:
    return {
        p.STAGE: p.UNMASK,
        p.ROUND: round_id,
        p.SITE: message[p.SITE],
        p.SEED_SHARES: {str(j): _share(s) for j, s in message[p.SEED_SHARES].items()},
        p.KEY_SHARES: {str(j): _share(s) for j, s in message[p.KEY_SHARES].items()},
    }


def unmask_from_json(
    data: Any, settings: p.Settings, alive: set[int], dropped: set[int]
) -> dict[str, Any]:
    """Refuses shares of the wrong kind: a self-mask share of a dropped site or a key
    share of a living one would let the coordinator unmask that site's input."""
    site = _header(data, p.UNMASK, settings)
    holders = {site, *settings.graph()[site]}  # a site holds shares of its own secrets too
    parts = {}
    for key, allowed, kind in (
        (p.SEED_SHARES, alive, "self-mask"),
        (p.KEY_SHARES, dropped, "mask-key"),
    ):
        shares = {}
        for owner, text in _mapping(data.get(key), key).items():
            owner_id = _site_id(owner)
            if owner_id not in holders or owner_id not in allowed:
                raise SecAggError(
                    f"a {kind} share of site {owner}, which the round did not ask site "
                    f"{site} to reveal"
                )
            shares[owner_id] = _unshare(text, owner, site)
        parts[key] = shares
    return {p.SITE: site, **parts}


# --- helpers ------------------------------------------------------------------------------


def header(data: Any, stage: str, round_id: str, sites: tuple[int, ...]) -> int:
    """The sending site of a message of ``stage`` for round ``round_id``; refuses
    anything else (another stage, another round, a site not in the round)."""
    if not isinstance(data, dict):
        raise SecAggError("a round's message must be a JSON object")
    if data.get(p.STAGE) != stage:
        raise SecAggError(f"a {data.get(p.STAGE)!r} message, but the round is collecting {stage!r}")
    if data.get(p.ROUND) != round_id:
        raise SecAggError(
            f"the message is for round {data.get(p.ROUND)!r}, not {round_id!r}: refused "
            "(a replay from another round?)"
        )
    site = _site_id(data.get(p.SITE))
    if site not in sites:
        raise SecAggError(f"site {site} is not part of this round")
    return site


def _header(data: Any, stage: str, settings: p.Settings) -> int:
    return header(data, stage, settings.round_id, settings.sites)


def _site_id(value: Any) -> int:
    try:
        site = int(value)
    except (TypeError, ValueError, OverflowError):
        raise SecAggError(f"{value!r} is not a site id") from None
    if site <= 0:
        raise SecAggError(f"{value!r} is not a site id")
    return site


def _per_neighbour(
    value: Any, name: str, settings: p.Settings, site: int, length: int, what: str
) -> dict[int, bytes]:
    """An object keyed by ids of ``site``'s neighbours, each value base64 of ``length``
    bytes."""
    neighbours = set(settings.graph()[site])
    out = {}
    for peer, text in _mapping(value, name).items():
        peer_id = _site_id(peer)
        if peer_id not in neighbours:
            raise SecAggError(f"a {what} for site {peer}, which is no neighbour of site {site}")
        out[peer_id] = _bytes(text, length, f"the {what} for site {peer}")
    return out


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SecAggError(f"{name!r} must be an object keyed by site id")
    return value


def base64_bytes(text: Any) -> int:
    """The number of bytes a base64 text decodes to (0 for anything else)."""
    return len(text) * 3 // 4 - text.count("=") if isinstance(text, str) else 0


def payload_bytes(stage: str, body: dict[str, Any]) -> int:
    """How many bytes of content a secure stage's message carries (keys, shares, a
    vector), whatever the ids and the JSON around them: comparable between a live round
    and a simulated one."""
    size = base64_bytes

    if stage == p.ADVERTISE_KEYS:
        keys = (p.MASK_PUBLIC, p.SEED_COMMITMENT, p.SIGNATURE)
        return sum(size(body.get(k)) for k in keys) + sum(
            size(v) for v in (body.get(p.SHARE_PUBLICS) or {}).values()
        )
    if stage == p.SHARE_KEYS:
        return sum(
            size(v) for part in (p.SEALED, p.COMMITMENTS) for v in (body.get(part) or {}).values()
        )
    if stage == p.UNMASK:
        shares = [
            *(body.get(p.SEED_SHARES) or {}).values(),
            *(body.get(p.KEY_SHARES) or {}).values(),
        ]
        return 70 * len(shares)  # a share is 70 bytes: its point and its value
    return size(body.get(p.MASKED)) + sum(size(v) for v in (body.get(p.COMPLAINTS) or {}).values())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _bytes(value: Any, length: int | None, name: str) -> bytes:
    if not isinstance(value, str):
        raise SecAggError(f"{name!r} must be a base64 string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SecAggError(f"{name!r} is not valid base64") from None
    if length is not None and len(data) != length:
        raise SecAggError(f"{name!r} must be {length} bytes, got {len(data)}")
    return data


# A share's value in a fixed number of hex digits: its length says nothing about it.
_SHARE_DIGITS = (PRIME.bit_length() + 3) // 4
# A revealed share as text, "x:y" in hex: its point (a site id, 64 bits) and its value.
SHARE_TEXT_CHARS = 16 + 1 + _SHARE_DIGITS


def _share(share: tuple[int, int]) -> str:
    x, y = share
    return f"{x:x}:{y:0{_SHARE_DIGITS}x}"


def _unshare(text: Any, owner: str, holder: int) -> tuple[int, int]:
    try:
        x, y = (int(part, 16) for part in str(text).split(":"))
    except ValueError:
        raise SecAggError(f"the share of site {owner} is not 'x:y' in hex") from None
    # The point of a share is its holder's id: a site can only reveal its own shares.
    if x != holder or not 0 <= y < PRIME:
        raise SecAggError(f"the share of site {owner} is not one site {holder} holds")
    return x, y
