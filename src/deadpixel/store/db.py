"""Engines for SQLite and PostgreSQL with the settings deadpixel relies on.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit is on disk before the pixel is answered, so an
answered open survives a crash or a power cut, while readers never block the writer.

Every engine hides statement parameters from its errors and logs (``hide_parameters``): they are readers'
addresses and recipients, and an error message ends up in a log line, where DEADPIXEL_IP_MODE must hold too.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import make_url

from deadpixel.security.private import tighten_sqlite
from deadpixel.store.driver import run

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_CACHE_KIB = 8_192
SQLITE_WAL_KEEP_BYTES = 64 * 1024 * 1024
log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """Accept the URLs people paste (``postgres://``, ``postgresql://``) and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(
    url: str,
    *,
    writer: bool = False,
    background_checkpoints: bool = False,
    lock_timeout_ms: int | None = None,
) -> Engine:
    """Build an engine; ``writer=True`` makes SQLite transactions take the write lock up front.

    ``BEGIN IMMEDIATE`` means a writer waits for the lock (up to the busy timeout) instead of failing when it
    upgrades from reading to writing while another process writes. ``background_checkpoints=True`` stops
    commits from checkpointing the WAL themselves; a ``WalCheckpointer`` must then run beside them.
    ``lock_timeout_ms`` bounds how long a statement may wait for a lock (SQLite's busy timeout; PostgreSQL's
    lock_timeout and statement_timeout): the pixel's writer spools a batch that waits longer.
    """
    url = normalise_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        engine = sa_create_engine(url, pool_pre_ping=True, hide_parameters=True)
        if lock_timeout_ms is not None:
            _bound_postgres_waits(engine, lock_timeout_ms)
        return engine

    busy_timeout = SQLITE_BUSY_TIMEOUT_MS if lock_timeout_ms is None else lock_timeout_ms
    engine = sa_create_engine(url, hide_parameters=True)
    database = make_url(url).database
    _make_private(database)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=FULL")
        # SQLite's default page cache is 2 MB; 8 MB holds a writer's hot pages (the tables' and indexes'
        # upper levels and newest leaves, the rollups) several times over. Every connection fills its
        # cache as it goes: at 64 MB the writer's alone added 45 MB to a soak's RSS in its first minute.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if background_checkpoints:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        # After a burst has made the WAL long, shrink the file back once it starts over.
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_WAL_KEEP_BYTES}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Straight on the driver: through SQLAlchemy's execution machinery this one statement cost the
        # pixel's writer about as much CPU per batch as looking up the batch's messages.
        run(conn, begin)

    return engine


def _make_private(database: str | None) -> None:
    """The SQLite file (and its -wal, -shm) 0600, wherever it lives: created so when new, and made so again
    when one restored or copied under a 0022 umask is 0644, readable by every local user."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    tighten_sqlite(Path(database), create=True)


def _bound_postgres_waits(engine: Engine, timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Session settings outside any transaction, so the pool's rollback on check-in keeps them.
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(timeout_ms)}")
            cursor.execute(f"SET statement_timeout = {int(timeout_ms)}")
        dbapi_conn.autocommit = False


def _enable_wal(cursor: sqlite3.Cursor) -> None:
    """Switch a new file to WAL, waiting while another connection does the same.

    Changing the journal mode needs an exclusive lock and SQLite does not call the busy handler for it, so
    several processes opening a fresh store at once would otherwise fail with "database is locked".
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class WalCheckpointer:
    """Copies committed WAL pages into the database file from its own thread and connection, and keeps the
    WAL from growing without end.

    A commit that crosses SQLite's auto-checkpoint threshold would otherwise do that work itself, holding up
    every pixel waiting on its batch for tens of milliseconds. PASSIVE checkpoints never wait for readers or
    the writer, so running them beside the writer costs the writer nothing.

    But PASSIVE alone never lets the WAL start over while the writer is busy: SQLite rewinds the log only
    when a checkpoint has copied every frame, and under steady load new frames always arrive during the copy.
    The log then grows by tens of megabytes a second, every commit extends the file (so its fsync also
    journals the new size), and latency climbs in waves. And a checkpoint that waited for the writer to
    rewind the log would starve: the writer takes its lock again right after each commit. So once the log
    is long, the writer itself, between two batches (``catch_up``), copies the few frames written since the
    last background pass; its next commit then writes from the start of the file again.
    """

    def __init__(self, url: str, interval: float = 0.5, rewind_frames: int = 4096) -> None:
        # 4,096 frames of 4 KB pages: long enough that rewinding is rare, short enough to stay in the cache.
        self._engine = create_engine(url)
        self._interval = interval
        self._rewind_frames = rewind_frames
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deadpixel-checkpointer", daemon=True)
        self._rewind_wanted = False
        self.rewinds = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._checkpoint()
        self._engine.dispose()

    def catch_up(self, conn: Connection) -> None:
        """From the writer's connection, outside a transaction: finish the copy so the log can start over."""
        if not self._rewind_wanted:
            return
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            busy, log_frames, copied = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            cursor.close()
        if not busy and copied == log_frames:  # else the background pass holds the checkpoint: next batch
            self._rewind_wanted = False
            self.rewinds += 1

    def _checkpoint(self) -> None:
        try:
            with self._engine.connect() as conn:
                log_frames = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()[1]
            self._rewind_wanted = log_frames >= self._rewind_frames
        except Exception:
            log.warning("WAL checkpoint failed; the next one will retry", exc_info=True)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self._checkpoint()
