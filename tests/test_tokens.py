from __future__ import annotations

import base64
import hmac
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.security.keys import SigningKeys
from deadpixel.security.tokens import MESSAGE_ID_BYTES, PIXEL, TokenSigner, _Hmac, b32hex, new_message_id

KEYS = SigningKeys(1, {1: b"k" * 32})
SIGNER = TokenSigner(KEYS)
ALPHABET = string.digits + "abcdefghijklmnopqrstuv"


def test_pixel_token_round_trips_and_is_short_lower_case_and_url_safe() -> None:
    mid = new_message_id()
    token = SIGNER.pixel_token(mid)
    assert len(token) == 32
    assert set(token) <= set(ALPHABET)
    assert mid not in token  # the id is not readable from the token
    assert SIGNER.pixel_message_id(token) == mid


def test_message_ids_are_random_not_sequential() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 16 for i in ids)


def test_token_survives_a_mail_client_that_changes_case() -> None:
    mid = new_message_id()
    assert SIGNER.pixel_message_id(SIGNER.pixel_token(mid).upper()) == mid


def test_every_single_character_change_is_rejected() -> None:
    token = SIGNER.pixel_token(new_message_id())
    for i, old in enumerate(token):
        for new in ALPHABET:
            if new != old:
                assert SIGNER.pixel_message_id(token[:i] + new + token[i + 1 :]) is None


def test_token_from_another_secret_or_purpose_is_rejected() -> None:
    mid = new_message_id()
    other = TokenSigner(SigningKeys(1, {1: b"x" * 32}))
    assert SIGNER.pixel_message_id(other.pixel_token(mid)) is None
    from deadpixel.security.tokens import message_id_bytes

    link_token = SIGNER.sign(b"c", message_id_bytes(mid))
    assert SIGNER.verify(PIXEL, link_token, MESSAGE_ID_BYTES) is None


def test_garbage_is_rejected_without_errors() -> None:
    token = SIGNER.pixel_token(new_message_id())
    for bad in [
        "",
        "x",
        token[:-1],
        token + "0",
        "-" + token[1:],
        " " + token[1:],
        "_" * 32,
        token[:5] + "_" + token[6:],
        "٣" + token[1:],
        "w" * 32,
        "\x00" * 32,
    ]:
        assert SIGNER.pixel_message_id(bad) is None


def test_old_keys_keep_working_after_rotation() -> None:
    mid = new_message_id()
    old_token = SIGNER.pixel_token(mid)
    rotated = TokenSigner(SigningKeys(2, {1: b"k" * 32, 2: b"n" * 32}))
    new_token = rotated.pixel_token(mid)
    assert new_token != old_token
    assert rotated.pixel_message_id(old_token) == mid
    assert rotated.pixel_message_id(new_token) == mid
    assert SIGNER.pixel_message_id(new_token) is None  # without a reloader, an unknown key id is refused


def test_unknown_key_id_asks_the_reloader() -> None:
    rotated_keys = SigningKeys(2, {1: b"k" * 32, 2: b"n" * 32})
    mid = new_message_id()
    token = TokenSigner(rotated_keys).pixel_token(mid)
    calls = []

    def reload() -> SigningKeys:
        calls.append(1)
        return rotated_keys

    signer = TokenSigner(KEYS, reload=reload)
    assert signer.pixel_message_id(token) == mid
    assert signer.pixel_message_id(token) == mid
    assert len(calls) == 1


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=64))
def test_arbitrary_text_never_raises_and_is_never_accepted(text: str) -> None:
    assert SIGNER.pixel_message_id(text) is None


@settings(max_examples=300, deadline=None)
@given(
    st.binary(min_size=MESSAGE_ID_BYTES, max_size=MESSAGE_ID_BYTES), st.integers(0, 31), st.integers(1, 31)
)
def test_any_payload_round_trips_and_any_tampering_fails(payload: bytes, pos: int, delta: int) -> None:
    token = SIGNER.sign(PIXEL, payload)
    assert SIGNER.verify(PIXEL, token, MESSAGE_ID_BYTES) == payload
    tampered = token[:pos] + ALPHABET[(ALPHABET.index(token[pos]) + delta) % 32] + token[pos + 1 :]
    assert SIGNER.verify(PIXEL, tampered, MESSAGE_ID_BYTES) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.binary(max_size=100))
def test_the_precomputed_hmac_is_hmac_sha256(key: bytes, message: bytes) -> None:
    """Keys shorter than, as long as and longer than SHA-256's 64-byte block."""
    assert _Hmac(key).digest(message) == hmac.digest(key, message, "sha256")


def test_tokens_made_before_the_precomputed_hmac_still_verify() -> None:
    """The token format is unchanged: one signed with the standard library's HMAC is genuine."""
    payload = bytes(range(MESSAGE_ID_BYTES))
    body = bytes([1]) + payload
    token = base64.b32hexencode(body + hmac.digest(b"k" * 32, PIXEL + body, "sha256")[:9]).decode().lower()
    assert SIGNER.verify(PIXEL, token, MESSAGE_ID_BYTES) == payload


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6).flatmap(lambda n: st.binary(min_size=5 * n, max_size=5 * n)))
def test_b32hex_is_lower_case_base32hex(data: bytes) -> None:
    assert b32hex(data) == base64.b32hexencode(data).decode().lower()


def test_b32hex_refuses_what_would_need_padding() -> None:
    with pytest.raises(ValueError, match="multiple of 5"):
        b32hex(b"1234")
