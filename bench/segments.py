"""How fast segments answer on a big campaign: one campaign of 100,000 recipients with 1,000,000 opens.

One run of ``python bench/segments.py`` seeds a fresh store (SQLite by default, or a fresh schema of
``--database-url``) with ``--messages`` messages in one campaign and ``--opens`` opens over them, with a
realistic mix: Apple's prefetch on about a third of the messages at delivery (some of those recipients read
later, most do not), scanners on a tenth, a person opening about 45% of them (a few re-open many times, a
Pareto tail), some through Gmail's proxy, human clicks on 6% and hard bounces on 1%. Rows go straight into
the tables with their chains of opens (``opens.prev_id``, ``messages.last_open_id``) and counters consistent
with them, as the writer leaves them (the write path is measured by writer.py and pixel.py).

Then it times, ``--repeat`` times each, median and worst in milliseconds:

* the four counts of the campaign page (``segments.campaign_counts``, one query);
* each campaign segment's count, its addresses (``segments.emails``: what ``deadpixel segment`` prints and
  ``campaign send --segment`` reads) and its full rows with the last human open (``--json``, the API's CSV);
* the audience segments: never-opened, inactive for 7 days, by client and by country.

The bar: each campaign segment's addresses in under a second on SQLite (by this process's CPU time, which
is the query's own cost on SQLite, in process; ``--wall`` holds the wall time to it instead, for a quiet
machine). Exit status 1 when one is over.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

from deadpixel.config import load_settings
from deadpixel.reports import segments
from deadpixel.security.tokens import new_message_id
from deadpixel.server.start import prepare
from deadpixel.store.db import create_engine
from deadpixel.store.schema import campaigns, clicks, messages, opens
from harness.common import REPO_DIR, log
from harness.output import table
from harness.stores import libpq_url, with_query

CAMPAIGN = "bench"
DAY = 86_400.0
CLIENTS = ["Apple Mail", "Outlook", "Thunderbird", "iOS Mail", "Samsung Email"]
COUNTRIES = ["US", "DE", "FR", "GB", "NL", "ES"]
BAR_MS = 1000.0


def plan_opens(
    rng: random.Random, n_messages: int, n_opens: int, sent_at: float
) -> list[list[tuple[float, str]]]:
    """Each message's opens (time, verdict): prefetch and scanners at delivery, people later."""
    planned: list[list[tuple[float, str]]] = [[] for _ in range(n_messages)]
    readers = []
    for n, events in enumerate(planned):
        if rng.random() < 0.35:  # Apple Mail Privacy Protection: fetched on delivery
            events.extend((sent_at + rng.uniform(5, 600), "prefetch") for _ in range(rng.randint(1, 2)))
        if rng.random() < 0.10:  # a corporate gateway's scanner
            events.extend((sent_at + rng.uniform(1, 30), "scanner") for _ in range(rng.randint(1, 2)))
        if rng.random() < 0.45:
            readers.append(n)
            events.append((sent_at + rng.expovariate(1 / (2 * DAY)), "proxy" if n % 5 == 0 else "human"))
    remaining = n_opens - sum(len(events) for events in planned)
    for _ in range(max(0, remaining)):  # re-opens: a few readers open again and again
        n = (
            readers[min(int(rng.paretovariate(1.1)) - 1, len(readers) - 1)]
            if rng.random() < 0.3
            else (rng.choice(readers))
        )
        kind = "proxy" if n % 5 == 0 else "human"
        planned[n].append((sent_at + rng.expovariate(1 / (3 * DAY)), kind))
    return planned


def seed(engine: Engine, n_messages: int, n_opens: int) -> None:
    rng = random.Random(7)
    now = time.time()
    sent_at = now - 10 * DAY
    ids = [new_message_id() for _ in range(n_messages)]
    planned = plan_opens(rng, n_messages, n_opens, sent_at)
    events = sorted((at, n, kind) for n, evs in enumerate(planned) for at, kind in evs)
    heads: dict[int, int] = {}
    open_rows = []
    for open_id, (at, n, kind) in enumerate(events, 1):
        open_rows.append({
            "id": open_id, "message_id": ids[n], "at": at, "ip": "192.0.2.0", "user_agent": "UA",
            "method": "GET", "kind": kind, "client": rng.choice(CLIENTS), "device": "desktop",
            "os": "macOS", "country": rng.choice(COUNTRIES), "reason": "seeded", "rule": "seeded",
            "prev_id": heads.get(n),
        })  # fmt: skip
        heads[n] = open_id
    message_rows, click_rows = [], []
    for n, mid in enumerate(ids):
        evs = planned[n]
        human = sum(kind in ("human", "proxy") for _, kind in evs)
        clicked = human > 0 and rng.random() < 0.13
        if clicked:
            click_rows.append({
                "message_id": mid, "link": 0, "at": max(at for at, _ in evs) + 5, "method": "GET",
                "kind": "human", "reason": "seeded", "rule": "seeded",
            })  # fmt: skip
        message_rows.append({
            "id": mid, "campaign_id": 1, "recipient": f"reader{n}@example.com", "subject": "Hello",
            "created_at": sent_at, "sent_at": sent_at, "status": "sent", "open_count": len(evs),
            "human_open_count": human, "machine_open_count": len(evs) - human,
            "click_count": int(clicked), "human_click_count": int(clicked),
            "first_open_at": min((at for at, _ in evs), default=None),
            "last_open_at": max((at for at, _ in evs), default=None), "last_open_id": heads.get(n),
            "bounce": "hard" if not evs and rng.random() < 0.02 else None,
        })  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(campaigns).values(id=1, name=CAMPAIGN, created_at=sent_at))
        for rows, table_ in ((message_rows, messages), (open_rows, opens), (click_rows, clicks)):
            for start in range(0, len(rows), 20_000):
                conn.execute(insert(table_), rows[start : start + 20_000])
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("COMMIT"))
            conn.execute(text("ANALYZE"))
        else:
            conn.exec_driver_sql("ANALYZE")


def timed(work: Callable[[], object], repeat: int) -> tuple[float, float, float, object]:
    """Median and worst wall time, and the median CPU time of this process, in ms (on SQLite the query runs
    in this process, so its CPU time is what the query costs even on a machine busy with other work)."""
    wall, cpu, result = [], [], None
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = work()
        cpu.append((time.process_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return statistics.median(wall), max(wall), statistics.median(cpu), result


@contextlib.contextmanager
def store(database_url: str | None, data_dir: Path) -> Iterator[str]:
    """The store's URL: a SQLite file in ``data_dir``, or a fresh PostgreSQL schema dropped afterwards."""
    if database_url is None:
        yield f"sqlite:///{data_dir / 'deadpixel.db'}"
        return
    import psycopg

    schema = f"deadpixel_segments_bench_{os.getpid()}"
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield with_query(database_url, options=f"-csearch_path={schema}")
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def measure(engine: Engine, repeat: int) -> list[list[str]]:
    rows: list[list[str]] = [["what", "median ms", "worst ms", "CPU ms", "recipients"]]

    def add(name: str, work: Callable[[], Any]) -> None:
        median, worst, cpu, result = timed(work, repeat)
        size = result if isinstance(result, int) else len(result) if isinstance(result, list) else 0
        rows.append([name, f"{median:.0f}", f"{worst:.0f}", f"{cpu:.0f}", f"{size:,}"])

    def on(work: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with engine.connect() as conn:
                return work(conn)

        return run

    def counts(conn: Any) -> int:
        return sum(segments.campaign_counts(conn, CAMPAIGN).values())

    add("campaign page: the four counts", on(counts))
    for who in segments.CAMPAIGN_SEGMENTS:
        found = segments.Segment(who, CAMPAIGN)
        add(f"{who}: count", on(functools.partial(segments.count, segment=found)))
        add(f"{who}: addresses", on(functools.partial(segments.emails, segment=found)))
        add(f"{who}: rows with last human open", on(functools.partial(segments.members, segment=found)))
    for spec in ("@never-opened", "@inactive:7", "@client:Thunderbird", "@country:DE"):
        add(f"{spec}: addresses", on(functools.partial(segments.emails, segment=segments.parse(spec))))
    return rows


def machine() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True
    )
    python = platform.python_version()
    return f"{platform.node()}, {os.cpu_count()} cores, Python {python}, commit {commit.stdout.strip()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--opens", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", help="PostgreSQL URL: a fresh schema in it is used and dropped")
    parser.add_argument("--wall", action="store_true", help="hold SQLite's wall time to the bar, not CPU")
    opts = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="deadpixel-segments-bench-") as tmp,
        store(opts.database_url, Path(tmp)) as url,
    ):
        settings = load_settings({"DEADPIXEL_DATA_DIR": tmp, "DEADPIXEL_DATABASE_URL": url})
        prepare(settings)
        engine = create_engine(settings.database_url)
        started = time.perf_counter()
        seed(engine, opts.messages, opts.opens)
        spent = time.perf_counter() - started
        log(f"seeded {opts.opens:,} opens over {opts.messages:,} messages in {spent:.0f} s")
        rows = measure(engine, opts.repeat)
        engine.dispose()
    print(f"{machine()}; {engine.dialect.name}; {opts.messages:,} recipients, {opts.opens:,} opens")
    print(table(rows, numbers=True))
    slow = [row[0] for row in rows[1:] if row[0].endswith("addresses") and not row[0].startswith("@")
            and float(row[1 if opts.wall else 3]) >= BAR_MS]  # fmt: skip
    if slow and engine.dialect.name == "sqlite":
        print(f"over {BAR_MS:.0f} ms: {', '.join(slow)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
