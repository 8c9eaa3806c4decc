"""What travels between a site and the coordinator: the kinds of work, the message keys,
and how arrays are encoded.

A site pulls its work as one JSON object: the round's kind (:class:`Kind`), the protocol
part of the stage it is asked to answer (:data:`PROTOCOL`), and in the stage where it
sends its input, the task (the global weights and how to train, the regimes, the
query). It answers with one JSON object per stage. Weights travel as ``.npz`` bytes of
plain arrays (never pickle), vectors as little-endian words, both base64 inside JSON.
Keys are constants here, never string literals at the call sites.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from enum import StrEnum

import numpy as np


class Kind(StrEnum):
    """The kinds of round: two setup rounds, training, and analytics queries."""

    POINTS = "points"  # the sites' operating points, counted on a public grid
    MOMENTS = "moments"  # per-regime sensor moments under the federation's regimes
    SKETCH = "sketch"  # the sites' window summaries counted on a public grid: the trees' bins
    TRAIN = "train"  # one round of federated training
    BOOST = "boost"  # one level of a boosted tree, from the sum of the sites' histograms
    EVALUATE = "evaluate"  # the last candidate model scored, after the last training round
    PERSONALISE = "personalise"  # each site adapts the final model and chooses its own
    ANALYTICS = "analytics"  # one analytics query


# --- the work message ------------------------------------------------------------------

KEY_KIND = "kind"
KEY_PROTOCOL = "protocol"  # the stage's part: parameters, and what the stage needs
# The task, in the stage where a site sends its input.
KEY_REGIMES = "regimes"
KEY_QUERY = "query"
KEY_PIPELINE = "pipeline"
KEY_RECIPE = "recipe"
KEY_WEIGHTS = "weights"  # the model to train from: the newest candidate or accepted model
KEY_ACCEPTED = "accepted_weights"  # with a candidate: the last accepted model, to compare
KEY_MODEL_VERSION = "model_version"
KEY_PERSONAL = "personal"  # personalisation: how each site adapts the model and trains alone
KEY_LOCAL = "local"  # the TrainConfig of this round's local training
# With a private head (FedPer): how many final tensors each site keeps to itself, and
# which line of models they belong to (a simulation's ensemble member).
KEY_PRIVATE_HEAD = "private_head"
# With Ditto: the proximal weight of each site's personal model, and its line of models.
KEY_DITTO = "ditto"
# Each site's optimiser goes on from its last round (FederatedTraining.site_optimiser):
# which line of models its moments belong to. They stay at the site.
KEY_OPTIMISER = "optimiser"
KEY_PROXIMAL_MU = "proximal_mu"
# Boosted trees: their settings, the model so far (an ensemble's arrays, .npz in base64),
# the tree being grown, and, when the trees are a candidate, the last accepted ones.
KEY_BOOSTING = "boosting"
KEY_TREES = "trees"
KEY_GROWING = "growing"
KEY_ACCEPTED_TREES = "accepted_trees"
# Which part of the model a boost or evaluation round scores (and votes on): the trees
# or the network.
KEY_SCORED = "scored"
SCORED_TREES, SCORED_NETWORK = "trees", "network"
# A hybrid's evaluation scores its trees and the blend of network and trees at each share.
SCORED_BLEND = "blend"
KEY_SHARE = "share"  # a hybrid's weight of its trees, in its personalisation round
# What the federation trains (FederatedTraining.family): the personalisation round's
# candidates are of that family.
KEY_FAMILY = "family"
KEY_VAL_FRACTION = "val_fraction"
KEY_SPLIT_SEED = "split_seed"  # seeds the split of a site's engines into training and validation

# --- the protocol part of a work message, and a site's answer -------------------------------

STAGE = "stage"
SITE = "site"
ROUND = "round"
PARAMETERS = "parameters"  # the round's public parameters (RoundParameters.to_json)
ADVERTISED = "advertised"  # share keys: the neighbours' signed public keys
SEALED = "sealed"  # masked input: the encrypted shares addressed to this site
COMMITMENTS = "commitments"  # masked input: their dealers' commitments to those shares
ALIVE = "alive"  # unmask: sites whose masked input is in the sum
DROPPED = "dropped"  # unmask: sites that shared their keys but sent no input
VECTOR = "vector"  # a plain input, in the clear (plain mode only)
KEY_EXAMPLES = "examples"  # beside an input: the site's number of training examples
KEY_METRICS = "metrics"  # beside an input: how long the site trained, nothing else
# Beside an input, when the round scores a candidate model: 1 if the candidate is worse
# than the accepted model on the site's validation engines, else 0; signed by the site.
KEY_VOTE = "vote"
KEY_VOTE_SIGNATURE = "vote_signature"

# The one stage of a plain round (for debugging): each site sends its input in the clear.
PLAIN_INPUT = "plain_input"


class WireError(ValueError):
    """Bytes that do not decode as the message says they should."""


def weights_to_bytes(weights: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *weights)
    return buffer.getvalue()


def weights_from_bytes(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def weights_digest(weights: list[np.ndarray]) -> str:
    """SHA-256 of a model's weights (each array's dtype, shape and bytes): the same for
    the same weights however they were serialised."""
    hasher = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array)
        hasher.update(f"{array.dtype.str}{array.shape}".encode())
        hasher.update(array.tobytes())
    return hasher.hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError):
        raise WireError("not valid base64") from None


def vector_to_text(vector: np.ndarray) -> str:
    """A vector as base64 of its little-endian words (its dtype is the reader's to know)."""
    vector = np.asarray(vector)
    return b64(vector.astype(vector.dtype.newbyteorder("<")).tobytes())


def vector_from_text(text: object, dtype: type[np.generic], length: int) -> np.ndarray:
    """The vector :func:`vector_to_text` wrote, refused unless it has ``length`` words."""
    if not isinstance(text, str):
        raise WireError("a vector must be a base64 string")
    raw = unb64(text)
    little = np.dtype(dtype).newbyteorder("<")
    if len(raw) != length * little.itemsize:
        raise WireError(
            f"the vector must be {length * little.itemsize} bytes ({length} values), got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=little).astype(dtype)
