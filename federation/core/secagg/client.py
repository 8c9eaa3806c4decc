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
    """Runs a site's four stages; refuses messages that are forged, replayed or unsafe,
    and complains, with proof, about a neighbour whose share does not hold.

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
        # One key pair per neighbour for the channel the shares travel on: revealing one
        # to prove a complaint opens that channel only.
        self.share_keys = {peer: KeyPair.generate() for peer in sorted(self.neighbours)}
        self.mask_keys = KeyPair.generate()
        self.self_seed = secrets.token_bytes(32)
        self.peers: dict[int, dict[str, Any]] = {}  # neighbours' verified round keys
        self.held: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}  # shares we hold
        self.unmasked = False

    def to_state(self) -> dict[str, Any]:
        """This site's secrets and progress in the round, as JSON, for the site's keystore
        only: a live round spans several requests, and the worker may restart between them."""
        return {
            "share_private": {str(j): _b64(k.private_bytes()) for j, k in self.share_keys.items()},
            "mask_private": _b64(self.mask_keys.private_bytes()),
            "self_seed": _b64(self.self_seed),
            "peers": {
                str(j): {
                    p.SHARE_PUBLICS: {str(k): _b64(v) for k, v in m[p.SHARE_PUBLICS].items()},
                    **{k: _b64(m[k]) for k in (p.MASK_PUBLIC, p.SEED_COMMITMENT, p.SIGNATURE)},
                }
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
        client.share_keys = {
            int(j): KeyPair.from_private_bytes(_unb64(k)) for j, k in state["share_private"].items()
        }
        client.mask_keys = KeyPair.from_private_bytes(_unb64(state["mask_private"]))
        client.self_seed = _unb64(state["self_seed"])
        client.peers = {
            int(j): {
                p.SITE: int(j),
                p.SHARE_PUBLICS: {int(k): _unb64(v) for k, v in m[p.SHARE_PUBLICS].items()},
                **{k: _unb64(m[k]) for k in (p.MASK_PUBLIC, p.SEED_COMMITMENT, p.SIGNATURE)},
            }
            for j, m in state["peers"].items()
        }
        client.held = {
            int(j): (share_from_bytes(bytes.fromhex(a)), share_from_bytes(bytes.fromhex(b)))
            for j, (a, b) in state["held"].items()
        }
        client.unmasked = bool(state["unmasked"])
        return client

    def advertise(self) -> dict[str, Any]:
        share_publics = {peer: keys.public for peer, keys in self.share_keys.items()}
        commitment = p.seed_commitment(self.settings.round_id, self.site, self.self_seed)
        message = p.signed_keys(
            self.settings, self.site, share_publics, self.mask_keys.public, commitment
        )
        return {
            p.SITE: self.site,
            p.ROUND: self.settings.round_id,
            p.SHARE_PUBLICS: share_publics,
            p.MASK_PUBLIC: self.mask_keys.public,
            p.SEED_COMMITMENT: commitment,
            p.SIGNATURE: self.identity.sign(message),
        }

    def share(self, advertised: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """Check the neighbours' signed keys, then send each an encrypted share pair and
        publish a commitment to each share."""
        for peer, message in advertised.items():
            if peer == self.site or peer not in self.neighbours:
                continue
            check_advertised(self.settings, peer, message, self.identities[peer])
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
        sealed, commitments = {}, {}
        round_id = self.settings.round_id
        for seed_share, key_share in zip(seed_shares, key_shares, strict=True):
            peer = seed_share[0]  # the share's point is the holder's id
            if peer == self.site:
                self.held[peer] = (seed_share, key_share)
                continue
            seed_bytes, key_bytes = share_to_bytes(seed_share), share_to_bytes(key_share)
            sealed[peer] = encrypt(
                self._channel(peer),
                seed_bytes + key_bytes,
                p.share_associated_data(round_id, self.site, peer),
            )
            commitments[peer] = p.share_commitment(
                round_id, self.site, peer, p.SEED, seed_bytes
            ) + p.share_commitment(round_id, self.site, peer, p.KEY, key_bytes)
        return {p.SITE: self.site, p.SEALED: sealed, p.COMMITMENTS: commitments}

    def _channel(self, peer: int) -> bytes:
        """The key of this site's share channel with ``peer``."""
        return agree(
            self.share_keys[peer],
            self.peers[peer][p.SHARE_PUBLICS][self.site],
            p.share_info(self.settings.round_id, self.site, peer),
        )

    def mask(
        self,
        values: np.ndarray,
        received: dict[int, bytes],
        commitments: dict[int, bytes],
    ) -> dict[str, Any]:
        """Open the shares sent to this site; send the input under its masks, with a
        complaint (this site's key of that channel) for each share that does not open or
        does not match its dealer's commitment.

        Refuses unless good shares came from enough neighbours that the site itself and
        they reach the threshold (Bonawitz et al.): with fewer, a coordinator that withheld
        the others' shares would leave the input under its self mask alone, which the
        neighbours' shares of that seed unmask.
        """
        complaints = {}
        for sender, sealed in received.items():
            if sender not in self.peers:
                raise SecAggError(f"a share from site {sender}, which is no neighbour")
            try:
                self.held[sender] = open_shares(
                    self.settings.round_id,
                    sender,
                    self.site,
                    self._channel(sender),
                    sealed,
                    commitments.get(sender),
                )
            except SecAggError:
                complaints[sender] = self.share_keys[sender].private_bytes()
        good = len(self.held) - (1 if self.site in self.held else 0)
        if good + 1 < self.settings.threshold:
            raise SecAggError(
                f"good shares from only {good} neighbours reached this site; the threshold "
                f"is {self.settings.threshold}: refused, the input would be unmasked"
            )
        dtype = self.quantiser.dtype
        masked = self.quantiser.quantise(values) + expand(self.self_seed, len(values), dtype)
        for peer in received:  # every neighbour that shared keys in stage 2, good or not
            seed = agree(
                self.mask_keys,
                self.peers[peer][p.MASK_PUBLIC],
                p.pair_info(self.settings.round_id, self.site, peer),
            )
            mask = expand(seed, len(values), dtype)
            masked = masked + mask if self.site < peer else masked - mask
        return {p.SITE: self.site, p.MASKED: masked, p.COMPLAINTS: complaints}

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


def check_advertised(
    settings: p.Settings, site: int, message: dict[str, Any], identity: bytes
) -> None:
    """A site's advertised round keys: a channel key for each of its neighbours exactly,
    signed with its identity for this round."""
    channels = set(message[p.SHARE_PUBLICS])
    neighbours = set(settings.graph()[site])
    if channels != neighbours:
        raise SecAggError(
            f"site {site} advertised channel keys for sites {sorted(channels)}; its "
            f"neighbours are {sorted(neighbours)}"
        )
    signed = p.signed_keys(
        settings,
        site,
        message[p.SHARE_PUBLICS],
        message[p.MASK_PUBLIC],
        message[p.SEED_COMMITMENT],
    )
    try:
        verify(identity, message[p.SIGNATURE], signed, who=f"site {site}")
    except SecAggError:
        raise SecAggError(
            f"the signature of site {site} does not verify: its keys were forged, or it was "
            "told other things about the round than this site was"
        ) from None


def open_shares(
    round_id: str,
    dealer: int,
    holder: int,
    channel: bytes,
    sealed: bytes,
    commitment: bytes | None,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two shares ``dealer`` sealed to ``holder`` on their channel, checked: they
    open, they are the holder's points, and they hash to the dealer's commitment.
    Raises :class:`SecAggError` saying which fails."""
    plain = decrypt(channel, sealed, p.share_associated_data(round_id, dealer, holder))
    if len(plain) != 2 * SHARE_BYTES:
        raise SecAggError(f"the shares of site {dealer} are {len(plain)} bytes")
    seed_bytes, key_bytes = plain[:SHARE_BYTES], plain[SHARE_BYTES:]
    seed_share, key_share = share_from_bytes(seed_bytes), share_from_bytes(key_bytes)
    if seed_share[0] != holder or key_share[0] != holder:
        raise SecAggError(f"the shares of site {dealer} are not site {holder}'s points")
    expected = p.share_commitment(round_id, dealer, holder, p.SEED, seed_bytes)
    expected += p.share_commitment(round_id, dealer, holder, p.KEY, key_bytes)
    if commitment is None or commitment != expected:
        raise SecAggError(f"the shares of site {dealer} do not match its commitment")
    return seed_share, key_share


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
