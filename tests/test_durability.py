"""Every answered open is stored exactly once: several processes, graceful stops and crashes under load."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from deadpixel.config import Settings
from deadpixel.store.db import create_engine
from deadpixel.store.schema import messages

from .conftest import Server
from .helpers import fetch_all, make_pixels, stored_user_agents


def counter_total(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(messages.c.open_count))).scalar_one()
    engine.dispose()
    return int(total or 0)


def settled(settings: Settings, expected: int, seconds: float = 30.0) -> None:
    """Wait until ``expected`` opens are stored: under load, a batch that missed its commit deadline is
    answered from the spool (fsynced) and lands in the store when the spool is replayed, moments later."""
    deadline = time.monotonic() + seconds
    while len(stored_user_agents(settings)) < expected and time.monotonic() < deadline:
        time.sleep(0.1)


def assert_answered_stored_once(answered: list[str], settings: Settings) -> Counter[str]:
    stored = Counter(stored_user_agents(settings))
    duplicates = [agent for agent, n in stored.items() if n > 1]
    assert duplicates == []
    missing = set(answered) - set(stored)
    assert missing == set(), f"{len(missing)} answered opens were lost"
    return stored


@pytest.mark.slow
def test_two_server_processes_on_one_store_record_every_open_exactly_once(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    servers = [server_factory(env=dict(env)).start() for _ in range(2)]
    pixels = make_pixels(settings, 200)
    paths = [path for _, path in pixels] * 10  # 2,000 requests, 10 per message
    results = fetch_all([s.url for s in servers], paths, concurrency=32)
    assert Counter(status for _, status in results) == {200: len(paths)}
    settled(settings, len(paths))
    stored = assert_answered_stored_once([agent for agent, _ in results], settings)
    assert sum(stored.values()) == len(paths)
    assert counter_total(settings) == len(paths)


@pytest.mark.slow
def test_several_workers_on_one_sqlite_file_record_every_open_exactly_once(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("workers of one server on PostgreSQL are covered by the two-process test")
    server = server_factory(env=dict(env), workers=2).start()
    paths = [path for _, path in make_pixels(settings, 100)] * 15
    results = fetch_all(server.url, paths, concurrency=32)
    assert Counter(status for _, status in results) == {200: len(paths)}
    settled(settings, len(paths))
    stored = assert_answered_stored_once([agent for agent, _ in results], settings)
    assert sum(stored.values()) == len(paths) == counter_total(settings)


def load_while(stop_server: str, server: Server, settings: Settings) -> list[str]:
    """Drive load, stop the server the given way mid-load, return the user agents answered with 200."""
    paths = [path for _, path in make_pixels(settings, 100)] * 300  # far more than fits before the stop
    results: list[tuple[str, int]] = []

    def load() -> None:
        results.extend(fetch_all(server.url, paths, concurrency=48))

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(1.0)
    if stop_server == "sigterm":
        assert server.stop() == 0
    else:
        server.kill()
    thread.join(60)
    answered = [agent for agent, status in results if status == 200]
    assert 0 < len(answered) < len(paths), "the stop should land mid-load"
    assert all(status in (200, -1) for _, status in results)
    return answered


# Each pixel is fetched hundreds of times a minute here: with the open cap on, most of those would be
# counted instead of stored (tests/test_open_cap.py), and every answered open must be found as a row.
UNCAPPED = {"DEADPIXEL_OPEN_CAP": "0"}


@pytest.mark.slow
def test_sigterm_under_load_drains_then_exits(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    server = server_factory(env=env | UNCAPPED).start()
    answered = load_while("sigterm", server, settings)
    stored = assert_answered_stored_once(answered, settings)
    assert counter_total(settings) == sum(stored.values())


@pytest.mark.slow
def test_kill_9_under_load_loses_no_answered_open(
    server_factory: type[Server], env: dict[str, str], settings: Settings
) -> None:
    server = server_factory(env=env | UNCAPPED).start()
    answered = load_while("sigkill", server, settings)
    stored = assert_answered_stored_once(answered, settings)
    assert counter_total(settings) == sum(stored.values())
    # The store is consistent and the server starts again on it.
    restarted = server_factory(env=dict(env)).start()
    paths = [path for _, path in make_pixels(settings, 1)]
    assert fetch_all(restarted.url, paths, agent_prefix="after")[0][1] == 200
    assert "after-0" in stored_user_agents(settings)
