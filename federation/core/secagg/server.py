"""The coordinator's side of secure aggregation: it routes, sums and unmasks the sum only,
and judges complaints from what it holds, trusting nobody's word."""

from __future__ import annotations

from typing import Any

import numpy as np

from federation.core.secagg import protocol as p
from federation.core.secagg.client import check_advertised, open_shares
from federation.core.secagg.primitives import (
    KeyPair,
    Misbehaviour,
    Quantiser,
    SecAggError,
    agree,
    expand,
    shamir_combine,
    share_to_bytes,
)


class SecAggServer:
    """Collects each stage's messages and ends with the sum of the survivors' inputs.

    It holds public keys, encrypted shares, masked vectors and, at the end, the
    unmasked sum: never one site's input. ``faults`` lists, per site, what it was shown
    to have done wrong; a site excluded by a proven complaint is out of the sum.
    """

    def __init__(
        self, settings: p.Settings, identities: dict[int, bytes], quantiser: Quantiser
    ) -> None:
        self.settings, self.identities, self.quantiser = settings, identities, quantiser
        self.graph = settings.graph()
        self.advertised: dict[int, dict[str, Any]] = {}
        self.shared: dict[int, dict[str, Any]] = {}  # each sharer's sealed shares, commitments
        self.excluded: dict[int, str] = {}  # site: why (a complaint against it held)
        self.faults: list[tuple[int, str]] = []
        self.total: np.ndarray | None = None
        self.alive: set[int] = set()

    @property
    def sharers(self) -> set[int]:
        return set(self.shared)

    def collect_keys(self, messages: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Stage 1: keep correctly signed keys of this round; each site gets its neighbours'."""
        for message in messages:
            site = message[p.SITE]
            if message[p.ROUND] != self.settings.round_id or site not in self.graph:
                raise SecAggError(
                    f"keys from site {site} are not for round {self.settings.round_id}"
                )
            check_advertised(self.settings, site, message, self.identities[site])
            self.advertised[site] = message
        self._require(len(self.advertised), "advertised keys")
        return self.advertised

    def collect_shares(self, messages: list[dict[str, Any]]) -> dict[int, dict[int, bytes]]:
        """Stage 2: route each encrypted share to its addressee (it cannot read them)."""
        for message in messages:
            self.shared[message[p.SITE]] = message
        self._require(len(self.shared), "shared their keys")
        routed: dict[int, dict[int, bytes]] = {}
        for sender, message in self.shared.items():
            for receiver, sealed in message[p.SEALED].items():
                if receiver in self.shared:
                    routed.setdefault(receiver, {})[sender] = sealed
        return routed

    def commitments_to(self, receiver: int) -> dict[int, bytes]:
        """The commitments each sharer made to the shares it sealed to ``receiver``."""
        return {
            sender: message[p.COMMITMENTS][receiver]
            for sender, message in self.shared.items()
            if receiver in message[p.COMMITMENTS]
        }

    def collect_masked(
        self, messages: list[dict[str, Any]], excluded: dict[int, str] | None = None
    ) -> tuple[set[int], set[int]]:
        """Stage 3: judge the complaints, then add up the masked inputs of the sites not
        excluded (``excluded``: sites already proved at fault, and why); returns (alive,
        dropped) for the unmask request."""
        for site, reason in (excluded or {}).items():
            self._exclude(site, reason)
        for message in messages:
            found = judge_complaints(
                self.settings,
                self.advertised,
                self.shared,
                message[p.SITE],
                message.get(p.COMPLAINTS, {}),
                self.excluded,
            )
            for site, reason in found.items():
                self._exclude(site, reason)
        for message in messages:
            if message[p.SITE] in self.excluded:
                continue
            masked = np.asarray(message[p.MASKED], dtype=self.quantiser.dtype)
            self.total = masked.copy() if self.total is None else self.total + masked
            self.alive.add(message[p.SITE])
        self._require(len(self.alive), "sent masked inputs")
        return set(self.alive), self.sharers - self.alive

    def _exclude(self, site: int, reason: str) -> None:
        if site not in self.excluded:
            self.excluded[site] = reason
            self.faults.append((site, reason))

    def finish(self, responses: list[dict[str, Any]]) -> np.ndarray:
        """Stage 4: remove the survivors' self masks and the dropped sites' pairwise masks,
        each secret rebuilt from shares that match their commitments and checked against
        what its owner published.

        Returns the real-valued sum of the survivors' inputs.
        """
        assert self.total is not None
        seed_shares: dict[int, list[tuple[int, int]]] = {}
        key_shares: dict[int, list[tuple[int, int]]] = {}
        for response in responses:
            holder = response[p.SITE]
            for kind, shares, gathered in (
                (p.SEED, response[p.SEED_SHARES], seed_shares),
                (p.KEY, response[p.KEY_SHARES], key_shares),
            ):
                for owner, share in shares.items():
                    problem = revealed_share_problem(
                        self.settings.round_id, self.shared, owner, holder, kind, share
                    )
                    if problem:
                        self.faults.append((holder, problem))
                        continue
                    gathered.setdefault(owner, []).append(share)
        total, size = self.total.copy(), len(self.total)
        for site in sorted(self.alive):
            seed = self._rebuild(seed_shares.get(site, []), site, p.SEED)
            total = total - expand(seed, size, self.quantiser.dtype)
        for site in sorted(self.sharers - self.alive):
            keys = KeyPair.from_private_bytes(self._rebuild(key_shares.get(site, []), site, p.KEY))
            for peer in self.graph[site]:
                if peer not in self.alive or peer not in self.shared[site][p.SEALED]:
                    continue  # the peer masked its input with the site only if it got shares
                seed = agree(
                    keys,
                    self.advertised[peer][p.MASK_PUBLIC],
                    p.pair_info(self.settings.round_id, site, peer),
                )
                mask = expand(seed, size, self.quantiser.dtype)
                # The peer added +mask if it had the lower id, else -mask: take it back.
                total = total - mask if peer < site else total + mask
        return self.quantiser.dequantise_sum(total, len(self.alive))

    def _rebuild(self, shares: list[tuple[int, int]], site: int, kind: str) -> bytes:
        """A site's secret from the first ``threshold`` shares, checked against what it
        published: its mask key against its advertised public key, its seed against its
        commitment. Shares that check against their commitments yet rebuild something
        else were dealt inconsistent: the dealer is at fault."""
        # The site split its secrets among itself and its neighbours that advertised keys.
        holders = 1 + len([j for j in self.graph[site] if j in self.advertised])
        needed = min(self.settings.threshold, holders)
        if len(shares) < needed:
            raise SecAggError(
                f"only {len(shares)} good shares for site {site}, fewer than the "
                f"threshold {needed}: too many sites dropped out or were excluded; "
                "nothing is aggregated"
            )
        # A site's share of its own secret has no commitment to check it by: use it last.
        shares = sorted(shares, key=lambda share: share[0] == site)
        try:
            secret = shamir_combine(shares[:needed])
        except SecAggError:
            secret = b""
        advertised = self.advertised[site]
        if kind == p.KEY:
            holds = KeyPair.from_private_bytes(secret).public == advertised[p.MASK_PUBLIC]
        else:
            commitment = p.seed_commitment(self.settings.round_id, site, secret)
            holds = commitment == advertised[p.SEED_COMMITMENT]
        if not holds:
            raise Misbehaviour(
                f"site {site} dealt inconsistent shares: they do not rebuild the {kind} it "
                "committed to",
                culprit=site,
            )
        return secret

    def _require(self, count: int, what: str) -> None:
        if count < self.settings.threshold:
            raise SecAggError(
                f"only {count} sites {what}, fewer than the threshold "
                f"{self.settings.threshold}: the round fails, nothing is aggregated"
            )


def judge_complaints(
    settings: p.Settings,
    advertised: dict[int, dict[str, Any]],
    shared: dict[int, dict[str, Any]],
    complainer: int,
    complaints: dict[int, bytes],
    earlier: dict[int, str],
) -> dict[int, str]:
    """The sites ``complainer``'s complaints prove at fault, and why, given the sites
    ``earlier`` proved: each accused whose shares did not hold, or the complainer alone if
    one complaint is false (a liar's other complaints count for nothing). An excluded
    site's complaints are not heard."""
    if complainer in earlier:
        return {}
    found: dict[int, str] = {}
    for accused in sorted(complaints):
        if accused in earlier:
            continue
        try:
            found[accused] = judge_complaint(
                settings, advertised, shared, complainer, accused, complaints[accused]
            )
        except Misbehaviour as lie:
            return {lie.culprit: str(lie)}
    return found


def judge_complaint(
    settings: p.Settings,
    advertised: dict[int, dict[str, Any]],
    shared: dict[int, dict[str, Any]],
    complainer: int,
    accused: int,
    revealed: bytes,
) -> str:
    """Whether ``accused``'s shares for ``complainer`` were bad, from what the coordinator
    holds and the complainer's revealed key of their channel: the reason if so. Raises
    :class:`Misbehaviour` naming the complainer if the complaint is false (the key is not
    the one it advertised, or the shares open and match their commitment)."""
    round_id = settings.round_id
    if complainer not in advertised:
        raise Misbehaviour(
            f"site {complainer} complained, but advertised no keys", culprit=complainer
        )
    if accused not in shared or complainer not in shared[accused][p.SEALED]:
        raise Misbehaviour(
            f"site {complainer} complained about site {accused}, which sent it no share",
            culprit=complainer,
        )
    try:
        own = KeyPair.from_private_bytes(revealed)
    except ValueError:
        raise Misbehaviour(
            f"site {complainer}'s complaint reveals no X25519 key", culprit=complainer
        ) from None
    if own.public != advertised[complainer][p.SHARE_PUBLICS].get(accused):
        raise Misbehaviour(
            f"site {complainer}'s complaint about site {accused} reveals a key that is not "
            "the one it advertised for their channel",
            culprit=complainer,
        )
    channel = agree(
        own,
        advertised[accused][p.SHARE_PUBLICS][complainer],
        p.share_info(round_id, accused, complainer),
    )
    try:
        open_shares(
            round_id,
            accused,
            complainer,
            channel,
            shared[accused][p.SEALED][complainer],
            shared[accused][p.COMMITMENTS].get(complainer),
        )
    except SecAggError as problem:
        return f"its shares for site {complainer} are bad ({problem})"
    raise Misbehaviour(
        f"site {complainer} complained about site {accused}'s shares, which open and match "
        "their commitment: a false complaint",
        culprit=complainer,
    )


def revealed_share_problem(
    round_id: str,
    shared: dict[int, dict[str, Any]],
    owner: int,
    holder: int,
    kind: str,
    share: tuple[int, int],
) -> str:
    """Why a share ``holder`` revealed of ``owner``'s secret is not the one ``owner``
    gave it ("" if it is): its point is not the holder's, or it does not hash to the
    commitment. A site's own share (it holds one of its own secrets) has no commitment
    published: it can only be checked by the rebuilt secret."""
    if share[0] != holder:
        return f"site {holder} revealed a share of site {owner} that is not its point"
    if owner == holder:
        return ""
    commitments = shared.get(owner, {}).get(p.COMMITMENTS, {}).get(holder)
    if commitments is None:
        return f"site {holder} revealed a share of site {owner}, which gave it none"
    offset = 0 if kind == p.SEED else p.COMMITMENT_BYTES
    expected = commitments[offset : offset + p.COMMITMENT_BYTES]
    if p.share_commitment(round_id, owner, holder, kind, share_to_bytes(share)) != expected:
        return (
            f"site {holder} revealed a {kind} share of site {owner} that is not the one "
            f"site {owner} committed to"
        )
    return ""
