"""``GET|HEAD /o/<token>.gif``: the pixel, as thin as ASGI allows.

No framework, no database read, no parsing beyond the token, the user agent and the client address. Every
request gets the GIF; only a genuine token is recorded, and then only after its batch is committed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from deadpixel.events import OpenEvent
from deadpixel.security.tokens import TokenSigner
from deadpixel.track import pixel
from deadpixel.track.client_ip import ClientIPResolver
from deadpixel.track.ingest import GroupCommitWriter

PIXEL_PREFIX = "/o/"
MAX_USER_AGENT = 1024
MAX_IP = 45

_START = {"type": "http.response.start", "status": 200, "headers": pixel.HEADERS}
_BODY = {"type": "http.response.body", "body": pixel.GIF}
EMPTY_BODY = {"type": "http.response.body", "body": b""}
_NOT_ALLOWED = {
    "type": "http.response.start",
    "status": 405,
    "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
}


@dataclass(slots=True)
class TrackStats:
    requests: int = 0
    invalid_tokens: int = 0


_PURPOSE_HEADERS = (b"purpose", b"sec-purpose", b"x-purpose", b"x-moz")


def _text(value: bytes, limit: int) -> str:
    text = value[: limit * 2].decode("utf-8", "replace")[:limit]
    # PostgreSQL text cannot hold NUL; a client that sends one must not poison a batch.
    return text.replace("\x00", "") if "\x00" in text else text


async def not_allowed(send: Any) -> None:
    """405 for anything but GET and HEAD, which is all a pixel or a tracked link takes."""
    await send(_NOT_ALLOWED)
    await send(EMPTY_BODY)


def request_facts(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The user agent and any speculative-load hint, in one pass over the headers."""
    user_agent = purpose = None
    for name, value in headers:
        if name == b"user-agent":
            user_agent = _text(value, MAX_USER_AGENT)
        elif name in _PURPOSE_HEADERS:
            purpose = _text(value, 32)
    return user_agent, purpose


def client_facts(
    client_ip: ClientIPResolver, peer: str | None, headers: list[tuple[bytes, bytes]]
) -> tuple[str | None, str | None, str | None]:
    """What an event records of its request, whatever its kind: the client's address (as far as the
    configured proxies let us see it), the user agent and any speculative-load hint."""
    ip = client_ip.resolve(peer, headers)
    user_agent, purpose = request_facts(headers)
    return ip[:MAX_IP] if ip else None, user_agent, purpose


class PixelEndpoint:
    """The pixel's one piece of work, for the ASGI path below and for ``deadpixel.track.protocol``."""

    def __init__(
        self, signer: TokenSigner, writer: GroupCommitWriter[OpenEvent], client_ip: ClientIPResolver
    ) -> None:
        self._signer = signer
        self._writer = writer
        self._client_ip = client_ip
        self.stats = TrackStats()

    def record(
        self, path: str, method: str, peer: str | None, headers: list[tuple[bytes, bytes]]
    ) -> asyncio.Future[None] | None:
        """Queue the open a GET or HEAD of ``path`` stands for; the future is done once it is committed.
        None for a token that is not ours: that request gets the GIF at once and leaves no trace."""
        self.stats.requests += 1
        token = path[len(PIXEL_PREFIX) :]
        if token.endswith((".gif", ".GIF")):  # some clients upper-case the whole URL
            token = token[:-4]
        message_id = self._signer.pixel_message_id(token)
        if message_id is None:
            self.stats.invalid_tokens += 1
            return None
        ip, user_agent, purpose = client_facts(self._client_ip, peer, headers)
        return self._writer.record(OpenEvent(message_id, time.time(), ip, user_agent, method, purpose))

    async def __call__(self, scope: dict[str, Any], send: Any) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await not_allowed(send)
            return
        client = scope.get("client")
        committed = self.record(scope["path"], method, client[0] if client else None, scope["headers"])
        if committed is not None:
            await committed
        await send(_START)
        await send(_BODY if method == "GET" else EMPTY_BODY)
