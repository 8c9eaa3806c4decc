"""The weighted average of the sites' models, computed as a secure sum.

Each site submits ``w_i * x_i`` and ``w_i`` (``w_i`` its share of the examples) under
masks; the coordinator only learns the two sums and divides. The same stages as in
a live round, run in one process: the simulation's path to the protocol.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence

import numpy as np

from federation.core.secagg import protocol as p
from federation.core.secagg.client import SecAggClient
from federation.core.secagg.primitives import Quantiser, SecAggError, SigningKey
from federation.core.secagg.server import SecAggServer
from federation.core.strategies import SiteResult, Weights

DEFAULT_CLIP = 8.0  # model weights (and weighted updates) are clipped to [-8, 8]
DEFAULT_LEVELS = 2**20
# Live rounds carry the validation error beside the weights, and weights scaled by a
# public estimate of the total: 2^40 levels modulo 2^64 keep every value to 1e-11,
# for up to 2^24 sites, at twice the mask bytes (nothing, for a model of 10^4 weights).
PRECISE_LEVELS = 2**40
PRECISE_MODULUS_BITS = 64


def flatten(weights: Weights) -> np.ndarray:
    return np.concatenate([w.astype(np.float64).ravel() for w in weights])


def unflatten(vector: np.ndarray, like: Weights) -> Weights:
    out, start = [], 0
    for array in like:
        out.append(vector[start : start + array.size].reshape(array.shape).astype(array.dtype))
        start += array.size
    return out


def site_input(weights: Weights, weight: float, extras: Sequence[float] = ()) -> np.ndarray:
    """What a site puts under masks: ``weight`` times its flattened weights, ``weight``,
    then any ``extras`` (already multiplied by whatever weight they need)."""
    return np.concatenate([weight * flatten(weights), [weight], np.asarray(extras, np.float64)])


def input_length(like: Weights, extras: int = 0) -> int:
    return sum(w.size for w in like) + 1 + extras


def average_from_sum(
    summed: np.ndarray, like: Weights, extras: int = 0
) -> tuple[Weights, np.ndarray]:
    """The weighted average of the weights from the sum of :func:`site_input` vectors,
    and the summed extras."""
    size = len(summed) - 1 - extras
    if summed[size] <= 0:
        raise SecAggError("the summed weights are not positive: no site trained on any example")
    return unflatten(summed[:size] / summed[size], like), summed[size + 1 :]


# Validation errors travel in the secure sum too, as mean squared errors in this unit
# (so that they fit the clipping range: an RMSE up to 280 cycles).
VAL_UNIT = 1e4
TRAINING_EXTRAS = 2


def training_input(
    weights: Weights, examples: int, val_sse: float, val_count: int, scale: float
) -> np.ndarray:
    """A site's vector in a secure training round: its weights and its validation error,
    each weighted by its share of ``scale`` (a public number of the same order as the
    total, so that the weights fit the fixed-point range with precision to spare)."""
    weight, val_weight = examples / scale, val_count / scale
    mse = val_sse / val_count / VAL_UNIT if val_count else 0.0
    return site_input(weights, weight, [val_weight, val_weight * mse])


def training_result(summed: np.ndarray, like: Weights) -> tuple[Weights, float]:
    """The weighted average of the weights, and the RMSE over all sites' validation windows."""
    average, (val_weight, val_mse) = average_from_sum(summed, like, TRAINING_EXTRAS)
    rmse = math.sqrt(max(val_mse, 0.0) / val_weight * VAL_UNIT) if val_weight > 0 else math.nan
    return average, rmse


def secure_sum(
    inputs: list[np.ndarray],
    *,
    clip: float = DEFAULT_CLIP,
    levels: int = DEFAULT_LEVELS,
    modulus_bits: int = 32,
    threshold: Callable[[int], int] = p.majority,
    sparse: bool = True,
) -> np.ndarray:
    """The sum of the sites' vectors through the whole protocol, every site and the
    server in this process: the in-process path to what live rounds compute."""
    n = len(inputs)
    if n < 2:
        raise SecAggError("a secure sum needs at least two sites")
    sites = tuple(range(1, n + 1))
    keys = {s: SigningKey.generate() for s in sites}
    identities = {s: keys[s].public for s in sites}
    settings = p.plan(secrets.token_hex(8), sites, sparse=sparse, threshold=threshold)
    quantiser = Quantiser(clip=clip, levels=levels, n_sites=n, modulus_bits=modulus_bits)
    clients = {s: SecAggClient(settings, s, keys[s], identities, quantiser) for s in sites}
    server = SecAggServer(settings, identities, quantiser)
    advertised = server.collect_keys([c.advertise() for c in clients.values()])
    routed = server.collect_shares([c.share(advertised) for c in clients.values()])
    alive, dropped = server.collect_masked(
        [
            clients[s].mask(vector, routed.get(s, {}))
            for s, vector in zip(sites, inputs, strict=True)
        ]
    )
    return server.finish([clients[s].unmask(alive, dropped) for s in sorted(alive)])


def secure_average(
    *,
    clip: float = DEFAULT_CLIP,
    levels: int = DEFAULT_LEVELS,
    threshold: Callable[[int], int] = p.majority,
    sparse: bool = True,
) -> Callable[[list[SiteResult]], Weights]:
    """A drop-in for :func:`weighted_average` that goes through the secure sum."""

    def average(results: list[SiteResult]) -> Weights:
        total = sum(r.examples for r in results)
        inputs = [site_input(r.weights, r.examples / total) for r in results]
        summed = secure_sum(inputs, clip=clip, levels=levels, threshold=threshold, sparse=sparse)
        return average_from_sum(summed, results[0].weights)[0]

    return average
