"""What client and server of secure aggregation agree on: stages, keys, the graph.

Four stages (Bonawitz et al. 2017):

1. ``ADVERTISE_KEYS``: each site signs and sends an X25519 public key per neighbour
   (for the channel its shares travel on), one to derive pairwise masks with, and a
   commitment to its self-mask seed;
2. ``SHARE_KEYS``: each site Shamir-shares its self-mask seed and its mask private
   key among its neighbours, each share encrypted to its addressee, with a commitment
   (a hash) to each share;
3. ``MASKED_INPUT``: each site sends its quantised input plus its self mask plus
   pairwise masks that cancel in the sum;
4. ``UNMASK``: survivors reveal, per neighbour, either the self-mask share (the
   neighbour sent its input) or the mask-key share (it dropped out), never both.

Neighbours form the complete graph (classic SecAgg) or a random k-regular graph
with k = O(log n) (SecAgg+, Bell et al. 2020), derived from a seed all agree on.

A lying site is named, not obeyed. A site whose share from a neighbour does not open,
or does not match its commitment, complains in stage 3 by revealing its private key
for that one channel: the coordinator checks the key against the site's signed
advertisement, opens the disputed share itself, and excludes whichever of the two lied
(the channel key exposes only the shares the two sent each other). In stage 4 each
revealed share is checked against its commitment, so a false one is attributed and
the secret rebuilt from the honest ones; a rebuilt secret is checked against the
advertised mask key or the seed commitment, so a dealer of inconsistent shares is
named too.
"""

from __future__ import annotations

import functools
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from federation.core.secagg.primitives import digest

ADVERTISE_KEYS = "advertise_keys"
SHARE_KEYS = "share_keys"
MASKED_INPUT = "masked_input"
UNMASK = "unmask"
STAGES = (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT, UNMASK)

# Message keys.
SITE = "site"
ROUND = "round"
SHARE_PUBLICS = "share_publics"  # per neighbour, this site's end of their share channel
MASK_PUBLIC = "mask_public"
SEED_COMMITMENT = "seed_commitment"
SIGNATURE = "signature"
SEALED = "sealed"
COMMITMENTS = "commitments"  # per neighbour: the hashes of the two shares sealed to it
MASKED = "masked"
COMPLAINTS = "complaints"  # per neighbour whose share failed: this site's channel key
BLAMED = "blamed"  # as the coordinator keeps a complaint: the site it proved at fault
SEED_SHARES = "seed_shares"
KEY_SHARES = "key_shares"
STAGE = "stage"


@dataclass(frozen=True)
class Settings:
    """Parameters of one secure sum.

    Parameters
    ----------
    round_id : binds every signature, share and key to this round (no replays)
    sites : ids of the sites invited (positive integers, also the Shamir points)
    threshold : shares needed to rebuild a secret, per neighbourhood
    neighbours : 0 for the complete graph, else the degree k of a random regular graph
    graph_seed : seeds the graph; public, the same for everyone
    context : a digest of everything else the sites were told about the round (the
        model to train, ...), bound into each site's signed keys: a coordinator that
        tells two sites different things is caught when they check each other's keys
    """

    round_id: str
    sites: tuple[int, ...]
    threshold: int
    neighbours: int = 0
    graph_seed: int = 0
    context: bytes = b""

    def graph(self) -> dict[int, tuple[int, ...]]:
        return neighbour_graph(self.sites, self.neighbours, self.graph_seed)


def majority(neighbourhood: int) -> int:
    """The default threshold: more than half of a site's neighbourhood."""
    return neighbourhood // 2 + 1


def plan(
    round_id: str,
    sites: tuple[int, ...],
    *,
    sparse: bool = True,
    threshold: Callable[[int], int] = majority,
    graph_seed: int | None = None,
) -> Settings:
    """The parameters of one secure sum over ``sites``, as live rounds and the simulation
    choose them: the SecAgg+ graph above 8 sites (complete below), and a threshold per
    neighbourhood (a site and its neighbours) of at least 2 and below its size, so one
    site may always drop out."""
    n = len(sites)
    degree = secagg_plus_degree(n) if sparse and n > 8 else 0
    neighbourhood = (degree or n - 1) + 1
    return Settings(
        round_id=round_id,
        sites=tuple(sorted(sites)),
        threshold=max(2, min(threshold(neighbourhood), neighbourhood - 1)),
        neighbours=degree,
        graph_seed=secrets.randbits(32) if graph_seed is None else graph_seed,
    )


def secagg_plus_degree(n: int) -> int:
    """An even k = O(log n) for SecAgg+'s graph, at least 4 and below n."""
    k = 2 * math.ceil(1.5 * math.log2(max(n, 2)))
    return min(max(k, 4), n - 1 if (n - 1) % 2 == 0 else n - 2)


@functools.lru_cache(maxsize=32)
def neighbour_graph(sites: tuple[int, ...], k: int, seed: int) -> dict[int, tuple[int, ...]]:
    """Each site's neighbours: all others (k = 0), or a k-regular circulant graph
    over a seeded random order of the sites (k even). Cached (every check of a round's
    messages asks for it): the caller must not change it."""
    ordered = sorted(sites)
    n = len(ordered)
    if k == 0 or k >= n - 1:
        return {s: tuple(o for o in ordered if o != s) for s in ordered}
    if k % 2:
        raise ValueError(f"the neighbour degree must be even, got {k}")
    order = [ordered[i] for i in np.random.default_rng(seed).permutation(n)]
    position = {s: i for i, s in enumerate(order)}
    graph = {}
    for s in ordered:
        i = position[s]
        around = [order[(i + d) % n] for d in range(1, k // 2 + 1)]
        around += [order[(i - d) % n] for d in range(1, k // 2 + 1)]
        graph[s] = tuple(sorted(around))
    return graph


def signed_keys(
    settings: Settings,
    site: int,
    share_publics: dict[int, bytes],
    mask_public: bytes,
    seed_commitment: bytes,
) -> bytes:
    """The bytes a site signs to bind its round keys and seed commitment to its identity,
    this round and what it was told about the round."""
    channels = [str(peer).encode() + b"=" + share_publics[peer] for peer in sorted(share_publics)]
    return digest(
        b"secagg-keys",
        settings.round_id.encode(),
        settings.context,
        str(site).encode(),
        mask_public,
        seed_commitment,
        *channels,
    )


def seed_commitment(round_id: str, site: int, seed: bytes) -> bytes:
    """A site's commitment to its self-mask seed: the seed rebuilt from shares must hash
    to it."""
    return digest(b"secagg-seed", round_id.encode(), str(site).encode(), seed)


def share_commitment(round_id: str, dealer: int, holder: int, kind: str, share: bytes) -> bytes:
    """The hash a dealer publishes of the share of ``kind`` ("seed" or "key") it gives
    ``holder``: the holder checks what it received against it, the coordinator checks
    what the holder reveals."""
    return digest(
        b"secagg-share",
        round_id.encode(),
        str(dealer).encode(),
        str(holder).encode(),
        kind.encode(),
        share,
    )


COMMITMENT_BYTES = 32
SEED, KEY = "seed", "key"


def signed_vote(round_id: str, site: int, vote: int) -> bytes:
    """The bytes a site signs to bind its vote on a round's candidate model to itself."""
    return b"|".join([b"candidate-vote", round_id.encode(), str(site).encode(), str(vote).encode()])


def share_associated_data(round_id: str, sender: int, receiver: int) -> bytes:
    return f"secagg-share|{round_id}|{sender}->{receiver}".encode()


def pair_info(round_id: str, a: int, b: int) -> bytes:
    low, high = sorted((a, b))
    return f"secagg-mask|{round_id}|{low}-{high}".encode()


def share_info(round_id: str, a: int, b: int) -> bytes:
    low, high = sorted((a, b))
    return f"secagg-enc|{round_id}|{low}-{high}".encode()
