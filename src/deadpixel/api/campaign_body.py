"""The bodies of the stored-campaign routes: a campaign to store, a schedule; each field checked (422).

A campaign's recipients come as JSON rows (``recipients``: ``email``, optional ``fields``, ``track``, ``at``)
or as CSV text (``recipients_csv``, read exactly as ``campaign send --recipients`` reads a file). The whole
body is bounded by ``MAX_BODY`` (deadpixel.server.bodies answers 413 past it) and the rows by the store's
bounds (deadpixel.store.campaign_jobs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from deadpixel.api.body import storable
from deadpixel.api.errors import ApiError
from deadpixel.errors import DeadpixelError
from deadpixel.send.ratelimit import parse_rate
from deadpixel.send.recipients import RecipientList
from deadpixel.send.stored import stored_rows
from deadpixel.send.when import BadWhen, due_time, parse_time
from deadpixel.store import campaign_jobs as jobs
from deadpixel.store import notices

MAX_BODY = 8 * 1024 * 1024  # bytes of a request body under /api/v1/campaigns (docs/api.md)
FIELDS = {"name", "from", "subject", "html", "text", "options", "recipients", "recipients_csv", "at", "after",
          "send_now"}  # fmt: skip
ROW_FIELDS = {"email", "fields", "track", "at"}
OPTION_FIELDS = {"notify", "rate", "concurrency", "retries", "retry_backoff", "retry_uncertain"}
NOTIFY = {"off": notices.OFF, "each": notices.EACH, "digest": notices.DIGEST}


def _invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, message, field)


@dataclass(frozen=True, slots=True)
class NewCampaign:
    name: str
    sender: str | None
    content: jobs.Content  # its sender is filled in from DEADPIXEL_MAIL_FROM when the body names none
    rows: list[jobs.StoredRow]
    due_at: float | None  # None: stored as a draft


def _text(body: dict[str, Any], field: str, *, required: bool, max_length: int) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > max_length or not storable(value):
        raise _invalid(f"{field}: must be a string of 1 to {max_length} characters, without NUL", field)
    return value


def _known(body: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid(f"{where}: must be a JSON object", where)
    for name in body:
        if name not in allowed:
            raise _invalid(f"{name}: unknown field (allowed: {', '.join(sorted(allowed))})", name)
    return body


def _options(raw: Any) -> dict[str, Any]:
    given = _known(raw if raw is not None else {}, OPTION_FIELDS, "options")
    options: dict[str, Any] = {}
    if "notify" in given:
        if given["notify"] not in NOTIFY:
            raise _invalid("options.notify: one of off, each, digest", "options")
        options["notify"] = NOTIFY[given["notify"]]
    if "rate" in given:
        try:
            options["rate"] = parse_rate(str(given["rate"]))
        except ValueError as exc:
            raise _invalid(f"options.rate: {exc}", "options") from None
    for name, low, high in (("concurrency", 1, 32), ("retries", 0, 20)):
        if name in given:
            value = given[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise _invalid(f"options.{name}: an integer from {low} to {high}", "options")
            options[name] = value
    if "retry_backoff" in given:
        value = given["retry_backoff"]
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 3600:
            raise _invalid("options.retry_backoff: seconds from 0 to 3600", "options")
        options["backoff"] = float(value)
    if "retry_uncertain" in given:
        if not isinstance(given["retry_uncertain"], bool):
            raise _invalid("options.retry_uncertain: true or false", "options")
        options["retry_uncertain"] = given["retry_uncertain"]
    return options


def _json_rows(raw: Any, zone: ZoneInfo) -> list[jobs.StoredRow]:
    if not isinstance(raw, list):
        raise _invalid("recipients: must be a list of rows", "recipients")
    if len(raw) > jobs.MAX_ROWS:
        raise _invalid(f"recipients: {len(raw)} rows; at most {jobs.MAX_ROWS}", "recipients")
    rows = []
    for number, item in enumerate(raw, start=1):
        where = f"recipients[{number - 1}]"
        row = _known(item, ROW_FIELDS, where)
        email = row.get("email")
        if not isinstance(email, str) or not email or len(email) > 998 or not storable(email):
            raise _invalid(f"{where}.email: the recipient's address is required", "recipients")
        fields = row.get("fields", {})
        if not isinstance(fields, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and storable(k) and storable(v)
            for k, v in fields.items()
        ):
            raise _invalid(f"{where}.fields: an object of text values", "recipients")
        track = row.get("track", True)
        if not isinstance(track, bool):
            raise _invalid(f"{where}.track: true or false", "recipients")
        at = row.get("at")
        try:
            due = parse_time(at, zone) if isinstance(at, str) else None
        except BadWhen as exc:
            raise _invalid(f"{where}.at: {exc}", "recipients") from None
        if at is not None and not isinstance(at, str):
            raise _invalid(f"{where}.at: an ISO 8601 time", "recipients")
        rows.append(jobs.StoredRow(number, email, {**fields, "email": email}, track, due))
    return rows


def _csv_rows(raw: Any) -> list[jobs.StoredRow]:
    if not isinstance(raw, str) or not storable(raw):
        raise _invalid("recipients_csv: CSV text with an 'email' column", "recipients_csv")
    try:
        return stored_rows(RecipientList.from_text(raw, "recipients_csv").rows())
    except DeadpixelError as exc:
        raise _invalid(exc.one_line(), "recipients_csv") from None


def when(body: dict[str, Any], zone: ZoneInfo) -> float | None:
    """The due time ``at``/``after`` name, now for ``send_now``, None for neither (a draft)."""
    at, after, now = body.get("at"), body.get("after"), body.get("send_now", False)
    if not isinstance(now, bool):
        raise _invalid("send_now: true or false", "send_now")
    for name, value in (("at", at), ("after", after)):
        if value is not None and not isinstance(value, str):
            raise _invalid(f"{name}: a string", name)
    if now and (at is not None or after is not None):
        raise _invalid("send_now: not with at or after", "send_now")
    if now:
        return time.time()
    if at is None and after is None:
        return None
    try:
        return due_time(at, after, zone, time.time())
    except BadWhen as exc:
        raise _invalid(exc.one_line(), "at" if at is not None else "after") from None


def new_campaign(body: Any, zone: ZoneInfo) -> NewCampaign:
    given = _known(body, FIELDS, "the body")
    name = _text(given, "name", required=True, max_length=200)
    assert name is not None
    if ("recipients" in given) == ("recipients_csv" in given):
        raise _invalid(
            "give the rows as recipients (JSON) or recipients_csv (CSV text), one of them", "recipients"
        )
    rows = (
        _json_rows(given["recipients"], zone) if "recipients" in given else _csv_rows(given["recipients_csv"])
    )
    content = jobs.Content(
        sender=_text(given, "from", required=False, max_length=998) or "",
        subject=_text(given, "subject", required=True, max_length=998) or "",
        html=_text(given, "html", required=True, max_length=jobs.MAX_CONTENT) or "",
        text=_text(given, "text", required=False, max_length=jobs.MAX_CONTENT),
        options=_options(given.get("options")),
    )
    return NewCampaign(name, given.get("from"), content, rows, when(given, zone))


def schedule(body: Any, zone: ZoneInfo) -> float:
    given = _known(body, {"at", "after"}, "the body")
    due = when(given, zone)
    if due is None:
        raise _invalid("give at (a time) or after (a duration)", "at")
    return due
