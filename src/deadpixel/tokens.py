"""Compact, unforgeable, URL-safe tokens.

A token is ``key id (1 byte) | payload | HMAC-SHA256 truncated to 9 bytes``, written in lower-case base32hex
(``0-9a-v``). That alphabet survives mail clients that lower-case URLs, and Python's ``int(text, 32)`` decodes
it in C, so checking a token costs one HMAC and no database read. The purpose (pixel, link, ...) is mixed into
the MAC, so a token minted for one use is worthless for another.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Callable

from deadpixel.keys import SigningKeys

MAC_BYTES = 9
MESSAGE_ID_BYTES = 10
PIXEL = b"o"
CLICK = b"c"
UNSUBSCRIBE = b"u"
BOUNCE = b"b"
# 10 bytes of message id + 5 of link number: with the key id and the MAC, 25 bytes, a multiple of 5.
LINK_NUMBER_BYTES = 5


def new_message_id() -> str:
    """A random, non-sequential public id (80 bits) that reveals nothing about the message."""
    return base64.b32hexencode(secrets.token_bytes(MESSAGE_ID_BYTES)).decode().lower()


def message_id_bytes(message_id: str) -> bytes:
    return base64.b32hexdecode(message_id.upper())


class TokenSigner:
    """Signs with the current key; verifies with any key it knows (and asks ``reload`` about new ones)."""

    def __init__(self, keys: SigningKeys, reload: Callable[[], SigningKeys | None] | None = None) -> None:
        self._keys = keys
        self._reload = reload

    def sign(self, purpose: bytes, payload: bytes) -> str:
        body = bytes([self._keys.current_id]) + payload
        mac = hmac.digest(self._keys.current, purpose + body, "sha256")[:MAC_BYTES]
        raw = body + mac
        if len(raw) % 5:
            raise ValueError("token length must be a multiple of 5 bytes to need no padding")
        return base64.b32hexencode(raw).decode().lower()

    def verify(self, purpose: bytes, token: str, payload_len: int) -> bytes | None:
        """Return the payload of a genuine token, or None for anything forged, garbled or unknown."""
        size = 1 + payload_len + MAC_BYTES
        if len(token) * 5 != size * 8 or not (token.isascii() and token.isalnum()):
            return None
        try:
            raw = int(token, 32).to_bytes(size, "big")
        except ValueError:  # a letter past 'v'
            return None
        key = self._keys.keys.get(raw[0])
        if key is None:
            key = self._key_after_reload(raw[0])
            if key is None:
                return None
        body = raw[:-MAC_BYTES]
        expected = hmac.digest(key, purpose + body, "sha256")[:MAC_BYTES]
        if not hmac.compare_digest(expected, raw[-MAC_BYTES:]):
            return None
        return body[1:]

    def _key_after_reload(self, key_id: int) -> bytes | None:
        """A key made by ``secret rotate`` after this process started: pick it up without a restart."""
        if self._reload is None:
            return None
        fresh = self._reload()
        if fresh is not None:
            self._keys = fresh
        return self._keys.keys.get(key_id)

    def pixel_token(self, message_id: str) -> str:
        return self.sign(PIXEL, message_id_bytes(message_id))

    def pixel_message_id(self, token: str) -> str | None:
        payload = self.verify(PIXEL, token, MESSAGE_ID_BYTES)
        if payload is None:
            return None
        return base64.b32hexencode(payload).decode().lower()

    def click_token(self, message_id: str, number: int) -> str:
        """The token of link ``number`` of a message: 40 characters, no database needed to check it."""
        return self.sign(CLICK, message_id_bytes(message_id) + number.to_bytes(LINK_NUMBER_BYTES, "big"))

    def click_target(self, token: str) -> tuple[str, int] | None:
        """(message id, link number) of a genuine click token, or None."""
        payload = self.verify(CLICK, token, MESSAGE_ID_BYTES + LINK_NUMBER_BYTES)
        if payload is None:
            return None
        message_id = base64.b32hexencode(payload[:MESSAGE_ID_BYTES]).decode().lower()
        return message_id, int.from_bytes(payload[MESSAGE_ID_BYTES:], "big")

    def unsubscribe_token(self, recipient_id: str) -> str:
        """The token of a campaign recipient's unsubscribe link (a random id, like a message id)."""
        return self.sign(UNSUBSCRIBE, message_id_bytes(recipient_id))

    def unsubscribe_id(self, token: str) -> str | None:
        payload = self.verify(UNSUBSCRIBE, token, MESSAGE_ID_BYTES)
        if payload is None:
            return None
        return base64.b32hexencode(payload).decode().lower()

    def bounce_token(self, message_id: str) -> str:
        """The token in a message's VERP envelope sender, so a bounce names the message it is about."""
        return self.sign(BOUNCE, message_id_bytes(message_id))

    def bounce_message_id(self, token: str) -> str | None:
        payload = self.verify(BOUNCE, token, MESSAGE_ID_BYTES)
        if payload is None:
            return None
        return base64.b32hexencode(payload).decode().lower()
