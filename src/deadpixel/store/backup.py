"""``deadpixel backup``: a consistent copy of everything a restore needs, taken while the server runs.

A copy of the database alone is not enough: without the signing keys, every pixel and link already sent would
stop being recognised. So a backup is a directory holding both. On SQLite the database is copied with
``VACUUM INTO``, which reads one consistent snapshot (WAL readers never block the writer) and writes a compact
file; the copy is written under a temporary name and renamed, so a backup that fails midway leaves nothing
that looks complete. PostgreSQL has its own tools (``pg_dump``); there the backup holds the keys only.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.store.db import normalise_url

DATABASE_NAME = "deadpixel.db"  # the default store's name, so a restore is a copy into a data dir
KEYS_NAME = "signing-keys.json"


@dataclass(frozen=True)
class Backup:
    directory: Path
    database: Path | None  # None when the store is PostgreSQL


class BackupError(DeadpixelError):
    pass


def sqlite_path(database_url: str) -> Path | None:
    """The file of a SQLite store, or None for any other database."""
    url = make_url(normalise_url(database_url))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def backup(settings: Settings, into: Path, now: datetime | None = None) -> Backup:
    """Write a new ``deadpixel-<UTC time>`` directory under ``into`` and return what it holds."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    directory = into / f"deadpixel-{stamp}"
    if directory.exists():
        raise BackupError(f"{directory} already exists")
    if not settings.keys_file.exists():
        raise BackupError(f"no signing keys at {settings.keys_file}: nothing to back up yet")
    source = sqlite_path(settings.database_url)
    if source is not None and not source.exists():
        raise BackupError(f"no database at {source}: nothing to back up yet")
    into.mkdir(parents=True, exist_ok=True)
    partial = into / f".deadpixel-{stamp}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700)
    try:
        _private_copy(settings.keys_file, partial / KEYS_NAME)
        if source is not None:
            _copy_sqlite(source, partial / DATABASE_NAME)
        partial.rename(directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Backup(directory, directory / DATABASE_NAME if source is not None else None)


def _private_copy(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(source.read_bytes())


def _copy_sqlite(source: Path, target: Path) -> None:
    connection = sqlite3.connect(source, timeout=30)
    try:
        # The store holds addresses and reading habits: the copy must be private like the original.
        old_umask = os.umask(0o077)
        try:
            connection.execute("VACUUM INTO ?", (str(target),))
        finally:
            os.umask(old_umask)
    except sqlite3.Error as exc:
        raise BackupError(f"copying {source} failed: {exc}") from None
    finally:
        connection.close()
    check = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        result = check.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        check.close()
    if result != "ok":
        raise BackupError(f"the copy of {source} failed its integrity check: {result}")
