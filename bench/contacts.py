"""What contacts cost: the open writer with and without their index on messages, and reading last human opens.

``python bench/contacts.py [--database-url URL] [--contacts N]`` makes a store of its own (as
``bench/writer.py`` does, whose store, batches and timing it reuses) and prints:

- **writer**: ``write_opens`` and its commit in microseconds per open, batches of 30, alternating rounds with
  the index ``ix_messages_recipient_key`` (added by the contacts migration) and without it. The writer
  never changes ``recipient``, so the two should be the same within noise;
- **reads**: with N contacts, three messages each and about five opens per message of mixed verdicts (and
  a human click on every tenth message): a page of 100 contacts with their last human open (the API's and
  the dashboard's page), one contact, and all N (``contacts list``, ``contacts export``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, insert, text

from deadpixel.events import ClickEvent, OpenEvent
from deadpixel.store.clicks import write_clicks
from deadpixel.store.contacts import get_contact, list_contacts
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.migrate import ensure_current
from deadpixel.store.schema import contacts
from deadpixel.store.writes import KnownMessages, write_opens
from writer import batches, measure, store

KINDS = ("human", "proxy", "prefetch", "prefetch", "scanner", "self")


class Labels:
    """Rows with a verdict drawn at random, so the reads meet chains as mixed as real ones."""

    window = settle = 0.0

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def _facts(self) -> dict[str, Any]:
        names = ("client", "device", "os", "country", "region", "city", "asn", "network_owner", "rule")
        return {"kind": self.rng.choice(KINDS), "reason": "bench", **dict.fromkeys(names)}

    def rows(self, events: Sequence[OpenEvent], sent_at: dict[str, float]) -> list[dict[str, Any]]:
        return [{**event._asdict(), **self._facts()} for event in events]

    def addresses(self, events: Sequence[ClickEvent]) -> set[str]:
        return set()

    def click_rows(self, events: Sequence[ClickEvent], *_: Any) -> tuple[list[dict[str, Any]], list[Any]]:
        return [{**event._asdict(), **self._facts(), "kind": "human"} for event in events], []


def writer_rounds(engine: Engine, rounds: int, seconds: float) -> None:
    from deadpixel.enrich.opens import OpenClassifier

    builder = OpenClassifier(None, "truncate")
    with engine.begin() as conn:
        ids = [create_message(conn, recipient=f"r{n}@example.com") for n in range(300)]
    memory = KnownMessages() if engine.dialect.name == "sqlite" else None

    def step(conn: Connection, batch: list[OpenEvent]) -> int:
        return len(batch) - write_opens(conn, batch, builder, memory=memory)

    source = batches(ids, 30, seed=1)
    measure(engine, step, 30, 1.0, source)
    print(f"{'round':>6} {'with index µs/open':>19} {'without µs/open':>16}")
    for number in range(1, rounds + 1):
        with_index = measure(engine, step, 30, seconds, source)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_messages_recipient_key"))
        without = measure(engine, step, 30, seconds, source)
        with engine.begin() as conn:
            conn.execute(text("CREATE INDEX ix_messages_recipient_key ON messages (lower(recipient))"))
        print(f"{number:>6} {with_index:>19.1f} {without:>16.1f}")


def audience(engine: Engine, count: int) -> None:
    labels = Labels(7)
    rng = random.Random(3)
    now = time.time()
    with engine.begin() as conn:
        rows = [
            {"address": f"p{n}@example.org", "spelling": f"p{n}@example.org", "name": f"P {n}",
             "fields": "{}", "created_at": now, "updated_at": now}
            for n in range(count)
        ]  # fmt: skip
        for start in range(0, count, 1000):
            conn.execute(insert(contacts), rows[start : start + 1000])
        ids = [
            create_message(conn, recipient=f"P{n % count}@example.org", sent_at=now) for n in range(count * 3)
        ]
    events = [
        OpenEvent(mid, now + rng.random() * 86400, "192.0.2.1", "x", "GET") for mid in ids for _ in range(5)
    ]
    events.sort(key=lambda event: event.at)
    with engine.begin() as conn:
        for start in range(0, len(events), 500):
            write_opens(conn, events[start : start + 500], labels)
        clicks = [ClickEvent(mid, 0, now + 90000, "192.0.2.1", "x", "GET") for mid in ids[::10]]
        for start in range(0, len(clicks), 500):
            write_clicks(conn, clicks[start : start + 500], labels)
    if engine.dialect.name == "postgresql":  # as autovacuum would have by now: the planner needs row counts
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    print(f"{count:,} contacts, {len(ids):,} messages, {len(events):,} opens, {len(clicks):,} clicks")

    def timed(what: str, work: Callable[[Connection], object], repeat: int = 5) -> None:
        best = float("inf")
        for _ in range(repeat):
            with engine.connect() as conn:
                started = time.perf_counter()
                work(conn)
                best = min(best, time.perf_counter() - started)
        print(f"{what:<44} {best * 1000:>9.1f} ms")

    timed("a page of 100 with last human opens", lambda c: list_contacts(c, limit=100))
    timed("the same page without them", lambda c: list_contacts(c, limit=100, opens=False))
    timed("one contact", lambda c: get_contact(c, key=f"p{count // 2}@example.org"))
    timed(f"all {count:,} with last human opens", lambda c: list_contacts(c), repeat=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="postgresql://... (default: a temp SQLite file)")
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    for part in ("writer", "reads"):
        with store(args.database_url) as url:
            engine = create_engine(url, writer=True)
            ensure_current(engine)
            print(f"{engine.dialect.name}: {part}")
            if part == "writer":
                writer_rounds(engine, args.rounds, args.seconds)
            else:
                audience(engine, args.contacts)
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
