"""Sending a draft from the dashboard, and steering the send from its campaign page.

The compose page's Send button (``ComposePages.send_draft``) leads here: a confirmation that counts who will
get it (after the suppression list, without invalid and duplicate rows) and shows the preview's warnings
without blocking on them; its button reads "Send to N recipients", and a date-time field (in the dashboard's
zone) schedules it instead. The confirmed draft becomes a stored campaign (``deadpixel.send.draft_send``)
that the server's due-work thread sends; the campaign page then shows its state and progress, polled as
JSON (``/sending/status``) by ``static/sending.js``, with Pause, Resume and Cancel for senders and the rows
that could not be sent. Changes need the sender role, checked on the server (deadpixel.accounts.access).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute

from deadpixel.config import ConfigError, Settings
from deadpixel.send import draft_send, stored, when
from deadpixel.send.preview import Content, preview
from deadpixel.send.recipients import ListProblem
from deadpixel.send.when import BadWhen
from deadpixel.store import campaign_jobs as jobs
from deadpixel.store import drafts
from deadpixel.store.roles import Role
from deadpixel.web import forms
from deadpixel.web.download import attachment
from deadpixel.web.session import Session

Render = Callable[..., Response]
Guard = Callable[..., BaseRoute]
STEERING = ("pause", "resume", "cancel")
SHOWN_PROBLEMS = 100  # rows listed on the page; the CSV has them all
MAX_NAME = 200
# Why a confirmed draft may not be stored: each says what to change (the draft is kept).
NOT_SENT = (draft_send.NotSendable, ListProblem, jobs.JobStateError, jobs.CampaignTooBig, ConfigError)


class SendPages:
    def __init__(self, reader: Engine, writer: Engine, settings: Settings, render: Render) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self.render = render

    def routes(self, guarded: Guard) -> list[BaseRoute]:
        return [
            guarded("/compose/{id}/send", self.confirmed, ["POST"]),
            guarded("/sending/status", self.status, ["GET"]),
            guarded("/sending/problems.csv", self.problems_csv, ["GET"]),
            guarded("/sending/{action}", self.steer, ["POST"]),
        ]

    async def _run(self, engine: Engine, work: Callable[[Connection], Any]) -> Any:
        def run() -> Any:
            with engine.begin() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    async def ask(
        self, request: Request, session: Session, draft_id: int, errors: list[str] | None = None
    ) -> Response:
        """The confirmation step (``ComposePages``' ``send_draft``): who gets it, the warnings, the button."""
        draft = await self._run(self.reader, lambda conn: drafts.find(conn, draft_id))
        if draft is None:
            return self.render("error.html", 404, session=session, message="No such draft.")
        errors = list(errors or [])
        try:
            draft_send.check_sendable(draft)
            tally = await self._run(self.reader, lambda conn: draft_send.tally(conn, draft.recipients_csv))
        except (draft_send.NotSendable, ListProblem) as exc:
            errors.append(str(exc))
            tally = None
        warnings = await asyncio.to_thread(self._warnings, draft) if tally else []
        return self.render(
            "send_confirm.html", 400 if errors else 200, session=session, draft=draft, tally=tally,
            warnings=warnings, errors=errors, zone=self.settings.timezone,
        )  # fmt: skip

    def _warnings(self, draft: drafts.Draft) -> list[str]:
        """The preview's warnings for the first usable row (the same checks the compose page shows)."""
        first = draft_send.first_row(draft.recipients_csv)
        if first is None:
            return []
        content = Content(draft.sender, draft.subject, draft.html, draft.text)
        made = preview(content, first.values, base_url=self.settings.base_url)
        return [notice.message for notice in made.warnings]

    async def confirmed(self, request: Request, session: Session) -> Response:
        """Send (or schedule) the draft: once, however often the form is posted."""
        form = await forms.read_form(request)
        raw = str(request.path_params["id"])
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 12):
            return self.render("error.html", 404, session=session, message="No such draft.")
        name = _campaign(str(form.get("name") or ""))
        due_at = None
        try:
            if form.get("action") == "schedule":
                due_at = self._due(str(form.get("at") or ""))

            def send(conn: Connection) -> jobs.Job:
                return draft_send.send(conn, self.settings, int(raw), actor=session.user, due_at=due_at)

            job = await self._run(self.writer, send)
        except draft_send.DraftGone:
            # Sent already (a second click, a reload): to the send that exists, never a second one.
            found = await self._run(self.reader, lambda conn: jobs.latest(conn, name)) if name else None
            if found is None:
                return self.render("error.html", 404, session=session, message="No such draft.")
            return RedirectResponse(campaign_page(found.campaign), status_code=303)
        except NOT_SENT as exc:
            return self.render("error.html", 409, session=session, message=f"Not sent: {exc.one_line()}")
        except BadWhen as exc:  # the draft is kept: the confirmation again, saying what to change
            return await self.ask(request, session, int(raw), [f"Not sent: {exc.one_line()}"])
        return RedirectResponse(campaign_page(job.campaign), status_code=303)

    def _due(self, local: str) -> float:
        """The schedule field (``datetime-local``, in the dashboard's zone) as a time, read as ``--at`` is."""
        if not local.strip():
            raise BadWhen("Schedule: choose a date and a time to send at.")
        return when.due_time(local[:40], None, ZoneInfo(self.settings.timezone), time.time())

    async def status(self, request: Request, session: Session) -> Response:
        """The campaign's send as JSON, for the page's script: state and sent / failed / skipped / left."""
        name = _campaign(request.query_params.get("campaign"))
        found = await self._run(self.reader, lambda conn: jobs.latest(conn, name)) if name else None
        if found is None:
            return JSONResponse({"error": "no stored send for that campaign"}, status_code=404)
        return JSONResponse(stored.status_view(found), headers={"cache-control": "no-store"})

    async def problems_csv(self, request: Request, session: Session) -> Response:
        name = _campaign(request.query_params.get("campaign"))
        if name is None:
            return self.render("error.html", 404, session=session, message="No such campaign.")
        try:
            found = await self._run(self.reader, lambda conn: stored.problems(conn, name))
        except stored.NoSuchSend as exc:
            return self.render("error.html", 404, session=session, message=str(exc))
        return Response(
            stored.problems_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": attachment(f"{name}-problems.csv")},
        )

    async def steer(self, request: Request, session: Session) -> Response:
        """Pause, resume or cancel the send of the campaign the form names; then back to its page."""
        action = str(request.path_params["action"])
        form = await forms.read_form(request)
        name = _campaign(str(form.get("campaign") or ""))
        if action not in STEERING or name is None:
            return self.render("error.html", 404, session=session, message="No such action.")
        try:
            await self._run(self.writer, lambda conn: stored.act(conn, name, action, actor=session.user))
        except (stored.NoSuchSend, jobs.JobStateError) as exc:
            return self.render("error.html", 409, session=session, message=f"Not done: {exc.one_line()}")
        return RedirectResponse(campaign_page(name), status_code=303)


def panel(conn: Connection, name: str, role: Role) -> dict[str, Any] | None:
    """The campaign page's send section: the newest stored send, its first problems, who may steer it."""
    job = jobs.latest(conn, name)
    if job is None:
        return None
    return {
        "job": stored.status_view(job),
        "problems": jobs.list_problems(conn, job.id, SHOWN_PROBLEMS),
        "can_steer": role.allows(Role.SENDER),
    }


def campaign_page(name: str) -> str:
    return "/campaigns/" + quote(name, safe="")


def _campaign(raw: str | None) -> str | None:
    """A campaign name the database can be asked about, or None (PostgreSQL refuses NUL in text)."""
    return raw if raw and len(raw) <= MAX_NAME and "\x00" not in raw else None
