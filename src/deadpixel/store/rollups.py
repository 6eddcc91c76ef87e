"""Rollups of opens for the charts, folded in from the opens by id.

A chart of a campaign with 100,000 opens would otherwise scan all of them, once per chart. Whoever reads the
charts first (or a background task) folds the opens committed since the last fold into two small tables (on
SQLite, each batch of opens folds itself as it is stored: ``Inline``): opens per campaign and UTC quarter
hour (``open_slots``, enough for any time zone's hours, since every zone's offset is a whole number of quarter
hours) and opens per campaign and value of each breakdown (``open_values``).

Which opens are folded is tracked by id, not by time, so a spool replay that stores old opens late is
folded like any new open (into the quarter hour it happened in). On PostgreSQL, ids are taken when a row is
inserted but become visible when its transaction commits, and several writers commit in any order: an id
below the newest one seen may still appear. Each fold therefore notes the ids it skipped over in
``rollup_gaps`` and looks for them again on every later fold, until they appear (and are folded) or are
older than ``GAP_HORIZON``, far longer than any writer's transaction lasts (its statements time out after
the commit deadline). SQLite has one writer at a time and folds while holding the write lock, so nothing
is in flight there and no gaps are noted. Folds are serialised by a row lock on ``rollup_state`` (on
SQLite, by the write lock) and run in short transactions of at most ``CHUNK`` opens, so the pixel's writer
never waits long for them.

On SQLite, when the rollups are behind (after ``reclassify`` or an upgrade), a server folds from its pixel
writer's own thread, between two batches (``WriterFold``): a fold in another thread would hold the one write
lock while batches of opens wait behind it, and under steady load that is most of the pixel's slow answers.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from deadpixel.events import HUMAN_KINDS, MACHINE_KINDS
from deadpixel.store import chains
from deadpixel.store.driver import execute_many, run
from deadpixel.store.schema import (
    first_human_opens,
    messages,
    open_slots,
    open_values,
    opens,
    rollup_gaps,
    rollup_state,
)

if TYPE_CHECKING:
    from deadpixel.store.writes import Known

log = logging.getLogger(__name__)
SLOT = 900  # seconds in a quarter hour
FIELDS = ("kind", "client", "device", "os", "country")
CHUNK = 2_000  # opens per fold transaction: on SQLite the pixel's writer waits for it, so keep it short
GAP_HORIZON = 3600.0
STATE = "opens"
_IN_CHUNK = 500

_columns = (
    opens.c.id,
    func.coalesce(messages.c.campaign_id, 0),
    opens.c.at,
    *(opens.c[field] for field in FIELDS),
    opens.c.message_id,
    messages.c.sent_at,
    messages.c.status,
)
_source = opens.outerjoin(messages, messages.c.id == opens.c.message_id)


def pending(conn: Connection) -> bool:
    """Whether a fold has anything to do: a few index lookups, cheap enough before every read."""
    watermark = conn.execute(select(rollup_state.c.watermark).where(rollup_state.c.name == STATE)).scalar()
    newest = conn.execute(select(func.max(opens.c.id))).scalar()
    if newest is not None and newest > (watermark or 0):
        return True
    appeared = select(opens.c.id).where(opens.c.id == rollup_gaps.c.id).exists()
    gap = select(rollup_gaps.c.id).where(appeared | (rollup_gaps.c.noted_at < time.time() - GAP_HORIZON))
    return conn.execute(gap.limit(1)).first() is not None


def catch_up(writer: Engine, reader: Engine | None = None, chunk: int = CHUNK, rest: float = 0.0) -> int:
    """Fold every open committed so far, a chunk per transaction; returns how many were folded.

    ``writer`` must take SQLite's write lock when its transaction begins (``create_engine(writer=True)``).
    With ``rest``, each chunk is followed by a pause of ``rest`` times as long as it took: a fold in the
    background of a serving process shares the interpreter with the pixel, and a backlog folded in one go
    (after a database outage, say) held the pixel's answers up by over 100 ms.
    """
    with (reader or writer).connect() as conn:
        if not pending(conn):
            return 0
    folded = 0
    while True:
        started = time.perf_counter()
        with writer.begin() as conn:
            n, more = fold(conn, chunk)
        folded += n
        if not more:
            return folded
        if rest:
            time.sleep((time.perf_counter() - started) * rest)


def refresh(writer: Engine, reader: Engine) -> None:
    """``catch_up`` before a page or an API answer: when the database is too busy to fold now (a lock held
    past its timeout), the answer shows the rollups as they are, at most a few seconds behind, rather than
    failing."""
    try:
        catch_up(writer, reader)
    except OperationalError:
        log.warning("rollups: could not fold new opens now; showing them as of the last fold", exc_info=True)


class WriterFold:
    """Folds a little at a time from the pixel writer's SQLite connection, once a batch's requests are
    answered.

    Each fold is sized to about ``budget`` seconds (the cost per open is learnt as it goes), so the batch
    after it waits at most that much longer; while more opens wait, the next batch is followed by the next
    fold, else folding rests for ``interval`` seconds.
    """

    def __init__(self, budget: float = 0.005, interval: float = 1.0) -> None:
        self._budget = budget
        self._interval = interval
        self._cost = 2e-5  # seconds per folded open
        self._due = 0.0
        self.folded = 0

    def __call__(self, conn: Connection) -> None:
        now = time.monotonic()
        if now < self._due:
            return
        driver = conn.connection.driver_connection
        # On the driver: a SQLAlchemy statement here would begin a transaction the writer never ends.
        watermark, newest = driver.execute(_CAUGHT_UP).fetchone()  # type: ignore[union-attr]
        if (newest or 0) <= watermark:  # the usual case: the batches fold themselves (``Inline``)
            self._due = now + self._interval
            return
        started = time.perf_counter()
        # Rollups can always be folded again from the opens, so their commit need not wait for the disk:
        # the next batch's fsync makes it durable (a crash before that only loses this fold, watermark too).
        driver.execute("PRAGMA synchronous=NORMAL")  # type: ignore[union-attr]
        try:
            with conn.begin():
                count, more = fold(conn, chunk=max(50, int(self._budget / self._cost)))
        finally:
            driver.execute("PRAGMA synchronous=FULL")  # type: ignore[union-attr]
        if count:
            self._cost = (self._cost + (time.perf_counter() - started) / count) / 2
            self.folded += count
        self._due = now if more else now + self._interval


class Inline:
    """Folds a batch of opens into the rollups in the transaction that stores it: SQLite only.

    SQLite has one writer, so a batch's opens take the ids just above every id stored before it. When the
    rollups were caught up as the batch began (no open above the watermark), the batch is folded from the
    rows in hand and the watermark moves past it: nothing is read back, and the cost comes a little with
    every batch instead of in bursts that hold up the batches behind them. When they were not caught up
    (after `reclassify`, or an upgrade), the batch is left to the ordinary fold, which goes in id order.
    """

    __slots__ = ()

    @classmethod
    def begin(cls, conn: Connection) -> Inline | None:
        """Call before inserting the batch, holding the write lock."""
        ((watermark, newest),) = run(conn, _CAUGHT_UP)
        return cls() if (newest or 0) <= watermark else None

    def fold(self, conn: Connection, rows: Sequence[dict[str, Any]], known: Mapping[str, Known]) -> None:
        """Call after inserting ``rows``, in the same transaction."""
        folded = []
        for row in rows:
            facts = known[row["message_id"]]
            folded.append(
                (None, facts.campaign_id, row["at"], row["kind"], row["client"], row["device"], row["os"],
                 row["country"], row["message_id"], facts.sent_at, facts.status)
            )  # fmt: skip
        _add(conn, folded, sign=1)
        run(conn, _PAST_BATCH, (time.time(),))


_CAUGHT_UP = f"SELECT watermark, (SELECT max(id) FROM opens) FROM rollup_state WHERE name = '{STATE}'"
_PAST_BATCH = (
    "UPDATE rollup_state SET watermark = max(watermark, (SELECT max(id) FROM opens)), updated_at = ? "
    f"WHERE name = '{STATE}'"
)


def fold(conn: Connection, chunk: int = CHUNK, now: float | None = None) -> tuple[int, bool]:
    """One chunk of new opens (and of late ones found in the gaps) into the rollups, in the caller's
    transaction. Returns how many were folded and whether more are waiting."""
    now = time.time() if now is None else now
    state = select(rollup_state.c.watermark).where(rollup_state.c.name == STATE).with_for_update()
    watermark = int(conn.execute(state).scalar_one())
    found = _late_arrivals(conn, now)
    fresh = conn.execute(
        select(*_columns).select_from(_source).where(opens.c.id > watermark).order_by(opens.c.id).limit(chunk)
    ).all()
    if fresh and conn.dialect.name != "sqlite":
        _note_gaps(conn, watermark, [row[0] for row in fresh], now)
    _add(conn, [*found, *fresh], sign=1)
    if fresh:
        conn.execute(
            update(rollup_state)
            .where(rollup_state.c.name == STATE)
            .values(watermark=fresh[-1][0], updated_at=now)
        )
    return len(found) + len(fresh), len(fresh) == chunk


def delete_opens(conn: Connection, message_ids: Sequence[str]) -> int:
    """Delete these messages' opens and take the folded ones out of the rollups; returns how many.

    SQLite hands out the highest id again once its row is gone, so the watermark comes down to the highest
    id left: an open stored later under a reused id is still folded.
    """
    watermark = int(
        conn.execute(
            select(rollup_state.c.watermark).where(rollup_state.c.name == STATE).with_for_update()
        ).scalar_one()
    )
    chain = select(chains.open_ids(message_ids).c.id)
    gone = conn.execute(
        select(*_columns)
        .select_from(_source)
        .where(
            opens.c.id.in_(chain),
            opens.c.id <= watermark,
            opens.c.id.not_in(select(rollup_gaps.c.id)),
        )
    ).all()
    _add(conn, gone, sign=-1)
    conn.execute(delete(first_human_opens).where(first_human_opens.c.message_id.in_(message_ids)))
    # By id, a chunk at a time: SQLite counts no rows for a DELETE that starts with WITH.
    chained = list(conn.execute(chain).scalars())
    for start in range(0, len(chained), _IN_CHUNK):
        conn.execute(delete(opens).where(opens.c.id.in_(chained[start : start + _IN_CHUNK])))
    conn.execute(update(messages).where(messages.c.id.in_(message_ids)).values(last_open_id=None))
    highest = conn.execute(select(func.max(opens.c.id))).scalar() or 0
    if highest < watermark:
        conn.execute(update(rollup_state).where(rollup_state.c.name == STATE).values(watermark=highest))
    return len(chained)


def reset(conn: Connection) -> None:
    """Forget every rollup, so the next fold rebuilds them from the events (after `reclassify`)."""
    conn.execute(delete(open_slots))
    conn.execute(delete(open_values))
    conn.execute(delete(first_human_opens))
    conn.execute(delete(rollup_gaps))
    conn.execute(update(rollup_state).where(rollup_state.c.name == STATE).values(watermark=0))


def _late_arrivals(conn: Connection, now: float) -> Sequence[Any]:
    """Opens whose ids were skipped by an earlier fold and have committed since; expired gaps are dropped.

    One join, however many gaps there are (a rolled-back batch leaves as many as it had opens); only the
    ids found are crossed off, so an open committing meanwhile is found by the next fold. Without gaps (always
    on SQLite) it asks nothing more: the join could otherwise walk the whole opens table on every fold.
    """
    if conn.dialect.name == "sqlite" or conn.execute(select(rollup_gaps.c.id).limit(1)).first() is None:
        return []
    found = conn.execute(
        select(*_columns).select_from(_source.join(rollup_gaps, rollup_gaps.c.id == opens.c.id))
    ).all()
    seen = [row[0] for row in found]
    for start in range(0, len(seen), _IN_CHUNK):
        conn.execute(delete(rollup_gaps).where(rollup_gaps.c.id.in_(seen[start : start + _IN_CHUNK])))
    conn.execute(delete(rollup_gaps).where(rollup_gaps.c.noted_at < now - GAP_HORIZON))
    return found


def _note_gaps(conn: Connection, watermark: int, ids: Iterable[int], now: float) -> None:
    missing: list[int] = []
    expected = watermark + 1
    for event_id in ids:
        missing.extend(range(expected, event_id))
        expected = event_id + 1
    if missing:
        conn.execute(rollup_gaps.insert(), [{"id": gap, "noted_at": now} for gap in missing])


def _add(conn: Connection, rows: Sequence[Any], sign: int) -> None:
    """Add (or with ``sign=-1`` take away) these opens' counts, one upsert per touched rollup row; a human
    open may also be its message's first (taking opens away leaves that to the caller)."""
    if not rows:
        return
    slots: Counter[tuple[int, int, str]] = Counter()
    values: Counter[tuple[int, str, str]] = Counter()
    firsts: dict[str, dict[str, Any]] = {}
    for _, campaign_id, at, kind, client, device, os, country, message_id, sent_at, status in rows:
        group = "human" if kind in HUMAN_KINDS else "machine" if kind in MACHINE_KINDS else "other"
        slots[campaign_id, int(at // SLOT), group] += sign
        # One line per field of FIELDS: on SQLite this runs for every open as it is stored.
        values[campaign_id, "kind", kind or ""] += sign
        values[campaign_id, "client", client or ""] += sign
        values[campaign_id, "device", device or ""] += sign
        values[campaign_id, "os", os or ""] += sign
        values[campaign_id, "country", country or ""] += sign
        if sign > 0 and group == "human" and sent_at is not None and status == "sent":
            wait = at - sent_at
            if message_id not in firsts or wait < firsts[message_id]["wait"]:
                firsts[message_id] = {"message_id": message_id, "campaign_id": campaign_id, "wait": wait}
    per_slot: dict[tuple[int, int], dict[str, Any]] = {}
    for (campaign_id, slot, group), n in slots.items():
        entry = per_slot.get((campaign_id, slot))
        if entry is None:
            entry = {"campaign_id": campaign_id, "slot": slot, "opens": 0, "human": 0, "machine": 0}
            per_slot[campaign_id, slot] = entry
        entry["opens"] += n
        if group != "other":
            entry[group] += n
    _upsert(conn, open_slots, ("campaign_id", "slot"), ("opens", "human", "machine"), list(per_slot.values()))
    _upsert(
        conn,
        open_values,
        ("campaign_id", "field", "value"),
        ("opens",),
        [{"campaign_id": c, "field": f, "value": v, "opens": n} for (c, f, v), n in values.items()],
    )
    if firsts:
        _upsert_earliest(conn, list(firsts.values()))


def _upsert_earliest(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Each message's first human open: the earlier of the one stored and this fold's."""
    if conn.dialect.name == "postgresql":  # one lock order for concurrent folds (SQLite has one writer)
        rows.sort(key=lambda row: row["message_id"])
    execute_many(conn, _earliest_statement(conn.dialect.name), rows)


def _upsert(
    conn: Connection, table: Any, keys: tuple[str, ...], counts: tuple[str, ...], rows: list[dict[str, Any]]
) -> None:
    if conn.dialect.name == "postgresql":  # one lock order for concurrent folds (SQLite has one writer)
        rows.sort(key=lambda row: tuple(row[k] for k in keys))
    execute_many(conn, _adding_statement(conn.dialect.name, table, keys, counts), rows)


@functools.cache
def _earliest_statement(dialect: str) -> Any:
    """Keep the earlier wait. Only an earlier one writes: a later open of a message (nearly every one) leaves
    the row, its page and its index entry as they are, where ``SET wait = min(...)`` rewrote them all."""
    t = first_human_opens
    statement: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(t)
    statement = statement.values(
        message_id=bindparam("message_id"), campaign_id=bindparam("campaign_id"), wait=bindparam("wait")
    )
    return statement.on_conflict_do_update(
        index_elements=["message_id"],
        set_={"wait": statement.excluded.wait},
        where=statement.excluded.wait < t.c.wait,
    )


@functools.cache
def _adding_statement(dialect: str, table: Any, keys: tuple[str, ...], counts: tuple[str, ...]) -> Any:
    """An upsert that adds ``counts`` to the row at ``keys``; built once, so its compiled SQL is reused."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = dialect_insert(table).values({name: bindparam(name) for name in (*keys, *counts)})
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: table.c[name] + statement.excluded[name] for name in counts}
    )
