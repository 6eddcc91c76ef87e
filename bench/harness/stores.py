"""deadpixel's store for a benchmark: prepared once, a fresh copy per run, and what each run stored."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from deadpixel.config import load_settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.server.start import prepare
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from harness.options import Options

PG_APPLICATION_NAME = "deadpixel-bench"
CAMPAIGN = "bench"
KINDS_QUERY = "SELECT kind, count(*) FROM opens GROUP BY kind"
UNCLASSIFIED = "NULL"  # the key under which opens without a kind (enrichment off) are counted


@dataclass(frozen=True)
class RunStore:
    """deadpixel's data for one run (a fresh copy of the prepared data), and how to read what it stored."""

    url: str
    data_dir: Path
    count_opens: Callable[[], int]
    count_kinds: Callable[[], dict[str, int]]
    backend_pids: Callable[[], list[int]] = list


@dataclass(frozen=True)
class Store:
    """Where deadpixel keeps its data: prepared once (keys, schema, messages), then fresh for every run.

    Every deadpixel run starts from the same state, so a later run does not pay for the rows of the ones
    before it, and its stored opens are its own.
    """

    url: str  # of the prepared data, which create_pixels fills
    template_dir: Path
    description: str
    new_run: Callable[[str], RunStore]


def count_sqlite_rows(path: Path, table: str) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def kinds_of(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return {str(kind) if kind is not None else UNCLASSIFIED: int(count) for kind, count in rows}


def count_sqlite_kinds(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return kinds_of(db.execute(KINDS_QUERY).fetchall())
    finally:
        db.close()


def libpq_url(url: str) -> str:
    """The URL as psycopg takes it: SQLAlchemy's ``+driver`` suffix removed."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query)) | params
    return urlunsplit(parts._replace(query=urlencode(query)))


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.contextmanager
def deadpixel_store(opts: Options, workdir: Path) -> Iterator[Store]:
    template = workdir / "deadpixel-template"
    if opts.database_url is None:

        def new_run(name: str) -> RunStore:
            data_dir = workdir / name
            shutil.copytree(template, data_dir)  # keys, and the database with its messages
            db_file = data_dir / "deadpixel.db"
            return RunStore(
                url=f"sqlite:///{db_file}",
                data_dir=data_dir,
                count_opens=lambda: count_sqlite_rows(db_file, "opens"),
                count_kinds=lambda: count_sqlite_kinds(db_file),
            )

        yield Store(
            url=f"sqlite:///{template / 'deadpixel.db'}",
            template_dir=template,
            description=f"SQLite in {workdir}/<run>/ on {filesystem_of(workdir)} (WAL, synchronous=FULL)",
            new_run=new_run,
        )
    else:
        with postgres_store(opts.database_url, workdir, template) as store:
            yield store


@contextlib.contextmanager
def postgres_store(url: str, workdir: Path, template: Path) -> Iterator[Store]:
    """A fresh schema for this benchmark, dropped afterwards; its opens are emptied before every run."""
    import psycopg

    conninfo = libpq_url(url)
    schema = f"deadpixel_bench_{os.getpid()}"

    def admin(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def backend_pids() -> list[int]:
        rows = admin(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{PG_APPLICATION_NAME}'")
        return [int(row[0]) for row in rows]

    store_url = with_query(url, options=f"-csearch_path={schema}", application_name=PG_APPLICATION_NAME)

    def new_run(name: str) -> RunStore:
        data_dir = workdir / name
        shutil.copytree(template, data_dir)  # the signing keys; the metrics of this run go here too
        # The message counters keep what earlier runs added: the same work whatever their values.
        admin(f'TRUNCATE "{schema}".opens RESTART IDENTITY')
        admin(f'VACUUM ANALYZE "{schema}".messages')
        return RunStore(
            url=store_url,
            data_dir=data_dir,
            count_opens=lambda: int(admin(f'SELECT count(*) FROM "{schema}".opens')[0][0]),
            count_kinds=lambda: kinds_of(admin(KINDS_QUERY.replace("opens", f'"{schema}".opens'))),
            backend_pids=backend_pids,
        )

    admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield Store(
            url=store_url,
            template_dir=template,
            description=f"PostgreSQL {without_password(url)}, fresh schema {schema}, emptied before each run",
            new_run=new_run,
        )
    finally:
        admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def filesystem_of(path: Path) -> str:
    """The type of the file system holding ``path`` (fsync on tmpfs is free, which would flatter SQLite)."""
    best, kind = "", "unknown"
    with open("/proc/self/mounts") as fh:
        for line in fh:
            _, mount_point, fs_type, *_ = line.split()
            if str(path).startswith(mount_point) and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def create_pixels(data_dir: Path, database_url: str, count: int, with_send_times: bool = False) -> list[str]:
    """Create ``count`` tracked messages in deadpixel's store and return their pixel paths.

    With ``with_send_times`` every other message has a send time, as if deadpixel had sent it (the timing
    rules then apply to its opens); the others are hand-made pixels.
    """
    env = {"DEADPIXEL_DATA_DIR": str(data_dir), "DEADPIXEL_DATABASE_URL": database_url}
    settings = load_settings(env)
    prepare(settings)  # data dir, signing keys, schema
    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            ids = [
                create_message(
                    conn,
                    recipient=f"reader{n}@example.com",
                    campaign=CAMPAIGN,
                    sent_at=time.time() if with_send_times and n % 2 == 0 else None,
                )
                for n in range(count)
            ]
    finally:
        engine.dispose()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    return [f"/o/{signer.pixel_token(message_id)}.gif" for message_id in ids]
