"""The write side of the store: what the ingest writer commits for each batch of events."""

from __future__ import annotations

import functools
import itertools
import json
import operator
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, bindparam, case, insert, update
from sqlalchemy.dialects import postgresql

from deadpixel.events import HUMAN_KINDS, MACHINE_KINDS, OpenEvent
from deadpixel.store import chains, notices, outbox, rollups
from deadpixel.store.driver import ROWS_PER_STATEMENT, execute_many, insert_rows, run
from deadpixel.store.events import EVENT_KINDS, OPEN, EventKind
from deadpixel.store.schema import messages, opens


class Cap(Protocol):
    """What holds back a flood on one message (``deadpixel.track.cap.OpenCap``): the kept opens, and how many
    were held back per message id."""

    def split(self, events: Sequence[OpenEvent]) -> tuple[list[OpenEvent], dict[str, int]]: ...


class RowBuilder(Protocol):
    """Turns raw events into stored rows (see ``deadpixel.enrich.opens.OpenClassifier``)."""

    def rows(self, events: Sequence[OpenEvent], sent_at: dict[str, float]) -> list[dict[str, Any]]: ...


_insert_opens = insert(opens).values({column.key: bindparam(column.key) for column in opens.c})


def _earlier(column: Any, param: str) -> Any:
    return case(((column.is_(None)) | (column > bindparam(param)), bindparam(param)), else_=column)


def _later(column: Any, param: str) -> Any:
    return case(((column.is_(None)) | (column < bindparam(param)), bindparam(param)), else_=column)


def bump_counters_statement(kind: EventKind) -> Any:
    """One UPDATE per message per batch, not per event: a batch of 2,000 opens on 50 messages is 50 updates.
    A chained kind also moves the message's chain head (``last_open_id``)."""
    m = messages.c
    values = {
        kind.counter(): m[kind.counter()] + bindparam("n"),
        kind.counter("human"): m[kind.counter("human")] + bindparam("human"),
        kind.counter("machine"): m[kind.counter("machine")] + bindparam("machine"),
        kind.counter("self"): m[kind.counter("self")] + bindparam("own"),
        kind.first_at: _earlier(m[kind.first_at], "first"),
        kind.last_at: _later(m[kind.last_at], "last"),
    }
    if kind.chained:
        values["last_open_id"] = bindparam("head")
    return update(messages).where(m.id == bindparam("mid")).values(values)


BUMP_COUNTERS = {kind.name: bump_counters_statement(kind) for kind in EVENT_KINDS}
_bump_counters = BUMP_COUNTERS[OPEN.name]


def _kinds(kinds: frozenset[str]) -> str:
    return ", ".join(f"'{kind}'" for kind in sorted(kinds))


def postgres_batch_sql(kind: EventKind) -> str:
    """PostgreSQL: a batch of events of a kind and its messages' counters in one statement over one JSON
    document; for a chained kind (opens), each message's chain too.

    With ``executemany`` the server ran one INSERT per event and one UPDATE per message, each a round of the
    protocol, after a round trip for the new ids: a batch of 30 opens took about 12 ms in those steps, and
    after an outage the spool's replay was bound by them. Here the server unpacks the rows
    (``json_to_recordset``; one C-speed ``dumps`` in Python), takes their ids from the sequence, links each
    message's chain (the first new open points at ``last_open_id``, the rest at the one before them) and
    counts the counters from what it inserted. The messages' rows are locked already
    (``existing_messages(lock=True)``, in id order), so ``last_open_id`` cannot move under it and two
    servers cannot deadlock on the counters.
    """
    table, noun, chained = kind.table, kind.name, kind.chained
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    given = [column for column in table.c if column.name not in ("id", "prev_id")]
    names = ", ".join(column.name for column in given)
    typed = ", ".join(f"{column.name} {column.type.compile(dialect=dialect)}" for column in given)
    rows = f"json_to_recordset(%s::json) AS r({typed})"
    # Looked up once per statement: as a plain argument of nextval the catalog lookup ran for every row.
    sequence = f"(SELECT pg_get_serial_sequence('{table.name}', 'id')::regclass)"
    if chained:
        stored = (
            f"WITH batch AS (SELECT {names}, nextval({sequence}) AS id"
            f" FROM {rows}),"
            f" linked AS (SELECT b.id, {', '.join('b.' + column.name for column in given)},"
            " coalesce(lag(b.id) OVER (PARTITION BY b.message_id ORDER BY b.id), m.last_open_id) AS prev_id"
            " FROM batch AS b JOIN messages AS m ON m.id = b.message_id),"
            f" stored AS (INSERT INTO {table.name} (id, {names}, prev_id)"
            f" SELECT id, {names}, prev_id FROM linked RETURNING id, message_id, at, kind)"
        )
    else:
        stored = (
            f"WITH stored AS (INSERT INTO {table.name} ({names}) SELECT {names} FROM {rows}"
            " RETURNING id, message_id, at, kind)"
        )
    return (
        f"{stored}, counted AS ("
        " SELECT message_id, count(*) AS n,"
        f" count(*) FILTER (WHERE kind IN ({_kinds(HUMAN_KINDS)})) AS human,"
        f" count(*) FILTER (WHERE kind IN ({_kinds(MACHINE_KINDS)})) AS machine,"
        " count(*) FILTER (WHERE kind = 'self') AS own, min(at) AS first, max(at) AS last, max(id) AS head"
        " FROM stored GROUP BY message_id"
        f") UPDATE messages AS m SET {noun}_count = m.{noun}_count + c.n,"
        f" human_{noun}_count = m.human_{noun}_count + c.human,"
        f" machine_{noun}_count = m.machine_{noun}_count + c.machine,"
        f" self_{noun}_count = m.self_{noun}_count + c.own,"
        f" first_{noun}_at = least(m.first_{noun}_at, c.first),"
        f" last_{noun}_at = greatest(m.last_{noun}_at, c.last)"
        + (", last_open_id = c.head" if chained else "")
        + " FROM counted AS c WHERE m.id = c.message_id"
    )


# Built once per kind at import, never per batch.
STORE_POSTGRES = {kind.name: postgres_batch_sql(kind) for kind in EVENT_KINDS}
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
ENCODE_SLICE = 250  # rows per call of the C encoder


def encode_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one JSON array, encoded a slice at a time. A replay chunk holds thousands of rows: in one
    call the C encoder held the interpreter's lock for 10 ms or more while the pixel's requests waited;
    between slices, other threads get their turn."""
    if len(rows) <= ENCODE_SLICE:
        return _encode(rows)
    step = ENCODE_SLICE
    return "[" + ",".join(_encode(rows[at : at + step])[1:-1] for at in range(0, len(rows), step)) + "]"


class Known(NamedTuple):
    """What a batch needs to know of each message it stores events for."""

    sent_at: float | None  # the only clock timing trusts
    campaign_id: int  # 0 for a message without one
    status: str
    last_open_id: int | None  # where the message's chain of opens starts (see deadpixel.store.chains)
    notify: int = 0  # read notices wanted (deadpixel.store.notices): 0 none


def existing_messages(conn: Connection, message_ids: Iterable[str], lock: bool = False) -> dict[str, Known]:
    """Which of these messages still exist, and what a batch needs to know of them; with ``lock``, their
    rows stay locked to the end of the transaction on PostgreSQL (SQLite's writer holds the lock anyway).

    Plain SQL on the driver: built with SQLAlchemy, this one lookup per batch cost more than inserting it.
    """
    ids = sorted(set(message_ids))
    if conn.dialect.name == "postgresql":
        query = _SELECT_KNOWN_POSTGRES + (" ORDER BY m.id FOR UPDATE OF m" if lock else "")
        return {row[0]: Known._make(row[1:]) for row in run(conn, query, (ids,))}
    found: dict[str, Known] = {}
    for start in range(0, len(ids), 500):
        chunk = tuple(ids[start : start + 500])
        found.update((row[0], Known._make(row[1:])) for row in run(conn, _select_known(len(chunk)), chunk))
    return found


class KnownMessages:
    """SQLite's one writer remembers what it read and wrote of the messages it stores opens for, so a batch
    whose messages it has seen skips their lookup (2.7 of the writer's 22 µs per open, in batches of 24).

    What it remembers holds while nobody else writes: SQLite's ``data_version`` moves when another
    connection commits (a message sent or erased, another worker's opens, the replayer), and the newest open
    is the one this writer stored last unless its last batch was rolled back. When either has moved, it
    starts over from the store.
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._limit = limit
        self._known: dict[str, Known | None] = {}  # None: no such message (erased)
        self._seen: tuple[object, int, int] | None = None  # connection, data_version, newest open id

    def lookup(self, conn: Connection, message_ids: Iterable[str]) -> tuple[dict[str, Known], int]:
        """The batch's messages that exist, and the newest open's id, in the writer's transaction."""
        ((version, newest),) = run(conn, _VERSION_AND_NEWEST)
        newest = newest or 0
        seen = (conn.connection.dbapi_connection, version, newest)
        if seen != self._seen or len(self._known) > self._limit:
            self._known.clear()
        self._seen = seen
        wanted = set(message_ids)
        missing = [mid for mid in wanted if mid not in self._known]
        if missing:
            found = existing_messages(conn, missing)
            self._known.update((mid, found.get(mid)) for mid in missing)
        known = self._known
        return {mid: facts for mid in wanted if (facts := known[mid]) is not None}, newest

    def stored(self, heads: dict[str, int], newest: int) -> None:
        """After the batch's rows are inserted: each message's new newest open, and the batch's highest id."""
        known = self._known
        for mid, head in heads.items():
            sent_at, campaign_id, status, _, notify = known[mid]  # type: ignore[misc]  # stored: so it exists
            known[mid] = Known(sent_at, campaign_id, status, head, notify)  # a third of what _replace costs
        if self._seen is not None:
            self._seen = (self._seen[0], self._seen[1], newest)


_VERSION_AND_NEWEST = "SELECT (SELECT data_version FROM pragma_data_version()), (SELECT max(id) FROM opens)"


def send_times(known: dict[str, Known]) -> dict[str, float]:
    return {mid: facts.sent_at for mid, facts in known.items() if facts.sent_at is not None}


_SELECT_KNOWN = (
    "SELECT id, sent_at, coalesce(campaign_id, 0), status, last_open_id, notify FROM messages WHERE "
)
# A join on the unnested ids, not ``id = ANY(%s)``: the driver prepares a statement it runs often, and
# PostgreSQL's generic plan for ``= ANY`` of a parameter tests every row against every id (it hashes only
# a constant array). With 400 ids on 1,000 messages that took 10 ms where this takes 1.
_SELECT_KNOWN_POSTGRES = (
    "SELECT m.id, m.sent_at, coalesce(m.campaign_id, 0), m.status, m.last_open_id, m.notify"
    " FROM unnest(%s::text[]) AS wanted(id) JOIN messages AS m ON m.id = wanted.id"
)


@functools.lru_cache(maxsize=64)
def _select_known(count: int) -> str:
    return f"{_SELECT_KNOWN}id IN ({', '.join('?' * count)})"


def counter_updates(rows: Sequence[dict[str, Any]], kind: EventKind = OPEN) -> list[dict[str, Any]]:
    """Each message's counter update for a batch, in message id order (the order the batch locked them in);
    for a chained kind with the message's new chain head.

    A message's first row in the batch makes its whole entry at once: under load most batches hold one open
    per message, and stepping each counter of each row cost a microsecond per open."""
    chained = kind.chained
    per_message: dict[str, dict[str, Any]] = {}
    for row in rows:
        mid, at, kind_of = row["message_id"], row["at"], row.get("kind")
        entry = per_message.get(mid)
        if entry is None:
            entry = per_message[mid] = {
                "mid": mid, "n": 1, "human": int(kind_of in HUMAN_KINDS),
                "machine": int(kind_of in MACHINE_KINDS), "own": int(kind_of == "self"),
                "first": at, "last": at,
            }  # fmt: skip
            if chained:
                entry["head"] = row["id"]
            continue
        entry["n"] += 1
        entry["human"] += kind_of in HUMAN_KINDS
        entry["machine"] += kind_of in MACHINE_KINDS
        entry["own"] += kind_of == "self"
        if at < entry["first"]:
            entry["first"] = at
        if at > entry["last"]:
            entry["last"] = at
        if chained:
            entry["head"] = row["id"]  # rows come in id order: the last one is the newest
    return [per_message[mid] for mid in sorted(per_message)]


# SQLite 3.33 and later: a batch's counters in one UPDATE ... FROM a VALUES list, one step of the statement
# where ``executemany`` takes one per message (why that matters: ``driver.insert_rows``). Older SQLite does
# without UPDATE ... FROM and gets the ``executemany``.
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33)
_COUNTER_KEYS = ("mid", "n", "human", "machine", "own", "first", "last")  # VALUES' column1..column7
_CHAINED_KEYS = (*_COUNTER_KEYS, "head")  # and column8
_FIELDS = {kind.name: _CHAINED_KEYS if kind.chained else _COUNTER_KEYS for kind in EVENT_KINDS}
_COUNTER_VALUES = {name: operator.itemgetter(*keys) for name, keys in _FIELDS.items()}


def _update_from_values_head(kind: EventKind) -> str:
    """The part of the UPDATE ... FROM VALUES before its rows, per kind (built at import)."""
    first, last = kind.first_at, kind.last_at
    return (
        f"UPDATE messages SET {kind.counter()} = {kind.counter()} + v.column2,"
        f" {kind.counter('human')} = {kind.counter('human')} + v.column3,"
        f" {kind.counter('machine')} = {kind.counter('machine')} + v.column4,"
        f" {kind.counter('self')} = {kind.counter('self')} + v.column5,"
        f" {first} = CASE WHEN {first} IS NULL OR {first} > v.column6 THEN v.column6 ELSE {first} END,"
        f" {last} = CASE WHEN {last} IS NULL OR {last} < v.column7 THEN v.column7 ELSE {last} END"
        + (", last_open_id = v.column8" if kind.chained else "")
        + " FROM (VALUES "
    )


_UPDATE_FROM_VALUES = {kind.name: _update_from_values_head(kind) for kind in EVENT_KINDS}


@functools.lru_cache(maxsize=256)
def _bump_counters_from_values(name: str, count: int) -> str:
    row = "(" + ", ".join("?" * len(_FIELDS[name])) + ")"
    return f"{_UPDATE_FROM_VALUES[name]}{', '.join([row] * count)}) AS v WHERE messages.id = v.column1"


def bump_counters_on_sqlite(conn: Connection, updates: list[dict[str, Any]], kind: EventKind = OPEN) -> None:
    if not _UPDATE_FROM or len(updates) < 2:
        execute_many(conn, BUMP_COUNTERS[kind.name], updates)
        return
    values_of = _COUNTER_VALUES[kind.name]
    for start in range(0, len(updates), ROWS_PER_STATEMENT):
        chunk = updates[start : start + ROWS_PER_STATEMENT]
        values = list(itertools.chain.from_iterable(map(values_of, chunk)))
        run(conn, _bump_counters_from_values(kind.name, len(chunk)), values)


_count_capped = (
    update(messages)
    .where(messages.c.id == bindparam("mid"))
    .values(capped_open_count=messages.c.capped_open_count + bindparam("n"))
)


def write_opens(
    conn: Connection,
    events: Sequence[OpenEvent],
    builder: RowBuilder,
    cap: Cap | None = None,
    folds: rollups.WriterRollups | None = None,
    memory: KnownMessages | None = None,
) -> int:
    """Insert a batch of opens and bump the message counters, in the caller's transaction.

    Opens of messages erased meanwhile (``deadpixel forget``) are answered but not stored: a pixel still
    sitting in an inbox must not bring a forgotten person back. Returns how many were dropped that way.
    Opens over the ``cap`` are counted on their message instead of stored. With ``folds`` and ``memory``
    (SQLite's one writer), the batch is also counted into the charts' rollups (``rollups.WriterRollups``)
    and its messages are looked up in what the writer remembers (``KnownMessages``).
    """
    newest: int | None = None
    if memory is not None:
        known, newest = memory.lookup(conn, (e.message_id for e in events))
    else:
        known = existing_messages(conn, (e.message_id for e in events), lock=True)
    kept = [e for e in events if e.message_id in known]
    if cap is not None:
        kept, capped = cap.split(kept)
        if capped:
            execute_many(conn, _count_capped, [{"mid": mid, "n": capped[mid]} for mid in sorted(capped)])
    if kept:
        rows = builder.rows(kept, send_times(known))
        if conn.dialect.name == "postgresql":
            run(conn, STORE_POSTGRES[OPEN.name], (encode_rows(rows),))
        else:
            counted = folds.begin(conn) if folds is not None else False
            if newest is None:
                newest = chains.newest_open_id(conn)
            heads = chains.link(rows, known, newest)
            insert_rows(conn, _insert_opens, rows)
            if memory is not None:
                memory.stored(heads, newest + len(rows))
            bump_counters_on_sqlite(conn, counter_updates(rows))
            if folds is not None and counted:
                folds.count(conn, rows, known)
        outbox.enqueue(conn, OPEN.name, rows)  # webhook deliveries, in this same transaction
        flagged = notify_modes(known)
        if flagged:  # read notices: the first human open of a message that asked for one
            notices.record_reads(conn, rows, flagged)
    return len(events) - len(kept)


def notify_modes(known: dict[str, Known]) -> dict[str, int]:
    """The batch's messages that want read notices, and how (most batches: none)."""
    return {mid: facts.notify for mid, facts in known.items() if facts.notify}
