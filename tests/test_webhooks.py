"""Webhooks: the outbox written with each batch, signed delivery with retries and backoff to a real
receiver on loopback that fails on purpose for a while, the ``deadpixel webhook`` commands, a real server."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, delete, func, select

from deadpixel.config import Settings
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import ClickEvent, OpenEvent
from deadpixel.hooks import registry
from deadpixel.hooks.deliver import Deliverer, Policy
from deadpixel.hooks.guard import Guard
from deadpixel.hooks.signing import HEADER, sign, verify
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.store import outbox
from deadpixel.store.clicks import write_clicks
from deadpixel.store.db import create_engine
from deadpixel.store.links import save_links
from deadpixel.store.messages import create_message
from deadpixel.store.schema import webhook_deliveries, webhooks
from deadpixel.store.writes import write_opens
from tests.conftest import Server, free_port

from .helpers import deadpixel

# The receivers here listen on loopback, which webhooks may reach only when allow-listed.
LOOPBACK = Guard.allowing("127.0.0.1", "::1")
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"


@dataclass
class Hit:
    path: str
    at: float
    headers: dict[str, str]
    body: bytes
    status: int
    method: str = "POST"


@dataclass
class Receiver:
    """A real HTTP server on loopback that answers 503 until ``fail_until`` (a time) or for ``fail_first``
    requests per event, then 200; it records every request."""

    fail_until: float = 0.0
    fail_first: int = 0
    delay: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return self.url_for("/hook")

    def url_for(self, path: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(receiver.delay)
                event_id = self.headers.get("Deadpixel-Event-Id", "")
                with receiver.lock:
                    seen = sum(
                        1
                        for h in receiver.hits
                        if (h.path, h.headers.get("Deadpixel-Event-Id")) == (self.path, event_id)
                    )
                    failing = time.time() < receiver.fail_until or seen < receiver.fail_first
                    status = 503 if failing else 200
                    receiver.hits.append(
                        Hit(self.path, time.time(), dict(self.headers.items()), body, status, self.command)
                    )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            do_PUT = do_POST  # Matrix's read notices are PUT

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def delivered(self, path: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.status == 200 and path in (None, h.path)]

    def attempts(self, event_id: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.headers.get("Deadpixel-Event-Id") == event_id]


@pytest.fixture(autouse=True)
def allow_loopback(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``deadpixel`` processes these tests start may reach the loopback receivers."""
    env["DEADPIXEL_WEBHOOK_ALLOW"] = "127.0.0.1, ::1"
    monkeypatch.setenv("DEADPIXEL_WEBHOOK_ALLOW", env["DEADPIXEL_WEBHOOK_ALLOW"])


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    """A receiver on loopback (test_notifications.py takes it too, for push and chat targets)."""
    made = Receiver().start()
    yield made
    made.stop()


@pytest.fixture
def engines(settings: Settings) -> Iterator[tuple[Engine, Engine]]:
    reader = create_engine(settings.database_url)
    writer = create_engine(settings.database_url, writer=True)
    outbox.forget_cache()
    yield reader, writer
    reader.dispose()
    writer.dispose()


CLASSIFIER = OpenClassifier.from_settings(Settings(data_dir=Path("."), database_url="sqlite://"))


def seed_opens(engine: Engine, count: int, campaign: str = "spring") -> list[str]:
    """One message per open, written as the pixel's writer writes them (the outbox hook included)."""
    with engine.begin() as conn:
        ids = [
            create_message(conn, recipient=f"r{n}@example.com", subject="Hi", campaign=campaign)
            for n in range(count)
        ]
        write_opens(
            conn, [OpenEvent(mid, time.time(), "198.51.100.7", CHROME, "GET") for mid in ids], CLASSIFIER
        )
    return ids


def delivered_bodies(receiver: Receiver, secret: str, path: str = "/hook") -> dict[str, dict[str, Any]]:
    """The events one webhook's receiver accepted, by id, each checked for its signature and arriving once."""
    accepted = receiver.delivered(path)
    for hit in accepted:
        assert verify(secret, hit.headers[HEADER], hit.body), hit.headers
    bodies = [json.loads(hit.body) for hit in accepted]
    ids = [body["id"] for body in bodies]
    assert len(ids) == len(set(ids)), "an event was accepted twice"
    return {body["id"]: body for body in bodies}


def drain_until(deliverer: Deliverer, done: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "deliveries did not finish in time"
        deliverer.drain()
        time.sleep(0.02)


def test_a_signature_verifies_only_for_its_secret_body_and_time() -> None:
    body = b'{"id":"e1","type":"open"}'
    header = sign("whsec_a", body, now=1_000_000)
    assert header.startswith("t=1000000,v1=")
    assert verify("whsec_a", header, body, now=1_000_100)
    assert not verify("whsec_b", header, body, now=1_000_100)
    assert not verify("whsec_a", header, body + b" ", now=1_000_100)
    assert not verify("whsec_a", header, body, now=1_000_000 + 301)  # outside the replay window
    assert not verify("whsec_a", header.replace("t=1000000", "t=1000001"), body, now=1_000_000)
    assert not verify("whsec_a", "garbage", body)
    # A receiver rotating secrets can be sent two signatures: either verifies.
    both = f"{header},v1={sign('whsec_b', body, now=1_000_000).split('v1=')[1]}"
    assert verify("whsec_b", both, body, now=1_000_000)


def test_bad_webhooks_are_refused_with_a_reason(engines: tuple[Engine, Engine]) -> None:
    _, writer = engines
    with writer.begin() as conn:
        for url in (
            "ftp://example.com/x",
            "example.com/hook",
            "http://",
            "javascript:alert(1)",
            "http://a b/",
        ):
            with pytest.raises(registry.WebhookError, match="URL"):
                registry.add_webhook(conn, url)
        with pytest.raises(registry.WebhookError, match="events must be among open, click"):
            registry.add_webhook(conn, "https://example.com/hook", "open,bounce")
        with pytest.raises(registry.WebhookError, match="no webhook with id 9"):
            registry.remove_webhook(conn, 9)
        assert registry.list_webhooks(conn) == []


def test_no_webhook_means_no_outbox_rows(engines: tuple[Engine, Engine]) -> None:
    reader, writer = engines
    seed_opens(writer, 5)
    with reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar() == 0


def test_events_survive_a_receiver_that_is_down_then_arrive_once_each(
    engines: tuple[Engine, Engine], receiver: Receiver
) -> None:
    reader, writer = engines
    with writer.begin() as conn:
        hook, secret = registry.add_webhook(conn, receiver.url, guard=LOOPBACK)
        only_clicks, click_secret = registry.add_webhook(conn, receiver.url + "/clicks", "click", LOOPBACK)
        mid = create_message(conn, recipient="ann@example.com", subject="Hi", campaign="spring")
        save_links(conn, [(mid, ["https://example.com/a", "https://example.com/b?x=1"])])
    receiver.fail_first = 3  # each event: three refusals, then accepted
    ids = seed_opens(writer, 6)
    with writer.begin() as conn:
        write_clicks(
            conn, [ClickEvent(mid, 1, time.time(), "198.51.100.9", CHROME, "GET")], CLASSIFIER.clicks
        )
    with reader.connect() as conn:
        assert [(w.id, w.pending) for w in registry.list_webhooks(conn)] == [
            (hook.id, 7),
            (only_clicks.id, 1),
        ]

    policy = Policy(backoff=0.1, max_attempts=6, timeout=2.0, guard=LOOPBACK)
    deliverer = Deliverer(reader, writer, policy)
    try:
        drain_until(deliverer, lambda: len(receiver.delivered()) == 8)
    finally:
        deliverer.close()

    bodies = delivered_bodies(receiver, secret)
    opens = [b for b in bodies.values() if b["type"] == "open"]
    clicks = [b for b in bodies.values() if b["type"] == "click"]
    only_click = delivered_bodies(receiver, click_secret, "/hook/clicks")
    assert sorted(b["message_id"] for b in opens) == sorted(ids)
    assert {(b["campaign"], b["verdict"]["kind"], b["client"], b["device"]) for b in opens} == {
        ("spring", "human", "Webmail (Chrome)", "desktop")
    }
    assert all(b["recipient"].endswith("@example.com") and b["verdict"]["reason"] for b in opens)
    assert [(c["message_id"], c["recipient"], c["link"]) for c in clicks] == [
        (mid, "ann@example.com", {"number": 1, "url": "https://example.com/b?x=1"})
    ]
    # Both webhooks got the same click under the same event id, each signed with its own secret.
    assert list(only_click.values()) == clicks
    assert not verify(secret, receiver.delivered("/hook/clicks")[0].headers[HEADER], b"x")

    for event_id in bodies:
        tries = [h for h in receiver.attempts(event_id) if h.path == "/hook"]
        assert [h.status for h in tries] == [503, 503, 503, 200]
        gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(tries)]
        for n, gap in enumerate(gaps, start=1):  # 0.1 s, then 0.2 s, then 0.4 s: doubling
            assert gap >= policy.delay(n) - 0.02, (n, gaps)
    with reader.connect() as conn:
        listed = registry.list_webhooks(conn)
        assert [(w.pending, w.delivered, w.failed) for w in listed] == [(0, 7, 0), (0, 1, 0)]
        assert {d.attempts for d in registry.recent_deliveries(conn)} == {4}
        assert registry.backlog(conn) == {"pending": 0, "failed": 0}


def test_a_receiver_that_never_recovers_ends_failed_and_can_be_retried(
    settings: Settings, engines: tuple[Engine, Engine], receiver: Receiver
) -> None:
    reader, writer = engines
    with writer.begin() as conn:
        hook, _ = registry.add_webhook(conn, receiver.url, "open", LOOPBACK)
    receiver.fail_until = time.time() + 3600
    seed_opens(writer, 2)
    deliverer = Deliverer(reader, writer, Policy(backoff=0.05, max_attempts=3, timeout=2.0, guard=LOOPBACK))
    try:
        drain_until(deliverer, lambda: len(receiver.hits) == 6)
        deliverer.drain()
        assert len(receiver.hits) == 6 and deliverer.stats.failed == 2
        with reader.connect() as conn:
            assert registry.backlog(conn) == {"pending": 0, "failed": 2}
            failed = registry.recent_deliveries(conn)
            assert {(d.status, d.attempts, d.last_status, d.last_error) for d in failed} == {
                ("failed", 3, 503, "the receiver did not accept the delivery")
            }
        receiver.fail_until = 0
        retried = deadpixel("webhook", "retry", str(hook.id))
        assert retried.returncode == 0 and "2 failed deliveries" in retried.stdout, retried.stderr
        drain_until(deliverer, lambda: len(receiver.delivered()) == 2)
    finally:
        deliverer.close()
    with reader.connect() as conn:
        assert registry.backlog(conn) == {"pending": 0, "failed": 0}
    seed_opens(writer, 1)  # pending: never pruned
    week_later = Deliverer(reader, writer, Policy(), clock=lambda: time.time() + 8 * 86400)
    week_later.prune()
    week_later.close()
    with reader.connect() as conn:
        assert [(w.pending, w.delivered) for w in registry.list_webhooks(conn)] == [(1, 0)]


def test_rows_for_a_webhook_removed_elsewhere_are_dropped_not_sent(
    engines: tuple[Engine, Engine], receiver: Receiver
) -> None:
    """Another process removed the webhook; this one's cache still names it for up to two seconds."""
    reader, writer = engines
    with writer.begin() as conn:
        hook, _ = registry.add_webhook(conn, receiver.url, guard=LOOPBACK)
    seed_opens(writer, 2)  # this process now caches the webhook
    with writer.begin() as conn:
        conn.execute(delete(webhooks).where(webhooks.c.id == hook.id))
        conn.execute(delete(webhook_deliveries))
    seed_opens(writer, 3)  # written for the removed webhook, from the cache
    with reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar() == 3
    deliverer = Deliverer(reader, writer, Policy(backoff=0.1, timeout=2.0, guard=LOOPBACK))
    try:
        assert deliverer.drain() == 3
    finally:
        deliverer.close()
    assert receiver.hits == []
    with reader.connect() as conn:
        assert conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar() == 0


def test_two_deliverers_never_send_the_same_row(
    settings: Settings, engines: tuple[Engine, Engine], receiver: Receiver
) -> None:
    """As two server processes do: each claims its own rows (SKIP LOCKED on PostgreSQL, the write lock and
    the lease on SQLite), so every event is sent exactly once."""
    reader, writer = engines
    with writer.begin() as conn:
        _, secret = registry.add_webhook(conn, receiver.url, "open", LOOPBACK)
    receiver.delay = 0.01
    ids = seed_opens(writer, 80)
    policy = Policy(backoff=0.1, timeout=2.0, batch=8, concurrency=4, guard=LOOPBACK)
    writers = [create_engine(settings.database_url, writer=True) for _ in range(2)]
    deliverers = [Deliverer(reader, own, policy) for own in writers]
    threads = [threading.Thread(target=d.drain) for d in deliverers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for deliverer, own in zip(deliverers, writers, strict=True):
        deliverer.close()
        own.dispose()
    bodies = delivered_bodies(receiver, secret)
    assert sorted(b["message_id"] for b in bodies.values()) == sorted(ids)
    assert len(receiver.hits) == 80
    assert all(d.stats.delivered > 0 for d in deliverers), [d.stats for d in deliverers]


def test_webhook_commands(settings: Settings, receiver: Receiver) -> None:
    bad = deadpixel("webhook", "add", "ftp://example.com/")
    assert bad.returncode == 1 and "is not an http:// or https:// URL" in bad.stderr
    added = deadpixel("webhook", "add", receiver.url, "--events", "open")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("whsec_") and "Webhook 1 added for open" in added.stderr
    listed = deadpixel("webhook", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row == {"id": 1, "url": receiver.url, "events": ["open"], "created_at": row["created_at"],
                   "pending": 0, "delivered": 0, "failed": 0}  # fmt: skip
    assert secret not in listed.stdout and secret not in deadpixel("webhook", "list").stdout

    tested = deadpixel("webhook", "test", "1")
    assert tested.returncode == 0 and "answered 200" in tested.stdout, tested.stderr
    (hit,) = receiver.hits
    assert verify(secret, hit.headers[HEADER], hit.body) and json.loads(hit.body)["type"] == "test"
    receiver.fail_until = time.time() + 3600
    failing = deadpixel("webhook", "test", "1")
    assert failing.returncode == 1
    assert "webhook 1: the receiver did not accept the delivery (HTTP 503)" in failing.stderr

    unreachable = deadpixel("webhook", "add", "http://[::1]:1/nothing-listens", "--events", "click")
    assert unreachable.returncode == 0, unreachable.stderr
    refused = deadpixel("webhook", "test", "2")
    assert refused.returncode == 1 and "webhook 2: could not connect (ConnectError" in refused.stderr
    assert deadpixel("webhook", "remove", "2").returncode == 0

    delivered = deadpixel("webhooks", "deliver")
    assert delivered.returncode == 0 and "Delivered 0" in delivered.stdout, delivered.stderr
    assert deadpixel("webhook", "remove", "2").returncode == 1  # removed already
    removed = deadpixel("webhook", "remove", "1")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert json.loads(deadpixel("webhook", "list", "--json").stdout) == []


@pytest.mark.slow
@pytest.mark.serial
def test_a_real_server_delivers_opens_and_clicks_once_after_the_receiver_recovers(
    server_factory: type[Server], env: dict[str, str], settings: Settings, receiver: Receiver
) -> None:
    added = deadpixel("webhook", "add", receiver.url)
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        ids = [
            create_message(conn, recipient=f"p{n}@example.com", subject="Hi", campaign="live")
            for n in range(10)
        ]
        save_links(conn, [(ids[0], ["https://example.com/landing"])])
    engine.dispose()
    metrics_port = free_port()
    server_env = {**env, "DEADPIXEL_WEBHOOK_BACKOFF": "0.2", "DEADPIXEL_METRICS_PORT": str(metrics_port)}
    server = server_factory(env=server_env, workers=2).start()  # two deliverers share the outbox
    receiver.fail_until = time.time() + 3  # down for three seconds
    for mid in ids:
        pixel = httpx.get(f"{server.url}/o/{signer.pixel_token(mid)}.gif", headers={"user-agent": CHROME})
        assert pixel.status_code == 200
    assert httpx.get(f"{server.url}/c/{signer.click_token(ids[0], 0)}").status_code == 302
    assert scrape(metrics_port)["deadpixel_webhook_deliveries_pending"] == 11  # the backlog, while down
    assert time.time() < receiver.fail_until, "the pixel waited on the webhook"
    deadline = time.monotonic() + 20
    while len(receiver.delivered()) < 11 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # anything sent twice would show up by now
    bodies = delivered_bodies(receiver, secret)
    assert sorted((b["type"], b["message_id"]) for b in bodies.values()) == sorted(
        [("open", mid) for mid in ids] + [("click", ids[0])]
    )
    assert any(h.status == 503 for h in receiver.hits), "the receiver was never down"
    assert all(b["campaign"] == "live" for b in bodies.values())
    deadline = time.monotonic() + 5
    while (samples := scrape(metrics_port)).get("deadpixel_webhook_deliveries_total") != 11:
        assert time.monotonic() < deadline, samples
        time.sleep(0.2)
    assert (
        samples["deadpixel_webhook_deliveries_pending"] == samples["deadpixel_webhook_deliveries_failed"] == 0
    )
    assert samples["deadpixel_webhook_retries_total"] >= 11
    assert server.stop() == 0
    assert server.process is not None and server.process.stderr is not None
    assert secret not in server.process.stderr.read().decode()  # logged nowhere


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
