"""The audit log: who sent, scheduled, cancelled, imported, or changed settings or accounts, and when.

One row per action, written in the same transaction as the action, so a row exists if and only if the change
was committed. Who is an account's name, ``token:<name>`` for an API token, or ``cli`` for a shell user (who
needs no account: whoever can run the command can read the data dir). Rows are kept; listing is bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from deadpixel.store.schema import audit_log

__all__ = ["CLI", "MAX_LIMIT", "MAX_TARGET", "AuditRow", "masked", "recent", "record"]

CLI = "cli"
MAX_ACTOR = 80
MAX_ACTION = 40
MAX_TARGET = 200  # a campaign's name or a URL, cut to what a log line shows
MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: float
    actor: str
    action: str
    target: str


def record(conn: Connection, actor: str, action: str, target: str = "", at: float | None = None) -> None:
    """One action by ``actor`` on ``target`` (``user.create`` on ``ann``), in the caller's transaction."""
    conn.execute(
        insert(audit_log).values(
            at=time.time() if at is None else at,
            actor=actor[:MAX_ACTOR],
            action=action[:MAX_ACTION],
            target=target.replace("\x00", "")[:MAX_TARGET],
        )
    )


def recent(conn: Connection, limit: int = 50) -> list[AuditRow]:
    """The latest ``limit`` rows (at most MAX_LIMIT), newest first."""
    limit = max(1, min(limit, MAX_LIMIT))
    t = audit_log
    rows = conn.execute(
        select(t.c.id, t.c.at, t.c.actor, t.c.action, t.c.target).order_by(t.c.id.desc()).limit(limit)
    )
    return [AuditRow(int(row.id), row.at, row.actor, row.action, row.target) for row in rows]


def masked(address: str) -> str:
    """A recipient's address as the log names it: enough to recognise, not a copy of the address (the log
    outlives ``deadpixel forget``)."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"
