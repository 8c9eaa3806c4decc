"""The coordinator's side of secure aggregation: it routes, sums and unmasks the sum only."""

from __future__ import annotations

from typing import Any

import numpy as np

from federation.core.secagg import protocol as p
from federation.core.secagg.primitives import (
    KeyPair,
    Quantiser,
    SecAggError,
    agree,
    expand,
    shamir_combine,
    verify,
)


class SecAggServer:
    """Collects each stage's messages and ends with the sum of the survivors' inputs.

    It holds public keys, encrypted shares, masked vectors and, at the end, the
    unmasked sum: never one site's input.
    """

    def __init__(
        self, settings: p.Settings, identities: dict[int, bytes], quantiser: Quantiser
    ) -> None:
        self.settings, self.identities, self.quantiser = settings, identities, quantiser
        self.graph = settings.graph()
        self.advertised: dict[int, dict[str, Any]] = {}
        self.routed: dict[int, dict[int, bytes]] = {}
        self.sharers: set[int] = set()
        self.total: np.ndarray | None = None
        self.alive: set[int] = set()

    def collect_keys(self, messages: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        """Stage 1: keep correctly signed keys of this round; each site gets its neighbours'."""
        for message in messages:
            site = message[p.SITE]
            if message[p.ROUND] != self.settings.round_id or site not in self.graph:
                raise SecAggError(
                    f"keys from site {site} are not for round {self.settings.round_id}"
                )
            signed = p.signed_keys(
                self.settings.round_id, site, message[p.SHARE_PUBLIC], message[p.MASK_PUBLIC]
            )
            verify(self.identities[site], message[p.SIGNATURE], signed, who=f"site {site}")
            self.advertised[site] = message
        self._require(len(self.advertised), "advertised keys")
        return self.advertised

    def collect_shares(self, messages: list[dict[str, Any]]) -> dict[int, dict[int, bytes]]:
        """Stage 2: route each encrypted share to its addressee (it cannot read them)."""
        for message in messages:
            sender = message[p.SITE]
            self.sharers.add(sender)
            for receiver, sealed in message[p.SEALED].items():
                self.routed.setdefault(receiver, {})[sender] = sealed
        self._require(len(self.sharers), "shared their keys")
        return {
            r: {s: c for s, c in box.items()} for r, box in self.routed.items() if r in self.sharers
        }

    def collect_masked(self, messages: list[dict[str, Any]]) -> tuple[set[int], set[int]]:
        """Stage 3: add up the masked inputs; returns (alive, dropped) for the unmask request."""
        for message in messages:
            masked = np.asarray(message[p.MASKED], dtype=self.quantiser.dtype)
            self.total = masked.copy() if self.total is None else self.total + masked
            self.alive.add(message[p.SITE])
        self._require(len(self.alive), "sent masked inputs")
        return set(self.alive), self.sharers - self.alive

    def finish(self, responses: list[dict[str, Any]]) -> np.ndarray:
        """Stage 4: remove the survivors' self masks and the dropped sites' pairwise masks.

        Returns the real-valued sum of the survivors' inputs.
        """
        assert self.total is not None
        seed_shares: dict[int, list[tuple[int, int]]] = {}
        key_shares: dict[int, list[tuple[int, int]]] = {}
        for response in responses:
            for owner, share in response[p.SEED_SHARES].items():
                seed_shares.setdefault(owner, []).append(share)
            for owner, share in response[p.KEY_SHARES].items():
                key_shares.setdefault(owner, []).append(share)
        total, size = self.total.copy(), len(self.total)
        for site in sorted(self.alive):
            seed = shamir_combine(self._enough(seed_shares.get(site, []), site))
            total = total - expand(seed, size, self.quantiser.dtype)
        for site in sorted(self.sharers - self.alive):
            secret = shamir_combine(self._enough(key_shares.get(site, []), site))
            keys = KeyPair.from_private_bytes(secret)
            for peer in self.graph[site]:
                if peer not in self.alive:
                    continue
                seed = agree(
                    keys,
                    self.advertised[peer][p.MASK_PUBLIC],
                    p.pair_info(self.settings.round_id, site, peer),
                )
                mask = expand(seed, size, self.quantiser.dtype)
                # The peer added +mask if it had the lower id, else -mask: take it back.
                total = total - mask if peer < site else total + mask
        return self.quantiser.dequantise_sum(total, len(self.alive))

    def _enough(self, shares: list[tuple[int, int]], site: int) -> list[tuple[int, int]]:
        # The site split its secrets among itself and its neighbours that advertised keys.
        holders = 1 + len([j for j in self.graph[site] if j in self.advertised])
        needed = min(self.settings.threshold, holders)
        if len(shares) < needed:
            raise SecAggError(
                f"only {len(shares)} shares for site {site}, fewer than the "
                f"threshold {needed}: too many sites dropped out; nothing is "
                "aggregated"
            )
        return shares[:needed]

    def _require(self, count: int, what: str) -> None:
        if count < self.settings.threshold:
            raise SecAggError(
                f"only {count} sites {what}, fewer than the threshold "
                f"{self.settings.threshold}: the round fails, nothing is aggregated"
            )
