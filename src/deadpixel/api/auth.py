"""Bearer tokens on every /api/v1 request except the public OpenAPI document.

This runs as middleware before routing, so a route added later cannot forget to ask for a token, and an
unknown path answers 401 rather than telling a stranger what exists. Then the token's role is checked
against the route's rule (deadpixel.accounts.access): too little answers 403, before the route runs. One
indexed lookup of the secret's hash per request: revoking a token takes effect on the next request, on
every server.

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
from starlette.routing import BaseRoute, Match

from deadpixel.accounts import access
from deadpixel.api.errors import error_response
from deadpixel.api.ratelimit import FailureLimiter, RateLimiter
from deadpixel.store.api_tokens import LiveToken, hash_secret, live_secret_hashes, mark_used, token_for_secret
from deadpixel.store.roles import Role
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
        self,
        app: Any,
        reads: Engine,
        writes: Engine,
        limiter: RateLimiter,
        client_ip: ClientIPResolver,
        routes: list[BaseRoute],
        prefix: str,
    ) -> None:
        self.app = app
        self.routes = routes
        self.prefix = prefix
        self.reads = reads
        self.writes = writes
        self.limiter = limiter
        self.client_ip = client_ip
        self.failures = FailureLimiter(FAILED_TOKENS_PER_MINUTE)
        self._live: frozenset[str] = frozenset()  # hashes of the live tokens, for braked addresses
        self._live_read_at = -LIVE_REFRESH
        self._last_marked: dict[int, float] = {}

    def _lookup(self, secret: str) -> LiveToken | None:
        with self.reads.connect() as conn:
            token = token_for_secret(conn, secret)
        if token is None:
            return None
        token_id = token.id
        now = time.time()
        if token_id is not None and now - self._last_marked.get(token_id, 0.0) >= LAST_USED_EVERY:
            self._last_marked[token_id] = now
            try:
                with self.writes.begin() as conn:
                    mark_used(conn, token_id, now)
            except OperationalError:  # a busy or unreachable database must not fail the request for a hint
                log.warning("could not record when API token %d was last used", token_id, exc_info=True)
        return token

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
        token = await asyncio.to_thread(self._lookup, secret.strip())
        if token is None:
            self.failures.failed(client)
            answer = error_response(
                401,
                "the token is not valid (unknown or revoked)",
                headers={"www-authenticate": 'Bearer realm="deadpixel", error="invalid_token"'},
            )
            await answer(scope, receive, send)
            return
        wait = self.limiter.take(token.id)
        if wait:
            answer = error_response(429, "rate limit exceeded", headers={"retry-after": str(wait)})
            await answer(scope, receive, send)
            return
        needed = self._needed(scope)
        if needed is not None and not token.role.allows(needed):
            message = f"this needs a token with the {needed.label} role; this one is {token.role.label}"
            await error_response(403, message)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["api_token_id"] = token.id
        state["api_actor"] = f"token:{token.name}"
        await self.app(scope, receive, send)

    def _needed(self, scope: dict[str, Any]) -> Role | None:
        """The least role of the route this request will reach; None when it reaches none (the router then
        answers 404 or 405 to a valid token, which tells it nothing it may not know)."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                path = getattr(route, "path", "")
                return access.needed(scope["method"], self.prefix + path) or Role.VIEWER
        return None
