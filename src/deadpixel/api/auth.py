"""Bearer tokens on every /api/v1 request except the public OpenAPI document.

This runs as middleware before routing, so a route added later cannot forget to ask for a token, and an
unknown path answers 401 rather than telling a stranger what exists. One indexed lookup of the secret's hash
per request: revoking a token takes effect on the next request, on every server.

Failed checks are braked per client address (FailureLimiter): once an address has failed too often, its
tokens are first compared with the hashes of all live tokens, read from the store at most every
LIVE_REFRESH seconds; one that is not among them gets 429 without a lookup. A live token is looked up as
always (so a revocation still counts at once) and never braked, so a valid client behind the same address
as a guesser is not slowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from deadpixel.api.errors import error_response
from deadpixel.api.ratelimit import FailureLimiter, RateLimiter
from deadpixel.store.api_tokens import hash_secret, live_secret_hashes, mark_used, token_for_secret
from deadpixel.track.client_ip import ClientIPResolver

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/openapi.json"})
CHALLENGE = {"www-authenticate": 'Bearer realm="deadpixel"'}
# last_used_at is a hint for `token list`, not an audit log: written at most once a minute per token.
LAST_USED_EVERY = 60.0
FAILED_TOKENS_PER_MINUTE = 10  # per client address and server process, in a burst or spread out
LIVE_REFRESH = 2.0  # seconds: how stale the braked path's list of live tokens may be


class BearerAuth:
    def __init__(
        self, app: Any, reads: Engine, writes: Engine, limiter: RateLimiter, client_ip: ClientIPResolver
    ) -> None:
        self.app = app
        self.reads = reads
        self.writes = writes
        self.limiter = limiter
        self.client_ip = client_ip
        self.failures = FailureLimiter(FAILED_TOKENS_PER_MINUTE)
        self._live: frozenset[str] = frozenset()  # hashes of the live tokens, for braked addresses
        self._live_read_at = -LIVE_REFRESH
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

    def _read_live(self) -> frozenset[str]:
        with self.reads.connect() as conn:
            return live_secret_hashes(conn)

    async def _is_live(self, secret_hash: str) -> bool:
        """Whether a live token has this hash: one read of the (short) token list every LIVE_REFRESH
        seconds at most, however many made-up tokens a braked address sends."""
        now = time.monotonic()
        if secret_hash not in self._live and now - self._live_read_at >= LIVE_REFRESH:
            self._live_read_at = now
            self._live = await asyncio.to_thread(self._read_live)
        return secret_hash in self._live

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
        peer = scope.get("client")
        client = self.client_ip.resolve(peer[0] if peer else None, scope["headers"]) or "?"
        wait = self.failures.wait(client)
        if wait and not await self._is_live(hash_secret(secret.strip())):
            answer = error_response(
                429, "too many invalid tokens from this address", headers={"retry-after": str(wait)}
            )
            await answer(scope, receive, send)
            return
        token_id = await asyncio.to_thread(self._lookup, secret.strip())
        if token_id is None:
            self.failures.failed(client)
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
