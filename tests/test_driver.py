"""Statements run straight on the driver still fail the way SQLAlchemy's do, on both databases."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from deadpixel.store.db import create_engine
from deadpixel.store.driver import run, run_many


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
