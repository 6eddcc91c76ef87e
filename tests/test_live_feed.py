"""The live feed: server-sent events read from the store, so an open recorded through the real pixel shows up
in a signed-in stream, and in a real browser the list grows without a reload."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, insert

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings
from deadpixel.store.db import create_engine
from deadpixel.store.schema import opens
from deadpixel.web import feed

from .conftest import Server
from .helpers import make_pixels
from .test_dashboard import CHROMIUM, CHROMIUM_ARGS, THUNDERBIRD

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    made = create_engine(settings.database_url)
    with made.begin() as conn:
        create_user(conn, "ann", "correct horse")
    yield made
    made.dispose()


def signed_in(server: Server) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=10)
    form = client.get("/login").text
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = client.post(
        "/login", data={"csrf": csrf, "name": "ann", "password": "correct horse", "next": "/"}
    )
    assert answer.status_code == 303
    return client


class Listener:
    """Reads a feed in a thread, collecting its events."""

    def __init__(self, client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> None:
        self.events: list[dict[str, object]] = []
        self.ready = threading.Event()
        self.status = 0
        self.content_type = ""
        self._stop = False
        self._thread = threading.Thread(target=self._run, args=(client, path, headers or {}), daemon=True)
        self._thread.start()
        assert self.ready.wait(10), "the feed did not start"

    def _run(self, client: httpx.Client, path: str, headers: dict[str, str]) -> None:
        try:
            with client.stream("GET", path, headers=headers, timeout=30) as response:
                self.status, self.content_type = response.status_code, response.headers["content-type"]
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        self.ready.set()
                    if line.startswith("data:"):
                        self.events.append(json.loads(line[5:]))
                    if self._stop:
                        return
        except httpx.HTTPError:
            if not self._stop:
                raise

    def wait_for(self, count: int, timeout: float = 8.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.events)

    def stop(self) -> None:
        self._stop = True


@pytest.mark.slow
def test_an_open_through_the_real_pixel_appears_in_the_feed(
    engine: Engine, settings: Settings, server: Server
) -> None:
    assert httpx.get(server.url + "/feed", follow_redirects=False).status_code == 303
    (spring, spring_path), = make_pixels(settings, 1, campaign="spring")  # fmt: skip
    (_, autumn_path), = make_pixels(settings, 1, campaign="autumn")  # fmt: skip
    client = signed_in(server)
    only_spring = Listener(client, "/feed?campaign=spring")
    everything = Listener(client, "/feed")
    assert only_spring.status == 200 and only_spring.content_type.startswith("text/event-stream")
    assert httpx.get(server.url + autumn_path, headers={"user-agent": THUNDERBIRD}).status_code == 200
    assert httpx.get(server.url + spring_path, headers={"user-agent": THUNDERBIRD}).status_code == 200
    (event,) = only_spring.wait_for(1)
    assert (event["type"], event["message_id"], event["campaign"], event["recipient"], event["kind"]) == (
        "open", spring, "spring", "r0@example.com", "human"
    )  # fmt: skip
    assert {e["campaign"] for e in everything.wait_for(2)} == {"spring", "autumn"}
    time.sleep(1.5)  # a later poll sends nothing again
    assert len(only_spring.events) == 1 and len(everything.events) == 2
    # A browser that reconnects sends the last id it saw and gets what it missed, once.
    resumed = Listener(client, "/feed", headers={"last-event-id": "o0.c0"})
    assert [e["message_id"] for e in resumed.wait_for(2)] == [e["message_id"] for e in everything.events]
    for listener in (only_spring, everything, resumed):
        listener.stop()
    client.close()


def test_a_row_committed_after_a_higher_id_is_still_sent_once(engine: Engine) -> None:
    """Writers in several processes commit in their own order: id 7 can become visible after id 8."""

    def open_row(row_id: int) -> dict[str, object]:
        return {"id": row_id, "message_id": "m" * 16, "at": time.time(), "method": "GET"}

    with engine.begin() as conn:
        conn.execute(insert(opens), [open_row(1), open_row(2)])
    with engine.connect() as conn:
        cursor = feed.start(conn)
        assert str(cursor) == "o2.c0"
        assert feed.poll(conn, cursor, None) == []  # what was there before is not news
    with engine.begin() as conn:
        conn.execute(insert(opens), [open_row(5), open_row(8)])
    with engine.connect() as conn:
        assert [e["id"] for e in feed.poll(conn, cursor, None)] == [5, 8]
    with engine.begin() as conn:
        conn.execute(insert(opens), [open_row(7)])
    with engine.connect() as conn:
        assert [e["id"] for e in feed.poll(conn, cursor, None)] == [7]
        assert feed.poll(conn, cursor, None) == []
        assert feed.poll(conn, cursor, "no such campaign") == []
    assert feed.Cursor.parse("o12.c3") == feed.Cursor(12, 3)
    assert feed.Cursor.parse("garbage") is None and feed.Cursor.parse("o1.c2\n") is None


@pytest.mark.slow
def test_a_stream_ends_by_itself_and_resumes_from_its_cursor(engine: Engine) -> None:
    """A server stops only once its streams end; the browser then reconnects with the last id it saw."""

    def open_row(row_id: int) -> dict[str, object]:
        return {"id": row_id, "message_id": "m" * 16, "at": time.time(), "method": "GET"}

    async def collect(cursor: feed.Cursor | None, during: Callable[[], None] = lambda: None) -> list[str]:
        chunks = []
        started = time.monotonic()
        async for chunk in feed.stream(engine, cursor, None, lifetime=1.5):
            chunks.append(chunk.decode())
            if len(chunks) == 1:
                await asyncio.to_thread(during)
        assert time.monotonic() - started < 4
        return chunks

    def add(*ids: int) -> None:
        with engine.begin() as conn:
            conn.execute(insert(opens), [open_row(i) for i in ids])

    first = asyncio.run(collect(None, lambda: add(3, 4)))
    assert first[0].startswith("retry: 1000\nid: o0.c0\n")
    assert [
        json.loads(line[5:])["id"]
        for chunk in first[1:]
        for line in chunk.splitlines()
        if line[:5] == "data:"
    ] == [3, 4]
    last_id = [line[4:] for line in first[-1].splitlines() if line.startswith("id: ")][-1]
    assert last_id == "o4.c0"
    add(5)
    resumed = asyncio.run(collect(feed.Cursor.parse(last_id)))
    assert [
        json.loads(line[5:])["id"] for chunk in resumed for line in chunk.splitlines() if line[:5] == "data:"
    ] == [5]


@SQLITE_ONLY
@pytest.mark.slow
def test_in_a_real_browser_new_opens_appear_without_a_reload(
    engine: Engine, settings: Settings, server: Server, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    (mid, path), = make_pixels(settings, 1, campaign="spring")  # fmt: skip
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 800})
            errors: list[str] = []
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            failed: list[str] = []
            page.on("response", lambda answer: failed.append(answer.url) if answer.status >= 400 else None)
            page.goto(server.url + "/campaigns/spring")
            page.fill("input[name=name]", "ann")
            page.fill("input[name=password]", "correct horse")
            page.click("button[type=submit]")
            page.wait_for_url("**/campaigns/spring")
            # A locator, not wait_for_function: that evaluates a string in the page, which its CSP forbids.
            sync_api.expect(page.locator("#live-status")).to_have_text("live")
            assert httpx.get(server.url + path, headers={"user-agent": THUNDERBIRD}).status_code == 200
            item = page.locator(f"#live-feed li[data-message='{mid}']")
            item.wait_for(timeout=8000)
            assert "r0@example.com" in item.inner_text() and "opened" in item.inner_text()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
            page.screenshot(path=str(tmp_path / "live-feed.png"), full_page=True)
            assert [url for url in failed if not url.endswith("/favicon.ico")] == []
            assert [
                e for e in errors if not e.startswith("Failed to load resource")
            ] == []  # no CSP violation
        finally:
            browser.close()
