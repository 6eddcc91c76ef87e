"""The segments' endpoints under /api/v1 and their part of the OpenAPI document, thin over
deadpixel.reports.segments: a campaign's segment counts with their definitions, a segment's recipients (JSON
paged, or the whole segment as CSV), and the saved segments evaluated now.

Pages are numbered by position (``cursor`` is the offset of the next page), never by address, so no URL
carries a recipient's address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from deadpixel.api import params
from deadpixel.api.errors import ApiError, bad_parameter
from deadpixel.reports import analytics, segments
from deadpixel.store import segments as saved

T = TypeVar("T")
Db = Callable[[Callable[[Connection], T]], Awaitable[T]]
MAX_CURSOR = 10_000_000


def _format(request: Request) -> str:
    value = request.query_params.get("format", "json")
    if value not in ("json", "csv"):
        raise bad_parameter("format", "must be json or csv")
    return value


def _cursor(request: Request) -> int:
    value = request.query_params.get("cursor")
    if value is None:
        return 0
    if not value.isascii() or not value.isdigit() or int(value) > MAX_CURSOR:
        raise bad_parameter("cursor", "must be the cursor of a previous page")
    return int(value)


def _answer(request: Request, found: segments.Segment, conn: Connection, name: str | None) -> Any:
    """The segment's recipients as the request asks: a page of JSON, or every one of them as CSV."""
    if _format(request) == "csv":
        return segments.members(conn, found)
    limit, offset = params.limit(request.query_params), _cursor(request)
    rows = segments.members(conn, found, limit=limit + 1, offset=offset)
    following = None
    if len(rows) > limit:
        rows = rows[:limit]
        query = {**request.query_params, "cursor": str(offset + limit)}
        following = f"{request.url.path}?{urlencode(query)}"
    named = {"name": name} if name is not None else {}
    return {**named, **segments.describe(found), "count": segments.count(conn, found), "items": rows,
            "next": following}  # fmt: skip


def _respond(request: Request, answer: Any, filename: str) -> Response:
    if isinstance(answer, list):
        return StreamingResponse(
            segments.csv_chunks(answer),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{filename}.csv"'},
        )
    return JSONResponse(answer)


def segment_routes(db: Db[Any]) -> list[Route]:
    async def overview(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        name = request.path_params["name"]

        def read(conn: Connection) -> dict[str, Any]:
            try:
                return {"campaign": name, "items": segments.campaign_overview(conn, name)}
            except analytics.UnknownCampaign:
                raise ApiError(404, f"no campaign named {name!r}") from None

        return JSONResponse(await db(read))

    async def campaign_segment(request: Request) -> Response:
        params.check_known(request.query_params, {"format", "limit", "cursor"})
        name, who = request.path_params["name"], request.path_params["who"]
        if who not in segments.CAMPAIGN_SEGMENTS:
            raise ApiError(404, f"no segment {who!r}: one of {', '.join(segments.CAMPAIGN_SEGMENTS)}")

        def read(conn: Connection) -> Any:
            try:
                return _answer(request, segments.Segment(who, name), conn, None)
            except analytics.UnknownCampaign:
                raise ApiError(404, f"no campaign named {name!r}") from None

        return _respond(request, await db(read), who)

    async def saved_list(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())

        def read(conn: Connection) -> list[dict[str, Any]]:
            items = []
            for one in saved.list_saved(conn):
                found = segments.parse(one.definition)
                try:
                    n: int | None = segments.count(conn, found)
                except analytics.UnknownCampaign:  # its campaign was since renamed or removed
                    n = None
                items.append({"name": one.name, **segments.describe(found), "count": n})
            return items

        return JSONResponse({"items": await db(read)})

    async def saved_segment(request: Request) -> Response:
        params.check_known(request.query_params, {"format", "limit", "cursor"})
        name = request.path_params["name"]

        def read(conn: Connection) -> Any:
            one = saved.find(conn, name)
            if one is None:
                raise ApiError(404, "no saved segment by that name")
            try:
                return _answer(request, segments.parse(one.definition), conn, name)
            except analytics.UnknownCampaign as exc:
                raise ApiError(404, f"the segment's campaign {exc.args[0]!r} no longer exists") from None

        return _respond(request, await db(read), "segment")

    return [
        Route("/campaigns/{name:path}/segments", overview, methods=["GET"]),
        Route("/campaigns/{name:path}/segments/{who}", campaign_segment, methods=["GET"]),
        Route("/segments", saved_list, methods=["GET"]),
        Route("/segments/{name}", saved_segment, methods=["GET"]),
    ]


# --- the OpenAPI document's part -------------------------------------------------------------------------

_TIME = {"type": ["string", "null"], "format": "date-time"}
_COUNT = {"type": "integer", "minimum": 0}


def schemas() -> dict[str, Any]:
    described = {
        "spec": {"type": "string", "description": "the definition: CAMPAIGN:WHO or @AUDIENCE[:VALUE]"},
        "definition": {"type": "string", "description": "what the segment holds, in words"},
        "merge_fields": {
            "type": "array",
            "items": {"type": "string"},
            "description": "the template variables a campaign sent to this segment gets",
        },
    }  # fmt: skip
    recipient = {
        "email": {"type": "string", "description": "the address, lower-cased: one row per mailbox"},
        "message_id": {"type": "string", "description": "one of its messages in scope (the first by id)"},
        "messages": {**_COUNT, "description": "its sent messages in scope"},
        "first_sent_at": _TIME,
        "last_sent_at": _TIME,
        "delivered": {**_COUNT, "description": "of those, the ones that did not bounce hard"},
        "human_opens": {**_COUNT, "description": "opens with verdict human or proxy"},
        "machine_opens": {**_COUNT, "description": "opens with verdict prefetch or scanner"},
        "human_clicks": {**_COUNT, "description": "clicks with verdict human or proxy"},
        "last_open_at": {**_TIME, "description": "the newest open, whatever its verdict"},
        "last_human_open": {**_TIME, "description": "the newest human or proxy open"},
    }
    page = {
        **described,
        "count": {**_COUNT, "description": "recipients in the segment now"},
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/SegmentRecipient"}},
        "next": {"type": ["string", "null"], "description": "the URL of the next page, or null"},
    }
    return {
        "SegmentRecipient": {"type": "object", "properties": recipient, "required": list(recipient)},
        "SegmentPage": {"type": "object", "properties": page, "required": list(page)},
        "SavedSegmentPage": {
            "type": "object",
            "properties": {"name": {"type": "string"}, **page},
            "required": ["name", *page],
        },
        "CampaignSegments": {
            "type": "object",
            "properties": {
                "campaign": {"type": "string"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "who": {"type": "string", "enum": list(segments.CAMPAIGN_SEGMENTS)},
                            "spec": described["spec"],
                            "count": _COUNT,
                            "definition": described["definition"],
                        },
                        "required": ["who", "spec", "count", "definition"],
                    },
                },
            },
            "required": ["campaign", "items"],
        },
        "SavedSegments": {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            **described,
                            "count": {
                                "type": ["integer", "null"],
                                "description": "recipients now; null when its campaign no longer exists",
                            },
                        },
                        "required": ["name", *described, "count"],
                    },
                }
            },
            "required": ["items"],
        },
    }


def paths(
    ok: Callable[[str], dict[str, Any]],
    error: Callable[[str], dict[str, Any]],
    errors: dict[str, Any],
    paging: list[dict[str, Any]],
) -> dict[str, Any]:
    """The segments' paths, made with the document's own helpers (``ok``, ``error``, ``errors``)."""

    def path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": schema}

    listing = [
        {
            "name": "format",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["json", "csv"], "default": "json"},
            "description": "json: one page; csv: every recipient, with a header line",
        },
        *paging,
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "pattern": "^[0-9]{1,8}$"},
            "description": "from a previous `next`",
        },
    ]

    def with_csv(schema: str) -> dict[str, Any]:
        found = ok(schema)
        found["content"]["text/csv"] = {"schema": {"type": "string"}}
        return found

    definitions = "; ".join(f"{who}: {segments.DEFINITIONS[who]}" for who in segments.CAMPAIGN_SEGMENTS)
    return {
        "/campaigns/{name}/segments": {
            "get": {
                "summary": "A campaign's segments: how many recipients each holds, with its definition",
                "parameters": [path_param("name", {"type": "string"})],
                "responses": {
                    "200": ok("CampaignSegments"),
                    **errors,
                    "404": error("no campaign by that name"),
                },
            }
        },
        "/campaigns/{name}/segments/{who}": {
            "get": {
                "summary": "The recipients of one of a campaign's segments, by address",
                "description": definitions.replace("{campaign}", "the campaign"),
                "parameters": [
                    path_param("name", {"type": "string"}),
                    path_param("who", {"type": "string", "enum": list(segments.CAMPAIGN_SEGMENTS)}),
                    *listing,
                ],
                "responses": {
                    "200": with_csv("SegmentPage"),
                    **errors,
                    "404": error("no campaign by that name, or no such segment"),
                },
            }
        },
        "/segments": {
            "get": {
                "summary": "The saved segments, each evaluated now",
                "responses": {"200": ok("SavedSegments"), **errors},
            }
        },
        "/segments/{name}": {
            "get": {
                "summary": "The recipients of a saved segment, evaluated now",
                "parameters": [path_param("name", {"type": "string"}), *listing],
                "responses": {
                    "200": with_csv("SavedSegmentPage"),
                    **errors,
                    "404": error("no saved segment by that name, or its campaign is gone"),
                },
            }
        },
    }
