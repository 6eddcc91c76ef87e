"""Statements run straight on the driver still fail the way SQLAlchemy's do, on both databases."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, Table, Text, func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from deadpixel.store.db import create_engine
from deadpixel.store.driver import ROWS_PER_STATEMENT, insert_rows, run, run_many


def test_rows_come_back_and_writes_join_the_callers_transaction(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            run(conn, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        with engine.connect() as conn:
            tx = conn.begin()
            marker = "?" if conn.dialect.name == "sqlite" else "%s"
            run_many(conn, f"INSERT INTO t (k, v) VALUES ({marker}, {marker})", [(1, "a"), (2, "b")])
            assert run(conn, f"SELECT v FROM t WHERE k = {marker}", (2,)) == [("b",)]
            tx.rollback()
        with engine.begin() as conn:
            assert run(conn, "SELECT count(*) FROM t") == [(0,)]
        with engine.connect() as conn:
            with pytest.raises(IntegrityError), conn.begin():
                run_many(conn, f"INSERT INTO t (k, v) VALUES ({marker}, {marker})", [(3, "c"), (3, "d")])
            with pytest.raises((OperationalError, ProgrammingError)), conn.begin():
                run(conn, "SELECT * FROM nowhere")
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_lock_timeout_is_sqlalchemys_operational_error(database_url: str) -> None:
    """The pixel's writer spools a batch on OperationalError: a raw sqlite3 error would bypass that. (This
    waiter begins without the write lock, so the insert itself meets the lock.)"""
    holder = create_engine(database_url, writer=True)
    waiter = create_engine(database_url, lock_timeout_ms=100)
    try:
        with holder.begin() as conn:
            run(conn, "CREATE TABLE t (k INTEGER)")
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with holder.begin():
                held.set()
                release.wait(5)

        thread = threading.Thread(target=hold)
        thread.start()
        held.wait(5)
        try:
            with pytest.raises(OperationalError, match="locked"), waiter.connect() as conn, conn.begin():
                run_many(conn, "INSERT INTO t (k) VALUES (?)", [(1,)])
        finally:
            release.set()
            thread.join()
    finally:
        holder.dispose()
        waiter.dispose()


def test_many_rows_in_one_insert_store_what_executemany_stores(database_url: str) -> None:
    """Over ROWS_PER_STATEMENT rows, so the statement is cut in several; and a failing row still fails the
    whole insert with SQLAlchemy's exception."""
    metadata = MetaData()
    table = Table(
        "t", metadata, Column("k", Integer, primary_key=True), Column("v", Text), Column("f", Float)
    )
    rows = [
        {"k": n, "v": None if n % 7 == 0 else f"v{n}", "f": n / 3} for n in range(ROWS_PER_STATEMENT * 2 + 3)
    ]
    engine = create_engine(database_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            insert_rows(conn, insert(table), rows)
            insert_rows(conn, insert(table), [{"k": -1, "v": "alone", "f": 0.0}])
        with engine.connect() as conn:
            stored = [row._asdict() for row in conn.execute(select(table).order_by(table.c.k))]
        assert stored == [{"k": -1, "v": "alone", "f": 0.0}, *rows]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            insert_rows(conn, insert(table), [{"k": 10_000, "v": "new", "f": 1.0}, rows[5]])
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(table)).scalar_one() == len(rows) + 1
    finally:
        engine.dispose()
