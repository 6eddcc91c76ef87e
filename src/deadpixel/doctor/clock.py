"""This machine's clock against the server's (its HTTP Date) and PostgreSQL's.

Opens are stamped by the server that answers them and compared with send times stamped by whoever sent: a
clock off by a minute turns Apple's prefetches and scanners, told apart by seconds, into people.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from deadpixel.doctor.context import Context
from deadpixel.doctor.probe import ProbeError
from deadpixel.doctor.result import Finding, Status, fail, ok, one_line, skip, warn, worst

WARN_SECONDS = 5.0
FAIL_SECONDS = 60.0


def offset_status(offset: float) -> Status:
    size = abs(offset)
    return "fail" if size > FAIL_SECONDS else "warn" if size > WARN_SECONDS else "ok"


def _server_offset(ctx: Context) -> float | None:
    """Seconds the server's clock is ahead of ours. HTTP dates are whole seconds, truncated: add half."""
    if ctx.probe.down is not None:
        return None
    try:
        answer = ctx.probe.get("/healthz")
        when = parsedate_to_datetime(answer.headers["date"]).timestamp()
    except (ProbeError, KeyError, TypeError, ValueError):
        return None
    return when + 0.5 - (answer.sent_at + answer.received_at) / 2


def _database_offset(ctx: Context) -> float | None:
    from sqlalchemy import text

    if ctx.sqlite_path is not None:
        return None  # SQLite has no clock of its own: it is this machine's
    with ctx.engine().connect() as conn:
        before = time.time()
        value = conn.execute(text("SELECT extract(epoch FROM now())")).scalar_one()
        after = time.time()
    return float(value) - (before + after) / 2


def _describe(what: str, offset: float) -> str:
    side = "ahead of" if offset > 0 else "behind"
    return f"{what} is {abs(offset):.1f} s {side} this machine's"


def clock(ctx: Context) -> Finding:
    offsets: list[tuple[str, float]] = []
    server = _server_offset(ctx)
    if server is not None:
        offsets.append(("the clock behind the base URL (its HTTP Date)", server))
    notes: list[str] = []
    try:
        database = _database_offset(ctx)
    except Exception as exc:
        database = None
        notes.append(f"the database's clock could not be read: {one_line(exc)}")
    if database is not None:
        offsets.append(("PostgreSQL's clock", database))
    if not offsets:
        return skip(
            "no other clock to compare with (the base URL gave no Date, and the store is not PostgreSQL)"
        )
    status = worst(offset_status(offset) for _, offset in offsets)
    message = "; ".join([_describe(what, offset) for what, offset in offsets] + notes)
    fix = "keep every machine's clock synchronised (systemd-timesyncd, chrony or ntpd)"
    if status == "fail":
        return fail(message, fix)
    if status == "warn":
        return warn(message, fix)
    return ok(message)
