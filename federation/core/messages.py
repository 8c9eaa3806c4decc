"""What travels between a site and the coordinator, and how it is encoded.

Weights go as ``.npz`` bytes of plain arrays (never pickle), base64 inside JSON;
statistics go as JSON lists. Message keys are constants, not string literals.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from turbofan.data.features import SensorMoments

# Kinds of work a site is given.
POINTS = "points"
MOMENTS = "moments"
TRAIN = "train"
ANALYTICS = "analytics"
KINDS = (POINTS, MOMENTS, TRAIN, ANALYTICS)

# Keys of work and result messages.
KEY_KIND = "kind"
KEY_WEIGHTS = "weights"
KEY_PIPELINE = "pipeline"
KEY_REGIMES = "regimes"
KEY_RECIPE = "recipe"
KEY_LOCAL = "local"
KEY_PROXIMAL_MU = "proximal_mu"
KEY_EXAMPLES = "examples"
KEY_METRICS = "metrics"
KEY_PAYLOAD = "payload"
KEY_QUERY = "query"


def weights_to_bytes(weights: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *weights)
    return buffer.getvalue()


def weights_from_bytes(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def points_to_json(points: np.ndarray, counts: np.ndarray) -> dict[str, Any]:
    return {"points": points.tolist(), "counts": counts.tolist()}


def points_from_json(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    points = np.asarray(data["points"], dtype=np.float64).reshape(-1, 3)
    counts = np.asarray(data["counts"], dtype=np.int64)
    if len(points) != len(counts) or (counts < 0).any():
        raise ValueError("points and counts must have the same length, counts >= 0")
    return points, counts


def moments_to_json(moments: SensorMoments) -> dict[str, Any]:
    return {
        "counts": moments.counts.tolist(),
        "sums": moments.sums.tolist(),
        "squares": moments.squares.tolist(),
        "varied": moments.varied.tolist(),
    }


def moments_from_json(data: dict[str, Any]) -> SensorMoments:
    moments = SensorMoments(
        counts=np.asarray(data["counts"], dtype=np.int64),
        sums=np.asarray(data["sums"], dtype=np.float64),
        squares=np.asarray(data["squares"], dtype=np.float64),
        varied=np.asarray(data["varied"], dtype=bool),
    )
    n = len(moments.counts)
    if any(a.shape != (n, 21) for a in (moments.sums, moments.squares, moments.varied)):
        raise ValueError(f"moments must be given for {n} regimes and 21 sensors")
    return moments
