"""CSV exports of opens, clicks and per-recipient status, streamed (``deadpixel export``, API, dashboard).

Rows come from the database through a streaming cursor (a server-side cursor on PostgreSQL) a few hundred at
a time and leave as CSV text as they come, so an export of millions of opens needs the memory of one chunk.
Quoting is the ``csv`` module's (RFC 4180: fields with commas, quotes or line breaks are quoted, quotes
doubled; lines end in CRLF). A text cell that a spreadsheet would run as a formula (one starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading apostrophe, so opening an export
cannot run anything an attacker put into a user agent, a subject or a link.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, Engine, Select, case, select

from deadpixel.reports.analytics import UnknownCampaign, iso
from deadpixel.store.events import CLICK, OPEN, EventKind
from deadpixel.store.messages import campaign_id
from deadpixel.store.schema import campaigns, messages

KINDS = ("opens", "clicks", "recipients")
CHUNK = 500  # rows fetched, and CSV text sent, at a time
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
TIME_COLUMNS = frozenset(
    {"at", "created_at", "sent_at", "first_open_at", "last_open_at", "first_click_at", "last_click_at"}
)


def cell(value: Any) -> Any:
    """One CSV cell: text that a spreadsheet could take for a formula gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


MESSAGE_COLUMNS = (campaigns.c.name.label("campaign"), messages.c.recipient, messages.c.subject)
EVENT_FACTS = ("kind", "reason", "client", "device", "os", "country")
RAW_FACTS = ("network_owner", "ip", "user_agent", "method")
# What an export adds to each kind's rows after the message: a click the link and where it led, an open
# the places the click export leaves out.
_FIRST = {OPEN.name: (), CLICK.name: ("link", "url")}
_PLACES = {OPEN.name: ("region", "city"), CLICK.name: ()}


def _events(kind: EventKind) -> Select[Any]:
    c = kind.table.c
    names = (*_FIRST[kind.name], *EVENT_FACTS, *_PLACES[kind.name], *RAW_FACTS)
    return (
        select(c.id, c.at, c.message_id, *MESSAGE_COLUMNS, *(kind.column(name) for name in names))
        .select_from(kind.with_message())
        .order_by(c.at, c.id)
    )


def _recipients() -> Select[Any]:
    """One row per message, with the status the campaign page shows: clicked (a human click), opened (a
    human or proxy open), machine only (opened only by prefetches or scanners), not opened."""
    m = messages.c
    status = case(
        (m.human_click_count > 0, "clicked"),
        (m.human_open_count > 0, "opened"),
        (m.open_count - m.self_open_count > 0, "machine only"),
        else_="not opened",
    )
    counts = {
        "opens": m.open_count,
        "human_opens": m.human_open_count,
        "machine_opens": m.machine_open_count,
        "own_opens": m.self_open_count,
        "clicks": m.click_count,
        "human_clicks": m.human_click_count,
    }
    return (
        select(
            m.id.label("message_id"),
            *MESSAGE_COLUMNS,
            status.label("status"),
            m.status.label("delivery"),
            m.sent_at,
            m.first_open_at,
            m.last_open_at,
            *(column.label(name) for name, column in counts.items()),
            m.first_click_at,
            m.last_click_at,
        )
        .select_from(messages.outerjoin(campaigns, campaigns.c.id == m.campaign_id))
        .order_by(m.created_at, m.id)
    )


QUERIES: dict[str, Callable[[], Select[Any]]] = {
    "opens": functools.partial(_events, OPEN),
    "clicks": functools.partial(_events, CLICK),
    "recipients": _recipients,
}


def query(conn: Connection, kind: str, campaign: str | None = None) -> Select[Any]:
    """The export's query; raises UnknownCampaign before anything is sent, so callers can answer 404."""
    found = QUERIES[kind]()
    if campaign is not None:
        wanted = campaign_id(conn, campaign)
        if wanted is None:
            raise UnknownCampaign(campaign)
        found = found.where(messages.c.campaign_id == wanted)
    return found


def stream(engine: Engine, kind: str, campaign: str | None = None) -> Iterator[bytes]:
    """The CSV as UTF-8 chunks: a header line, then CHUNK rows at a time. Check the campaign with ``query``
    first: this generator reads from a connection of its own, held until it is exhausted or closed."""
    with engine.connect() as conn:
        statement = query(conn, kind, campaign)
        result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(statement)
        columns = list(result.keys())
        times = [i for i, name in enumerate(columns) if name in TIME_COLUMNS]
        buffer = io.StringIO()
        out = csv.writer(buffer)
        out.writerow(columns)
        for rows in result.partitions():
            for row in rows:
                values = list(row)
                for i in times:
                    values[i] = iso(values[i])
                out.writerow([cell(v) for v in values])
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
        if buffer.tell():  # only the header: nothing matched
            yield buffer.getvalue().encode("utf-8")
