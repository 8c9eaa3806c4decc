"""Secure aggregation's building blocks: each refuses what it must refuse."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.core.secagg.primitives import (
    KeyPair,
    Quantiser,
    SecAggError,
    SigningKey,
    agree,
    decrypt,
    encrypt,
    expand,
    shamir_combine,
    shamir_split,
    share_from_bytes,
    share_to_bytes,
    verify,
)


def test_two_sites_derive_the_same_key_and_a_third_does_not():
    alice, bob, eve = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()

    assert agree(alice, bob.public, b"round 3") == agree(bob, alice.public, b"round 3")
    assert agree(alice, bob.public, b"round 3") != agree(eve, bob.public, b"round 3")
    assert agree(alice, bob.public, b"round 3") != agree(alice, bob.public, b"round 4")


def test_a_private_key_survives_the_sites_keystore():
    pair = KeyPair.generate()

    assert KeyPair.from_private_bytes(pair.private_bytes()).public == pair.public


def test_an_encrypted_share_opens_only_unaltered_and_for_its_addressee():
    key = secrets.token_bytes(32)
    sealed = encrypt(key, b"share", b"alice->bob round 3")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])

    assert decrypt(key, sealed, b"alice->bob round 3") == b"share"
    with pytest.raises(SecAggError, match="failed authentication"):
        decrypt(key, tampered, b"alice->bob round 3")
    with pytest.raises(SecAggError, match="failed authentication"):
        decrypt(key, sealed, b"alice->carol round 3")  # replayed to someone else


def test_a_forged_signature_is_refused_naming_the_sender():
    site, impostor = SigningKey.generate(), SigningKey.generate()
    message = b"keys of site 7 for round 3"

    verify(site.public, site.sign(message), message, who="site 7")
    with pytest.raises(SecAggError, match="the signature of site 7 does not verify"):
        verify(site.public, impostor.sign(message), message, who="site 7")
    with pytest.raises(SecAggError, match="does not verify"):
        verify(site.public, site.sign(message), b"keys of site 7 for round 2", who="site 7")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 12), data=st.data())
def test_any_threshold_of_shares_rebuilds_the_secret(n, data):
    threshold = data.draw(st.integers(1, n))
    secret = secrets.token_bytes(32)
    shares = shamir_split(secret, list(range(1, n + 1)), threshold)
    chosen = data.draw(st.permutations(shares))[:threshold]

    assert shamir_combine([share_from_bytes(share_to_bytes(s)) for s in chosen]) == secret


def test_too_few_shares_are_detected_not_turned_into_a_wrong_secret():
    shares = shamir_split(secrets.token_bytes(32), [1, 2, 3, 4, 5], threshold=3)

    # (An altered share is caught earlier: shares travel sealed with AES-GCM.)
    with pytest.raises(SecAggError, match="fewer shares than the threshold"):
        shamir_combine(shares[:2])


def test_the_prg_is_a_function_of_its_seed():
    seed = secrets.token_bytes(32)

    first, again = expand(seed, 1000, np.uint32), expand(seed, 1000, np.uint32)

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, expand(secrets.token_bytes(32), 1000, np.uint32))
    assert expand(seed, 10, np.uint64).dtype == np.uint64


def test_masks_cancel_modulo_two_to_the_32():
    mask = expand(secrets.token_bytes(32), 5, np.uint32)
    values = np.array([1, 2, 3, 4, 2**32 - 1], dtype=np.uint32)

    np.testing.assert_array_equal((values + mask) - mask, values)


@settings(max_examples=40, deadline=None)
@given(
    vectors=st.lists(
        st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4),
        min_size=1,
        max_size=20,
    )
)
def test_a_quantised_sum_is_the_real_sum_within_the_quantisation_error(vectors):
    quantiser = Quantiser(clip=5.0, levels=2**16, n_sites=len(vectors))
    total = np.zeros(4, dtype=quantiser.dtype)
    for vector in vectors:
        total += quantiser.quantise(np.array(vector))

    estimate = quantiser.dequantise_sum(total, len(vectors))

    bound = len(vectors) * quantiser.step / 2 + 1e-9
    assert np.all(np.abs(estimate - np.sum(vectors, axis=0)) <= bound)


def test_parameters_whose_sum_could_wrap_around_are_refused():
    with pytest.raises(SecAggError, match="overflow sums modulo 2\\^32: use 2\\^64"):
        Quantiser(clip=1.0, levels=2**24, n_sites=1000)

    assert Quantiser(clip=1.0, levels=2**24, n_sites=1000, modulus_bits=64).dtype == np.uint64
