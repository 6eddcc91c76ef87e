"""The /api/v1 endpoints: thin over deadpixel.reports.analytics, so the API reports exactly what the CLI does.

Database work runs in a thread (SQLAlchemy is synchronous); each request is one short transaction.
Lists are newest first and paged by cursor: ``next`` is the URL of the following page, or null.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from deadpixel.api import params
from deadpixel.api.body import new_message, preview_request, read_json
from deadpixel.api.campaigns import campaign_routes
from deadpixel.api.contacts import contact_routes
from deadpixel.api.errors import ApiError, bad_parameter
from deadpixel.api.openapi import document
from deadpixel.api.paging import next_page as _next
from deadpixel.api.segments import segment_routes
from deadpixel.config import Settings
from deadpixel.reports import analytics, exports
from deadpixel.reports.pixels import new_pixel
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.preview import Preview, preview
from deadpixel.send.test_copy import send_test
from deadpixel.store import audit, rollups

T = TypeVar("T")

EVENT_PARAMETERS = {"campaign", "message", "since", "until", "kind", "limit", "cursor"}


def _list_filter(call: Callable[[], T]) -> T:
    """An unknown campaign in a filter is a bad parameter, not a missing resource."""
    try:
        return call()
    except analytics.UnknownCampaign as exc:
        raise bad_parameter("campaign", f"no campaign named {exc.args[0]!r}") from None


def api_routes(reads: Engine, writes: Engine, settings: Settings, signer: TokenSigner) -> list[Route]:
    """``writes`` takes SQLite's write lock when its transaction begins (see store.db), so a write waits for
    the pixel writer instead of failing with "database is locked" when it upgrades a read."""

    zone = ZoneInfo(settings.timezone)

    async def db(work: Callable[[Connection], T], engine: Engine = reads) -> T:
        def run() -> T:
            with engine.begin() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(document())

    async def campaigns(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        return JSONResponse({"items": await db(analytics.list_campaigns)})

    async def campaign_stats(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        name = request.path_params["name"]
        if "\x00" in name:
            raise ApiError(404, "no campaign with that name")

        def stats(conn: Connection) -> dict[str, Any]:
            try:
                return analytics.campaign_stats(conn, name, zone)
            except analytics.UnknownCampaign:
                raise ApiError(404, f"no campaign named {name!r}") from None

        await asyncio.to_thread(rollups.refresh, writes, reads)
        return JSONResponse(await db(stats))

    async def messages(request: Request) -> JSONResponse:
        query = request.query_params
        params.check_known(query, {"campaign", "limit", "cursor"})
        campaign = params.text(query, "campaign")
        limit = params.limit(query)
        after = params.message_id(query, "cursor")
        found = await db(
            lambda conn: _list_filter(
                lambda: analytics.list_messages(conn, campaign=campaign, limit=limit + 1, after_id=after),
            )
        )
        items, next_url = _next(request, found, limit)
        return JSONResponse({"items": items, "next": next_url})

    async def create_message(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        wanted = new_message(await read_json(request))
        actor = str(request.scope.get("state", {}).get("api_actor", "token"))

        def make(conn: Connection) -> dict[str, Any]:
            made = new_pixel(
                conn, settings, signer, recipient=wanted.to, subject=wanted.subject, campaign=wanted.campaign
            )
            where = f" in {wanted.campaign}" if wanted.campaign else ""
            audit.record(conn, actor, "pixel.create", f"{made['message_id']}{where}")
            return made

        made = await db(make, writes)
        location = f"{request.url.path}/{made['message_id']}"
        return JSONResponse(made, status_code=201, headers={"location": location})

    async def preview_message(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        wanted = preview_request(await read_json(request), settings.mail_from)
        made = await asyncio.to_thread(preview, wanted.content, wanted.row, base_url=settings.base_url)
        return JSONResponse(_preview_json(made))

    async def test_send(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        wanted = preview_request(await read_json(request), settings.mail_from, test=True)
        actor = str(request.scope.get("state", {}).get("api_actor", "token"))
        assert wanted.to is not None
        made = await asyncio.to_thread(send_test, settings, wanted.content, wanted.row, wanted.to)
        await db(
            lambda conn: audit.record(conn, actor, "campaign.test", f"to {audit.masked(wanted.to or '')}"),
            writes,
        )
        return JSONResponse({"sent": True, "to": made.headers["To"], "subject": made.subject})

    async def message(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        message_id = str(request.path_params["id"]).lower()
        found = None
        if len(message_id) == 16 and message_id.isalnum() and message_id.isascii():
            found = await db(lambda conn: analytics.get_message(conn, message_id))
        if found is None:
            raise ApiError(404, "no message with that id")
        return JSONResponse(found)

    def event_list(lister: Callable[..., list[dict[str, Any]]]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> JSONResponse:
            query = request.query_params
            params.check_known(query, EVENT_PARAMETERS)
            only = analytics.EventFilter(
                campaign=params.text(query, "campaign"),
                message_id=params.message_id(query, "message"),
                since=params.timestamp(query, "since"),
                until=params.timestamp(query, "until"),
                kind=params.kind(query),
                after_id=params.event_cursor(query),
            )
            limit = params.limit(query)
            found = await db(lambda conn: _list_filter(lambda: lister(conn, only=only, limit=limit + 1)))
            items, next_url = _next(request, found, limit)
            return JSONResponse({"items": items, "next": next_url})

        return endpoint

    def export(kind: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> StreamingResponse:
            params.check_known(request.query_params, {"campaign"})
            campaign = params.text(request.query_params, "campaign")
            await db(lambda conn: _list_filter(lambda: exports.query(conn, kind, campaign)))
            return StreamingResponse(
                exports.stream(reads, kind, campaign),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": f'attachment; filename="{kind}.csv"'},
            )

        return endpoint

    return [
        *contact_routes(db, writes, settings),
        *(Route(f"/exports/{kind}.csv", export(kind), methods=["GET"]) for kind in exports.KINDS),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/campaigns", campaigns, methods=["GET"]),
        Route("/campaigns/{name:path}/stats", campaign_stats, methods=["GET"]),
        Route("/messages", messages, methods=["GET"]),
        Route("/messages", create_message, methods=["POST"]),
        Route("/messages/{id}", message, methods=["GET"]),
        Route("/preview", preview_message, methods=["POST"]),
        Route("/test-send", test_send, methods=["POST"]),
        Route("/opens", event_list(analytics.list_opens), methods=["GET"]),
        Route("/clicks", event_list(analytics.list_clicks), methods=["GET"]),
        *segment_routes(db),
        *campaign_routes(reads, writes, settings),
    ]


def _preview_json(made: Preview) -> dict[str, Any]:
    return {
        "subject": made.subject,
        "html": made.html,
        "text": made.text,
        "text_derived": made.text_derived,
        "headers": made.headers,
        "html_bytes": made.html_bytes,
        "warnings": [{"code": w.code, "message": w.message} for w in made.warnings],
    }
