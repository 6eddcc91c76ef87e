"""Each message's chain of opens holds exactly its opens: after batches, replays, concurrent writers on
PostgreSQL, forgetting, the SQLite writer's memory of its messages, and the upgrade that builds the chains
from the opens already stored."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest
from sqlalchemy import Connection, Engine, insert, select, text

from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import OpenEvent
from deadpixel.store import chains, maintenance, migrate
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.schema import messages, opens
from deadpixel.store.sending import mark_sent
from deadpixel.store.writes import KnownMessages, existing_messages, write_opens

RAW = OpenClassifier(None, "full")


def chained(conn: Connection, message_id: str) -> list[int]:
    return sorted(conn.execute(select(chains.open_ids([message_id]).c.id)).scalars())


def assert_chains_hold_every_open(engine: Engine) -> None:
    with engine.connect() as conn:
        stored: dict[str, list[int]] = defaultdict(list)
        for open_id, message_id in conn.execute(select(opens.c.id, opens.c.message_id).order_by(opens.c.id)):
            stored[message_id].append(open_id)
        for message_id in conn.execute(select(messages.c.id)).scalars():
            assert chained(conn, message_id) == stored.get(message_id, [])


def make_messages(engine: Engine, count: int) -> list[str]:
    with engine.begin() as conn:
        return [create_message(conn, recipient=f"r{n}@example.com", campaign="c") for n in range(count)]


def test_batches_link_each_open_to_the_one_before(database_url: str) -> None:
    engine = create_engine(database_url, writer=True)
    try:
        migrate.ensure_current(engine)
        ids = make_messages(engine, 6)
        rng = random.Random(7)
        for _ in range(30):
            batch = [OpenEvent(rng.choice(ids), time.time() - rng.uniform(0, 9e5), None, None, "GET")
                     for _ in range(rng.randint(1, 12))]  # fmt: skip
            with engine.begin() as conn:
                write_opens(conn, batch, RAW)
        assert_chains_hold_every_open(engine)
        with engine.begin() as conn:
            assert maintenance.forget_recipient(conn, "r2@example.com")[0] == 1
        with engine.begin() as conn:  # SQLite hands the erased ids out again: no chain may pick them up
            write_opens(conn, [OpenEvent(ids[3], time.time(), None, None, "GET")] * 3, RAW)
        assert_chains_hold_every_open(engine)
    finally:
        engine.dispose()


class _RolledBack(Exception):
    pass


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_writers_memory_of_its_messages_never_outlives_a_change_by_anyone_else(
    database_url: str, seed: int
) -> None:
    """The writer's batches, on one long-lived connection as in the server, mixed at random with what
    others do meanwhile: send or forget a message, make new ones, the replayer's batches on a connection of
    its own, and batches of the writer that are rolled back. After every step the chains hold every open,
    and what the writer would look up from memory is what the store says."""
    engine = create_engine(database_url, writer=True)
    try:
        migrate.ensure_current(engine)
        ids = make_messages(engine, 8)
        memory = KnownMessages()
        rng = random.Random(seed)

        def batch() -> list[OpenEvent]:
            return [
                OpenEvent(rng.choice(ids), time.time(), None, None, "GET") for _ in range(rng.randint(1, 6))
            ]

        with engine.connect() as writer, engine.connect() as replayer:
            for step in range(40):
                action = rng.choice(["write"] * 5 + ["rolled back", "replay", "send", "forget", "new"])
                if action == "write":
                    with writer.begin():
                        write_opens(writer, batch(), RAW, memory=memory)
                elif action == "rolled back":
                    with pytest.raises(_RolledBack), writer.begin():
                        write_opens(writer, batch(), RAW, memory=memory)
                        raise _RolledBack
                elif action == "replay":
                    with replayer.begin():
                        write_opens(replayer, batch(), RAW, memory=memory)
                elif action == "send":
                    with engine.begin() as conn:
                        mark_sent(conn, [rng.choice(ids)], time.time() - step)
                elif action == "forget":
                    with engine.begin() as conn:
                        maintenance.forget_recipient(conn, f"r{rng.randrange(len(ids))}@example.com")
                else:
                    ids += make_messages(engine, 1)
                assert_chains_hold_every_open(engine)
                with writer.begin():
                    remembered, newest = memory.lookup(writer, ids)
                    assert remembered == existing_messages(writer, ids)
                    assert newest == chains.newest_open_id(writer)
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_servers_writing_the_same_messages_at_once_keep_every_chain_whole(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        migrate.ensure_current(engine)
        ids = make_messages(engine, 4)
        errors: list[BaseException] = []

        def server(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(25):
                    batch = [OpenEvent(rng.choice(ids), time.time(), None, None, "GET") for _ in range(5)]
                    with engine.begin() as conn:
                        write_opens(conn, batch, RAW)
            except BaseException as exc:  # reported below: a thread's failure must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=server, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with engine.connect() as conn:
            assert len(conn.execute(select(opens.c.id)).all()) == 4 * 25 * 5
        assert_chains_hold_every_open(engine)
    finally:
        engine.dispose()


def test_the_upgrade_links_the_opens_already_stored(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        migrate.upgrade(engine, "0013")
        with engine.begin() as conn:
            for mid in ("m1", "m2", "m3"):
                conn.execute(text("INSERT INTO messages (id, created_at) VALUES (:id, 0)"), {"id": mid})
            order = ["m1", "m2", "m1", "m1", "m2"]
            conn.execute(
                insert(opens),
                [{"message_id": mid, "at": n, "method": "GET"} for n, mid in enumerate(order)],
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            links = dict(conn.execute(select(opens.c.id, opens.c.prev_id)).all())
            heads = dict(conn.execute(select(messages.c.id, messages.c.last_open_id)).all())
        first = min(links)
        m1 = [first, first + 2, first + 3]
        m2 = [first + 1, first + 4]
        assert [links[i] for i in m1] == [None, m1[0], m1[1]]
        assert [links[i] for i in m2] == [None, m2[0]]
        assert heads == {"m1": m1[-1], "m2": m2[-1], "m3": None}
        assert_chains_hold_every_open(engine)
    finally:
        engine.dispose()
