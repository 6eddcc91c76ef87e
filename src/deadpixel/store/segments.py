"""Saved segments: a name and the definition it stands for (``spring:non-openers``, ``@inactive:90``).

Only the definition is kept, never the addresses it matched: a saved segment is evaluated again each time it
is used (deadpixel.reports.segments), so it follows the opens that came in since. Names follow the accounts'
rule (deadpixel.store.names), which has no ``:`` and no leading ``@``, so a name never reads as a definition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.exc import IntegrityError

from deadpixel.errors import DeadpixelError
from deadpixel.store.names import UserError, check_name
from deadpixel.store.schema import segments


class SegmentNameError(DeadpixelError):
    """A segment name that cannot be used, is taken, or names no saved segment."""


@dataclass(frozen=True, slots=True)
class SavedSegment:
    name: str
    definition: str
    created_at: float


def save(conn: Connection, name: str, definition: str) -> SavedSegment:
    """Keep ``definition`` (already checked by the caller) under a new ``name``."""
    try:
        check_name(name)
    except UserError as exc:
        raise SegmentNameError(str(exc)) from None
    saved = SavedSegment(name, definition, time.time())
    try:
        with conn.begin_nested():
            conn.execute(
                insert(segments).values(name=name, definition=definition, created_at=saved.created_at)
            )
    except IntegrityError:
        raise SegmentNameError(f"a segment named {name!r} exists already; delete it first") from None
    return saved


def find(conn: Connection, name: str) -> SavedSegment | None:
    s = segments.c
    row = conn.execute(select(s.name, s.definition, s.created_at).where(s.name == name)).first()
    return SavedSegment(row.name, row.definition, row.created_at) if row else None


def list_saved(conn: Connection) -> list[SavedSegment]:
    s = segments.c
    rows = conn.execute(select(s.name, s.definition, s.created_at).order_by(s.name))
    return [SavedSegment(row.name, row.definition, row.created_at) for row in rows]


def remove(conn: Connection, name: str) -> bool:
    """Forget the saved segment; False when there was none by that name."""
    return bool(conn.execute(delete(segments).where(segments.c.name == name)).rowcount)
