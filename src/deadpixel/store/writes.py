"""The write side of the store: what the ingest writer commits for each batch of events."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Dialect, bindparam, case, insert, update
from sqlalchemy.sql.compiler import SQLCompiler

from deadpixel.events import OpenEvent
from deadpixel.store import outbox
from deadpixel.store.schema import messages, opens

if TYPE_CHECKING:
    from deadpixel.track.cap import OpenCap

HUMAN_KINDS = frozenset({"human", "proxy"})
MACHINE_KINDS = frozenset({"prefetch", "scanner"})


class RowBuilder(Protocol):
    """Turns raw events into stored rows (see ``deadpixel.enrich.opens.OpenClassifier``)."""

    def rows(self, events: Sequence[OpenEvent], sent_at: dict[str, float]) -> list[dict[str, Any]]: ...


_insert_opens = insert(opens)
RowValues = Callable[[dict[str, Any]], tuple[Any, ...]]


def _earlier(column: Any, param: str) -> Any:
    return case(((column.is_(None)) | (column > bindparam(param)), bindparam(param)), else_=column)


def _later(column: Any, param: str) -> Any:
    return case(((column.is_(None)) | (column < bindparam(param)), bindparam(param)), else_=column)


# One UPDATE per message per batch, not per event: a batch of 2,000 opens on 50 messages is 50 updates.
_bump_counters = (
    update(messages)
    .where(messages.c.id == bindparam("mid"))
    .values(
        open_count=messages.c.open_count + bindparam("n"),
        human_open_count=messages.c.human_open_count + bindparam("human"),
        machine_open_count=messages.c.machine_open_count + bindparam("machine"),
        self_open_count=messages.c.self_open_count + bindparam("own"),
        first_open_at=_earlier(messages.c.first_open_at, "first"),
        last_open_at=_later(messages.c.last_open_at, "last"),
    )
)


def existing_messages(conn: Connection, message_ids: Iterable[str]) -> dict[str, float | None]:
    """Which of these messages still exist, with their send time when known (the only clock timing trusts).

    Plain SQL on the driver: built with SQLAlchemy, this one lookup per batch cost more than inserting it.
    """
    ids = sorted(set(message_ids))
    if conn.dialect.name == "postgresql":
        result = conn.exec_driver_sql("SELECT id, sent_at FROM messages WHERE id = ANY(%s)", (ids,))
        return dict(result.all())
    found: dict[str, float | None] = {}
    for start in range(0, len(ids), 500):
        chunk = tuple(ids[start : start + 500])
        found.update(conn.exec_driver_sql(_select_sent_at(len(chunk)), chunk).all())
    return found


@functools.lru_cache(maxsize=64)
def _select_sent_at(count: int) -> str:
    return f"SELECT id, sent_at FROM messages WHERE id IN ({', '.join('?' * count)})"


def counter_updates(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    per_message: dict[str, dict[str, Any]] = {}
    for row in rows:
        at, kind = row["at"], row.get("kind")
        entry = per_message.get(row["message_id"])
        if entry is None:
            entry = per_message[row["message_id"]] = {
                "mid": row["message_id"], "n": 0, "human": 0, "machine": 0, "own": 0, "first": at, "last": at,
            }  # fmt: skip
        entry["n"] += 1
        entry["human"] += kind in HUMAN_KINDS
        entry["machine"] += kind in MACHINE_KINDS
        entry["own"] += kind == "self"
        entry["first"] = min(entry["first"], at)
        entry["last"] = max(entry["last"], at)
    # In id order, so that writers on several servers lock rows in the same order and cannot deadlock.
    return [per_message[mid] for mid in sorted(per_message)]


_count_capped = (
    update(messages)
    .where(messages.c.id == bindparam("mid"))
    .values(capped_open_count=messages.c.capped_open_count + bindparam("n"))
)


def write_opens(
    conn: Connection, events: Sequence[OpenEvent], builder: RowBuilder, cap: OpenCap | None = None
) -> int:
    """Insert a batch of opens and bump the message counters, in the caller's transaction.

    Opens of messages erased meanwhile (``deadpixel forget``) are answered but not stored: a pixel still
    sitting in an inbox must not bring a forgotten person back. Returns how many were dropped that way.
    Opens over the ``cap`` are counted on their message instead of stored.
    """
    known = existing_messages(conn, (e.message_id for e in events))
    kept = [e for e in events if e.message_id in known]
    if cap is not None:
        kept, capped = cap.split(kept)
        if capped:
            execute_many(conn, _count_capped, [{"mid": mid, "n": capped[mid]} for mid in sorted(capped)])
    if kept:
        sent_at = {mid: sent for mid, sent in known.items() if sent is not None}
        rows = builder.rows(kept, sent_at)
        execute_many(conn, _insert_opens, rows)
        execute_many(conn, _bump_counters, counter_updates(rows))
        outbox.enqueue(conn, "open", rows)  # webhook deliveries, in this same transaction
    return len(events) - len(kept)


def execute_many(conn: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """``executemany`` straight on the driver with a statement compiled once per dialect.

    SQLAlchemy's own executemany processes every row in Python (about 10 µs each); these rows are already
    plain values, so the driver gets them as they are.
    """
    compiled, values = _compiled(statement, conn.dialect)
    if values is not None:
        conn.exec_driver_sql(compiled.string, list(map(values, rows)))
    else:
        conn.exec_driver_sql(compiled.string, list(rows))


@functools.cache
def _compiled(statement: Any, dialect: Dialect) -> tuple[SQLCompiler, RowValues | None]:
    """The statement's SQL for this dialect and, for positional drivers, a C-speed row-to-tuple getter."""
    keys = list(statement.table.c.keys()) if statement.is_insert else None
    if keys is not None:
        keys = [key for key in keys if key != "id"]
    compiled: SQLCompiler = statement.compile(dialect=dialect, column_keys=keys)
    if not compiled.positional:
        return compiled, None
    order = compiled.positiontup or ()
    getter = operator.itemgetter(*order)
    values = getter if len(order) > 1 else lambda row: (getter(row),)
    return compiled, values
