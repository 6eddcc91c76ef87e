"""Deliver the outbox: claim due rows, POST each signed event, then record the outcome.

A deliverer claims a batch of due rows by writing a lease (``lease_until``, ``lease_owner``) in one short
transaction; on PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED`` so deliverers in several server
processes never wait on or take each other's rows, on SQLite the claim runs under the write lock. The POSTs
happen outside any transaction, and an outcome is written only while the lease is still the deliverer's own.
A deliverer that dies mid-batch leaves rows whose lease runs out, and another sends them again: delivery is
at least once, and the event id lets a receiver drop a repeat.

A failed attempt (no answer, a timeout, any status outside 2xx, redirects included) is tried again after
``backoff`` seconds, doubling each time up to ``max_backoff``; after ``max_attempts`` the row is ``failed``
and stays visible until its webhook is removed.

Every connection goes through ``guard.PinnedBackend``: the receiver's name is resolved, each address checked
(no loopback, private, link-local or metadata address unless allow-listed) and the connection made to the
checked address. What went wrong is logged in detail; the outbox records only "could not connect" or "the
receiver did not accept the delivery", since whoever reads the settings page could otherwise use webhooks
to tell closed ports from open ones on the server's network.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
from sqlalchemy import Connection, Engine, bindparam, delete, exists, or_, select, update

from deadpixel.config import Settings
from deadpixel.hooks.guard import Guard, PinnedBackend
from deadpixel.hooks.notify import Destination, Notice, NoticeConfig, Notifier, compose, destination
from deadpixel.hooks.outcome import COULD_NOT_CONNECT, NOT_ACCEPTED, Outcome
from deadpixel.hooks.signing import HEADER, sign
from deadpixel.hooks.tls import client_context
from deadpixel.store import notices
from deadpixel.store.schema import campaigns, links, messages, webhook_deliveries, webhooks

log = logging.getLogger(__name__)
USER_AGENT = "deadpixel-webhook/1"
KEEP_DELIVERED = 7 * 86400  # delivered rows kept this long, for the settings page
d = webhook_deliveries.c


@dataclass(frozen=True, slots=True)
class Policy:
    backoff: float = 30.0  # seconds before the second attempt; doubles after each failure
    max_backoff: float = 3600.0
    max_attempts: int = 10
    timeout: float = 10.0  # per POST
    batch: int = 32  # rows per claim
    concurrency: int = 8  # POSTs in flight per deliverer
    poll: float = 1.0  # seconds between looks at the outbox when nothing was due
    guard: Guard = field(default_factory=Guard)  # which addresses receivers may have
    notices: NoticeConfig = field(default_factory=NoticeConfig)  # where read notices go (hooks.notify)
    digest_check: float = 60.0  # seconds between looks for a campaign digest that is due

    @property
    def lease(self) -> float:
        """Long enough for a whole claimed batch to be sent, even if every POST times out."""
        return self.timeout * (self.batch / self.concurrency + 1) + 30

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        return float(min(self.backoff * 2 ** (attempts - 1), self.max_backoff))

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            backoff=settings.webhook_backoff,
            max_backoff=max(settings.webhook_backoff, 3600.0),
            max_attempts=settings.webhook_max_attempts,
            timeout=settings.webhook_timeout,
            poll=min(1.0, settings.webhook_backoff),
            guard=Guard.allowing(*settings.webhook_allow),
            notices=NoticeConfig.from_settings(settings),
        )


@dataclass(slots=True)
class DeliveryStats:
    delivered: int = 0
    retried: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    webhook_id: int
    event_id: str
    event: str
    body: bytes
    attempts: int
    url: str
    secret: str
    notice: Notice | None = None  # a read notice (webhook_id 0), sent to ``to`` instead of POSTed signed
    to: Destination | None = None


def post(client: httpx.Client, url: str, secret: str, event: str, event_id: str, body: bytes) -> Outcome:
    """One signed POST; only the status counts, the response body is never read."""
    headers = {
        "content-type": "application/json",
        HEADER: sign(secret, body),
        "Deadpixel-Event": event,
        "Deadpixel-Event-Id": event_id,
    }
    try:
        with client.stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
    except Exception as exc:  # any failure to get an answer is a failed attempt, never a row stuck in a lease
        return Outcome(None, COULD_NOT_CONNECT, f"{type(exc).__name__}: {exc}"[:300])
    if 200 <= status < 300:
        return Outcome(status, None)
    return Outcome(status, NOT_ACCEPTED, f"HTTP {status}")


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool built on ``PinnedBackend``: every new connection is to
    an address the guard checked. httpx has no parameter for the network backend, so the pool it made is
    replaced by an equal one (same TLS context, limits, HTTP/1.1) that has it."""

    def __init__(self, guard: Guard, limits: httpx.Limits) -> None:
        super().__init__(verify=client_context(), limits=limits, trust_env=False)
        if not isinstance(self._pool, httpcore.ConnectionPool):  # the attribute every httpx >= 0.27 has
            raise RuntimeError("this httpx version keeps its connection pool elsewhere")
        self._pool = httpcore.ConnectionPool(
            ssl_context=client_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(guard),
        )


def new_client(policy: Policy) -> httpx.Client:
    """Redirects are not followed and proxy variables are ignored: the guarded connection is the request's."""
    limits = httpx.Limits(max_connections=policy.concurrency)
    return httpx.Client(
        timeout=policy.timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
        transport=GuardedTransport(policy.guard, limits),
    )


def event_body(event_id: str, event: str, payload: dict[str, Any], context: dict[str, Any]) -> bytes:
    """The JSON a receiver gets (documented in docs/webhooks.md)."""
    body: dict[str, Any] = {
        "id": event_id,
        "type": event,
        "at": payload["at"],
        "message_id": payload["message_id"],
        "campaign": context.get("campaign"),
        "recipient": context.get("recipient"),
        "verdict": {"kind": payload.get("kind"), "reason": payload.get("reason")},
        "client": payload.get("client"),
        "device": payload.get("device"),
        "os": payload.get("os"),
        "country": payload.get("country"),
    }
    if event == "click":
        number = payload.get("link")
        body["link"] = {"number": number, "url": context.get("links", {}).get(number)}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _contexts(conn: Connection, message_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Campaign, recipient and link URLs of these messages as they are now (None once a message is erased)."""
    ids = sorted(message_ids)
    found: dict[str, dict[str, Any]] = {}
    rows = conn.execute(
        select(messages.c.id, messages.c.recipient, campaigns.c.name, messages.c.subject)
        .select_from(messages.outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id))
        .where(messages.c.id.in_(ids))
    )
    for mid, recipient, campaign, subject in rows:
        found[mid] = {"recipient": recipient, "campaign": campaign, "subject": subject, "links": {}}
    for mid, number, url in conn.execute(
        select(links.c.message_id, links.c.number, links.c.url).where(links.c.message_id.in_(ids))
    ):
        found[mid]["links"][number] = url
    return found


_finish = (
    update(webhook_deliveries)
    .where(d.id == bindparam("row_id"), d.lease_owner == bindparam("owner"))
    .values(
        status=bindparam("new_status"),
        attempts=bindparam("new_attempts"),
        next_attempt_at=bindparam("next_at"),
        last_attempt_at=bindparam("tried_at"),
        last_status=bindparam("http_status"),
        last_error=bindparam("error"),
        lease_until=None,
        lease_owner=None,
    )
)


def _message_ids(payload: dict[str, Any]) -> list[str]:
    """The messages an outbox row speaks of: one, or a digest's many."""
    if "reads" in payload:
        return [str(read["message_id"]) for read in payload["reads"]]
    return [payload["message_id"]] if payload.get("message_id") else []


def _due(now: float) -> Any:
    """Pending, its time has come, and no live lease on it."""
    free = or_(d.lease_until.is_(None), d.lease_until <= now)
    return (d.status == "pending") & (d.next_attempt_at <= now) & free


class Deliverer:
    """Claims and sends due deliveries. ``reader`` looks for work without locking; ``writer`` claims it
    (on SQLite an engine that takes the write lock up front; on PostgreSQL the two may be one engine)."""

    def __init__(
        self,
        reader: Engine,
        writer: Engine,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.policy = policy or Policy()
        self._clock = clock
        self._client = new_client(self.policy)
        self._pool = ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="deadpixel-webhook")
        self._last_prune = float("-inf")
        self._last_digest = float("-inf")
        self._notifier = Notifier(self.policy.notices)
        self.stats = DeliveryStats()

    def close(self) -> None:
        self._pool.shutdown()
        self._client.close()
        self._notifier.close()

    def run_once(self) -> int:
        """Send one batch of due deliveries; returns how many rows were handled (0: nothing was due)."""
        now = self._clock()
        with self._reader.connect() as conn:
            if not conn.execute(select(exists().where(_due(now)))).scalar():
                return 0
        owner = uuid.uuid4().hex
        taken, claimed = self._claim(owner, now)
        if not claimed:
            return taken
        outcomes = list(self._pool.map(self._send, claimed))
        self._record(owner, claimed, outcomes)
        return taken

    def _send(self, row: Claimed) -> Outcome:
        if row.notice is not None and row.to is not None:
            return self._notifier.send(row.notice, row.to)
        return post(self._client, row.url, row.secret, row.event, row.event_id, row.body)

    def drain(self) -> int:
        """Send everything due now (retries that come due meanwhile too); returns how many were handled."""
        total = 0
        while handled := self.run_once():
            total += handled
        return total

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: the background loop of ``deadpixel serve``."""
        while not stop.is_set():
            try:
                handled = self.run_once()
                self.prune()
                self.digests()
            except Exception:  # the loop must outlive a database hiccup; the rows wait in the outbox
                log.exception("webhook delivery failed; trying again in %.1f s", self.policy.poll)
                handled = 0
            if not handled:
                stop.wait(self.policy.poll)

    def _claim(self, owner: str, now: float) -> tuple[int, list[Claimed]]:
        """How many rows were taken (orphans included, deleted here) and the ones to send."""
        with self._writer.begin() as conn:
            ids = list(
                conn.execute(
                    select(d.id)
                    .where(_due(now))
                    .order_by(d.id)
                    .limit(self.policy.batch)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not ids:
                return 0, []
            conn.execute(
                update(webhook_deliveries)
                .where(d.id.in_(ids))
                .values(lease_until=now + self.policy.lease, lease_owner=owner)
            )
            rows = conn.execute(
                select(
                    d.id,
                    d.webhook_id,
                    d.event_id,
                    d.event,
                    d.payload,
                    d.attempts,
                    d.target,
                    webhooks.c.url,
                    webhooks.c.secret,
                )
                .select_from(webhook_deliveries.outerjoin(webhooks, webhooks.c.id == d.webhook_id))
                .where(d.id.in_(ids))
                .order_by(d.id)
            ).all()
            orphans = [row.id for row in rows if row.url is None and row.target is None]
            if orphans:  # their webhook was removed after they were written
                conn.execute(delete(webhook_deliveries).where(d.id.in_(orphans)))
            live = [row for row in rows if row.url is not None or row.target is not None]
            payloads = {row.id: json.loads(row.payload) for row in live}
            contexts = _contexts(conn, {mid for p in payloads.values() for mid in _message_ids(p)})
            notes = [row for row in live if row.target is not None]
            sent_to = self._destinations(conn, notes, now)
        claimed = []
        for row in notes:
            if row.id in sent_to:
                payload = payloads[row.id]
                notice = compose(row.event, row.event_id, payload, contexts, self.policy.notices)
                claimed.append(Claimed(row.id, 0, row.event_id, row.event, b"", row.attempts, "", "",
                                       notice, sent_to[row.id]))  # fmt: skip
        for row in live:
            if row.target is not None:
                continue
            payload = payloads[row.id]
            body = event_body(row.event_id, row.event, payload, contexts.get(payload["message_id"], {}))
            claimed.append(
                Claimed(
                    row.id, row.webhook_id, row.event_id, row.event, body, row.attempts, row.url, row.secret
                )
            )
        return len(ids), claimed

    def _destinations(self, conn: Connection, rows: Sequence[Any], now: float) -> dict[int, Destination]:
        """Where each claimed notice goes now; those with nowhere to go are finished here as ``skipped``."""
        if not rows:
            return {}
        stored = notices.targets(conn)
        found: dict[int, Destination] = {}
        for row in rows:
            target = destination(row.target, self.policy.notices, stored)
            if target is not None and (row.event != "click" or self.policy.notices.clicks):
                found[row.id] = target
        skipped = [row.id for row in rows if row.id not in found]
        if skipped:
            conn.execute(
                update(webhook_deliveries)
                .where(d.id.in_(skipped))
                .values(status="skipped", last_attempt_at=now, lease_until=None, lease_owner=None)
            )
        return found

    def digests(self, now: float | None = None) -> int:
        """Queue the campaign digests that are due (looked for once a minute); returns how many."""
        now = self._clock() if now is None else now
        if now - self._last_digest < self.policy.digest_check:
            return 0
        self._last_digest = now
        with self._reader.connect() as conn:
            if not notices.digests_wanted(conn):
                return 0
        with self._writer.begin() as conn:
            return notices.make_digests(conn, now)

    def _record(self, owner: str, claimed: Sequence[Claimed], outcomes: Sequence[Outcome]) -> None:
        now = self._clock()
        params = []
        for row, outcome in zip(claimed, outcomes, strict=True):
            attempts = row.attempts + 1
            if outcome.ok:
                status, next_at = "delivered", now
                self.stats.delivered += 1
            elif attempts >= self.policy.max_attempts:
                status, next_at = "failed", now
                self.stats.failed += 1
                log.warning("%s: gave up on event %s after %d attempts (%s)", _label(row),
                            row.event_id, attempts, outcome.detail)  # fmt: skip
            else:
                status, next_at = "pending", now + self.policy.delay(attempts)
                self.stats.retried += 1
                log.info("%s: event %s, attempt %d failed (%s)", _label(row), row.event_id,
                         attempts, outcome.detail)  # fmt: skip
            params.append({
                "row_id": row.id, "owner": owner, "new_status": status, "new_attempts": attempts,
                "next_at": next_at, "tried_at": now, "http_status": outcome.status, "error": outcome.error,
            })  # fmt: skip
        with self._writer.begin() as conn:
            conn.execute(_finish, params)

    def prune(self) -> None:
        """Forget delivered rows older than KEEP_DELIVERED, once an hour. It looks before it writes: an idle
        server must not take SQLite's write lock, which would fail other tools' transactions that read
        before they write."""
        now = self._clock()
        if now - self._last_prune < 3600:
            return
        self._last_prune = now
        old = (d.status == "delivered") & (d.last_attempt_at < now - KEEP_DELIVERED)
        with self._reader.connect() as conn:
            if not conn.execute(select(exists().where(old))).scalar():
                return
        with self._writer.begin() as conn:
            conn.execute(delete(webhook_deliveries).where(old))


def _label(row: Claimed) -> str:
    if row.to is not None:
        return f"{row.event} notice by {row.to.channel}"
    return f"webhook {row.webhook_id}"


class DeliveryThread:
    """The deliverer in the background of a server process, started and stopped with the app."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=deliverer.run, args=(self._stop,), name="deadpixel-webhooks", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.deliverer.close()
