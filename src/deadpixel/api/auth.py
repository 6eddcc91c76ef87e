"""Bearer tokens on every /api/v1 request except the public OpenAPI document.

This runs as middleware before routing, so a route added later cannot forget to ask for a token, and an
unknown path answers 401 rather than telling a stranger what exists. One indexed lookup of the secret's hash
per request: revoking a token takes effect on the next request, on every server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from deadpixel.api.errors import error_response
from deadpixel.api.ratelimit import RateLimiter
from deadpixel.store.api_tokens import mark_used, token_for_secret

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/openapi.json"})
CHALLENGE = {"www-authenticate": 'Bearer realm="deadpixel"'}
# last_used_at is a hint for `token list`, not an audit log: written at most once a minute per token.
LAST_USED_EVERY = 60.0


class BearerAuth:
    def __init__(self, app: Any, reads: Engine, writes: Engine, limiter: RateLimiter) -> None:
        self.app = app
        self.reads = reads
        self.writes = writes
        self.limiter = limiter
        self._last_marked: dict[int, float] = {}

    def _lookup(self, secret: str) -> int | None:
        with self.reads.connect() as conn:
            token_id = token_for_secret(conn, secret)
        now = time.time()
        if token_id is not None and now - self._last_marked.get(token_id, 0.0) >= LAST_USED_EVERY:
            self._last_marked[token_id] = now
            try:
                with self.writes.begin() as conn:
                    mark_used(conn, token_id, now)
            except OperationalError:  # a busy or unreachable database must not fail the request for a hint
                log.warning("could not record when API token %d was last used", token_id, exc_info=True)
        return token_id

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        if path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            answer = error_response(401, "a bearer token is required", headers=CHALLENGE)
            await answer(scope, receive, send)
            return
        token_id = await asyncio.to_thread(self._lookup, secret.strip())
        if token_id is None:
            answer = error_response(
                401,
                "the token is not valid (unknown or revoked)",
                headers={"www-authenticate": 'Bearer realm="deadpixel", error="invalid_token"'},
            )
            await answer(scope, receive, send)
            return
        wait = self.limiter.take(token_id)
        if wait:
            answer = error_response(429, "rate limit exceeded", headers={"retry-after": str(wait)})
            await answer(scope, receive, send)
            return
        scope.setdefault("state", {})["api_token_id"] = token_id
        await self.app(scope, receive, send)
