"""The spool: while the database cannot take a batch, the pixel still answers at once and loses nothing.

The storage-layer fault is injected in the write function (real SQLite underneath); the PostgreSQL test
stops and starts a real PostgreSQL cluster of its own under load.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import OperationalError

from deadpixel.config import Settings
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import OpenEvent
from deadpixel.store import migrate
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.schema import messages, opens, spool_replays
from deadpixel.store.writes import write_opens
from deadpixel.track.ingest import GroupCommitWriter
from deadpixel.track.spool import Spool

from .conftest import Server, free_port
from .helpers import make_pixels

RAW = OpenClassifier(None, "full")


class Outage:
    """A database that refuses every transaction while ``down`` is set, as an unreachable server does."""

    def __init__(self) -> None:
        self.down = threading.Event()

    def write(self, conn: Connection, events: list[OpenEvent]) -> int:
        if self.down.is_set():
            raise OperationalError("INSERT", {}, ConnectionRefusedError("the database is down"))
        return write_opens(conn, events, RAW)


def stored(engine_url: str) -> tuple[int, int]:
    engine = create_engine(engine_url)
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(opens)).scalar_one()
        counted = conn.execute(select(func.sum(messages.c.open_count))).scalar_one()
    engine.dispose()
    return int(rows), int(counted or 0)


@pytest.mark.serial
def test_an_outage_is_answered_from_the_spool_and_replayed_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url, writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        message = create_message(conn, recipient="a@example.com")
    outage = Outage()
    spool = Spool(tmp_path / "spool", OpenEvent)
    writer = GroupCommitWriter(engine, outage.write, spool=spool, probe_interval=0.2)
    writer.start()

    async def record(n: int, start: int, by: GroupCommitWriter[OpenEvent] = writer) -> list[float]:
        async def one(i: int) -> float:
            began = time.perf_counter()
            await asyncio.wait_for(by.record(OpenEvent(message, float(i), None, f"ua{i}", "GET")), 5)
            return time.perf_counter() - began

        return list(await asyncio.gather(*(one(start + i) for i in range(n))))

    asyncio.run(record(20, 0))
    outage.down.set()
    during = asyncio.run(record(50, 100)) + asyncio.run(record(50, 200))
    assert max(during) < 0.5  # answered from the spool, not held until the database is back
    assert spool.events_waiting() == 100 and writer.stats.events_spooled == 100
    assert stored(url) == (20, 20)

    # The process died after committing a replayed batch but before removing its file: the copy comes back.
    first = spool.pending()[0]
    survivor = tmp_path / "survivor"
    shutil.copy(first, survivor)
    outage.down.clear()
    deadline = time.monotonic() + 5
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool.pending() == []
    writer.stop()
    assert writer.stats.events_replayed == 100

    # Restarted with that copy in the spool, and the database down again for a moment: new opens go to the
    # spool behind it until the replayer has emptied it.
    shutil.copy(survivor, first)
    outage.down.set()
    restarted = GroupCommitWriter(engine, outage.write, spool=Spool(tmp_path / "spool", OpenEvent))
    restarted.start()
    asyncio.run(record(5, 300, restarted))
    assert restarted.stats.events_spooled == 5 and stored(url) == (120, 120)
    outage.down.clear()
    deadline = time.monotonic() + 5
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    restarted.stop()
    assert spool.pending() == []
    assert stored(url) == (125, 125)  # 20 + 100 + 5, the duplicated batch once
    assert restarted.stats.events_replayed == 5 and restarted.stats.events_written == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(spool_replays)).scalar_one() == 3
    engine.dispose()


@pytest.mark.serial
def test_the_writer_commits_again_after_a_replay_while_opens_keep_coming(tmp_path: Path) -> None:
    """New batches go to the spool while it drains, so it is never empty for long: the replay's last step
    holds them off for a moment instead of chasing them for as long as the load lasts."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url, writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        message = create_message(conn, recipient="a@example.com")
    outage = Outage()
    outage.down.set()
    spool = Spool(tmp_path / "spool", OpenEvent)
    writer = GroupCommitWriter(engine, outage.write, spool=spool, probe_interval=0.05)
    writer.start()

    async def steady(seconds: float) -> int:
        sent, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.wait_for(writer.record(OpenEvent(message, float(sent), None, "steady", "GET")), 5)
            sent += 1
            if sent == 100:
                outage.down.clear()
        return sent

    async def main() -> int:
        return sum(await asyncio.gather(*(steady(2.0) for _ in range(8))))

    sent = asyncio.run(main())
    written_under_load = writer.stats.events_written
    writer.stop()
    assert writer.stats.events_spooled > 0 and written_under_load > 0  # committed directly again
    assert spool.pending() == []
    assert stored(url) == (sent, sent)
    engine.dispose()


def test_two_workers_sharing_a_spool_replay_it_once_and_both_commit_again(tmp_path: Path) -> None:
    """Two writers (as two worker processes of one node) spool into one directory during an outage, under
    load, and replay it side by side once the database is back: every open is stored once, and both go
    back to committing directly."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url, writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        message = create_message(conn, recipient="a@example.com")
    outage = Outage()
    outage.down.set()
    spools = [Spool(tmp_path / "spool", OpenEvent) for _ in range(2)]  # flock tells them apart
    writers = [GroupCommitWriter(engine, outage.write, spool=spool, probe_interval=0.05) for spool in spools]
    for writer in writers:
        writer.start()

    async def steady(writer: GroupCommitWriter[OpenEvent], seconds: float) -> int:
        sent, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.wait_for(writer.record(OpenEvent(message, float(sent), None, "two", "GET")), 5)
            sent += 1
            if sent == 60:
                outage.down.clear()
        return sent

    async def main() -> int:
        return sum(await asyncio.gather(*(steady(writers[i % 2], 2.5) for i in range(8))))

    sent = asyncio.run(main())
    written_under_load = [writer.stats.events_written for writer in writers]
    for writer in writers:
        writer.stop()
    assert all(writer.stats.events_spooled > 0 for writer in writers)
    assert all(written > 0 for written in written_under_load)  # both commit directly again
    assert Spool(tmp_path / "spool", OpenEvent).pending() == []
    assert stored(url) == (sent, sent)
    engine.dispose()


def test_a_spool_left_by_a_stopped_process_is_replayed_by_the_next(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url, writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        message = create_message(conn, recipient="a@example.com")
    spool = Spool(tmp_path / "spool", OpenEvent)
    spool.append([OpenEvent(message, 1.0, "192.0.2.1", "left over", "GET")])
    writer = GroupCommitWriter(engine, Outage().write, spool=spool, probe_interval=0.1)
    writer.start()
    deadline = time.monotonic() + 5
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop()
    assert stored(url) == (1, 1)


def test_a_batch_the_database_refuses_is_set_aside_not_retried_forever(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}", writer=True)
    migrate.upgrade(engine)
    spool = Spool(tmp_path / "spool", OpenEvent)
    spool.append([OpenEvent("m" * 200, 1.0, None, None, "GET")])  # no such message: written as erased

    def refuse(conn: Connection, events: list[OpenEvent]) -> int:
        from sqlalchemy.exc import IntegrityError

        raise IntegrityError("INSERT", {}, ValueError("refused"))

    writer = GroupCommitWriter(engine, refuse, spool=spool, probe_interval=0.1)
    writer.start()
    deadline = time.monotonic() + 5
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop()
    assert spool.pending() == []
    assert len(list(spool.quarantine.iterdir())) == 1
    assert writer.stats.events_dropped == 1


def test_a_spooled_batch_is_claimed_by_one_replayer_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", OpenEvent)
    batch = [
        OpenEvent("m1", 1.0, "192.0.2.1", "ua", "GET"),
        OpenEvent("m2", 2.0, None, None, "HEAD", "prefetch"),
    ]
    path = spool.append(batch)
    other_worker = Spool(tmp_path / "spool", OpenEvent)  # flock is per open file, as between processes
    with spool.claim(path) as events:
        assert events == batch
        with other_worker.claim(path) as elsewhere:
            assert elsewhere is None
    spool.refuse(path)  # set aside: no longer anyone's to replay
    with other_worker.claim(path) as gone:
        assert gone is None


def _record_before_the_writer_starts(writer: GroupCommitWriter[OpenEvent], events: list[OpenEvent]) -> None:
    """Hand a batch to the writer before its thread runs, so the batch, not an idle pass, meets the spool."""

    async def main() -> None:
        answered = asyncio.gather(*(writer.record(event) for event in events))
        while writer.queue_depth < len(events):
            await asyncio.sleep(0)
        writer.start()
        await asyncio.wait_for(answered, 5)

    asyncio.run(main())


def test_new_opens_go_to_the_spool_behind_its_backlog_and_land_after_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url, writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        message = create_message(conn, recipient="a@example.com")
    spool = Spool(tmp_path / "spool", OpenEvent)
    backlog = [OpenEvent(message, float(i), None, "spooled", "GET") for i in range(10)]
    spool.append(backlog)
    written: list[OpenEvent] = []

    def write(conn: Connection, events: list[OpenEvent]) -> int:
        deadline = time.monotonic() + 5  # the replay waits until the new opens have met the spool
        while writer.stats.events_spooled < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        written.extend(events)
        return write_opens(conn, events, RAW)

    writer = GroupCommitWriter(engine, write, spool=spool)
    new = [OpenEvent(message, 100.0 + i, None, "new", "GET") for i in range(5)]
    _record_before_the_writer_starts(writer, new)  # answered from the spool, the backlog not replayed yet
    deadline = time.monotonic() + 5
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    writer.stop()
    assert written == backlog + new  # in the order they came
    assert spool.pending() == []
    assert stored(url) == (15, 15)
    assert writer.stats.events_replayed == 15 and writer.stats.events_written == 0
    engine.dispose()


def test_a_refused_chunk_does_not_hold_back_the_new_opens_it_would_have_carried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = create_engine(url, writer=True)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        message = create_message(conn, recipient="a@example.com")
    spool = Spool(tmp_path / "spool", OpenEvent)
    spool.append([OpenEvent(message, 1.0, None, "refused", "GET")])

    def write(conn: Connection, events: list[OpenEvent]) -> int:
        if any(event.user_agent == "refused" for event in events):
            from sqlalchemy.exc import DataError

            raise DataError("INSERT", {}, ValueError("refused"))
        return write_opens(conn, events, RAW)

    writer = GroupCommitWriter(engine, write, spool=spool)
    _record_before_the_writer_starts(
        writer, [OpenEvent(message, 100.0 + i, None, "new", "GET") for i in range(5)]
    )
    deadline = time.monotonic() + 5
    while spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop()
    assert stored(url) == (5, 5)
    assert spool.pending() == [] and len(list(spool.quarantine.iterdir())) == 1
    assert writer.stats.events_dropped == 1
    engine.dispose()


# --- a real PostgreSQL, stopped and started under load ----------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def own_postgres() -> Iterator[object]:
    """A PostgreSQL cluster of this test's own (initdb into a temp dir, its own port), run as postgres."""
    found = _pg_bin()
    if found is None or shutil.which("runuser") is None:
        pytest.skip("needs Debian's PostgreSQL server binaries and runuser to run a cluster of its own")
    pg_bin: Path = found
    # Under /tmp itself: pytest's own temp dirs are private to root, and the cluster runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="deadpixel-pg-"))
    shutil.chown(root, "postgres", "postgres")
    port = free_port()

    def as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True)

    made = as_postgres(str(pg_bin / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres")
    if made.returncode != 0:
        pytest.skip(f"initdb cannot run here: {made.stderr.strip()[:200]}")

    class Cluster:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

        def start(self) -> None:
            started = as_postgres(
                str(pg_bin / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log"), "-w",
                "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
            )  # fmt: skip
            assert started.returncode == 0, started.stderr

        def stop(self) -> None:
            as_postgres(str(pg_bin / "pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop")

    cluster = Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.serial
def test_postgresql_down_under_load_the_pixel_answers_and_every_open_lands_once(
    own_postgres: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deadpixel.config import load_settings
    from deadpixel.server.start import prepare

    cluster = own_postgres
    env = {"DEADPIXEL_DATA_DIR": str(tmp_path / "data"), "DEADPIXEL_DATABASE_URL": cluster.url}  # type: ignore[attr-defined]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    prepare(settings)
    pixels = [path for _, path in make_pixels(settings, 20)]
    server = Server(env=env).start()
    latencies: list[float] = []
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            i = 0
            while not stop.is_set():
                began = time.perf_counter()
                statuses.append(client.get(pixels[i % len(pixels)]).status_code)
                latencies.append(time.perf_counter() - began)
                i += 1
                time.sleep(0.002)

    try:
        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(0.5)
        cluster.stop()  # type: ignore[attr-defined]
        down_from = len(latencies)
        time.sleep(2.0)
        during = sorted(latencies[down_from:])
        cluster.start()  # type: ignore[attr-defined]
        back = time.monotonic()
        spool = tmp_path / "data" / "spool" / "opens"
        while any(spool.glob("*.batch")) and time.monotonic() - back < 10:
            time.sleep(0.05)
        replayed_after = time.monotonic() - back
        time.sleep(0.3)
        stop.set()
        loader.join()
        assert server.stop() == 0
    finally:
        server.kill()
    assert set(statuses) == {200}
    # One client in turn: each answer waits for its batch to be spooled (fsynced), so how many fit
    # in the two seconds is the disk's business; enough of them for a p99 is this test's.
    assert len(during) > 30
    assert during[int(len(during) * 0.99)] < 0.05  # p99 while the database is down
    assert replayed_after < 5
    engine = create_engine(cluster.url)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(opens)).scalar_one() == len(statuses)
        assert conn.execute(select(func.sum(messages.c.open_count))).scalar_one() == len(statuses)
    engine.dispose()


@pytest.mark.slow
@pytest.mark.serial
def test_a_lock_held_for_seconds_does_not_hold_up_the_pixel(
    server_factory: type[Server], env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """Past the commit deadline a batch goes to the spool, so a slow database costs the pixel that much."""
    server = server_factory(
        env=env | {"DEADPIXEL_COMMIT_DEADLINE_MS": "300", "DEADPIXEL_OPEN_CAP": "0"}
    ).start()
    pixels = [path for _, path in make_pixels(settings, 5)]
    engine = create_engine(settings.database_url)
    latencies: list[float] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get(pixels[0]).status_code == 200
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":  # the write lock, as a long transaction holds it
                holder = sqlite3.connect(
                    settings.database_url.removeprefix("sqlite:///"), isolation_level=None
                )
                holder.execute("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("LOCK TABLE opens IN ACCESS EXCLUSIVE MODE")
            held_until = time.monotonic() + 2.0
            i = 0
            while time.monotonic() < held_until:
                began = time.perf_counter()
                assert client.get(pixels[i % len(pixels)]).status_code == 200
                latencies.append(time.perf_counter() - began)
                i += 1
            if engine.dialect.name == "sqlite":
                holder.rollback()
                holder.close()
            else:
                conn.rollback()
        spool = Path(settings.data_dir) / "spool" / "opens"
        deadline = time.monotonic() + 5
        while any(spool.glob("*.batch")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(spool.glob("*.batch"))
    engine.dispose()
    assert server.stop() == 0
    assert len(latencies) >= 3
    assert max(latencies) < 1.0  # the 300 ms deadline, the spool's fsync and some slack; not 2 s
    assert stored(settings.database_url) == (1 + len(latencies), 1 + len(latencies))


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MB tmpfs to fill up: a real full disk under the data dir."""
    mount_point = Path(tempfile.mkdtemp(prefix="deadpixel-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()[:200]}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        mount_point.rmdir()


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    # Unbuffered: a buffered file would keep the bytes that did not fit and fail again when closed.
    with filler.open("wb", buffering=0) as out:
        chunk = b"\0" * 65536
        while True:
            try:
                out.write(chunk)
            except OSError:
                return filler


@pytest.mark.slow
def test_a_full_disk_the_pixel_still_answers_and_nothing_answered_is_lost(
    small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deadpixel.config import load_settings
    from deadpixel.server.start import prepare

    env = {"DEADPIXEL_DATA_DIR": str(small_disk / "data"), "DEADPIXEL_OPEN_CAP": "0"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DEADPIXEL_DATABASE_URL", raising=False)
    settings = load_settings()
    prepare(settings)
    pixels = [path for _, path in make_pixels(settings, 5)]
    server = Server(env=env | {"DEADPIXEL_DATABASE_URL": settings.database_url}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get(pixels[0]).status_code == 200
            filler = fill(small_disk)
            slowest = 0.0
            for i in range(300):  # enough rows to need new pages: the WAL must grow and cannot
                began = time.perf_counter()
                assert client.get(pixels[i % 5]).status_code == 200
                slowest = max(slowest, time.perf_counter() - began)
            assert slowest < 2.0  # the commit deadline, then answered from memory
            filler.unlink()
            deadline = time.monotonic() + 10
            while stored(settings.database_url)[0] < 301 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert server.stop() == 0
    finally:
        server.kill()
    assert stored(settings.database_url) == (301, 301)


def test_the_spool_and_the_directories_it_makes_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        Spool(tmp_path / "data" / "spool" / "opens", OpenEvent)
    finally:
        os.umask(old)
    for path in (tmp_path / "data", tmp_path / "data" / "spool", tmp_path / "data" / "spool" / "opens"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
