"""Every request body is bounded, by one ASGI middleware in front of every route.

No route of deadpixel needs more than a few KiB of body, and a route that reads a body whole (an
unsubscribe, a form) would otherwise hold all of it in memory, however large. So the limit is checked
before the application sees the request: a ``Content-Length`` over the route's limit is answered 413 at
once, before a byte of the body is read; a chunked body (no length announced) is read here up to the limit,
counted as it streams, and answered 413 the moment it passes it. Either way the connection is closed after
the 413, so the rest of the body is never read. A body within its limit reaches the route as one message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Limit:
    prefix: str  # the paths it covers; the longest matching prefix wins
    max_bytes: int
    json: bool = False  # answer 413 in the JSON API's shape


class BodyLimit:
    def __init__(self, app: ASGIApp, default: int, limits: Sequence[Limit] = ()) -> None:
        self._app = app
        self._default = Limit("", default)
        self._limits = sorted(limits, key=lambda limit: len(limit.prefix), reverse=True)

    def limit_for(self, path: str) -> Limit:
        for limit in self._limits:
            if path.startswith(limit.prefix):
                return limit
        return self._default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked:  # no body at all
            await self._app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if declared is not None and not chunked:
            if not declared.isdigit() or int(declared) > limit.max_bytes:
                await _refuse(send, limit)
                return
            await self._app(scope, receive, send)  # the server reads exactly the announced length
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            body += message.get("body", b"")
            if len(body) > limit.max_bytes:
                await _refuse(send, limit)
                return
            if not message.get("more_body", False):
                break
        await self._app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body read here, as one message; after it, the server's own (a disconnect, in time)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(send: Send, limit: Limit) -> None:
    message = f"the body is larger than {limit.max_bytes} bytes"
    if limit.json:
        content, kind = json.dumps({"error": message}).encode(), b"application/json"
    else:
        content, kind = (message + "\n").encode(), b"text/plain; charset=utf-8"
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(content)).encode()),
        (b"connection", b"close"),  # the rest of the body is never read
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": content})
