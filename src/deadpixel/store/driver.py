"""Statements compiled once and run straight on the database driver, for the writes made per batch."""

from __future__ import annotations

import functools
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
