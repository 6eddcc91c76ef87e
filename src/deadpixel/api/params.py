"""Query parameters, checked before any SQL: a bad one is a 400 that names it, never a 500.

Unknown parameters are refused too, so a typo (``campain=``) is an error instead of an unfiltered list.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from starlette.datastructures import QueryParams

from deadpixel.api.errors import bad_parameter
from deadpixel.events import KINDS

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_MESSAGE_ID = re.compile(r"[0-9a-v]{16}")


def check_known(query: QueryParams, allowed: set[str]) -> None:
    for name in query:
        if name not in allowed:
            raise bad_parameter(name, f"unknown parameter (allowed: {', '.join(sorted(allowed))})")


def text(query: QueryParams, name: str, max_length: int = 200) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    if not value or len(value) > max_length or "\x00" in value:
        raise bad_parameter(name, f"must be 1 to {max_length} characters, without NUL")
    return value


def message_id(query: QueryParams, name: str) -> str | None:
    value = query.get(name)
    if value is not None and not _MESSAGE_ID.fullmatch(value.lower()):
        raise bad_parameter(name, "must be a message id (16 characters, 0-9 and a-v)")
    return None if value is None else value.lower()


def limit(query: QueryParams) -> int:
    value = query.get("limit")
    if value is None:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise bad_parameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def event_cursor(query: QueryParams) -> int | None:
    value = query.get("cursor")
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) >= 2**63:
        raise bad_parameter("cursor", "must be the cursor of a previous page")
    return int(value)


def timestamp(query: QueryParams, name: str) -> float | None:
    """ISO 8601; a time without an offset is taken as UTC."""
    value = query.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_parameter(name, "must be an ISO 8601 time, e.g. 2026-11-30T14:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        raise bad_parameter(name, "is out of range") from None


def kind(query: QueryParams) -> str | None:
    value = query.get("kind")
    if value is not None and value not in KINDS:
        raise bad_parameter("kind", f"must be one of {', '.join(KINDS)}")
    return value
