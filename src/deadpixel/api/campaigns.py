"""The stored-campaign routes of /api/v1: store a campaign, send it now or at a time, pause, resume, cancel,
read its status and its problems (JSON or CSV). Thin over deadpixel.send.stored, as the command line is.

Every change needs the ``sender`` role (deadpixel.accounts.access) and is audited with the token's name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deadpixel.api import params
from deadpixel.api.body import read_json
from deadpixel.api.campaign_body import MAX_BODY, new_campaign, schedule
from deadpixel.api.errors import ApiError
from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.send import stored
from deadpixel.send.smtp_config import sender_address
from deadpixel.store import campaign_jobs as jobs

__all__ = ["ACTIONS", "MAX_BODY", "campaign_routes"]

T = TypeVar("T")
ACTIONS = ("send", "schedule", "pause", "resume", "cancel")


def _status(job: jobs.Job) -> dict[str, Any]:
    return stored.status_view(job)


def campaign_routes(reads: Engine, writes: Engine, settings: Settings) -> list[Route]:
    zone = ZoneInfo(settings.timezone)

    async def db(work: Callable[[Connection], T], engine: Engine) -> T:
        def run() -> T:
            with engine.begin() as conn:
                try:
                    return work(conn)
                except stored.NoSuchSend as exc:
                    raise ApiError(404, str(exc)) from None
                except jobs.JobStateError as exc:
                    raise ApiError(409, str(exc)) from None
                except jobs.CampaignTooBig as exc:
                    raise ApiError(422, str(exc), "recipients") from None

        return await asyncio.to_thread(run)

    def actor(request: Request) -> str:
        return str(request.scope.get("state", {}).get("api_actor", "token"))

    def name_of(request: Request) -> str:
        name = str(request.path_params["name"])
        if "\x00" in name or len(name) > 200:
            raise ApiError(404, "no campaign with that name")
        return name

    async def create(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        wanted = new_campaign(await read_json(request), zone)
        try:
            sender = sender_address(settings, wanted.sender)
        except DeadpixelError as exc:
            raise ApiError(422, exc.one_line(), "from") from None
        content = jobs.Content(sender, wanted.content.subject, wanted.content.html, wanted.content.text,
                               wanted.content.options)  # fmt: skip

        def make(conn: Connection) -> jobs.Job:
            return stored.store(
                conn, wanted.name, content, wanted.rows, actor=actor(request), due_at=wanted.due_at
            )

        try:
            job = await db(make, writes)
        except DeadpixelError as exc:
            if isinstance(exc, ApiError):
                raise
            raise ApiError(422, exc.one_line()) from None
        return JSONResponse(_status(job), status_code=201)

    def action(name: str) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> JSONResponse:
            params.check_known(request.query_params, set())
            campaign = name_of(request)
            due_at = schedule(await read_json(request), zone) if name == "schedule" else None
            job = await db(
                lambda conn: stored.act(conn, campaign, name, actor=actor(request), due_at=due_at), writes
            )
            return JSONResponse(_status(job))

        return endpoint

    async def status(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        campaign = name_of(request)
        return JSONResponse(_status(await db(lambda conn: stored.current(conn, campaign), reads)))

    async def problems(request: Request) -> JSONResponse:
        params.check_known(request.query_params, set())
        campaign = name_of(request)
        return JSONResponse({"items": await db(lambda conn: stored.problems(conn, campaign), reads)})

    async def problems_csv(request: Request) -> Response:
        params.check_known(request.query_params, set())
        campaign = name_of(request)
        found = await db(lambda conn: stored.problems(conn, campaign), reads)
        return Response(
            stored.problems_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="problems.csv"'},
        )

    return [
        Route("/campaigns", create, methods=["POST"]),
        *(Route(f"/campaigns/{{name:path}}/{name}", action(name), methods=["POST"]) for name in ACTIONS),
        Route("/campaigns/{name:path}/status", status, methods=["GET"]),
        Route("/campaigns/{name:path}/problems.csv", problems_csv, methods=["GET"]),
        Route("/campaigns/{name:path}/problems", problems, methods=["GET"]),
    ]
