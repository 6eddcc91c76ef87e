"""The live feed: new opens and clicks as server-sent events, read from the database.

Every server process answers feeds from the store, not from memory, so a feed shows what every process
behind a load balancer records. Each connection polls once a second for opens and clicks with ids above the
last it saw, less a look-back of ``LOOKBACK`` ids: on PostgreSQL, writers in several processes take ids
from one sequence but commit in their own order, so a row can appear after a higher id was already read; the
look-back picks it up, and the ids already sent are remembered so none is sent twice. A poll reads at most
``LIMIT`` rows of each kind (the newest): a feed under a flood shows the latest events, not all of them.

Each event's ``id`` is the cursor (``o<open id>.c<click id>``), so a browser that reconnects (EventSource does
by itself) sends ``Last-Event-ID`` and carries on where it stopped. The server ends each stream after
``LIFETIME`` seconds and the browser reconnects at once: a stopping worker waits for open responses (up to
``server.GRACEFUL_STOP``), so a stream that never ended would hold up every restart, and each reconnection
checks the session again (a new password, a deleted account end the feed within that time).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, select

from deadpixel.reports.analytics import iso
from deadpixel.store.messages import campaign_id
from deadpixel.store.schema import campaigns, clicks, links, messages, opens

POLL = 1.0  # seconds between reads of the store
LOOKBACK = 500  # ids below the highest seen that are read again, for rows committed out of id order
LIMIT = 100  # rows of each kind per poll
LIFETIME = 15.0  # seconds before the server ends a stream; the browser reconnects with its cursor
_CURSOR = re.compile(r"o(\d{1,18})\.c(\d{1,18})")


@dataclass
class Cursor:
    """The highest open and click ids sent, and the ids sent within the look-back."""

    opens: int
    clicks: int
    sent: dict[str, set[int]] = field(default_factory=lambda: {"open": set(), "click": set()})

    def __str__(self) -> str:
        return f"o{self.opens}.c{self.clicks}"

    @classmethod
    def parse(cls, raw: str | None) -> Cursor | None:
        found = _CURSOR.fullmatch(raw or "")
        return cls(int(found.group(1)), int(found.group(2))) if found else None


def start(conn: Connection) -> Cursor:
    """Where a new feed starts: after everything stored so far."""
    top_open = conn.execute(select(func.max(opens.c.id))).scalar() or 0
    top_click = conn.execute(select(func.max(clicks.c.id))).scalar() or 0
    return prime(conn, Cursor(int(top_open), int(top_click)))


def prime(conn: Connection, cursor: Cursor) -> Cursor:
    """Count the rows already stored within the look-back as sent, so a feed starts with what is new."""
    for kind, table, top in (("open", opens, cursor.opens), ("click", clicks, cursor.clicks)):
        window = (table.c.id > top - LOOKBACK) & (table.c.id <= top)
        cursor.sent[kind] = set(conn.execute(select(table.c.id).where(window)).scalars())
    return cursor


def _rows(conn: Connection, table: Table, after: int, campaign: int | None) -> list[Any]:
    t = table.c
    columns = [t.id, t.at, t.message_id, t.kind, t.client, t.device, t.country, messages.c.recipient,
               campaigns.c.name.label("campaign")]  # fmt: skip
    joined = table.outerjoin(messages, messages.c.id == t.message_id).outerjoin(
        campaigns, campaigns.c.id == messages.c.campaign_id
    )
    if table is clicks:
        columns.append(links.c.url)
        joined = joined.outerjoin(links, (links.c.message_id == t.message_id) & (links.c.number == t.link))
    query = select(*columns).select_from(joined).where(t.id > max(0, after - LOOKBACK))
    if campaign is not None:
        query = query.where(messages.c.campaign_id == campaign)
    return list(conn.execute(query.order_by(t.id.desc()).limit(LIMIT + LOOKBACK)))


def poll(conn: Connection, cursor: Cursor, campaign: str | None) -> list[dict[str, Any]]:
    """New opens and clicks since ``cursor`` (which it moves on), oldest first."""
    wanted = campaign_id(conn, campaign) if campaign is not None else None
    if campaign is not None and wanted is None:
        return []
    found: list[dict[str, Any]] = []
    for kind, table in (("open", opens), ("click", clicks)):
        highest = cursor.opens if kind == "open" else cursor.clicks
        sent = cursor.sent[kind]
        fresh = [row for row in _rows(conn, table, highest, wanted) if row.id not in sent][:LIMIT]
        for row in fresh:
            event = {"type": kind, **row._asdict(), "at": iso(row.at)}
            found.append(event)
            sent.add(row.id)
            highest = max(highest, row.id)
        floor = highest - LOOKBACK
        cursor.sent[kind] = {i for i in sent if i > floor}
        if kind == "open":
            cursor.opens = highest
        else:
            cursor.clicks = highest
    found.sort(key=lambda event: (event["at"] or "", event["type"], event["id"]))
    return found


async def stream(
    engine: Engine, cursor: Cursor | None, campaign: str | None, lifetime: float = LIFETIME
) -> AsyncIterator[bytes]:
    """The event stream: ``data:`` lines of JSON, one event per open or click, with the cursor as its id."""

    def read(work: Callable[[Connection], Any]) -> Awaitable[Any]:
        def run() -> Any:
            with engine.connect() as conn:
                return work(conn)

        return asyncio.to_thread(run)

    if cursor is None:
        cursor = await read(start)
    else:  # a browser reconnecting: what it saw is at or below its cursor
        resumed = cursor
        cursor = await read(lambda conn: prime(conn, resumed))
    yield f"retry: 1000\nid: {cursor}\n: live\n\n".encode()
    ends = time.monotonic() + lifetime
    while (left := ends - time.monotonic()) > 0:
        await asyncio.sleep(min(POLL, left))
        events = await read(lambda conn: poll(conn, cursor, campaign))
        if events:
            lines = [f"id: {cursor}\ndata: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events]
            yield "".join(lines).encode()
