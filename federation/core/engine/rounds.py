"""Round kinds, their stages, and the public parameters of one round.

Every round sums one float vector per site. Its *input layout* says how long the vector
is, the fixed-point range its values are clipped to, and the public *weight scale* the
sites divide their counts and weights by (so that values are of order one). The
*parameters* of a round are that layout plus who takes part, and, under secure
aggregation, the protocol's settings, quantiser and the sites' identity keys: everything
every site of the round is told, and the coordinator keeps.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import statistics
from dataclasses import dataclass, replace
from typing import Any

from federation.core import messages as m
from federation.core.fixed_point import CLIP, LEVELS, MODULUS_BITS
from federation.core.messages import Kind
from federation.core.secagg import protocol as p
from federation.core.secagg import wire
from federation.core.secagg.primitives import Quantiser, SecAggError

SECURE_STAGES: tuple[str, ...] = p.STAGES
PLAIN_STAGES: tuple[str, ...] = (m.PLAIN_INPUT,)
# The stages in which a site computes and sends its input (and, in training, trains).
INPUT_STAGES = (p.MASKED_INPUT, m.PLAIN_INPUT)

# Under DP the fixed-point range holds this many standard deviations of a site's noise
# share (passed twice in 10^9 values): clipping must not cut the noise the accountant
# counts on.
NOISE_RANGE_SIGMAS = 6.0
# A secure federation publishes no aggregate of fewer sites' inputs than this: with two,
# either could subtract its own input from the sum and read the other's.
MIN_CONTRIBUTORS = 3
# A site's public weight in a training round is its reported rows held within this factor
# of the median site's: a site that claims more (or fewer) rows cannot weigh more than that.
WEIGHT_SPREAD = 4.0


# The kinds of round whose inputs carry each site's public weight (and its vote).
WEIGHTED = (Kind.TRAIN, Kind.EVALUATE, Kind.BOOST)
# The kinds whose inputs are each site's share of the rows: their range is bounded by the
# largest public weight (see rows_range).
ROW_SHARES = (Kind.SKETCH, Kind.BOOST)


def stages(secure: bool) -> tuple[str, ...]:
    return SECURE_STAGES if secure else PLAIN_STAGES


def following(stage: str) -> str | None:
    """The stage after ``stage`` in its round, None after the last."""
    for sequence in (SECURE_STAGES, PLAIN_STAGES):
        if stage in sequence:
            index = sequence.index(stage)
            return sequence[index + 1] if index + 1 < len(sequence) else None
    raise SecAggError(f"unknown stage {stage!r}")


def next_round(
    kind: Kind,
    number: int,
    training_rounds: int,
    *,
    evaluate: bool = True,
    personalise: bool = False,
    boost_rounds: int = 0,
    boosted: bool = False,
) -> tuple[Kind, int] | None:
    """What follows a finished round: the setup rounds (with boosted trees, the sketch of
    their bins), then training up to the last, then the boost rounds until growing is over
    (``boosted``) or ``boost_rounds`` have run, then (with ``evaluate``) a round that scores
    the last candidate model, then (with ``personalise``, after an evaluation) a round in
    which each site chooses its model."""
    if kind == Kind.POINTS:
        return Kind.MOMENTS, 0
    if kind == Kind.MOMENTS:
        return (Kind.SKETCH, 0) if boost_rounds else (Kind.TRAIN, 1)
    if kind == Kind.SKETCH:
        return (Kind.TRAIN, 1) if training_rounds else (Kind.BOOST, 1)
    if kind == Kind.TRAIN and number < training_rounds:
        return Kind.TRAIN, number + 1
    if kind == Kind.TRAIN and boost_rounds:
        return Kind.BOOST, 1
    if kind == Kind.BOOST and not boosted and number < boost_rounds:
        return Kind.BOOST, number + 1
    if kind in (Kind.TRAIN, Kind.BOOST) and evaluate:
        return Kind.EVALUATE, number
    if kind == Kind.EVALUATE and personalise:
        return Kind.PERSONALISE, number
    return None  # the last round, or an analytics query


@dataclass(frozen=True)
class Noise:
    """The differential privacy a round adds: noise multiplier and L2 clipping bound."""

    multiplier: float
    clip: float


def fewest_sites(threshold: int, minimum: int) -> int:
    """The fewest sites a round can end with: each adds noise as if it were one of them,
    so that the sum of any surviving set carries at least the configured noise."""
    return max(threshold, minimum)


def value_range(
    *, kind: Kind, noise: Noise | None, noise_sites: int, n_sites: int, reference_max: float
) -> float:
    """The fixed-point range of a round's inputs, from public numbers only.

    A DP training input is (global weights + clipped update + noise share) / n: the range
    must hold six standard deviations of a noise share. Everything else (weights scaled by
    the sites' share of the examples, statistics scaled by public numbers) fits
    :data:`CLIP`.
    """
    if noise is None or kind != Kind.TRAIN:
        return CLIP
    share = noise.multiplier * noise.clip / math.sqrt(noise_sites)
    return max(CLIP, (reference_max + noise.clip + NOISE_RANGE_SIGMAS * share) / n_sites)


@dataclass(frozen=True)
class Participant:
    """A site as the coordinator plans a round with it: public facts only."""

    id: int
    identity: bytes | None  # its registered Ed25519 public key
    rows: int  # the training rows it reported


@dataclass(frozen=True)
class SecureRound:
    settings: p.Settings
    quantiser: Quantiser
    identities: dict[int, bytes]


@dataclass(frozen=True)
class RoundParameters:
    """What every site of a round is told about it, and the coordinator keeps.

    ``privacy`` (noise multiplier, clip, noise_sites) when the sites add DP noise;
    ``secure`` with the protocol's settings under secure aggregation, None in plain mode;
    ``weights`` every site's public weight in a training round; ``min_contributors`` the
    fewest inputs a sum may hold, which a site checks before it helps unmask one.
    """

    round_id: str
    sites: tuple[int, ...]
    length: int
    value_range: float
    weight_scale: float
    privacy: dict[str, Any] | None = None
    secure: SecureRound | None = None
    # Training rounds: each site's public weight (they sum to 1 over the round's sites).
    weights: dict[int, float] | None = None
    # The fewest sites whose inputs may make up the sum: no stage ends with fewer.
    min_contributors: int = 2
    # What the round's task hands the sites, by digest (see messages.weights_digest):
    # "model", the weights to train or score, and "accepted", the model to compare with.
    announcement: dict[str, str] | None = None

    def digest(self) -> bytes:
        """SHA-256 of everything the sites are told about the round: under secure
        aggregation each site signs it with its keys (``Settings.context``), so two sites
        told different things (another model, other weights) find out from each other."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).digest()

    def bound(self) -> RoundParameters:
        """These parameters with their digest bound into the protocol's settings."""
        if self.secure is None:
            return self
        settings = replace(self.secure.settings, context=self.digest())
        return replace(self, secure=replace(self.secure, settings=settings))

    @property
    def stages(self) -> tuple[str, ...]:
        return stages(self.secure is not None)

    @property
    def threshold(self) -> int:
        """Answers a secure round needs at every stage (1 in a plain round)."""
        return self.secure.settings.threshold if self.secure is not None else 1

    def to_json(self) -> dict[str, Any]:
        common = {
            "weight_scale": self.weight_scale,
            "privacy": self.privacy,
            "weights": {str(s): w for s, w in self.weights.items()} if self.weights else None,
            "min_contributors": self.min_contributors,
            "announcement": self.announcement,
        }
        if self.secure is None:
            return {
                "mode": "plain",
                p.ROUND: self.round_id,
                "sites": list(self.sites),
                "length": self.length,
                "clip": self.value_range,
                **common,
            }
        s = self.secure
        return {
            "mode": "secure",
            **wire.round_to_json(s.settings, s.quantiser, s.identities, self.length),
            **common,
        }

    @classmethod
    def from_json(cls, data: Any) -> RoundParameters:
        """Parse what :meth:`to_json` wrote; :class:`SecAggError` says what is missing."""
        try:
            mode = data["mode"]
            common: dict[str, Any] = {
                "privacy": data["privacy"],
                "weight_scale": float(data["weight_scale"]),
                "weights": _weights_from_json(data.get("weights")),
                "min_contributors": int(data.get("min_contributors", 2)),
                "announcement": _announcement_from_json(data.get("announcement")),
            }
            if mode == "plain":
                return cls(
                    round_id=str(data[p.ROUND]),
                    sites=tuple(int(s) for s in data["sites"]),
                    length=int(data["length"]),
                    value_range=float(data["clip"]),
                    **common,
                )
            if mode != "secure":
                raise ValueError(f"unknown mode {mode!r}")
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise SecAggError(f"the round's parameters are incomplete: {error}") from None
        settings, quantiser, identities, length = wire.round_from_json(data)
        return cls(
            round_id=settings.round_id,
            sites=settings.sites,
            length=length,
            value_range=quantiser.clip,
            secure=SecureRound(settings, quantiser, identities),
            **common,
        ).bound()

    def weight_of(self, sites: set[int] | tuple[int, ...]) -> float:
        """The summed public weight of ``sites`` (in a training round)."""
        if self.weights is None:
            raise SecAggError(f"round {self.round_id} has no public weights")
        return sum(self.weights[s] for s in sites)


# What a round's task may hand the sites, each announced by its digest: the network to
# train or score and the accepted one to compare with; the trees so far, the tree being
# grown and the accepted trees.
ANNOUNCED = ("model", "accepted", "trees", "growing", "accepted_trees")


def _announcement_from_json(data: Any) -> dict[str, str] | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not all(
        key in ANNOUNCED and isinstance(value, str) and len(value) == 64
        for key, value in data.items()
    ):
        raise ValueError(
            f"'announcement' must map some of {', '.join(ANNOUNCED)} to SHA-256 digests"
        )
    return dict(data)


def _weights_from_json(data: Any) -> dict[int, float] | None:
    if data is None:
        return None
    weights = {int(s): float(w) for s, w in data.items()}
    if not all(math.isfinite(w) and w > 0 for w in weights.values()):
        raise ValueError("public weights must be positive numbers")
    return weights


def public_weights(participants: list[Participant], noise: Noise | None) -> dict[int, float]:
    """Each site's weight in a training round, public and bounded: its reported rows held
    within :data:`WEIGHT_SPREAD` of the median site's (equal weights under DP, or when no
    site reported any rows), normalised to sum to 1. A site cannot choose its weight: it
    puts ``weight * model`` under masks, and the coordinator divides the sum by the summed
    weights of the sites in it."""
    rows = [max(0, s.rows) for s in participants]
    median = statistics.median(rows) if rows else 0
    if noise is not None or median <= 0:
        raw = [1.0] * len(participants)
    else:
        raw = [min(max(r, median / WEIGHT_SPREAD), median * WEIGHT_SPREAD) for r in rows]
    total = sum(raw)
    return {s.id: r / total for s, r in zip(participants, raw, strict=True)}


def weight_scale(kind: Kind, participants: list[Participant], noise: Noise | None) -> float:
    """The public number sites divide counts and weights by: about the total of the rows
    they reported, or under DP training the number of sites (one site, one vote)."""
    if noise is not None and kind == Kind.TRAIN:
        return float(len(participants))
    return float(max(sum(max(0, s.rows) for s in participants), 1))


# A sketch or boost input is a site's share of the rows at most: the round's range is this
# many times the largest public share, so that a lying site adds little more than its own
# share to any value of the sum (an honest site's rows may have grown a little since it
# reported them).
SHARE_RANGE = 2.0


def row_shares(participants: list[Participant]) -> tuple[float, float]:
    """The public number a sketch or boost round's sites divide their counts by (the sum of
    their reported rows, each held within WEIGHT_SPREAD of the median site's, so that no
    claim can shrink everyone else's values), and the round's fixed-point range."""
    rows = [max(0, s.rows) for s in participants]
    median = statistics.median(rows) if rows else 0
    if median <= 0:  # nobody reported rows: nothing to bound by
        return float(max(sum(rows), 1)), CLIP
    held = [min(max(r, median / WEIGHT_SPREAD), median * WEIGHT_SPREAD) for r in rows]
    total = sum(held)
    return float(total), min(CLIP, SHARE_RANGE * max(held) / total)


def plan_round(
    *,
    kind: Kind,
    participants: list[Participant],
    length: int,
    secure: bool,
    minimum: int,
    noise: Noise | None = None,
    reference_max: float = 0.0,
    round_id: str | None = None,
    graph_seed: int | None = None,
    announcement: dict[str, str] | None = None,
) -> RoundParameters:
    """The parameters of a round over ``participants`` (each with an identity key when
    ``secure``): the SecAgg+ graph and threshold, the quantiser, the weight scale, each
    site's share of the DP noise, and the digests of the models its task hands out."""
    round_id = round_id or secrets.token_hex(16)
    ids = tuple(sorted(s.id for s in participants))
    scale = weight_scale(kind, participants, noise)
    weights = public_weights(participants, noise) if kind in WEIGHTED else None
    if kind in ROW_SHARES:
        scale, share_range = row_shares(participants)
    if not secure:
        return RoundParameters(
            round_id,
            ids,
            length,
            share_range if kind in ROW_SHARES else CLIP,
            scale,
            weights=weights,
            min_contributors=minimum,
            announcement=announcement,
        )
    settings = p.plan(round_id, ids, graph_seed=graph_seed)
    fewest = fewest_sites(settings.threshold, minimum)
    clip = value_range(
        kind=kind,
        noise=noise,
        noise_sites=fewest,
        n_sites=len(ids),
        reference_max=reference_max,
    )
    if kind in ROW_SHARES:
        clip = share_range
    quantiser = Quantiser(clip=clip, levels=LEVELS, n_sites=len(ids), modulus_bits=MODULUS_BITS)
    identities = {s.id: s.identity for s in participants if s.identity is not None}
    if set(identities) != set(ids):
        raise SecAggError("every site of a secure round needs a registered identity key")
    privacy = None
    if noise is not None:
        privacy = {"noise_multiplier": noise.multiplier, "clip": noise.clip, "noise_sites": fewest}
    return RoundParameters(
        round_id=round_id,
        sites=ids,
        length=length,
        value_range=clip,
        weight_scale=scale,
        privacy=privacy,
        secure=SecureRound(settings, quantiser, identities),
        weights=weights,
        min_contributors=minimum,
        announcement=announcement,
    ).bound()
