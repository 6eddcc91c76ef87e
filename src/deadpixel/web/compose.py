"""The "New campaign" page (senders and owners): write a campaign, preview it as one recipient gets it, send
yourself a test, keep it as a draft for the Send step.

Every POST saves the form as a draft (deadpixel.store.drafts) before doing what its button asks, so nothing
typed is lost between previews; a reopened draft keeps its recipient list until a new CSV is uploaded. The
preview is shown in iframes with an empty ``sandbox`` (no scripts, no forms, no navigation of this page, an
origin of their own) and ``srcdoc``, under this page's policy, which allows the sender's https images only
(docs/decisions/2026-12-06-campaign-preview.md). Warnings never block.

The Send button posts to ``/compose/send``, which saves the draft and hands it to ``send_draft``: the
dashboard's is the confirmation step of deadpixel.web.sending, which makes the draft a stored campaign the
server sends in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from deadpixel.config import ConfigError, Settings
from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.send.preview import (
    MAX_HTML_BYTES,
    MAX_SENDER,
    MAX_SUBJECT,
    MAX_TEXT_BYTES,
    UNSUBSCRIBE_VARIABLE,
    Content,
    preview,
)
from deadpixel.send.recipients import BadRow, ListProblem, RecipientList, Row
from deadpixel.send.test_copy import TestNotSent, send_test
from deadpixel.store import audit, drafts
from deadpixel.store.drafts import Draft
from deadpixel.web import forms
from deadpixel.web.session import Session

Render = Callable[..., Response]
Guard = Callable[..., BaseRoute]
# What sends a saved draft: (request, session, draft id) -> the answer (deadpixel.web.sending's confirmation).
SendDraft = Callable[[Request, Session, int], Awaitable[Response]]

MAX_CSV_BYTES = 5 * 1024 * 1024
MAX_ROWS = 50_000
MAX_NAME = 200
MAX_SHOWN_PROBLEMS = 20  # bad rows listed on the page; the count says how many in all
MAX_CHOICES = 200  # rows offered in "Preview as"
# The page's policy: the dashboard's, with the sender's https images allowed in the preview frames.
COMPOSE_POLICY = (
    "default-src 'self'; img-src 'self' data: https:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@dataclass
class RecipientsView:
    """What the page says about the uploaded list."""

    columns: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)  # the usable ones, at most MAX_CHOICES kept
    usable: int = 0
    problems: list[str] = field(default_factory=list)  # the first MAX_SHOWN_PROBLEMS
    problem_count: int = 0


class FormError(ValueError):
    """A field over its bound or unusable: the page shows it and saves nothing."""


class ComposePages:
    def __init__(
        self,
        reader: Engine,
        writer: Engine,
        settings: Settings,
        render: Render,
        send_draft: SendDraft,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self.render = render
        self.send_draft = send_draft

    def routes(self, guarded: Guard) -> list[BaseRoute]:
        upload = forms.read_upload_form
        return [
            guarded("/compose", self.new, ["GET"]),
            guarded("/compose", self.submit, ["POST"], form=upload),
            guarded("/compose/send", self.send, ["POST"], form=upload),
            guarded("/compose/{id}", self.reopen, ["GET"]),
        ]

    async def _run(self, engine: Engine, work: Callable[[Connection], Any]) -> Any:
        def run() -> Any:
            with engine.begin() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    def page(self, session: Session, draft: Draft, status: int = 200, **shown: Any) -> Response:
        response = self.render(
            "compose.html", status, session=session, draft=draft, merge_extra=UNSUBSCRIBE_VARIABLE,
            limits={"csv": MAX_CSV_BYTES // 1024 // 1024, "rows": MAX_ROWS, "html": MAX_HTML_BYTES // 1024},
            **{"recipients": RecipientsView(), "preview": None, "warnings": [], **shown},
        )  # fmt: skip
        response.headers["content-security-policy"] = COMPOSE_POLICY
        return response

    def blank(self, session: Session) -> Draft:
        return Draft(name="", sender=self.settings.mail_from or "", subject="", html="", recipients_csv="")

    async def new(self, request: Request, session: Session) -> Response:
        return self.page(session, self.blank(session), test_to=_own_address(self.settings.mail_from))

    async def reopen(self, request: Request, session: Session) -> Response:
        raw = str(request.path_params["id"])
        found = None
        if raw.isascii() and raw.isdigit() and len(raw) <= 12:
            found = await self._run(self.reader, lambda conn: drafts.find(conn, int(raw)))
        if found is None:
            return self.render("error.html", 404, session=session, message="No such draft.")
        return await self.show(session, found, None, test_to=_own_address(found.sender))

    async def show(
        self, session: Session, draft: Draft, chosen: str | None, status: int = 200, **shown: Any
    ) -> Response:
        """The page with the list read and the chosen row previewed."""
        listed, error = await asyncio.to_thread(read_recipients, draft.recipients_csv)
        row = _chosen_row(listed, chosen)
        made = subject_b = None
        base = self.settings.base_url
        if row is not None and draft.html:
            content = _content(draft)
            made = await asyncio.to_thread(preview, content, row.values, base_url=base)
            if draft.subject_b:
                only_subject = replace(content, subject=draft.subject_b, html="")
                subject_b = (
                    await asyncio.to_thread(preview, only_subject, row.values, base_url=base)
                ).subject
        errors = [error] if error else []
        errors += shown.pop("errors", [])
        return self.page(
            session, draft, status, recipients=listed, preview=made, subject_b=subject_b,
            chosen=row.line if row else None, errors=errors, **shown,
        )  # fmt: skip

    async def submit(self, request: Request, session: Session) -> Response:
        form = await forms.read_upload_form(request)
        action = str(form.get("action") or "preview")
        try:
            draft = await self.read_draft(form)
        except FormError as exc:
            return self.page(session, _typed_again(form, self.blank(session)), 400, errors=[str(exc)])
        except LookupError:
            return self.render("error.html", 404, session=session, message="No such draft.")
        draft = await self.save(draft, session)
        chosen = str(form.get("row") or "") or None
        test_to = str(form.get("test_to") or "").strip()
        if action != "test":
            test_to = test_to or _own_address(draft.sender)
            notice = "Draft saved." if action == "save" else None
            return await self.show(session, draft, chosen, notice=notice, test_to=test_to)
        return await self.test(session, draft, chosen, test_to)

    async def test(self, session: Session, draft: Draft, chosen: str | None, test_to: str) -> Response:
        listed, error = await asyncio.to_thread(read_recipients, draft.recipients_csv)
        row = _chosen_row(listed, chosen)
        if row is None or not draft.html:
            problem = (
                error or "Upload a recipient list and write the HTML first: a test is one row's message."
            )
            return await self.show(session, draft, chosen, 400, errors=[problem], test_to=test_to)
        try:
            await asyncio.to_thread(send_test, self.settings, _content(draft), row.values, test_to)
        except (TestNotSent, ConfigError) as exc:
            return await self.show(
                session, draft, chosen, 400, errors=[f"Test not sent: {exc}"], test_to=test_to
            )

        def log(conn: Connection) -> None:
            audit.record(conn, session.user, "campaign.test", f"draft {draft.id} to {audit.masked(test_to)}")

        await self._run(self.writer, log)
        notice = f"Test sent to {test_to} (marked [Test]; it counts in no report)."
        return await self.show(session, draft, chosen, notice=notice, test_to=test_to)

    async def send(self, request: Request, session: Session) -> Response:
        form = await forms.read_upload_form(request)
        try:
            draft = await self.save(await self.read_draft(form), session)
        except FormError as exc:
            return self.page(session, _typed_again(form, self.blank(session)), 400, errors=[str(exc)])
        except LookupError:
            return self.render("error.html", 404, session=session, message="No such draft.")
        assert draft.id is not None
        return await self.send_draft(request, session, draft.id)

    async def save(self, draft: Draft, session: Session) -> Draft:
        def store(conn: Connection) -> int:
            made = drafts.save(conn, draft, session.user)
            if draft.id is None:
                audit.record(conn, session.user, "campaign.draft", f"draft {made}: {draft.name}")
            return made

        return replace(draft, id=await self._run(self.writer, store))

    async def read_draft(self, form: FormData) -> Draft:
        """The form as a draft, every field bounded; the stored list is kept unless a new CSV came."""
        raw_id = str(form.get("draft_id") or "")
        stored: Draft | None = None
        if raw_id:
            if not raw_id.isdigit() or len(raw_id) > 12:
                raise FormError("The draft's id is not a number.")
            stored = await self._run(self.reader, lambda conn: drafts.find(conn, int(raw_id)))
            if stored is None:
                raise LookupError(raw_id)
        csv = await _upload(form, "recipients", MAX_CSV_BYTES, "The recipient list")
        if csv is not None:
            unusable = (await asyncio.to_thread(read_recipients, csv))[1]
            if unusable:
                raise FormError(unusable)  # a list no row of which can be read is not kept
        html = await _upload(form, "html_file", MAX_HTML_BYTES, "The HTML file")
        typed = _as_typed(form, stored or Draft("", "", "", "", ""))
        draft = replace(
            typed,
            html=html if html is not None else typed.html,
            recipients_csv=csv if csv is not None else (stored.recipients_csv if stored else ""),
            id=stored.id if stored else None,
        )
        check(draft)
        return draft


def _as_typed(form: FormData, base: Draft) -> Draft:
    """The text fields as typed (over ``base``), checked against their bounds by ``_check``."""

    def text(name: str) -> str:
        value = form.get(name)
        return value.replace("\x00", "") if isinstance(value, str) else ""

    draft = replace(
        base,
        name=text("name").strip(), sender=text("sender").strip(), subject=text("subject"),
        subject_b=text("subject_b").strip() or None, html=text("html"), text=text("text") or None,
        ab_share=_number(text("ab_share")), ab_wait_minutes=_number(text("ab_wait_minutes")),
    )  # fmt: skip
    return draft


def _typed_again(form: FormData, blank: Draft) -> Draft:
    """What was typed, shown again after an error, still naming its draft (so the next try updates it)."""
    raw_id = str(form.get("draft_id") or "")
    typed = _as_typed(form, blank)
    return replace(typed, id=int(raw_id)) if raw_id.isdigit() and len(raw_id) <= 12 else typed


def _number(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def check(draft: Draft) -> None:
    """FormError naming the first field over its bound."""
    if not draft.name or len(draft.name) > MAX_NAME:
        raise FormError(f"Name: give the campaign a name of at most {MAX_NAME} characters.")
    if (
        len(draft.sender) > MAX_SENDER
        or len(draft.subject) > MAX_SUBJECT
        or len(draft.subject_b or "") > MAX_SUBJECT
    ):
        raise FormError(f"From is at most {MAX_SENDER} characters, a subject at most {MAX_SUBJECT}.")
    if len(draft.html.encode("utf-8", "replace")) > MAX_HTML_BYTES:
        raise FormError(f"HTML: at most {MAX_HTML_BYTES // 1024} KiB (Gmail clips messages past 102 KiB).")
    if len((draft.text or "").encode("utf-8", "replace")) > MAX_TEXT_BYTES:
        raise FormError(f"Plain-text part: at most {MAX_TEXT_BYTES // 1024} KiB.")
    if draft.ab_share is not None and not 1 <= draft.ab_share <= 50:
        raise FormError("A/B test share: a percentage from 1 to 50.")
    if draft.ab_wait_minutes is not None and not 10 <= draft.ab_wait_minutes <= 7 * 24 * 60:
        raise FormError("A/B test wait: from 10 minutes to 7 days (10080 minutes).")


async def _upload(form: FormData, name: str, limit: int, what: str) -> str | None:
    """An uploaded file's text, or None when none was chosen; FormError over ``limit`` or not UTF-8."""
    upload = form.get(name)
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FormError(f"{what} is larger than {limit // 1024} KiB.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormError(
            f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8."
        ) from None


def read_recipients(csv_text: str) -> tuple[RecipientsView, str | None]:
    """The list's columns, its first usable rows and its problems (bad rows, unusable addresses), or the
    one reason the whole file cannot be used."""
    view = RecipientsView()
    if not csv_text.strip():
        return view, None
    try:
        listed = RecipientList.from_text(csv_text, "The recipient list")
        view.columns = [name for name in listed.columns if name]
        if listed.count() > MAX_ROWS:
            return RecipientsView(), f"The recipient list has more than {MAX_ROWS} rows; split it."
        for row in listed.rows():
            problem = _problem(row)
            if problem is None:
                assert isinstance(row, Row)
                view.usable += 1
                if len(view.rows) < MAX_CHOICES:
                    view.rows.append(row)
                continue
            view.problem_count += 1
            if len(view.problems) < MAX_SHOWN_PROBLEMS:
                view.problems.append(problem)
    except ListProblem as exc:
        return RecipientsView(), str(exc)
    return view, None


def _problem(row: Row | BadRow) -> str | None:
    if isinstance(row, BadRow):
        return f"line {row.line}: {row.reason}; not sent"
    try:
        parse_recipient(row.email)
    except BadAddress as exc:
        return f"line {row.line}: {row.email!r}: {exc}; not sent"
    return None


def _chosen_row(listed: RecipientsView, chosen: str | None) -> Row | None:
    for row in listed.rows:
        if chosen is not None and str(row.line) == chosen:
            return row
    return listed.rows[0] if listed.rows else None


def _content(draft: Draft) -> Content:
    return Content(sender=draft.sender, subject=draft.subject, html=draft.html, text=draft.text)


def _own_address(sender: str | None) -> str:
    """The test address offered first: the From address's mailbox."""
    try:
        return parse_recipient(sender).address if sender else ""
    except BadAddress:
        return ""
