"""Statements compiled once and run straight on the database driver, for the writes made per batch."""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.compiler import SQLCompiler

RowValues = Callable[[dict[str, Any]], tuple[Any, ...]]


def execute_many(conn: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """``executemany`` straight on the driver with a statement compiled once per dialect.

    SQLAlchemy's own executemany processes every row in Python (about 10 µs each); these rows are already
    plain values, so the driver gets them as they are.
    """
    compiled, values = _compiled(statement, conn.dialect)
    run_many(conn, compiled.string, list(map(values, rows)) if values is not None else list(rows))


ROWS_PER_STATEMENT = 500  # SQLite allows 32,766 parameters a statement; an open's row has 19


def insert_rows(conn: Connection, statement: Any, rows: Sequence[dict[str, Any]]) -> None:
    """An INSERT of many rows: on SQLite, one statement of up to ``ROWS_PER_STATEMENT`` rows at a time;
    elsewhere ``execute_many``.

    sqlite3's ``executemany`` steps its statement once per row and lets go of the interpreter's lock around
    each step, so a writer thread had to win the lock back from the event loop's once per row.
    """
    if conn.dialect.name != "sqlite" or len(rows) < 2:
        execute_many(conn, statement, rows)
        return
    compiled, values = _compiled(statement, conn.dialect)
    assert values is not None  # SQLite's parameters are positional
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        run(
            conn,
            _values_for(compiled.string, len(chunk)),
            list(itertools.chain.from_iterable(map(values, chunk))),
        )


@functools.lru_cache(maxsize=256)
def _values_for(single_row: str, count: int) -> str:
    """``INSERT ... VALUES (?, ...)`` made into the same INSERT of ``count`` rows."""
    head, _, row = single_row.rpartition(" VALUES ")
    return f"{head} VALUES {', '.join([row] * count)}"


def run(conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """One statement in the caller's transaction; returns its rows."""
    if conn.dialect.name != "sqlite":
        result = conn.exec_driver_sql(sql, tuple(params))
        return list(result) if result.returns_rows else []
    try:
        rows: list[Any] = conn.connection.dbapi_connection.execute(sql, params).fetchall()  # type: ignore[union-attr]
        return rows
    except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
        raise _wrapped(conn, sql, params, exc) from exc


def run_many(conn: Connection, sql: str, rows: Sequence[Any]) -> None:
    """``executemany`` in the caller's transaction.

    On SQLite straight on the driver's connection: SQLAlchemy's way through costs about 50 µs a statement,
    as much as a small batch's insert, and a batch runs eight of them. Errors still arrive as SQLAlchemy's
    exceptions (the writer tells lock timeouts from bad data by them). Elsewhere SQLAlchemy stays in the
    way, because it also notices a lost connection and replaces it.
    """
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(sql, rows)
        return
    try:
        conn.connection.dbapi_connection.executemany(sql, rows)  # type: ignore[union-attr]
    except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
        raise _wrapped(conn, sql, rows, exc) from exc


def _wrapped(conn: Connection, sql: str, params: Any, exc: Exception) -> StatementError:
    """The exception SQLAlchemy would have raised: OperationalError for a lock timeout, and so on."""
    dbapi = conn.dialect.dbapi
    return DBAPIError.instance(sql, params, exc, dbapi.Error, dialect=conn.dialect)  # type: ignore[union-attr]


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
