"""The weighted average of the sites' models, computed as a secure sum.

Each site submits ``w_i * x_i`` and ``w_i`` (``w_i`` its share of the examples) under
masks; the coordinator only learns the two sums and divides. The same stages as in
a live round, run in one process: the simulation's path to the protocol.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import numpy as np

from federation.core.secagg import protocol as p
from federation.core.secagg.client import SecAggClient
from federation.core.secagg.primitives import Quantiser, SecAggError, SigningKey
from federation.core.secagg.server import SecAggServer
from federation.core.strategies import SiteResult, Weights

DEFAULT_CLIP = 8.0  # model weights (and weighted updates) are clipped to [-8, 8]
DEFAULT_LEVELS = 2**20


def flatten(weights: Weights) -> np.ndarray:
    return np.concatenate([w.astype(np.float64).ravel() for w in weights])


def unflatten(vector: np.ndarray, like: Weights) -> Weights:
    out, start = [], 0
    for array in like:
        out.append(vector[start : start + array.size].reshape(array.shape).astype(array.dtype))
        start += array.size
    return out


def secure_average(
    *,
    clip: float = DEFAULT_CLIP,
    levels: int = DEFAULT_LEVELS,
    threshold: Callable[[int], int] = lambda size: size // 2 + 1,
    sparse: bool = True,
) -> Callable[[list[SiteResult]], Weights]:
    """A drop-in for :func:`weighted_average` that goes through the secure sum."""

    def average(results: list[SiteResult]) -> Weights:
        n = len(results)
        if n < 2:
            raise SecAggError("a secure sum needs at least two sites")
        total = sum(r.examples for r in results)
        sites = tuple(range(1, n + 1))
        keys = {s: SigningKey.generate() for s in sites}
        identities = {s: keys[s].public for s in sites}
        degree = p.secagg_plus_degree(n) if sparse and n > 8 else 0
        # The threshold holds per neighbourhood: a site's neighbours and itself.
        neighbourhood = (degree or n - 1) + 1
        settings = p.Settings(
            round_id=secrets.token_hex(8),
            sites=sites,
            threshold=max(2, min(threshold(neighbourhood), neighbourhood - 1)),
            neighbours=degree,
        )
        quantiser = Quantiser(clip=clip, levels=levels, n_sites=n)
        clients = {s: SecAggClient(settings, s, keys[s], identities, quantiser) for s in sites}
        server = SecAggServer(settings, identities, quantiser)
        advertised = server.collect_keys([c.advertise() for c in clients.values()])
        routed = server.collect_shares([c.share(advertised) for c in clients.values()])
        inputs = {}
        for site, result in zip(sites, results, strict=True):
            weight = result.examples / total
            inputs[site] = np.append(weight * flatten(result.weights), weight)
        alive, dropped = server.collect_masked(
            [clients[s].mask(inputs[s], routed.get(s, {})) for s in sites]
        )
        summed = server.finish([clients[s].unmask(alive, dropped) for s in sorted(alive)])
        return unflatten(summed[:-1] / summed[-1], results[0].weights)

    return average
