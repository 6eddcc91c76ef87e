"""How fast the read side answers on a big store: a campaign's summary and its dashboard page.

One run of ``python bench/dashboard.py`` seeds a fresh store (SQLite by default, or ``--database-url``)
with ``--opens`` opens over ``--messages`` messages in ``--campaigns`` campaigns (1,000,000 over 100,000 in
10 by default), written through the real write path with enrichment off (verdicts are spread by hand, so
every chart has data), then times, ``--repeat`` times each:

* the campaign summary: ``analytics.campaign_stats`` for one campaign, after the check for opens to fold
  into the rollups (what ``deadpixel report --json`` and ``GET /api/v1/campaigns/{name}/stats`` answer:
  the headline numbers and every chart's data);
* the campaign's dashboard page: ``GET /campaigns/{name}`` through the real app (signed in), which
  gathers the same, plus a page of the recipients table, and draws the charts;
* the same page with the charts drawn afresh each time (as after new opens changed their data): the
  dashboard keeps the charts it drew for the same data;
* the campaign's charts alone, drawn afresh from data read once (no database, no HTTP): the part of the
  page that ``deadpixel.web.charts`` costs.

It prints the median and p90 of each in milliseconds next to the bar (median under 100 ms).

Seeding a million opens takes minutes: ``--data-dir DIR`` keeps the data dir (and its SQLite store, or the
PostgreSQL database's rows) and a later run with the same DIR and URL times it again without seeding.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, text

from deadpixel.accounts.users import create_user
from deadpixel.config import load_settings
from deadpixel.reports import analytics
from deadpixel.security.tokens import new_message_id
from deadpixel.server.app import Deadpixel
from deadpixel.server.start import prepare
from deadpixel.store import rollups
from deadpixel.store.db import create_engine
from deadpixel.store.schema import campaigns, messages, opens, users
from deadpixel.web import charts

KINDS = ["human"] * 5 + ["proxy", "prefetch", "prefetch", "scanner"]
CLIENTS = ["Apple Mail", "Outlook", "Gmail", "Thunderbird", "iOS Mail", "Samsung Email"]
COUNTRIES = ["US", "DE", "FR", "GB", "NL", "ES", "IT", "CA"]
DEVICES = ["desktop", "mobile"]
SYSTEMS = ["macOS", "Windows", "iOS", "Android"]
DAY = 86400.0
MEASURED_CAMPAIGN = 3  # the campaign whose summary and page are timed: campaign-3


def seed(url: str, n_campaigns: int, n_messages: int, n_opens: int) -> None:
    """Rows straight into the tables, counters consistent with them (the write path is measured elsewhere)."""
    rng = random.Random(1)
    engine = create_engine(url)
    now = time.time()
    with engine.begin() as conn:
        for c in range(n_campaigns):
            conn.execute(insert(campaigns).values(id=c + 1, name=f"campaign-{c}", created_at=now))
    ids = [new_message_id() for _ in range(n_messages)]
    per_message: dict[str, list[tuple[float, str]]] = {}
    sent_at = now - 14 * DAY
    for _ in range(n_opens):
        mid = ids[
            int(rng.paretovariate(1.2)) % n_messages if rng.random() < 0.3 else rng.randrange(n_messages)
        ]
        per_message.setdefault(mid, []).append((sent_at + rng.expovariate(1 / (2 * DAY)), rng.choice(KINDS)))
    with engine.begin() as conn:
        rows = []
        for n, mid in enumerate(ids):
            events = per_message.get(mid, [])
            human = sum(kind in ("human", "proxy") for _, kind in events)
            rows.append({
                "id": mid, "campaign_id": n % n_campaigns + 1, "recipient": f"r{n}@example.com",
                "subject": "Hello", "created_at": sent_at, "sent_at": sent_at, "status": "sent",
                "open_count": len(events), "human_open_count": human,
                "machine_open_count": len(events) - human,
                "first_open_at": min((at for at, _ in events), default=None),
                "last_open_at": max((at for at, _ in events), default=None),
            })  # fmt: skip
            if len(rows) == 10_000:
                conn.execute(insert(messages), rows)
                rows = []
        if rows:
            conn.execute(insert(messages), rows)
    with engine.begin() as conn:
        batch = []
        for mid, events in per_message.items():
            for at, kind in events:
                batch.append({
                    "message_id": mid, "at": at, "ip": "192.0.2.0", "user_agent": "UA", "method": "GET",
                    "kind": kind, "client": rng.choice(CLIENTS), "device": rng.choice(DEVICES),
                    "os": rng.choice(SYSTEMS), "country": rng.choice(COUNTRIES), "reason": "seeded",
                    "rule": "seeded",
                })  # fmt: skip
                if len(batch) == 20_000:
                    conn.execute(insert(opens), batch)
                    batch = []
        if batch:
            conn.execute(insert(opens), batch)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("COMMIT"))
            conn.execute(text("ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def timed(work: object, repeat: int) -> list[float]:
    spent = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()  # type: ignore[operator]
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--opens", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (a fresh database you can fill); default SQLite"
    )
    parser.add_argument("--data-dir", help="keep the data dir here and reuse its seeded store next time")
    opts = parser.parse_args(argv)
    if opts.campaigns < MEASURED_CAMPAIGN + 1:
        parser.error(f"--campaigns must be at least {MEASURED_CAMPAIGN + 1}: it times the fourth")

    with contextlib.ExitStack() as stack:
        if opts.data_dir:
            data_dir = opts.data_dir
        else:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="deadpixel-dashboard-bench-"))
        results = run(opts, Path(data_dir))
    return report_results(results)


def run(opts: argparse.Namespace, data_dir: Path) -> dict[str, list[float]]:
    from starlette.testclient import TestClient

    env = {"DEADPIXEL_DATA_DIR": str(data_dir)}
    if opts.database_url:
        env["DEADPIXEL_DATABASE_URL"] = opts.database_url
    settings = load_settings(env)
    marker = data_dir / "bench-seeded"
    kind = settings.database_url.split(":")[0]
    if marker.exists():
        started = time.perf_counter()
        prepare(settings)  # migrates it if needed, and catches the rollups up
        print(f"reusing the store seeded before ({marker.read_text().strip()}); prepared in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    else:
        prepare(settings)
        started = time.perf_counter()
        seed(settings.database_url, opts.campaigns, opts.messages, opts.opens)
        marker.write_text(f"{opts.opens:,} opens, {opts.messages:,} messages, {opts.campaigns} campaigns\n")
        print(f"seeded {opts.opens:,} opens over {opts.messages:,} messages in {opts.campaigns} campaigns "
              f"({kind}) in {time.perf_counter() - started:.0f} s")  # fmt: skip
    engine = create_engine(settings.database_url)
    writer = create_engine(settings.database_url, writer=True)
    started = time.perf_counter()
    folded = rollups.catch_up(writer, engine)
    if folded:
        print(f"folded {folded:,} opens into the charts' rollups in {time.perf_counter() - started:.1f} s")
    writer.dispose()
    with engine.begin() as conn:
        if not conn.execute(select(users.c.id).where(users.c.name == "bench")).first():
            create_user(conn, "bench", "bench")

    zone = ZoneInfo(settings.timezone)

    def summary() -> None:
        with engine.connect() as conn:
            rollups.pending(conn)
            analytics.campaign_stats(conn, f"campaign-{MEASURED_CAMPAIGN}", zone)

    with engine.connect() as conn:
        stats = analytics.campaign_stats(conn, f"campaign-{MEASURED_CAMPAIGN}", zone)

    def charts_alone() -> None:
        charts.forget_drawn()
        over_time = stats["opens_over_time"]
        charts.opens_by_hour(over_time["hourly"])
        charts.opens_over_time(over_time["daily"])
        charts.time_to_open(stats["time_to_first_open"]["buckets"])
        for field, rows in stats["breakdowns"].items():
            charts.breakdown_bars(field, rows)

    with TestClient(Deadpixel(settings), base_url="http://testserver") as client:
        page = client.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = client.post("/login", data={"csrf": csrf, "name": "bench", "password": "bench"})
        assert signed.status_code == 200, signed.status_code

        def dashboard() -> None:
            response = client.get(f"/campaigns/campaign-{MEASURED_CAMPAIGN}")
            assert response.status_code == 200 and "<svg" in response.text

        def dashboard_drawing_charts() -> None:
            charts.forget_drawn()
            dashboard()

        results = {
            "campaign summary": timed(summary, opts.repeat),
            "dashboard page": timed(dashboard, opts.repeat),
            "page, charts drawn": timed(dashboard_drawing_charts, opts.repeat),
            "charts drawn alone": timed(charts_alone, opts.repeat),
        }
    engine.dispose()
    return results


def report_results(results: dict[str, list[float]]) -> int:
    failed = False
    for name, spent in results.items():
        median, p90 = statistics.median(spent), sorted(spent)[int(len(spent) * 0.9) - 1]
        ok = median < 100
        failed |= not ok
        print(f"{name:<20} median {median:7.1f} ms  p90 {p90:7.1f} ms   bar: median < 100 ms  "
              f"{'PASS' if ok else 'FAIL'}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
