"""/api/v1/contacts: the audience, read by viewers, imported by senders (docs/contacts.md, docs/api.md).

A contact is named in URLs by its id, never by its address (no PII in URLs). An import's body is the CSV
file itself (``text/csv``, at most ``MAX_IMPORT_BODY``), imported exactly as ``deadpixel contacts import``
imports a file: good rows in one transaction, bad rows listed with their line.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deadpixel.api import params
from deadpixel.api.errors import ApiError, bad_parameter
from deadpixel.api.paging import next_page
from deadpixel.config import Settings
from deadpixel.contacts.transfer import import_file
from deadpixel.errors import DeadpixelError
from deadpixel.reports.audience import contact_row, contact_rows, overview
from deadpixel.store.contacts import MAX_TAG, STATES, get_contact

__all__ = ["MAX_IMPORT_BODY", "contact_routes"]

MAX_IMPORT_BODY = 10 * 1024 * 1024
Db = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


def _state(request: Request) -> str | None:
    value = request.query_params.get("state")
    if value is not None and value not in STATES:
        raise bad_parameter("state", f"must be one of {', '.join(STATES)}")
    return value


def _id(request: Request) -> int | None:
    value = str(request.path_params["id"])
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def contact_routes(db: Db, writes: Engine, settings: Settings) -> list[Route]:
    async def contacts(request: Request) -> JSONResponse:
        query = request.query_params
        params.check_known(query, {"tag", "state", "limit", "cursor"})
        tag, state = params.text(query, "tag", MAX_TAG), _state(request)
        limit, after = params.limit(query), params.event_cursor(query)
        found: list[dict[str, Any]] = await db(
            lambda conn: contact_rows(conn, tag=tag, state=state, limit=limit + 1, after=after)
        )
        items, next_url = next_page(request, found, limit)
        return JSONResponse({"items": items, "next": next_url})

    async def summary(request: Request) -> JSONResponse:
        params.check_known(request.query_params, {"tag"})
        tag = params.text(request.query_params, "tag", MAX_TAG)
        return JSONResponse(await db(lambda conn: overview(conn, tag)))

    async def contact(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        contact_id = _id(request)
        found = None
        if contact_id is not None:
            found = await db(lambda conn: get_contact(conn, contact_id=contact_id))
        if found is None:
            raise ApiError(404, "no contact with that id")
        return JSONResponse(contact_row(found))

    async def import_contacts(request: Request) -> JSONResponse:
        query = request.query_params
        params.check_known(query, {"tag"})
        tags = tuple(query.getlist("tag"))
        for tag in tags:
            if not tag or len(tag) > MAX_TAG or "\x00" in tag:
                raise bad_parameter("tag", f"must be 1 to {MAX_TAG} characters, without NUL")
        body = await request.body()
        actor = str(request.scope.get("state", {}).get("api_actor", "token"))
        result = await asyncio.to_thread(_import, writes, settings.data_dir, body, tags, actor)
        return JSONResponse(result)

    return [
        Route("/contacts", contacts, methods=["GET"]),
        Route("/contacts/summary", summary, methods=["GET"]),
        Route("/contacts/import", import_contacts, methods=["POST"]),
        Route("/contacts/{id}", contact, methods=["GET"]),
    ]


def _import(engine: Engine, folder: Path, body: bytes, tags: tuple[str, ...], actor: str) -> dict[str, Any]:
    """The body through a private temporary file in the data dir (the reader takes files), removed after."""
    handle, name = tempfile.mkstemp(prefix="import-", suffix=".csv", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(body)
        try:
            return import_file(engine, path, tags, actor, label="API upload").as_dict()
        except DeadpixelError as exc:
            raise ApiError(422, str(exc).replace(str(path), "the body")) from None
    finally:
        path.unlink(missing_ok=True)
