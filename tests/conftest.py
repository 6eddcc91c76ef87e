"""Fixtures: real SQLite files, a real PostgreSQL schema per test, and real servers on loopback."""

from __future__ import annotations

import fcntl
import itertools
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy import create_engine as sa_create_engine

from deadpixel.config import Settings, load_settings
from deadpixel.server.start import prepare
from deadpixel.store.db import create_engine
from tests import forkserver

PG_ENV = "DEADPIXEL_TEST_POSTGRES_URL"
# Servers start as children of a fork server that has imported the stack once (tests/forkserver.py);
# DEADPIXEL_TEST_FORK_SERVER=0 starts each as a new interpreter instead.
FORK_SERVER = forkserver.ENABLED


def _start_order(item: pytest.Item) -> int:
    if any(mark.args[:1] == ("first-run",) for mark in item.iter_markers("xdist_group")):
        return 0
    return 1 if item.get_closest_marker("slow") is not None else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first: the first-run tests (a wheel built and installed, on one worker together),
    then the other ``slow`` ones, then the rest, each kept in its order. pytest-xdist hands tests out in
    this order, so the long ones no longer start near the end and keep one worker busy after the others
    are done."""
    items.sort(key=_start_order)


@pytest.fixture(autouse=True)
def _serial_tests_run_alone(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``serial`` (it measures time or CPU) runs while no other test does.

    A readers-writer lock over two files that every worker of the run shares: each test passes the turnstile
    and holds the room shared; a serial test keeps the turnstile, so no new test starts, and waits for the
    room to empty. Run without workers, there is nothing to wait for.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # the run's own directory; each worker has one below it
    serial = request.node.get_closest_marker("serial") is not None
    with (shared / "turnstile.lock").open("a") as turnstile, (shared / "room.lock").open("a") as room:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if not serial:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(room, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)
            if serial:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


def _postgres_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    return url


@contextmanager
def _fresh_schema() -> Iterator[str]:
    base = _postgres_base_url()
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa_create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        # The schema's name as application_name too, so its connections can be found and closed below.
        yield f"{base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        with admin.begin() as conn:
            # Engines a test left undisposed would hold their pooled connections until garbage collection,
            # and one pytest process can gather more than the server's max_connections: close them now.
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": schema},
            )
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    with _fresh_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """DEADPIXEL_* variables for a private data dir and the store under test, set in this process too."""
    values = {
        "DEADPIXEL_DATA_DIR": str(tmp_path / "data"),
        "DEADPIXEL_DATABASE_URL": database_url,
        # Passwords hashed at a test-only low cost, so that signing in stays quick (deadpixel.accounts.users).
        "DEADPIXEL_TEST_SCRYPT_N": "1024",
    }
    for name in list(os.environ):
        if name.startswith("DEADPIXEL_") and name != PG_ENV:
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


_prepared_sqlite: list[Path] = []


def _prepared_sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store as ``prepare`` leaves a new one (migrated to the head, rollups started), made once
    per test process: copying it costs a few milliseconds, running every migration again a tenth of a
    second of CPU."""
    if not _prepared_sqlite:
        made = tmp_path_factory.mktemp("prepared-sqlite")
        store = made / "store.db"
        prepare(
            load_settings(
                {"DEADPIXEL_DATA_DIR": str(made / "data"), "DEADPIXEL_DATABASE_URL": f"sqlite:///{store}"}
            )
        )
        with sqlite3.connect(store) as source, sqlite3.connect(made / "copy.db") as copy:
            source.backup(copy)  # one file, the write-ahead log folded in
        _prepared_sqlite.append(made / "copy.db")
    return _prepared_sqlite[0]


_prepared_postgres: list[tuple[str, str]] = []


def _prepared_postgres_schema() -> tuple[str, str] | None:
    """A PostgreSQL schema as ``prepare`` leaves a new one, as SQL (its tables, indexes, sequences and rows,
    from ``pg_dump``) and the schema name that SQL spells, made once per test process: replaying it costs
    about 15 ms of CPU here, migrating a fresh schema 0.15 s here and most of a second in the server.
    None without ``pg_dump``: each schema is then migrated."""
    if not _prepared_postgres:
        if shutil.which("pg_dump") is None:
            return None
        with _fresh_schema() as url, tempfile.TemporaryDirectory() as data_dir:
            prepare(load_settings({"DEADPIXEL_DATA_DIR": data_dir, "DEADPIXEL_DATABASE_URL": url}))
            template = str(make_url(url).query["application_name"])
            dump = subprocess.run(
                [
                    "pg_dump",
                    "--no-owner",
                    "--no-privileges",
                    "--inserts",
                    "--schema",
                    template,
                    _postgres_base_url(),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        # Comments, psql's own commands and the schema itself (the test's schema exists already) left out.
        sql = "\n".join(
            line for line in dump.splitlines() if line and not line.startswith(("--", "\\", "CREATE SCHEMA "))
        )
        _prepared_postgres.append((template, sql))
    return _prepared_postgres[0]


def _copy_prepared_postgres(url: str) -> None:
    """Fill the URL's schema with the prepared one's tables and rows, if it is still empty (a test that
    made its own store first, at an older revision, say, keeps it)."""
    prepared = _prepared_postgres_schema()
    if prepared is None:
        return
    template, sql = prepared
    with psycopg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    ) as conn:
        schema, empty = conn.execute(
            "SELECT current_schema(), NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = current_schema())"
        ).fetchone() or (None, False)
        if schema and empty:
            conn.execute(sql.replace(template, schema).encode())


@pytest.fixture
def settings(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The test's settings, its store prepared as ``deadpixel serve`` prepares it (a new store is a copy of
    one prepared once per test process, a SQLite file or a PostgreSQL schema's SQL; ``prepare`` then finds
    it current, as it would find a migrated one)."""
    s = load_settings()
    url = make_url(s.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        shutil.copyfile(_prepared_sqlite_store(tmp_path_factory), url.database)
    elif url.get_backend_name() == "postgresql":
        _copy_prepared_postgres(s.database_url)
    prepare(s)
    return s


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """The test's store as the writer opens it (a test module may define its own ``engine`` instead)."""
    made = create_engine(settings.database_url, writer=True)
    yield made
    made.dispose()


_PORT_BLOCK = 1_250
_next_port = itertools.count()


def free_port() -> int:
    """A free port that no one else is about to take: below the kernel's ephemeral range (32768 up, where
    bind(0) and outgoing connections get theirs), in a block of its own for each pytest-xdist worker, taken
    in turn and checked free. A port from bind(0), released and bound again later, can be taken meanwhile."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    base = 10_000 + (worker % 8) * _PORT_BLOCK
    for _ in range(_PORT_BLOCK):
        port = base + next(_next_port) % _PORT_BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port between {base} and {base + _PORT_BLOCK}")


@dataclass
class Server:
    """A real ``deadpixel serve`` process group on loopback."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    workers: int = 1
    process: subprocess.Popen[bytes] | forkserver.ForkedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Server:
        full_env = {**os.environ, **self.env, "DEADPIXEL_PORT": str(self.port)}
        args = ["serve", "--workers", str(self.workers)]
        if FORK_SERVER:
            self.process = forkserver.spawn(args, full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "deadpixel", *args],
                env=full_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("server did not become healthy")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait: a graceful stop drains pending writes."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, with no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def server_factory(settings: Settings, env: dict[str, str]) -> Iterator[type[Server]]:
    started: list[Server] = []

    class TrackedServer(Server):
        def start(self, timeout: float = 20.0) -> Server:
            started.append(self)
            return super().start(timeout)

    yield TrackedServer
    for server in started:
        server.kill()


@pytest.fixture
def server(server_factory: type[Server], env: dict[str, str]) -> Iterator[Server]:
    yield server_factory(env=dict(env)).start()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per database for the whole session, for tests that only read (status codes, headers,
    malformed requests): a test that writes, or counts what is stored, takes its own ``server``."""
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    with ExitStack() as stack:
        if request.param == "sqlite":
            database_url = f"sqlite:///{data_dir.parent / 'store.db'}"
        else:
            database_url = stack.enter_context(_fresh_schema())
            _copy_prepared_postgres(database_url)
        values = {
            "DEADPIXEL_DATA_DIR": str(data_dir),
            "DEADPIXEL_DATABASE_URL": database_url,
            "DEADPIXEL_TEST_SCRYPT_N": "1024",
        }
        clean = {k: v for k, v in os.environ.items() if not k.startswith("DEADPIXEL_") or k == PG_ENV}
        prepare(load_settings({**clean, **values}))
        server = Server(env=values).start()
        stack.callback(server.kill)
        yield server
