"""Which spooled batches are already in the store (see ``deadpixel.track.spool``)."""

from __future__ import annotations

import time

from sqlalchemy import Connection, delete

from deadpixel.store.driver import run
from deadpixel.store.schema import spool_replays

KEEP_SECONDS = 30 * 86400  # far longer than any file can outlive its replay


def mark_replayed(conn: Connection, batch: str) -> bool:
    """Remember ``batch`` in the caller's transaction; False when it is already in the store."""
    return remember_replayed(conn, [batch]) == 1


def remember_replayed(conn: Connection, batches: list[str]) -> int:
    """Remember the batches in the caller's transaction, in one statement; returns how many were new.

    Fewer than ``len(batches)`` means some were replayed before, and the caller rolls back (the new ones
    were remembered too). One ``INSERT … ON CONFLICT DO NOTHING`` instead of a savepoint around a plain
    insert: on PostgreSQL the savepoint alone took two of a replay chunk's round trips.
    """
    now = time.time()
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    new = 0
    for start in range(0, len(batches), 400):  # within SQLite's smallest limit on parameters
        chunk = batches[start : start + 400]
        rows = ", ".join([f"({mark}, {mark})"] * len(chunk))
        sql = f"INSERT INTO spool_replays (id, replayed_at) VALUES {rows} ON CONFLICT DO NOTHING RETURNING id"
        new += len(run(conn, sql, [value for batch in chunk for value in (batch, now)]))
    return new


def forget_old_replays(conn: Connection) -> None:
    conn.execute(delete(spool_replays).where(spool_replays.c.replayed_at < time.time() - KEEP_SECONDS))
