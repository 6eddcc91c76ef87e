"""Rollups of opens for the charts, folded in from the opens by id.

A chart of a campaign with 100,000 opens would otherwise scan all of them, once per chart. Whoever reads the
charts first (or a background task) folds the opens committed since the last fold into two small tables (on
SQLite, the pixel's writer counts the opens it stores itself: ``WriterRollups``): opens per campaign and UTC
quarter hour (``open_slots``, enough for any time zone's hours, since every zone's offset is a whole number of
quarter hours) and opens per campaign and value of each breakdown (``open_values``).

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
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update
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


class WriterRollups:
    """SQLite: the pixel writer keeps the rollups current itself, from the rows it stores.

    Each batch's opens are counted from the rows in hand as they are stored: nothing is read back. Under
    load the counts are held back and written, with the watermark past them, once ``hold_up_to`` opens are
    counted or ``interval`` seconds after the first, in a batch's transaction (or, when no batch comes,
    between batches): one upsert per touched rollup row per second or so instead of per batch. With
    enrichment on, a batch of 23 opens touched about 60 rollup rows, and those upserts were half of what
    enrichment added to the writer's cost per open. A batch smaller than ``hold_from`` that comes more than
    ``busy_gap`` seconds after the one before says the writer keeps up easily, and its counts are written at
    once, so a lightly used server's charts are never behind. Small batches close together are load too: an
    open-loop stream of a few thousand opens a second comes in batches of five to ten, one every few
    milliseconds, and writing the rollups with each of them cost as much as inserting the opens. Held-back
    opens are simply above the watermark, as after a crash: any fold reads them from the opens.

    Whoever else changes the rollups meanwhile (a page view that folds, `forget`, `reclassify`, another
    worker's writer) stamps ``rollup_state``; counts taken before that stamp are dropped, since the opens
    they came from are still there to be folded. A writer whose counts were dropped writes them with every
    batch for a while (``FOLDED_UNDER``): two writers that each held counts back would keep dropping each
    other's, and a page that folded once is likely to ask again.

    When the rollups are behind (after `reclassify`, or an upgrade), batches are left to the ordinary fold,
    which ``catch_up`` runs from the writer's thread once a batch's requests are answered. Each such fold
    is sized to about ``budget`` seconds (the cost per open is learnt as it goes), so the batch after it waits
    at most that much longer; while more opens wait, the next batch is followed by the next fold, else
    folding rests for ``rest`` seconds. A fold from another thread would hold the one write lock while
    batches of opens wait behind it: under steady load, most of the pixel's slow answers.
    """

    FOLDED_UNDER = 10.0  # seconds of writing counts with every batch after some were dropped

    def __init__(
        self,
        hold_from: int = 8,
        busy_gap: float = 0.01,
        hold_up_to: int = 1000,
        interval: float = 1.0,
        budget: float = 0.005,
        rest: float = 1.0,
    ) -> None:
        self._hold_from = hold_from
        self._busy_gap = busy_gap
        self._last_counted = -math.inf  # when the batch before was counted
        self._hold_up_to = hold_up_to
        self._interval = interval
        self._budget = budget
        self._rest = rest
        self._tally = Tally()
        self._held = 0  # opens counted in _tally
        self._counting = False  # whether the opens from _base up to _top are all in _tally
        self._base = self._top = 0
        self._stamp = 0.0  # rollup_state.updated_at as this writer last saw or wrote it
        self._since = 0.0  # when the first open in _tally was counted
        self._eager_until = 0.0
        self._cost = 2e-5  # seconds per open folded by catch_up
        self._due = 0.0
        self.folded = 0  # opens folded by catch_up

    def begin(self, conn: Connection) -> bool:
        """Before a batch is inserted, holding the write lock: whether its rows can be counted in hand."""
        ((watermark, newest, stamp),) = run(conn, _STATE)
        newest = newest or 0
        if self._counting and (watermark, stamp, newest) == (self._base, self._stamp, self._top):
            return True
        if self._counting and self._held:
            self._eager_until = time.monotonic() + self.FOLDED_UNDER
        self._tally, self._held = Tally(), 0
        self._counting = newest <= watermark
        self._base = self._top = watermark
        self._stamp = stamp
        return self._counting

    def count(self, conn: Connection, rows: Sequence[dict[str, Any]], known: Mapping[str, Known]) -> None:
        """After ``begin`` said yes and the batch's rows are inserted, in the same transaction."""
        self._tally.add_stored(rows, known)
        self._top = max(self._top, max(row["id"] for row in rows))
        now = time.monotonic()
        busy = len(rows) >= self._hold_from or now - self._last_counted < self._busy_gap
        self._last_counted = now
        if not self._held:
            self._since = now
        self._held += len(rows)
        hold = (
            busy
            and self._held < self._hold_up_to
            and now < self._since + self._interval
            and now >= self._eager_until
        )
        if not hold:
            self._write(conn)

    def _write(self, conn: Connection) -> None:
        self._tally.write(conn)
        self._stamp = _new_stamp(self._stamp)
        run(conn, _MOVE_WATERMARK, (self._top, self._stamp))
        self._tally, self._held = Tally(), 0
        self._base = self._top

    def catch_up(self, conn: Connection) -> None:
        """Between batches, once their requests are answered: write counts held back too long (no batch came
        to write them), or fold a little when the rollups are behind."""
        now = time.monotonic()
        driver = conn.connection.driver_connection
        if self._held and now >= self._since + self._interval:
            with _unsynced(driver), conn.begin():
                if self.begin(conn) and self._held:  # else another fold took them meanwhile
                    self._write(conn)
        if now < self._due:
            return
        # On the driver: a SQLAlchemy statement here would begin a transaction the writer never ends.
        watermark, newest, stamp = driver.execute(_STATE).fetchone()  # type: ignore[union-attr]
        newest = newest or 0
        counted = self._counting and (watermark, stamp, newest) == (self._base, self._stamp, self._top)
        if newest <= watermark or counted:  # the usual case: the batches count themselves
            self._due = now + self._rest
            return
        started = time.perf_counter()
        with _unsynced(driver), conn.begin():
            count, more = fold(conn, chunk=max(50, int(self._budget / self._cost)))
        if count:
            self._cost = (self._cost + (time.perf_counter() - started) / count) / 2
            self.folded += count
        self._due = now if more else now + self._rest


@contextlib.contextmanager
def _unsynced(driver: Any) -> Iterator[None]:
    """Rollups can always be folded again from the opens, so their commit need not wait for the disk: the
    next batch's fsync makes it durable (a crash before that only loses this fold, watermark too)."""
    driver.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        driver.execute("PRAGMA synchronous=FULL")


_STATE = f"SELECT watermark, (SELECT max(id) FROM opens), updated_at FROM rollup_state WHERE name = '{STATE}'"
_MOVE_WATERMARK = f"UPDATE rollup_state SET watermark = ?, updated_at = ? WHERE name = '{STATE}'"


def _new_stamp(previous: float) -> float:
    """A time for ``rollup_state.updated_at`` that differs from the one before, however coarse the clock."""
    now = time.time()
    return now if now != previous else math.nextafter(now, math.inf)


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
    # Stamped even when the watermark stays: a writer's counts held back may include opens just deleted.
    conn.execute(
        update(rollup_state)
        .where(rollup_state.c.name == STATE)
        .values(watermark=min(watermark, highest), updated_at=time.time())
    )
    return len(chained)


def reset(conn: Connection) -> None:
    """Forget every rollup, so the next fold rebuilds them from the events (after `reclassify`)."""
    conn.execute(delete(open_slots))
    conn.execute(delete(open_values))
    conn.execute(delete(first_human_opens))
    conn.execute(delete(rollup_gaps))
    conn.execute(
        update(rollup_state).where(rollup_state.c.name == STATE).values(watermark=0, updated_at=time.time())
    )


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
    """Add (or with ``sign=-1`` take away) these opens' counts; taking opens away leaves their messages'
    first human opens to the caller."""
    tally = Tally()
    tally.add(rows, sign)
    tally.write(conn)


class Tally:
    """Opens counted into what the rollups need, then written with one upsert per touched rollup row."""

    __slots__ = ("firsts", "slots", "values")

    def __init__(self) -> None:
        self.slots: Counter[tuple[int, int, str | None]] = Counter()  # (campaign, slot, kind)
        self.values: Counter[tuple[int, str, str | None]] = Counter()  # (campaign, field, value)
        self.firsts: dict[str, dict[str, Any]] = {}  # a human open may be its message's first

    def __bool__(self) -> bool:
        return bool(self.slots)

    def add(self, rows: Iterable[Sequence[Any]], sign: int = 1) -> None:
        """Rows as ``_columns`` selects them."""
        slots, values = self.slots, self.values
        for _, campaign_id, at, kind, client, device, os, country, message_id, sent_at, status in rows:
            slots[campaign_id, int(at // SLOT), kind] += sign
            for field, value in zip(FIELDS, (kind, client, device, os, country), strict=True):
                values[campaign_id, field, value] += sign
            if sign > 0 and sent_at is not None and kind in HUMAN_KINDS and status == "sent":
                self.first(message_id, campaign_id, at - sent_at)

    def add_stored(self, rows: Sequence[Mapping[str, Any]], known: Mapping[str, Known]) -> None:
        """Rows as the writer inserts them. This runs for every open stored on SQLite, so the breakdowns
        are counted by ``Counter.update`` over iterators, without a Python step per open and field."""
        facts = [known[row["message_id"]] for row in rows]
        campaigns = [fact.campaign_id for fact in facts]
        for field in FIELDS:
            self.values.update(zip(campaigns, repeat(field), map(itemgetter(field), rows)))
        slots = self.slots
        for campaign_id, fact, row in zip(campaigns, facts, rows, strict=True):
            at, kind = row["at"], row["kind"]
            slots[campaign_id, int(at // SLOT), kind] += 1
            if fact.sent_at is not None and kind in HUMAN_KINDS and fact.status == "sent":
                self.first(row["message_id"], campaign_id, at - fact.sent_at)

    def first(self, message_id: str, campaign_id: int, wait: float) -> None:
        """A human open this long after its message was sent: kept if it is the message's earliest yet."""
        first = self.firsts.get(message_id)
        if first is None or wait < first["wait"]:
            self.firsts[message_id] = {"message_id": message_id, "campaign_id": campaign_id, "wait": wait}

    def write(self, conn: Connection) -> None:
        if not self:
            return
        per_slot: dict[tuple[int, int], dict[str, Any]] = {}
        for (campaign_id, slot, kind), n in self.slots.items():
            entry = per_slot.get((campaign_id, slot))
            if entry is None:
                entry = {"campaign_id": campaign_id, "slot": slot, "opens": 0, "human": 0, "machine": 0}
                per_slot[campaign_id, slot] = entry
            entry["opens"] += n
            if kind in HUMAN_KINDS:
                entry["human"] += n
            elif kind in MACHINE_KINDS:
                entry["machine"] += n
        values: Counter[tuple[int, str, str]] = Counter()
        for (campaign_id, field, value), n in self.values.items():
            values[campaign_id, field, value or ""] += n
        _upsert(
            conn, open_slots, ("campaign_id", "slot"), ("opens", "human", "machine"), list(per_slot.values())
        )
        _upsert(
            conn,
            open_values,
            ("campaign_id", "field", "value"),
            ("opens",),
            [{"campaign_id": c, "field": f, "value": v, "opens": n} for (c, f, v), n in values.items()],
        )
        if self.firsts:
            _upsert_earliest(conn, list(self.firsts.values()))


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


def _dialect_insert(dialect: str) -> Any:
    """The dialect's INSERT, which has ON CONFLICT; imported on first use, so that reading a SQLite store
    (``deadpixel report``) does not load the PostgreSQL dialect and, through it, asyncio."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


@functools.cache
def _earliest_statement(dialect: str) -> Any:
    """Keep the earlier wait. Only an earlier one writes: a later open of a message (nearly every one) leaves
    the row, its page and its index entry as they are, where ``SET wait = min(...)`` rewrote them all."""
    t = first_human_opens
    statement: Any = _dialect_insert(dialect)(t)
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
    statement = _dialect_insert(dialect)(table).values({name: bindparam(name) for name in (*keys, *counts)})
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={name: table.c[name] + statement.excluded[name] for name in counts}
    )
