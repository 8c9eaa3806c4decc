"""Cryptographic building blocks of secure aggregation, on ``cryptography`` and numpy.

- key agreement: X25519, the shared secret stretched by HKDF-SHA256;
- authenticated encryption of Shamir shares sent to a peer through the coordinator:
  AES-256-GCM, with the sender, receiver and round bound in as associated data;
- signatures binding a site's round keys to its registered identity: Ed25519;
- Shamir secret sharing over the prime field GF(2^521 - 1) (a 32-byte seed fits);
- a PRG that expands a 32-byte seed straight into numpy mask words: AES-256-CTR;
- fixed-point quantisation with clipping, and sums modulo 2^32 or 2^64 that are
  checked not to overflow.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PRIME = 2**521 - 1  # a Mersenne prime: every 32-byte secret is an element of the field
SEED_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16  # AES-GCM's
SHARE_BYTES = 70  # a Shamir share: its point (4 bytes), its value in the field (66)
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw


class SecAggError(Exception):
    """A protocol message or parameter that must be refused; the message says which."""


class Misbehaviour(SecAggError):
    """A site proved to have broken the protocol (a share that does not open, a false
    complaint, a revealed share that is not the one it committed to): ``culprit`` is the
    site at fault, shown by what the coordinator holds, without trusting anyone's word."""

    def __init__(self, message: str, *, culprit: int) -> None:
        super().__init__(message)
        self.culprit = culprit


# --- key agreement ------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair; ``public`` is the 32 raw bytes that go to the coordinator."""

    private: X25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        private = X25519PrivateKey.generate()
        return cls(private, private.public_key().public_bytes(_RAW, _RAW_PUBLIC))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(_RAW, _RAW_PRIVATE, serialization.NoEncryption())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> KeyPair:
        private = X25519PrivateKey.from_private_bytes(data)
        return cls(private, private.public_key().public_bytes(_RAW, _RAW_PUBLIC))


def agree(own: KeyPair, peer_public: bytes, info: bytes) -> bytes:
    """A 32-byte key both peers derive alike: X25519, then HKDF-SHA256 with ``info``."""
    try:
        shared = own.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as error:
        raise SecAggError(f"not a valid X25519 public key: {error}") from None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def digest(*parts: bytes) -> bytes:
    """SHA-256 of the parts, each length-prefixed (no two part lists hash alike)."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big") + part)
    return hasher.digest()


# --- authenticated encryption ----------------------------------------------------------


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """AES-256-GCM; returns nonce + ciphertext + tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """Open what :func:`encrypt` sealed; refuse anything altered or addressed elsewhere."""
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise SecAggError(
            "an encrypted share failed authentication: it was altered, or it was not "
            "meant for this site and round"
        ) from None


# --- signatures -------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A site's long-term Ed25519 identity; ``public`` is registered with the coordinator."""

    private: Ed25519PrivateKey
    public: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        private = Ed25519PrivateKey.generate()
        return cls(private, private.public_key().public_bytes(_RAW, _RAW_PUBLIC))

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def fingerprint(public: bytes) -> str:
    """A public key in a form two people can read to each other over the phone: the
    first 128 bits of its SHA-256 as eight groups of four hex digits."""
    digest = hashlib.sha256(public).hexdigest()[:32].upper()
    return "-".join(digest[i : i + 4] for i in range(0, 32, 4))


def verify(public: bytes, signature: bytes, message: bytes, *, who: str) -> None:
    """Raise unless ``signature`` is ``who``'s Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise SecAggError(f"the signature of {who} does not verify: message refused") from None


# --- Shamir secret sharing ---------------------------------------------------------------


def shamir_split(secret: bytes, xs: list[int], threshold: int) -> list[tuple[int, int]]:
    """Shares ``(x, f(x))`` of ``secret`` for the points ``xs``; any ``threshold`` rebuild it.

    ``f`` is a random polynomial of degree ``threshold - 1`` over GF(PRIME) with
    ``f(0) = secret``. Points must be distinct and non-zero.
    """
    if not 1 <= threshold <= len(xs):
        raise SecAggError(f"threshold {threshold} must be between 1 and {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise SecAggError("share points must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares = []
    for x in xs:
        y = 0
        for coefficient in reversed(coefficients):  # Horner's rule
            y = (y * x + coefficient) % PRIME
        shares.append((x, y))
    return shares


def shamir_combine(shares: list[tuple[int, int]], length: int = SEED_BYTES) -> bytes:
    """The secret from shares (Lagrange interpolation at 0); needs ``threshold`` of them."""
    if len({x for x, _ in shares}) != len(shares):
        raise SecAggError("two shares for the same point")
    secret = 0
    for i, (xi, yi) in enumerate(shares):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(shares):
            if i != j:
                numerator = numerator * -xj % PRIME
                denominator = denominator * (xi - xj) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 256**length:  # a random field element: almost surely not a 32-byte seed
        raise SecAggError("the shares do not rebuild a secret: fewer shares than the threshold")
    return secret.to_bytes(length, "big")


def share_to_bytes(share: tuple[int, int]) -> bytes:
    x, y = share
    return x.to_bytes(4, "big") + y.to_bytes(SHARE_BYTES - 4, "big")


def share_from_bytes(data: bytes) -> tuple[int, int]:
    if len(data) != SHARE_BYTES:
        raise SecAggError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    return int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")


# --- masks ---------------------------------------------------------------------------------


def expand(seed: bytes, size: int, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """``size`` pseudo-random words from a 32-byte seed: the AES-256-CTR key stream."""
    if len(seed) != SEED_BYTES:
        raise SecAggError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    itemsize = np.dtype(dtype).itemsize
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(size * itemsize)) + encryptor.finalize()
    return np.frombuffer(stream, dtype=dtype)


@dataclass(frozen=True)
class Quantiser:
    """Fixed point: values clipped to ``[-clip, clip]`` become integers in ``[0, levels]``.

    Sums of ``n_sites`` quantised vectors are taken modulo ``2**bits_modulus``; the
    constructor refuses parameters whose sum could wrap around.
    """

    clip: float
    levels: int
    n_sites: int
    modulus_bits: int = 32

    def __post_init__(self) -> None:
        if self.modulus_bits not in (32, 64):
            raise SecAggError("sums are taken modulo 2^32 or 2^64")
        if self.clip <= 0 or self.levels < 1:
            raise SecAggError("the clipping range and the number of levels must be positive")
        if self.n_sites * self.levels >= 2**self.modulus_bits:
            raise SecAggError(
                f"{self.n_sites} sites x {self.levels} levels overflow sums modulo "
                f"2^{self.modulus_bits}: use 2^64, fewer levels or fewer sites per round"
            )

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint32 if self.modulus_bits == 32 else np.uint64

    @property
    def step(self) -> float:
        """The quantisation step; a value is off by at most half of it."""
        return 2 * self.clip / self.levels

    def quantise(self, values: np.ndarray) -> np.ndarray:
        clipped = np.clip(np.asarray(values, dtype=np.float64), -self.clip, self.clip)
        return np.rint((clipped + self.clip) / self.step).astype(self.dtype)

    def dequantise_sum(self, total: np.ndarray, count: int) -> np.ndarray:
        """The real-valued sum of ``count`` quantised vectors from their integer sum."""
        return total.astype(np.float64) * self.step - count * self.clip
