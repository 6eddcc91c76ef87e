"""Who may do what over HTTP: one table from every route of the web app and the API to its least role.

The dashboard's pages and the API's middleware both ask ``needed`` before any work, and both refuse to
start with a route the table does not name (``check_routes``), so a route added later cannot forget its
rule: it either has one or the server does not come up. ``PUBLIC`` routes need no sign-in at all (the
pixel's neighbours, the sign-in form, unsubscribe links, the one-time setup link). HEAD is asked as GET.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from deadpixel.store.roles import Role

__all__ = ["PUBLIC", "RULES", "MissingRule", "check_routes", "needed", "walk"]

PUBLIC = None
VIEWER, SENDER, OWNER = Role.VIEWER, Role.SENDER, Role.OWNER
_EXPORTS = ("opens", "clicks", "recipients")
_CAMPAIGN_ACTIONS = ("send", "schedule", "pause", "resume", "cancel")

# "METHOD /full/path" -> the least role, or PUBLIC. Paths as the routes spell them, the API's with /api/v1.
RULES: dict[str, Role | None] = {
    # health, unsubscribe, static files, sign-in, the first account's setup link
    "GET /healthz": PUBLIC,
    "GET /healthz/client": PUBLIC,
    "GET /readyz": PUBLIC,
    "GET /u/{token}": PUBLIC,
    "POST /u/{token}": PUBLIC,
    "GET /static": PUBLIC,
    "GET /login": PUBLIC,
    "POST /login": PUBLIC,
    "GET /setup/{token}": PUBLIC,
    "POST /setup/{token}": PUBLIC,
    # the dashboard: reading
    "POST /logout": VIEWER,
    "GET /": VIEWER,
    "GET /campaigns": VIEWER,
    "GET /campaigns/{name:path}": VIEWER,
    "GET /exports/{kind}.csv": VIEWER,
    "GET /segments/{who}.csv": VIEWER,
    "GET /feed": VIEWER,
    "GET /messages/{id}": VIEWER,
    "GET /contacts": VIEWER,
    # the dashboard: composing
    "GET /pixels/new": SENDER,
    "POST /pixels/new": SENDER,
    "GET /compose": SENDER,
    "POST /compose": SENDER,
    "POST /compose/send": SENDER,
    "GET /compose/{id}": SENDER,
    "POST /compose/{id}/send": SENDER,
    # the dashboard: a stored send's progress (reading) and its steering (deadpixel.web.sending)
    "GET /sending/status": VIEWER,
    "GET /sending/problems.csv": VIEWER,
    "POST /sending/{action}": SENDER,
    # the dashboard: settings, webhooks, tokens, accounts
    "GET /settings": OWNER,
    "POST /settings/webhooks": OWNER,
    "POST /settings/webhooks/{id}/remove": OWNER,
    "POST /settings/tokens": OWNER,
    "POST /settings/tokens/{id}/revoke": OWNER,
    "POST /settings/notices": OWNER,
    "GET /users": OWNER,
    "POST /users": OWNER,
    "POST /users/{name}/role": OWNER,
    "POST /users/{name}/delete": OWNER,
    # the API
    "GET /api/v1/openapi.json": PUBLIC,
    "GET /api/v1/campaigns": VIEWER,
    "GET /api/v1/campaigns/{name:path}/stats": VIEWER,
    "GET /api/v1/messages": VIEWER,
    "GET /api/v1/messages/{id}": VIEWER,
    "GET /api/v1/opens": VIEWER,
    "GET /api/v1/clicks": VIEWER,
    **{f"GET /api/v1/exports/{kind}.csv": VIEWER for kind in _EXPORTS},
    "GET /api/v1/campaigns/{name:path}/segments": VIEWER,
    "GET /api/v1/campaigns/{name:path}/segments/{who}": VIEWER,
    "GET /api/v1/segments": VIEWER,
    "GET /api/v1/segments/{name}": VIEWER,
    "POST /api/v1/messages": SENDER,
    "GET /api/v1/contacts": VIEWER,
    "GET /api/v1/contacts/summary": VIEWER,
    "GET /api/v1/contacts/{id}": VIEWER,
    "POST /api/v1/contacts/import": SENDER,
    # stored campaigns (deadpixel.api.campaigns): reading is a viewer's, every change a sender's
    "POST /api/v1/campaigns": SENDER,
    **{f"POST /api/v1/campaigns/{{name:path}}/{action}": SENDER for action in _CAMPAIGN_ACTIONS},
    "GET /api/v1/campaigns/{name:path}/status": VIEWER,
    "GET /api/v1/campaigns/{name:path}/problems": VIEWER,
    "GET /api/v1/campaigns/{name:path}/problems.csv": VIEWER,
    "POST /api/v1/preview": SENDER,
    "POST /api/v1/test-send": SENDER,
}


class MissingRule(LookupError):
    """A route the table does not name: a programming error, caught when the server starts."""


def needed(method: str, path: str) -> Role | None:
    """The least role for ``method`` on the route ``path`` (its template), or PUBLIC."""
    key = f"{'GET' if method == 'HEAD' else method} {path}"
    try:
        return RULES[key]
    except KeyError:
        raise MissingRule(f"no role rule for {key}: add it to deadpixel.accounts.access.RULES") from None


def check_routes(routes: Iterable[tuple[str, Iterable[str]]]) -> None:
    """Raise MissingRule for the first (path, methods) the table does not cover."""
    for path, methods in routes:
        for method in methods:
            needed(method, path)


def walk(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """Every (full path, methods) of a Starlette route list, into mounted route lists; a mounted app of its
    own (the static files) counts as one GET route."""
    for route in routes:
        inner = getattr(route, "routes", None)
        if inner:
            yield from walk(inner, prefix + route.path)
        elif hasattr(route, "app") and not hasattr(route, "endpoint"):
            yield prefix + route.path, {"GET"}
        else:
            yield prefix + route.path, set(route.methods or {"GET"})
