"""The open writer's transaction alone, with no HTTP in front: microseconds per open by batch size.

One run of ``python bench/writer.py [--database-url URL]`` makes a store of its own (a temp SQLite file, or a
fresh schema in the PostgreSQL database named, dropped afterwards), with 300 messages, and alternates two
writes of the same batches, a few seconds each, ``--rounds`` times:

- **deadpixel**: ``write_opens`` and the commit, as the pixel's writer runs them (message lookup and lock,
  or on SQLite the writer's memory of its messages; enrichment of the batch's rows, the insert with each
  message's chain, the counters);
- **floor**: the same rows, built the same way (enrichment included), stored with one ``executemany`` INSERT
  into a table of the same columns, and the commit: what any durable store of these rows costs on this
  database and machine. The difference is the store's own work: lookups, locks, chains, counters.

It prints both per open and their ratio, which is what to compare between runs and machines: the absolute
figures move with the machine's load, and the ratio much less.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy import create_engine as sa_create_engine

from deadpixel.enrich.classify import Enricher
from deadpixel.enrich.geo import GeoLookup
from deadpixel.enrich.networks import Networks
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import OpenEvent
from deadpixel.store.db import create_engine
from deadpixel.store.messages import create_message
from deadpixel.store.migrate import ensure_current
from deadpixel.store.schema import opens
from deadpixel.store.writes import KnownMessages, write_opens

AGENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "mail-user-agents.tsv"


@contextmanager
def store(database_url: str | None) -> Iterator[str]:
    if database_url is None:
        with tempfile.TemporaryDirectory(prefix="deadpixel-writer-") as directory:
            yield f"sqlite:///{directory}/store.db"
        return
    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa_create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in database_url else "?"
    try:
        yield f"{database_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def user_agents() -> list[str]:
    if not AGENTS.exists():
        return ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) Thunderbird/115.0"]
    return [line.split("\t", 1)[0] for line in AGENTS.read_text().splitlines()[1:] if line]


def batches(message_ids: list[str], size: int, seed: int) -> Iterator[list[OpenEvent]]:
    """Opens from 2,000 readers with the data file's user agents, so the enrichment caches warm up as in
    production rather than missing on every open."""
    rng = random.Random(seed)
    agents = user_agents()
    readers = [(f"198.51.{rng.randrange(256)}.{rng.randrange(256)}", rng.choice(agents)) for _ in range(2000)]
    while True:
        now = time.time()
        yield [OpenEvent(rng.choice(message_ids), now, *rng.choice(readers), "GET") for _ in range(size)]


def measure(engine: Engine, step: Callable[[Connection, list[OpenEvent]], int], size: int, seconds: float,
            source: Iterator[list[OpenEvent]]) -> float:  # fmt: skip
    """Microseconds per open of ``step`` plus its commit, batches of ``size`` for about ``seconds``."""
    done = 0
    busy = 0.0
    with engine.connect() as conn:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            batch = next(source)
            started = time.perf_counter()
            with conn.begin():
                stored = step(conn, batch)
            busy += time.perf_counter() - started
            done += stored
    return busy / done * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="postgresql://... (default: a temp SQLite file)")
    parser.add_argument("--sizes", default="30,300", help="Batch sizes, comma-separated (30,300).")
    parser.add_argument("--seconds", type=float, default=3.0, help="Per size, round and side (3).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-enrichment", action="store_true", help="Rows without verdicts or places.")
    args = parser.parse_args(argv)

    enricher = None
    if not args.no_enrichment:
        enricher = Enricher(GeoLookup(None), self_ips=[], networks=Networks.load())
    builder = OpenClassifier(enricher, "truncate")
    with store(args.database_url) as url:
        engine = create_engine(url, writer=True)
        ensure_current(engine)
        with engine.begin() as conn:
            message_ids = [create_message(conn, recipient=f"r{n}@example.com") for n in range(300)]
            conn.execute(text("CREATE TABLE bench_floor AS SELECT * FROM opens WHERE 1 = 0"))
        columns = [column.name for column in opens.c if column.name not in ("id", "prev_id")]
        mark = "?" if engine.dialect.name == "sqlite" else "%s"
        values = ", ".join([mark] * len(columns))
        floor_sql = f"INSERT INTO bench_floor ({', '.join(columns)}) VALUES ({values})"

        memory = KnownMessages() if engine.dialect.name == "sqlite" else None  # as the server's writer

        def deadpixel(conn: Connection, batch: list[OpenEvent]) -> int:
            return len(batch) - write_opens(conn, batch, builder, memory=memory)

        def floor(conn: Connection, batch: list[OpenEvent]) -> int:
            rows: list[dict[str, Any]] = builder.rows(batch, {})
            conn.exec_driver_sql(floor_sql, [tuple(row.get(name) for name in columns) for row in rows])
            return len(rows)

        print(f"{engine.dialect.name}, {'no enrichment' if args.no_enrichment else 'enrichment on'}, "
              f"{args.rounds} rounds of {args.seconds:g} s per side")  # fmt: skip
        print(f"{'batch':>6} {'round':>6} {'deadpixel µs/open':>18} {'floor µs/open':>14} {'ratio':>7}")
        for size in (int(value) for value in args.sizes.split(",")):
            source = batches(message_ids, size, seed=size)
            measure(engine, deadpixel, size, 1.0, source)  # caches and pages warm
            ratios = []
            for number in range(1, args.rounds + 1):
                ours = measure(engine, deadpixel, size, args.seconds, source)
                base = measure(engine, floor, size, args.seconds, source)
                ratios.append(ours / base)
                print(f"{size:>6} {number:>6} {ours:>18.1f} {base:>14.1f} {ours / base:>7.2f}")
            print(f"{size:>6} {'median':>6} {'':>18} {'':>14} {sorted(ratios)[len(ratios) // 2]:>7.2f}")
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
