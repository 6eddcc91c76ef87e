"""The store on real SQLite and real PostgreSQL: migrations, counters, concurrency."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, inspect, select

from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import HUMAN_KINDS, MACHINE_KINDS, OpenEvent
from deadpixel.store import migrate, writes
from deadpixel.store.db import create_engine
from deadpixel.store.driver import execute_many
from deadpixel.store.messages import create_message
from deadpixel.store.schema import messages, metadata, opens
from deadpixel.store.writes import bump_counters_on_sqlite, counter_updates, encode_rows, write_opens
from deadpixel.track import ingest
from deadpixel.track.ingest import GroupCommitWriter

RAW = OpenClassifier(None, "full")


def test_the_cheap_revision_check_knows_the_newest_migration() -> None:
    assert migrate.head_revision() == migrate.SCHEMA_REVISION


def test_migrations_build_exactly_the_declared_schema(database_url: str) -> None:
    engine = create_engine(database_url)
    assert migrate.current_revision(engine) is None
    migrate.ensure_current(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()


def test_migrations_go_down_and_up_again(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert not {"messages", "opens", "campaigns"} & set(inspect(engine).get_table_names())
    migrate.upgrade(engine)
    assert {"messages", "opens", "campaigns"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_concurrent_first_use_migrates_once(database_url: str) -> None:
    errors: list[BaseException] = []

    def first_use() -> None:
        engine = create_engine(database_url)
        try:
            migrate.ensure_current(engine)
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_a_batch_updates_counters_in_the_same_transaction(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        a = create_message(conn, recipient="a@example.com", campaign="c")
        b = create_message(conn, recipient="b@example.com", campaign="c")
    t = time.time()
    batch = [
        OpenEvent(a, t + 2, "192.0.2.1", "UA", "GET"),
        OpenEvent(a, t + 1, "192.0.2.1", "UA", "HEAD"),
        OpenEvent(b, t + 5, None, None, "GET"),
        OpenEvent(a, t + 3, "192.0.2.1", "UA", "GET"),
    ]
    with engine.begin() as conn:
        write_opens(conn, batch, RAW)
    with engine.begin() as conn:
        write_opens(conn, [OpenEvent(a, t + 0.5, None, None, "GET")], RAW)
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(messages))}
        assert conn.execute(select(opens.c.id)).all().__len__() == 5
    assert (rows[a].open_count, rows[a].first_open_at, rows[a].last_open_at) == (4, t + 0.5, t + 3)
    assert (rows[b].open_count, rows[b].first_open_at, rows[b].last_open_at) == (1, t + 5, t + 5)
    engine.dispose()


def test_an_open_for_an_erased_message_is_dropped_without_failing_its_batch(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        a = create_message(conn, recipient="a@example.com")
        erased = write_opens(
            conn, [OpenEvent("0" * 16, 1.0, None, None, "GET"), OpenEvent(a, 2.0, None, None, "GET")], RAW
        )
    assert erased == 1
    with engine.connect() as conn:
        assert conn.execute(select(messages.c.open_count).where(messages.c.id == a)).scalar_one() == 1
        assert conn.execute(select(opens.c.message_id)).scalars().all() == [a]
    engine.dispose()


def test_campaigns_are_created_on_first_use_and_shared(database_url: str) -> None:
    engine = create_engine(database_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        ids = [create_message(conn, recipient=f"{i}@example.com", campaign="Q3 outreach") for i in range(3)]
        campaign_ids = set(
            conn.execute(select(messages.c.campaign_id).where(messages.c.id.in_(ids))).scalars()
        )
    assert len(campaign_ids) == 1 and None not in campaign_ids
    engine.dispose()


def test_the_writer_survives_a_failing_write_and_still_answers(tmp_path: Path) -> None:
    """A bug in the write path costs the events it hits (counted), never the writer or waiting requests."""
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}", writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        good = create_message(conn, recipient="a@example.com")

    def write(conn: Connection, events: list[OpenEvent]) -> int:
        if any(e.user_agent == "boom" for e in events):
            raise TypeError("a bug")
        return write_opens(conn, events, RAW)

    writer = GroupCommitWriter(engine, write)
    writer.start()

    async def record_all() -> None:
        await asyncio.wait_for(
            asyncio.gather(
                writer.record(OpenEvent(good, 1.0, None, "fine", "GET")),
                writer.record(OpenEvent(good, 2.0, None, "boom", "GET")),
            ),
            timeout=10,
        )
        await asyncio.wait_for(writer.record(OpenEvent(good, 3.0, None, "after", "GET")), timeout=10)

    asyncio.run(record_all())
    writer.stop()
    assert writer.stats.events_dropped == 1
    with engine.connect() as conn:
        assert sorted(conn.execute(select(opens.c.user_agent)).scalars()) == ["after", "fine"]
    engine.dispose()


def test_a_busy_writer_waits_a_moment_for_a_fuller_batch_and_an_idle_one_never_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a batch of LINGER_FROM opens the next one gathers for up to LINGER (stretched here so a slow
    machine cannot split it), and is committed as soon as it holds LINGER_UNTIL; after a small batch, an
    open is committed at once."""
    monkeypatch.setattr(ingest, "LINGER", 5.0)
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}", writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        mid = create_message(conn, recipient="a@example.com")
    sizes: list[int] = []

    def write(conn: Connection, events: list[OpenEvent]) -> int:
        sizes.append(len(events))
        return write_opens(conn, events, RAW)

    writer = GroupCommitWriter(engine, write)
    writer.start()

    def opens(count: int) -> list[asyncio.Future[None]]:
        return [writer.record(OpenEvent(mid, 1.0, None, None, "GET")) for _ in range(count)]

    async def in_ticks(ticks: int, per_tick: int) -> None:
        """``ticks`` event-loop ticks 10 ms apart, each handing ``per_tick`` opens to the writer."""
        waiting = []
        for _ in range(ticks):
            waiting += [asyncio.ensure_future(record) for record in opens(per_tick)]
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=4)

    async def scenario() -> float:
        await asyncio.gather(*opens(ingest.LINGER_FROM))  # one tick: one big batch
        began = time.monotonic()
        await in_ticks(4, ingest.LINGER_UNTIL // 4)  # the writer is busy: these wait for each other
        full_after = time.monotonic() - began
        monkeypatch.setattr(ingest, "LINGER", 0.05)
        await asyncio.gather(*opens(2))  # waits 50 ms in vain: a small batch
        monkeypatch.setattr(ingest, "LINGER", 5.0)
        began = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*opens(1)), timeout=4)  # after a small batch: at once
        return max(full_after, time.monotonic() - began)

    try:
        slowest = asyncio.run(scenario())
    finally:
        writer.stop()
        engine.dispose()
    assert sizes == [ingest.LINGER_FROM, ingest.LINGER_UNTIL, 2, 1]
    assert slowest < 2.0  # neither waited out the 5 s


_cell = st.one_of(
    st.none(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.text()
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["message_id", "at", "ip", "reason"]), _cell), max_size=700))
def test_rows_encoded_a_slice_at_a_time_are_one_json_array_of_them(rows: list[dict[str, object]]) -> None:
    assert json.loads(encode_rows(rows)) == rows


_KINDS = sorted(HUMAN_KINDS | MACHINE_KINDS | {"self"})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abc"), st.floats(0, 1e9), st.one_of(st.none(), st.sampled_from(_KINDS))),
        min_size=1,
        max_size=30,
    )
)
def test_counter_updates_add_up_each_messages_opens(opens: list[tuple[str, float, str | None]]) -> None:
    rows = [
        {"id": n, "message_id": mid, "at": at, "kind": kind} for n, (mid, at, kind) in enumerate(opens, 1)
    ]
    expected = []
    for mid in sorted({row["message_id"] for row in rows}):
        mine = [row for row in rows if row["message_id"] == mid]
        expected.append({
            "mid": mid,
            "n": len(mine),
            "human": sum(row["kind"] in HUMAN_KINDS for row in mine),
            "machine": sum(row["kind"] in MACHINE_KINDS for row in mine),
            "own": sum(row["kind"] == "self" for row in mine),
            "first": min(row["at"] for row in mine),
            "last": max(row["at"] for row in mine),
            "head": max(row["id"] for row in mine),
        })  # fmt: skip
    assert counter_updates(rows) == expected


_COUNTERS = ["open_count", "human_open_count", "machine_open_count", "self_open_count", "first_open_at",
             "last_open_at", "last_open_id"]  # fmt: skip


def _counters_after(conn: Connection, bump: Callable[[], None]) -> list[tuple[object, ...]]:
    """The messages' counters after ``bump``, which is then rolled back."""
    with conn.begin() as transaction:
        bump()
        rows = conn.execute(
            select(messages.c.id, *(messages.c[name] for name in _COUNTERS)).order_by(messages.c.id)
        )
        counters = [tuple(row) for row in rows]
        transaction.rollback()
    return counters


@pytest.fixture(scope="module")
def counted_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Connection, list[str]]]:
    """Messages with counters already set (some with opens, some without), shared by the examples below."""
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('counters') / 'c.db'}", writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        ids = [create_message(conn, recipient=f"r{n}@example.com") for n in range(1100)]
        conn.execute(
            messages.update()
            .where(messages.c.id.in_(ids[::2]))
            .values(open_count=3, human_open_count=1, first_open_at=500.0, last_open_at=600.0, last_open_id=7)
        )
    with engine.connect() as conn:
        yield conn, ids
    engine.dispose()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_one_update_from_values_bumps_the_counters_as_one_update_per_message_does(
    counted_store: tuple[Connection, list[str]], data: st.DataObject
) -> None:
    conn, ids = counted_store
    wanted = data.draw(st.sampled_from([3, 40, 1100]))  # 1,100: over one statement's rows
    opens_drawn = data.draw(
        st.lists(
            st.tuples(st.sampled_from(ids[:wanted]), st.floats(0, 1e9), st.sampled_from([*_KINDS, None])),
            min_size=1,
            max_size=60 if wanted < 1100 else 1,
        )
    )
    if wanted == 1100:
        opens_drawn = [(mid, 700.0, "human") for mid in ids]
    rows = [
        {"id": n, "message_id": m, "at": at, "kind": kind}
        for n, (m, at, kind) in enumerate(opens_drawn, 1000)
    ]
    updates = counter_updates(rows)
    one_per_message = _counters_after(conn, lambda: execute_many(conn, writes._bump_counters, updates))
    assert _counters_after(conn, lambda: bump_counters_on_sqlite(conn, updates)) == one_per_message


def test_a_new_sqlite_store_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Whatever the umask: the file holds readers' addresses (in a container the umask is 022)."""
    path = tmp_path / "new.db"
    old = os.umask(0o022)
    try:
        engine = create_engine(f"sqlite:///{path}", writer=True)
        migrate.ensure_current(engine)
        with engine.connect():
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        engine.dispose()
    finally:
        os.umask(old)
    assert {"new.db", "new.db-wal", "new.db-shm"} <= set(modes)
    assert set(modes.values()) == {0o600}
