"""``GET|HEAD /c/<token>``: a tracked link. Answers 302 to the link's original URL, and only that.

The token names a message and a link number under an HMAC; the URL itself comes from the ``links`` table
(through the resolver given to the endpoint, cached), never from the request. A forged, garbled or unknown
token gets a plain 404 page: no redirect anywhere, so the endpoint cannot be used as an open redirect. The
click is recorded through its own group-commit writer before the redirect is sent, like an open.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from deadpixel.events import ClickEvent
from deadpixel.security.tokens import TokenSigner
from deadpixel.security.urls import location
from deadpixel.track.app import EMPTY_BODY, client_facts, not_allowed
from deadpixel.track.client_ip import ClientIPResolver
from deadpixel.track.ingest import GroupCommitWriter

CLICK_PREFIX = "/c/"

_NO_CACHE = (b"cache-control", b"no-store, no-cache, must-revalidate, private, max-age=0")
_NOT_FOUND_BODY = (
    b"<!doctype html>\n<html lang=en><meta charset=utf-8><title>Link not found</title>\n"
    b"<h1>Link not found</h1>\n<p>This link is not valid, or it has expired.</p>\n</html>\n"
)
_NOT_FOUND = {
    "type": "http.response.start",
    "status": 404,
    "headers": [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(_NOT_FOUND_BODY)).encode()),
        _NO_CACHE,
        (b"x-content-type-options", b"nosniff"),
    ],
}


class Links(Protocol):
    """Where a link number of a message points (``deadpixel.store.links.LinkResolver``)."""

    def cached(self, message_id: str, number: int) -> str | None: ...

    def load(self, message_id: str, number: int) -> str | None: ...


@dataclass(slots=True)
class ClickStats:
    requests: int = 0
    invalid_tokens: int = 0
    unknown_links: int = 0


def _redirect(target: bytes) -> list[dict[str, Any]]:
    body = b'<!doctype html>\n<a href="' + target.replace(b'"', b"%22") + b'">Continue</a>\n'
    return [
        {
            "type": "http.response.start",
            "status": 302,
            "headers": [
                (b"location", target),
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                _NO_CACHE,
                (b"referrer-policy", b"no-referrer"),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


class ClickEndpoint:
    def __init__(
        self,
        signer: TokenSigner,
        links: Links,
        writer: GroupCommitWriter[ClickEvent],
        client_ip: ClientIPResolver,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = signer
        self._links = links
        self._writer = writer
        self._client_ip = client_ip
        self._clock = clock
        self.stats = ClickStats()

    async def __call__(self, scope: dict[str, Any], send: Any) -> None:
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            await not_allowed(send)
            return
        self.stats.requests += 1
        at = self._clock()
        token = scope["path"][len(CLICK_PREFIX) :].rstrip("/")
        target = self._signer.click_target(token)
        if target is None:
            self.stats.invalid_tokens += 1
            await self._not_found(send, method)
            return
        message_id, number = target
        url = self._links.cached(message_id, number)
        if url is None:
            url = await asyncio.to_thread(self._links.load, message_id, number)
        header = location(url) if url is not None else None
        if header is None:
            self.stats.unknown_links += 1  # an erased message, or a link that was never stored
            await self._not_found(send, method)
            return
        client = scope.get("client")
        ip, user_agent, purpose = client_facts(
            self._client_ip, client[0] if client else None, scope["headers"]
        )
        await self._writer.record(ClickEvent(message_id, number, at, ip, user_agent, method, purpose))
        start, body = _redirect(header)
        await send(start)
        await send(body if method == "GET" else EMPTY_BODY)

    @staticmethod
    async def _not_found(send: Any, method: str) -> None:
        await send(_NOT_FOUND)
        await send({"type": "http.response.body", "body": _NOT_FOUND_BODY if method == "GET" else b""})
