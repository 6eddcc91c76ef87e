"""Which spooled batches are already in the store (see ``deadpixel.track.spool``)."""

from __future__ import annotations

import time

from sqlalchemy import Connection, delete, insert
from sqlalchemy.exc import IntegrityError

from deadpixel.store.schema import spool_replays

KEEP_SECONDS = 30 * 86400  # far longer than any file can outlive its replay


def mark_replayed(conn: Connection, batch: str) -> bool:
    """Remember ``batch`` in the caller's transaction; False when it is already in the store."""
    try:
        with conn.begin_nested():
            conn.execute(insert(spool_replays).values(id=batch, replayed_at=time.time()))
    except IntegrityError:
        return False
    return True


def mark_all_replayed(conn: Connection, batches: list[str]) -> bool:
    """Remember every batch in one statement; False (nothing remembered) when any is already in the store."""
    now = time.time()
    try:
        with conn.begin_nested():
            conn.execute(insert(spool_replays), [{"id": batch, "replayed_at": now} for batch in batches])
    except IntegrityError:
        return False
    return True


def forget_old_replays(conn: Connection) -> None:
    conn.execute(delete(spool_replays).where(spool_replays.c.replayed_at < time.time() - KEEP_SECONDS))
