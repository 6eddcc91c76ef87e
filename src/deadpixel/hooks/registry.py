"""Add, list and remove webhooks, and see how their deliveries fare.

A webhook's secret is ``whsec_`` and 43 characters of URL-safe base64 (256 random bits), made when it is
added and returned only then. URLs must be http or https with a host; https is what a sender should use,
since the body names recipients. The host must be public unless allow-listed (``deadpixel.hooks.guard``):
a URL naming loopback, a private network or a cloud metadata service is refused here, at once, and every
delivery checks again.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, Engine, case, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from deadpixel.errors import DeadpixelError
from deadpixel.hooks.guard import Guard, Refused
from deadpixel.hooks.outcome import COULD_NOT_CONNECT, NOT_ACCEPTED
from deadpixel.store import outbox
from deadpixel.store.schema import webhook_deliveries, webhooks

log = logging.getLogger(__name__)
SECRET_PREFIX = "whsec_"
EVENTS = ("open", "click")
MAX_URL = 2048


class WebhookError(DeadpixelError):
    """A URL or event list that cannot be used, or a webhook that does not exist."""


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    url: str
    events: tuple[str, ...]
    created_at: float
    pending: int = 0
    delivered: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    webhook_id: int
    event: str
    event_id: str
    created_at: float
    status: str
    attempts: int
    last_attempt_at: float | None
    last_status: int | None
    last_error: str | None


def check_url(url: str, guard: Guard | None = None, resolve: bool = True) -> str:
    """The URL, stripped, if it is usable and its host one the guard lets webhooks reach. ``resolve``
    also looks the name up (do that before opening a transaction: a lookup can take seconds)."""
    url = url.strip()
    if len(url) > MAX_URL:
        raise WebhookError(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number
    except ValueError:
        raise WebhookError(f"{url!r} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"{url!r} is not an http:// or https:// URL")
    if any(c.isspace() or ord(c) < 0x20 for c in url) or port == 0:
        raise WebhookError(f"{url!r} is not a usable URL")
    guard = guard or Guard()
    try:
        guard.check_host(parts.hostname, port or 80, resolve=False)  # spelt-out addresses and known names
        try:  # the host exactly as the client will hand it to the resolver
            parsed = httpx.URL(url)
            host = parsed.raw_host.decode("ascii")
        except (httpx.InvalidURL, UnicodeError):
            raise WebhookError(f"{url!r} is not a usable URL") from None
        guard.check_host(host, parsed.port or (443 if parsed.scheme == "https" else 80), resolve)
    except Refused as exc:
        raise WebhookError(f"refused: {exc}") from None
    return url


def parse_events(events: str | Iterable[str]) -> tuple[str, ...]:
    """``"open,click"`` or a list of names: the kinds a webhook receives, in a fixed order."""
    names = events.replace(",", " ").split() if isinstance(events, str) else list(events)
    unknown = sorted(set(names) - set(EVENTS))
    if unknown or not names:
        raise WebhookError(f"events must be among {', '.join(EVENTS)} (got {', '.join(unknown) or 'none'})")
    return tuple(e for e in EVENTS if e in names)


def add_webhook(
    conn: Connection, url: str, events: str | Iterable[str] = EVENTS, guard: Guard | None = None
) -> tuple[Webhook, str]:
    """A new webhook and its secret: the only time the secret is handed out. ``guard`` carries the
    operator's allow-list (``Guard.allowing(*settings.webhook_allow)``); None allows public hosts only.
    The URL's name is not looked up here, inside the caller's transaction: call ``check_url`` first."""
    url = check_url(url, guard, resolve=False)
    kinds = parse_events(events)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    webhook_id = conn.execute(
        insert(webhooks)
        .values(url=url, secret=secret, on_open="open" in kinds, on_click="click" in kinds, created_at=now)
        .returning(webhooks.c.id)
    ).scalar_one()
    outbox.forget_cache()
    return Webhook(int(webhook_id), url, kinds, now), secret


def _counts(conn: Connection) -> dict[int, tuple[int, int, int]]:
    d = webhook_deliveries.c

    def count(status: str) -> Any:
        return func.coalesce(func.sum(case((d.status == status, 1), else_=0)), 0)

    rows = conn.execute(
        select(d.webhook_id, count("pending"), count("delivered"), count("failed")).group_by(d.webhook_id)
    )
    return {row[0]: (int(row[1]), int(row[2]), int(row[3])) for row in rows}


def list_webhooks(conn: Connection) -> list[Webhook]:
    """Every webhook with how many of its deliveries are pending, delivered and failed (no secrets)."""
    counts = _counts(conn)
    w = webhooks.c
    found = []
    for row in conn.execute(select(w.id, w.url, w.on_open, w.on_click, w.created_at).order_by(w.id)):
        kinds = tuple(kind for kind, on in (("open", row.on_open), ("click", row.on_click)) if on)
        found.append(Webhook(row.id, row.url, kinds, row.created_at, *counts.get(row.id, (0, 0, 0))))
    return found


def get_webhook(conn: Connection, webhook_id: int) -> tuple[Webhook, str]:
    """A webhook and its secret, for signing (``deadpixel webhook test``)."""
    row = conn.execute(select(webhooks).where(webhooks.c.id == webhook_id)).first()
    if row is None:
        raise WebhookError(f"no webhook with id {webhook_id}")
    kinds = tuple(kind for kind, on in (("open", row.on_open), ("click", row.on_click)) if on)
    return Webhook(row.id, row.url, kinds, row.created_at), row.secret


def remove_webhook(conn: Connection, webhook_id: int) -> Webhook:
    """Remove a webhook and its outbox rows: undelivered events for it are dropped with it."""
    webhook, _ = get_webhook(conn, webhook_id)
    conn.execute(delete(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id))
    conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
    outbox.forget_cache()
    return webhook


def recent_deliveries(conn: Connection, limit: int = 20) -> list[Delivery]:
    """The newest outbox rows, for the settings page: what was sent, what waits, what failed and why."""
    d = webhook_deliveries.c
    rows = conn.execute(
        select(
            d.id, d.webhook_id, d.event, d.event_id, d.created_at, d.status, d.attempts,
            d.last_attempt_at, d.last_status, d.last_error,
        ).where(d.target.is_(None)).order_by(d.id.desc()).limit(limit)
    )  # fmt: skip
    return [Delivery(**{**row._mapping, "last_error": public_error(row.last_status, row.last_error)})
            for row in rows]  # fmt: skip


def public_error(status: int | None, error: str | None) -> str | None:
    """What a listing shows of a failed attempt: whether the receiver answered, not what it answered or how
    the connection failed (that would make webhooks a port scanner); the detail is in the server log."""
    if not error:
        return None
    return NOT_ACCEPTED if status is not None else COULD_NOT_CONNECT


def backlog(conn: Connection) -> dict[str, int]:
    """Outbox rows pending and failed, over all webhooks (the metrics' webhook backlog)."""
    d = webhook_deliveries.c
    rows = conn.execute(
        select(d.status, func.count()).where(d.status.in_(("pending", "failed"))).group_by(d.status)
    )
    found = {"pending": 0, "failed": 0}
    found.update({status: int(n) for status, n in rows})
    return found


def backlog_gauges(engine: Engine) -> Callable[[], dict[str, float]]:
    """The backlog as metrics gauges, read at each scrape; nothing when the store does not answer."""

    def read() -> dict[str, float]:
        try:
            with engine.connect() as conn:
                found = backlog(conn)
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read the webhook backlog (%s)", exc.__class__.__name__)
            return {}
        return {"webhook_deliveries_pending": found["pending"], "webhook_deliveries_failed": found["failed"]}

    return read
