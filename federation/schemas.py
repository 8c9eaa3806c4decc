"""Every message of the site API, declared once: these pydantic models validate what a
site sends (types, ranges, sizes: a 400 naming the field before anything is written)
and generate the API's OpenAPI description.

They check the shape of a message; what depends on the round (a vector's exact length,
a signature, which shares a site may reveal) the round engine checks next
(``federation.core.engine.coordinator.check_message``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Schema
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator

from federation.core import messages as m
from federation.core.engine.coordinator import MAX_EXAMPLES
from federation.core.secagg.protocol import COMMITMENT_BYTES
from federation.core.secagg.wire import (
    KEY_BYTES,
    SEALED_SHARE_BYTES,
    SHARE_TEXT_CHARS,
    SIGNATURE_BYTES,
)
from federation.services.sites import (
    MAX_SUBSET_NAME,
    MAX_SUBSETS,
    MAX_TRAIN_ENGINES,
    MAX_TRAIN_ROWS,
)

MAX_ID = 2**63 - 1  # database ids are 64-bit
# A vector in base64: the largest round a federation runs is far below this; the body
# limit (DATA_UPLOAD_MAX_MEMORY_SIZE) stops anything bigger first.
MAX_VECTOR_CHARS = 4_000_000
MAX_PEERS = 1024  # sites a message may name: neighbours, shares


def _base64(raw_bytes: int) -> int:
    return 4 * ((raw_bytes + 2) // 3)


def _whole(value: Any) -> Any:
    """A whole number as JSON has it: 3 or 3.0, never true/false or "3"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("Input should be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("Input should be a whole number")
        return int(value)
    return value


Whole = Annotated[int, BeforeValidator(_whole)]


class Matches:
    """A text check with its pattern in the description (what clients generate from) and
    a message in words (what a client reads when it is refused)."""

    def __init__(self, pattern: str, what: str) -> None:
        self.pattern, self.what = re.compile(pattern), what

    def __call__(self, value: str) -> str:
        if not self.pattern.fullmatch(value):
            raise ValueError(f"should be {self.what}")
        return value

    def field(self, **more: Any) -> Any:
        return Field(json_schema_extra={"pattern": self.pattern.pattern}, **more)


def _base64_of(raw_bytes: int) -> Matches:
    body = _base64(raw_bytes)
    padding = (3 - raw_bytes % 3) % 3
    return Matches(
        rf"^[A-Za-z0-9+/]{{{body - padding}}}={{{padding}}}$",
        f"{raw_bytes} bytes in base64 ({body} characters)",
    )


_ANY_BASE64 = Matches(r"^[A-Za-z0-9+/]*={0,2}$", "base64")
_KEY, _SIGNATURE, _SEALED, _COMMITMENT = (
    _base64_of(KEY_BYTES),
    _base64_of(SIGNATURE_BYTES),
    _base64_of(SEALED_SHARE_BYTES),
    _base64_of(2 * COMMITMENT_BYTES),
)
_ROUND = Matches(r"^[A-Za-z0-9]{1,64}$", "a round id: 1 to 64 letters and digits")
_PEER = Matches(r"^[1-9][0-9]{0,18}$", "a site id")
_SHARE = Matches(r"^[0-9a-f]{1,16}:[0-9a-f]+$", "a share: 'x:y' in lower-case hex")
_SUBSET = Matches(r"^[A-Za-z0-9_.-]+$", 'a subset name such as "FD001"')

SiteId = Annotated[Whole, Field(ge=1, le=MAX_ID, description="the sending site's id")]
RoundId = Annotated[
    str, AfterValidator(_ROUND), _ROUND.field(description="the round's protocol id")
]
PeerKey = Annotated[str, AfterValidator(_PEER), _PEER.field(description="a site id")]
Key = Annotated[str, AfterValidator(_KEY), _KEY.field(description="32 bytes, base64")]
Signature = Annotated[
    str, AfterValidator(_SIGNATURE), _SIGNATURE.field(description="Ed25519, base64")
]
Vector = Annotated[
    str,
    AfterValidator(_ANY_BASE64),
    _ANY_BASE64.field(max_length=MAX_VECTOR_CHARS, description="little-endian words, base64"),
]
Sealed = Annotated[
    str, AfterValidator(_SEALED), _SEALED.field(description="a neighbour's sealed shares")
]
Commitment = Annotated[
    str,
    AfterValidator(_COMMITMENT),
    _COMMITMENT.field(description="SHA-256 of the seed share, then of the key share, base64"),
]
Share = Annotated[
    str,
    AfterValidator(_SHARE),
    _SHARE.field(max_length=SHARE_TEXT_CHARS, description="a Shamir share, 'x:y' in hex"),
]
SubsetName = Annotated[str, AfterValidator(_SUBSET), _SUBSET.field(max_length=MAX_SUBSET_NAME)]


class Strict(Schema):
    """A message: unknown fields are refused (a typo is an error, not silence)."""

    model_config = ConfigDict(extra="forbid")


class Error(Schema):
    error: str = Field(description="what is wrong and what to change")


# --- the site --------------------------------------------------------------------------------


class Membership(Schema):
    federation: int
    name: str
    status: Literal["requested", "approved", "suspended", "left"]
    work: str = Field(
        description="in plain words, the work the site has in it now, or why none and when "
        "work will come"
    )


class SiteOut(Schema):
    name: str
    status: str
    data_summary: dict[str, Any] | None
    memberships: list[Membership]


class DataSummary(Strict):
    """What a site says of its data: counts only, never rows. ``train_rows`` is public:
    it fixes the site's weight in training."""

    train_rows: Whole = Field(ge=0, le=MAX_TRAIN_ROWS)
    train_engines: Whole = Field(ge=0, le=MAX_TRAIN_ENGINES)
    subsets: list[SubsetName] = Field(
        max_length=MAX_SUBSETS, description='the C-MAPSS subsets, e.g. ["FD001"]'
    )


class DataSummaryOut(Schema):
    data_summary: DataSummary


class IdentityIn(Strict):
    public_key: Key = Field(description="the site's Ed25519 public key, base64")


class IdentityOut(Schema):
    public_key: str


MAX_MONEY = 1e12  # dollars: more than any factory earns
Money = Annotated[float, Field(ge=-MAX_MONEY, le=MAX_MONEY, allow_inf_nan=False)]


class WorthIn(Strict):
    """What joining is worth at the site, as the site computed it on its own engines (the
    maintenance replay of its validation engines) and its owner chose to publish: one
    figure with its interval. The coordinator cannot check it; it shows it as the site's."""

    federation: Whole = Field(ge=1, le=MAX_ID, description="the federation it is about")
    worth: Money = Field(description="chosen model minus local model, dollars per factory")
    low: Money = Field(description="the interval's lower end")
    high: Money = Field(description="the interval's upper end")
    level: float = Field(gt=0, lt=1, description="the interval's coverage, e.g. 0.9")
    engines: Whole = Field(ge=1, le=MAX_TRAIN_ENGINES, description="engines replayed")
    fleet_size: Whole = Field(ge=1, le=10_000, description="engines per factory")
    horizon: Whole = Field(ge=1, le=1_000_000, description="cycles replayed")

    @model_validator(mode="after")
    def _ordered(self) -> WorthIn:
        if not self.low <= self.worth <= self.high:
            raise ValueError("the interval must hold the figure: low <= worth <= high")
        return self


class WorthOut(Schema):
    federation: int
    published_worth: dict[str, Any]


# --- work -------------------------------------------------------------------------------------


MAX_WAIT = 25.0  # seconds a request for work may wait for it


class WorkQuery(Strict):
    wait: float = Field(
        0.0,
        ge=0,
        le=MAX_WAIT,
        allow_inf_nan=False,
        description="seconds to wait for work if there is none yet (a long poll)",
    )


class FederationRef(Schema):
    id: int
    name: str


class RoundRef(Schema):
    id: int
    number: int
    kind: m.Kind
    deadline: datetime


class WorkOut(Schema):
    contribution: int
    federation: FederationRef
    round: RoundRef
    work: dict[str, Any] = Field(
        description="'kind'; 'protocol': the stage to answer, the round's public parameters "
        "and what the stage needs (neighbours' signed keys, shares encrypted to this site, "
        "the living and dropped sites); in the stage that sends the site's input, the task: "
        "regimes, query, or pipeline, recipe, base64 .npz weights and local training "
        "settings (and, when the weights are a candidate, 'accepted_weights': the last "
        "accepted model, to score it against); with boosted trees, 'boosting' settings, "
        "'trees' (the model so far), 'growing' (the tree being grown) and "
        "'accepted_trees', each base64 .npz, and 'scored': which part the round scores"
    )


# --- a stage's message --------------------------------------------------------------------------


class _Stage(Strict):
    round: RoundId
    site: SiteId


class AdvertiseKeys(_Stage):
    stage: Literal["advertise_keys"]
    share_publics: dict[PeerKey, Key] = Field(
        max_length=MAX_PEERS,
        description="per neighbour, this site's public key of their share channel",
    )
    mask_public: Key
    seed_commitment: Key = Field(description="SHA-256 commitment to the self-mask seed")
    signature: Signature


class ShareKeys(_Stage):
    stage: Literal["share_keys"]
    sealed: dict[PeerKey, Sealed] = Field(
        max_length=MAX_PEERS, description="per neighbour, its shares sealed to it (base64)"
    )
    commitments: dict[PeerKey, Commitment] = Field(
        max_length=MAX_PEERS, description="per neighbour, commitments to the shares sealed to it"
    )


class Timing(Strict):
    seconds: float | None = Field(
        None, ge=0, le=10**7, allow_inf_nan=False, description="how long the site's part took"
    )


class _Input(_Stage):
    """Beside an input a site says only how many examples it trained on, how long it took,
    and, when scoring a candidate model, its signed vote."""

    examples: Whole = Field(0, ge=0, le=MAX_EXAMPLES)
    metrics: Timing = Field(default_factory=lambda: Timing(seconds=None))
    vote: Literal[0, 1] | None = Field(None, description="1: the candidate is worse here")
    vote_signature: Signature | None = None


class MaskedInput(_Input):
    stage: Literal["masked_input"]
    masked: Vector
    complaints: dict[PeerKey, Key] = Field(
        default_factory=dict,
        max_length=MAX_PEERS,
        description="per neighbour whose shares did not open or match their commitment, "
        "this site's private key of their channel: the proof the coordinator checks",
    )


class PlainInput(_Input):
    stage: Literal["plain_input"]
    vector: Vector = Field(description="the input in the clear (plain rounds, debugging)")


class Unmask(_Stage):
    stage: Literal["unmask"]
    seed_shares: dict[PeerKey, Share] = Field(max_length=MAX_PEERS)
    key_shares: dict[PeerKey, Share] = Field(max_length=MAX_PEERS)


StageMessage = Annotated[
    AdvertiseKeys | ShareKeys | MaskedInput | Unmask | PlainInput,
    Field(discriminator="stage"),
]


class Received(Schema):
    status: Literal["received"]
    contribution: int
