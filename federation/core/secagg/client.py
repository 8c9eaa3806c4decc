"""The site's side of secure aggregation: one object per site and round."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import numpy as np

from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import (
    SHARE_BYTES,
    KeyPair,
    Quantiser,
    SecAggError,
    SigningKey,
    agree,
    decrypt,
    encrypt,
    expand,
    shamir_split,
    share_from_bytes,
    share_to_bytes,
    verify,
)


class SecAggClient:
    """Runs a site's four stages; refuses messages that are forged, replayed or unsafe.

    Parameters
    ----------
    settings : the round's parameters, as the coordinator announced them
    site : this site's id
    identity : this site's long-term signing key
    identities : every site's registered Ed25519 public key
    quantiser : fixed-point encoding of the input, the same for all sites
    """

    def __init__(
        self,
        settings: p.Settings,
        site: int,
        identity: SigningKey,
        identities: dict[int, bytes],
        quantiser: Quantiser,
    ) -> None:
        self.settings, self.site, self.identity = settings, site, identity
        self.identities, self.quantiser = identities, quantiser
        self.neighbours = set(settings.graph()[site])
        self.share_keys = KeyPair.generate()
        self.mask_keys = KeyPair.generate()
        self.self_seed = secrets.token_bytes(32)
        self.peers: dict[int, dict[str, Any]] = {}  # neighbours' verified round keys
        self.held: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}  # shares we hold
        self.unmasked = False

    def to_state(self) -> dict[str, Any]:
        """This site's secrets and progress in the round, as JSON, for the site's keystore
        only: a live round spans several requests, and the worker may restart between them."""
        return {
            "share_private": _b64(self.share_keys.private_bytes()),
            "mask_private": _b64(self.mask_keys.private_bytes()),
            "self_seed": _b64(self.self_seed),
            "peers": {
                str(j): {k: _b64(m[k]) for k in (p.SHARE_PUBLIC, p.MASK_PUBLIC, p.SIGNATURE)}
                for j, m in self.peers.items()
            },
            "held": {
                str(j): [share_to_bytes(seed).hex(), share_to_bytes(key).hex()]
                for j, (seed, key) in self.held.items()
            },
            "unmasked": self.unmasked,
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        settings: p.Settings,
        site: int,
        identity: SigningKey,
        identities: dict[int, bytes],
        quantiser: Quantiser,
    ) -> SecAggClient:
        client = cls(settings, site, identity, identities, quantiser)
        client.share_keys = KeyPair.from_private_bytes(_unb64(state["share_private"]))
        client.mask_keys = KeyPair.from_private_bytes(_unb64(state["mask_private"]))
        client.self_seed = _unb64(state["self_seed"])
        client.peers = {
            int(j): {p.SITE: int(j), **{k: _unb64(v) for k, v in m.items()}}
            for j, m in state["peers"].items()
        }
        client.held = {
            int(j): (share_from_bytes(bytes.fromhex(a)), share_from_bytes(bytes.fromhex(b)))
            for j, (a, b) in state["held"].items()
        }
        client.unmasked = bool(state["unmasked"])
        return client

    def advertise(self) -> dict[str, Any]:
        message = p.signed_keys(
            self.settings.round_id, self.site, self.share_keys.public, self.mask_keys.public
        )
        return {
            p.SITE: self.site,
            p.ROUND: self.settings.round_id,
            p.SHARE_PUBLIC: self.share_keys.public,
            p.MASK_PUBLIC: self.mask_keys.public,
            p.SIGNATURE: self.identity.sign(message),
        }

    def share(self, advertised: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """Check the neighbours' signed keys, then send each an encrypted share pair."""
        for peer, message in advertised.items():
            if peer == self.site or peer not in self.neighbours:
                continue
            signed = p.signed_keys(
                self.settings.round_id, peer, message[p.SHARE_PUBLIC], message[p.MASK_PUBLIC]
            )
            verify(self.identities[peer], message[p.SIGNATURE], signed, who=f"site {peer}")
            self.peers[peer] = message
        if len(self.peers) + 1 < self.settings.threshold:
            raise SecAggError(
                f"only {len(self.peers)} neighbours advertised keys; the "
                f"threshold is {self.settings.threshold}"
            )
        # As in Bonawitz et al., the site holds a share of its own secrets too: its own
        # self-mask share counts towards unmasking it, so that in a neighbourhood of
        # three with a threshold of two, one site may drop out.
        holders = sorted([*self.peers, self.site])
        t = min(self.settings.threshold, len(holders))
        seed_shares = shamir_split(self.self_seed, holders, t)
        key_shares = shamir_split(self.mask_keys.private_bytes(), holders, t)
        sealed = {}
        for seed_share, key_share in zip(seed_shares, key_shares, strict=True):
            peer = seed_share[0]  # the share's point is the holder's id
            if peer == self.site:
                self.held[peer] = (seed_share, key_share)
                continue
            key = agree(
                self.share_keys,
                self.peers[peer][p.SHARE_PUBLIC],
                p.share_info(self.settings.round_id, self.site, peer),
            )
            plaintext = share_to_bytes(seed_share) + share_to_bytes(key_share)
            sealed[peer] = encrypt(
                key, plaintext, p.share_associated_data(self.settings.round_id, self.site, peer)
            )
        return {p.SITE: self.site, p.SEALED: sealed}

    def mask(self, values: np.ndarray, received: dict[int, bytes]) -> dict[str, Any]:
        """Open the shares sent to this site; send the input under its masks.

        Refuses unless shares came from enough neighbours that the site itself and they
        reach the threshold (Bonawitz et al.): with fewer, a coordinator that withheld
        the others' shares would leave the input under its self mask alone, which the
        neighbours' shares of that seed unmask.
        """
        if len(received) + 1 < self.settings.threshold:
            raise SecAggError(
                f"shares from only {len(received)} neighbours reached this site; the threshold "
                f"is {self.settings.threshold}: refused, the input would be unmasked"
            )
        for sender, sealed in received.items():
            if sender not in self.peers:
                raise SecAggError(f"a share from site {sender}, which is no neighbour")
            key = agree(
                self.share_keys,
                self.peers[sender][p.SHARE_PUBLIC],
                p.share_info(self.settings.round_id, sender, self.site),
            )
            plain = decrypt(
                key, sealed, p.share_associated_data(self.settings.round_id, sender, self.site)
            )
            self.held[sender] = (
                share_from_bytes(plain[:SHARE_BYTES]),
                share_from_bytes(plain[SHARE_BYTES:]),
            )
        dtype = self.quantiser.dtype
        masked = self.quantiser.quantise(values) + expand(self.self_seed, len(values), dtype)
        for peer in self.held:  # neighbours that shared with us took part in stage 2
            if peer == self.site:
                continue
            seed = agree(
                self.mask_keys,
                self.peers[peer][p.MASK_PUBLIC],
                p.pair_info(self.settings.round_id, self.site, peer),
            )
            mask = expand(seed, len(values), dtype)
            masked = masked + mask if self.site < peer else masked - mask
        return {p.SITE: self.site, p.MASKED: masked}

    def unmask(self, alive: set[int], dropped: set[int]) -> dict[str, Any]:
        """Reveal self-mask shares of the living and mask-key shares of the dropped.

        Refuses a request that would reveal both kinds for one peer (with both, the
        coordinator could unmask that peer's input), a second request, and one that
        leaves fewer neighbours alive than the threshold.
        """
        if self.unmasked:
            raise SecAggError("this site answered the unmask request of the round already")
        both = alive & dropped
        if both:
            raise SecAggError(
                f"refused: sites {sorted(both)} are both alive and dropped, which "
                "would reveal their input"
            )
        if self.site not in alive:
            raise SecAggError("refused: this site is not among the living of the round")
        if len(alive & (self.neighbours | {self.site})) < self.settings.threshold:
            raise SecAggError("refused: fewer neighbours alive than the threshold")
        self.unmasked = True
        return {
            p.SITE: self.site,
            p.SEED_SHARES: {j: s for j, (s, _) in self.held.items() if j in alive},
            p.KEY_SHARES: {j: k for j, (_, k) in self.held.items() if j in dropped},
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
