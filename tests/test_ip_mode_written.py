"""What is written anywhere follows DEADPIXEL_IP_MODE: with ``truncate`` or ``none`` a reader's full address
reaches neither the spool (nor its ``refused/``), nor the logs, when the database cannot take an open.

The attack: make the writer fail, then read every file under the data dir and everything logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from deadpixel.config import Settings
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.enrich.privacy import redacted
from deadpixel.events import OpenEvent
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store import migrate
from deadpixel.store.db import create_engine
from deadpixel.store.links import save_links
from deadpixel.track.ingest import GroupCommitWriter
from deadpixel.track.spool import Spool

from .conftest import Server
from .helpers import make_pixels

READER = "81.2.69.160"
KEPT = {"full": READER, "truncate": "81.2.69.0", "none": None}
MODES = ("full", "truncate", "none")


def _everything_written(root: Path) -> bytes:
    return b"\n".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def _wait_for(check: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.slow
def test_opens_spooled_while_the_database_is_locked_keep_only_what_the_mode_keeps(
    mode: str, server_factory: type[Server], env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    message, pixel = make_pixels(settings, 1)[0]
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        save_links(conn, [(message, ["https://example.com/a"])])
    engine.dispose()
    link = f"/c/{TokenSigner(load_or_create_keys(settings.keys_file)).click_token(message, 0)}"
    server = server_factory(
        env=env
        | {
            "DEADPIXEL_IP_MODE": mode,
            "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1",
            "DEADPIXEL_COMMIT_DEADLINE_MS": "200",
            "DEADPIXEL_OPEN_CAP": "0",
            "DEADPIXEL_LOG_LEVEL": "debug",
        }
    ).start()
    spool = settings.data_dir / "spool" / "opens"
    holder = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held past the commit deadline: opens go to the spool
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(3):
                answer = client.get(pixel, headers={"X-Forwarded-For": READER, "User-Agent": "Mail/1"})
                assert answer.status_code == 200
            answer = client.get(link, headers={"X-Forwarded-For": READER, "User-Agent": "Mail/1"})
            assert answer.status_code in (302, 303, 307)
        _wait_for(lambda: any((settings.data_dir / "spool" / "clicks").glob("*.batch")), 5)
        clicks_spooled = any((settings.data_dir / "spool" / "clicks").glob("*.batch"))
        spooled = _everything_written(settings.data_dir)
    finally:
        holder.rollback()
        holder.close()
    _wait_for(lambda: not any(spool.parent.glob("*/*.batch")))
    assert server.stop() == 0
    assert server.process is not None and server.process.stderr is not None
    logged = server.process.stderr.read()

    assert b'"Mail/1"' in spooled  # the opens did wait in the spool
    assert clicks_spooled  # and so did the click
    if mode == "full":
        assert READER.encode() in spooled  # so this test can tell
    else:
        assert READER.encode() not in spooled
        assert READER.encode() not in _everything_written(tmp_path)  # the store, and whatever else
        assert READER.encode() not in logged
    if mode == "truncate":
        assert b'"81.2.69.0"' in spooled


class _Refuses:
    """A database that refuses every batch outright, with an error that quotes the batch: a driver's
    message, a bug's repr. The fault is injected here; the spool, the writer and SQLite are real."""

    def __init__(self) -> None:
        self.seen: list[OpenEvent] = []

    def write(self, conn: Connection, events: list[OpenEvent]) -> int:
        self.seen += events
        raise IntegrityError("INSERT INTO opens", {}, ValueError(f"refused {events!r}"))


class _Breaks:
    def write(self, conn: Connection, events: list[OpenEvent]) -> int:
        raise RuntimeError(f"a bug while writing {events!r}")


@pytest.mark.parametrize("mode", MODES)
def test_refused_batches_and_logged_failures_keep_only_what_the_mode_keeps(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="deadpixel")
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}", writer=True)
    migrate.upgrade(engine)
    redact = functools.partial(redacted, mode=mode)
    event = OpenEvent("m1", 1.0, READER, "Mail/1", "GET")

    # A batch spooled during an outage, then refused by the database on replay: set aside in refused/.
    spool = Spool(tmp_path / "data" / "spool" / "opens", OpenEvent, redact)
    spool.append([event])
    refuses = _Refuses()
    writer = GroupCommitWriter(engine, refuses.write, spool=spool, probe_interval=0.05, redact=redact)
    writer.start()
    _wait_for(lambda: not spool.pending())
    writer.stop()
    assert len(list(spool.quarantine.iterdir())) == 1
    assert refuses.seen and refuses.seen[0].ip == KEPT[mode]

    # A batch the writer fails on (a bug): logged, then written one by one, and dropped.
    breaks = GroupCommitWriter(engine, _Breaks().write, redact=redact)
    breaks.start()

    async def record() -> None:
        await breaks.record(event)

    asyncio.run(record())
    breaks.stop()
    engine.dispose()

    written = _everything_written(tmp_path)
    logged = caplog.text.encode()
    assert b"refused" in logged and b"a bug while writing" in logged
    assert b"dropped an open that could not be written" in logged
    if mode == "full":
        assert READER.encode() in written and READER.encode() in logged
    else:
        assert READER.encode() not in written
        assert READER.encode() not in logged
    if mode == "truncate":
        assert b"81.2.69.0" in logged and b"81.2.69.0" in written


class _FailingEnricher:
    """Enrichment with a rule bug whose message quotes the address."""

    def enrich_open(self, ip: str | None, *_: object) -> tuple[object, ...]:
        raise ValueError(f"no rule matched {ip}")


@pytest.mark.parametrize("mode", MODES)
def test_an_enrichment_failure_logs_only_what_the_mode_keeps(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="deadpixel")
    classifier = OpenClassifier(_FailingEnricher(), mode)  # type: ignore[arg-type]
    rows = classifier.rows([OpenEvent("m1", 1.0, READER, "Mail/1", "GET")], {})
    assert rows[0]["ip"] == KEPT[mode]
    assert "enrichment failed" in caplog.text and "no rule matched" in caplog.text
    assert (READER in caplog.text) == (mode == "full")


def test_a_database_error_does_not_quote_the_statement_parameters(database_url: str) -> None:
    """A driver's error names the statement's parameters (readers' addresses), and it ends in a log line."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    engine = create_engine(database_url)
    try:
        with pytest.raises(DBAPIError) as failed, engine.begin() as conn:
            conn.execute(text("INSERT INTO no_such_table (ip) VALUES (:ip)"), {"ip": READER})
    finally:
        engine.dispose()
    assert "no_such_table" in str(failed.value)
    assert READER not in str(failed.value)
