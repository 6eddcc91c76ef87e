"""Tracked links: written when a message is composed, read by primary key when someone clicks.

The redirect target lives only here, never in the URL: a click token names a message and a link number, so a
forged or edited token cannot point anywhere (no open redirect).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, Engine, insert, select

from deadpixel.events import HIDDEN_LINK
from deadpixel.security.urls import hidden_target
from deadpixel.store.schema import links


def save_links(conn: Connection, messages: Iterable[tuple[str, Sequence[str]]]) -> None:
    """Store the tracked links of (message id, URLs) pairs in one statement; ``urls[i]`` is link ``i``.

    A message with tracked links also carries the hidden link (``HIDDEN_LINK``, see ``mail.compose``); its
    target follows from the URLs (``hidden_target``), so it is stored here for every way of sending."""
    rows: list[dict[str, object]] = []
    for message_id, urls in messages:
        rows.extend({"message_id": message_id, "number": i, "url": url} for i, url in enumerate(urls))
        target = hidden_target(urls)
        if target is not None:
            rows.append({"message_id": message_id, "number": HIDDEN_LINK, "url": target})
    if rows:
        conn.execute(insert(links), rows)


def link_url(conn: Connection, message_id: str, number: int) -> str | None:
    return conn.execute(
        select(links.c.url).where(links.c.message_id == message_id, links.c.number == number)
    ).scalar()


class LinkResolver:
    """Link URLs by (message id, number) with a small LRU cache: a link shared on social media or clicked by
    a whole office is read once. Only found links are cached, and a stored link never changes, so a cached
    answer cannot go stale (an erased message's links are cache misses on every new process)."""

    def __init__(self, engine: Engine, size: int = 8192) -> None:
        self._engine = engine
        self._size = size
        self._cache: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, message_id: str, number: int) -> str | None:
        key = (message_id, number)
        with self._lock:
            url = self._cache.get(key)
            if url is not None:
                self._cache.move_to_end(key)
            return url

    def load(self, message_id: str, number: int) -> str | None:
        """Read from the database (blocking: call it off the event loop)."""
        with self._engine.connect() as conn:
            url = link_url(conn, message_id, number)
        if url is not None:
            with self._lock:
                self._cache[(message_id, number)] = url
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return url

    def forget(self, message_id: str) -> None:
        with self._lock:
            for key in [key for key in self._cache if key[0] == message_id]:
                del self._cache[key]
