"""The bodies of the API's POSTs (``/messages``, ``/preview``, ``/test-send``): bounded in size, a JSON
object, every field checked.

413 for a body over MAX_BODY bytes (deadpixel.server.bodies refuses it before it is read), 422 for anything
else wrong with it, naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from deadpixel.api.errors import ApiError
from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.send.preview import MAX_HTML_BYTES, MAX_SENDER, MAX_SUBJECT, MAX_TEXT_BYTES, Content

MAX_BODY = 64 * 1024  # bytes of any /api/v1 request body (docs/api.md)
FIELDS = {"to", "subject", "campaign"}


@dataclass(frozen=True, slots=True)
class NewMessage:
    to: str
    subject: str | None
    campaign: str | None


def _invalid(message: str, field: str | None = None) -> ApiError:
    return ApiError(422, message, field)


async def read_json(request: Request) -> Any:
    data = await request.body()  # at most MAX_BODY bytes: deadpixel.server.bodies saw to that
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise _invalid("the body is not JSON") from None


def storable(value: str) -> bool:
    """No NUL (PostgreSQL refuses it) and no lone surrogates (JSON allows them, UTF-8 cannot hold them)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def _optional_text(body: dict[str, Any], field: str, max_length: int) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_length or not storable(value):
        raise _invalid(f"{field}: must be a string of 1 to {max_length} characters, without NUL", field)
    return value


def new_message(body: Any) -> NewMessage:
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    for field in body:
        if field not in FIELDS:
            raise _invalid(f"{field}: unknown field (allowed: {', '.join(sorted(FIELDS))})", field)
    to = body.get("to")
    if not isinstance(to, str) or not storable(to):
        raise _invalid("to: the recipient's address is required", "to")
    try:
        recipient = parse_recipient(to)
    except BadAddress as exc:
        raise _invalid(f"to: {exc}", "to") from None
    return NewMessage(
        to=recipient.address,
        subject=_optional_text(body, "subject", 998),
        campaign=_optional_text(body, "campaign", 200),
    )


PREVIEW_FIELDS = {"from", "subject", "html", "text", "row"}
MAX_PREVIEW_BODY = 2 * 1024 * 1024  # an HTML template of MAX_HTML_BYTES, escaped as JSON, and a row
MAX_ROW_FIELDS = 200


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    content: Content
    row: dict[str, str]
    to: str | None  # the test address, for POST /test-send


def _text(body: dict[str, Any], field: str, max_bytes: int, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not storable(value) or len(value.encode("utf-8")) > max_bytes:
        raise _invalid(f"{field}: must be a string of at most {max_bytes} bytes, without NUL", field)
    return value


def preview_request(body: Any, default_sender: str | None, *, test: bool = False) -> PreviewRequest:
    """The body of ``POST /preview`` (and, with ``to``, ``POST /test-send``): the content and one row."""
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    allowed = PREVIEW_FIELDS | ({"to"} if test else set())
    for field in body:
        if field not in allowed:
            raise _invalid(f"{field}: unknown field (allowed: {', '.join(sorted(allowed))})", field)
    sender = _text(body, "from", MAX_SENDER, required=False) or default_sender
    if not sender:
        raise _invalid("from: required when DEADPIXEL_MAIL_FROM is not set", "from")
    row = body.get("row")
    if (
        not isinstance(row, dict)
        or len(row) > MAX_ROW_FIELDS
        or not all(isinstance(k, str) and isinstance(v, str) and storable(k + v) for k, v in row.items())
    ):
        raise _invalid(f"row: an object of at most {MAX_ROW_FIELDS} string columns, email among them", "row")
    to = _text(body, "to", MAX_SENDER, required=True) if test else None
    content = Content(
        sender=sender,
        subject=_text(body, "subject", MAX_SUBJECT, required=True) or "",
        html=_text(body, "html", MAX_HTML_BYTES, required=True) or "",
        text=_text(body, "text", MAX_TEXT_BYTES, required=False),
    )
    return PreviewRequest(content, dict(row), to)
