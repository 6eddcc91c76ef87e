"""The JSON API under /api/v1: bearer tokens, JSON errors, a served OpenAPI document (see docs/api.md)."""

from __future__ import annotations

import re

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from deadpixel.accounts import access
from deadpixel.api.auth import BearerAuth
from deadpixel.api.errors import HANDLERS
from deadpixel.api.ratelimit import RateLimiter
from deadpixel.api.routes import api_routes
from deadpixel.config import Settings
from deadpixel.security.tokens import TokenSigner
from deadpixel.track.client_ip import ClientIPResolver

PREFIX = "/api/v1"


def _any_character(route: BaseRoute) -> BaseRoute:
    """Let ``.*`` in a route's pattern match line breaks too, so a name with one still reaches the API
    (and its token check) instead of falling through to a plain-text 404 outside it."""
    assert isinstance(route, Mount | Route)
    route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    return route


def api_mount(reads: Engine, writes: Engine, settings: Settings, signer: TokenSigner) -> Mount:
    """``writes`` is an engine made with ``writer=True``: see api_routes."""
    limiter = RateLimiter(settings.api_rate)
    routes = [_any_character(route) for route in api_routes(reads, writes, settings, signer)]
    for route in routes:  # a route the role table does not name stops the API from being built
        assert isinstance(route, Route)
        access.check_routes([(PREFIX + route.path, route.methods or {"GET"})])
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                BearerAuth,
                reads=reads,
                writes=writes,
                limiter=limiter,
                client_ip=ClientIPResolver.from_settings(settings),
                routes=routes,
                prefix=PREFIX,
            )
        ],
        exception_handlers=HANDLERS,
    )
    mount = _any_character(Mount(PREFIX, app=app))
    assert isinstance(mount, Mount)
    return mount
