"""How fast a campaign's dashboard page answers with its click map, A/B standing and best send hours.

``python bench/click_map.py`` seeds a store as ``bench/dashboard.py`` does (1,000,000 opens over 100,000
messages in 10 campaigns by default, SQLite or ``--database-url``), then makes the measured campaign
(campaign-3) an A/B test: half its messages variant A, half B, each variant's HTML kept (a newsletter with
``--links`` tracked links), and ``--clicks`` clicks on those links (mostly human, some scanners), counters
kept in step. It times, ``--repeat`` times each, median and p90 against the bar (median under 100 ms):

* the click map counted and drawn: ``reports.clickmap.click_map`` and ``web.clickmap.render`` for both
  variants, no cache;
* the whole campaign page ``GET /campaigns/campaign-3`` through the real app, signed in, right after a new
  click was stored (so the page counts the clicks again: the dashboard keeps a campaign's click map until
  the next click);
* the same page reloaded with no new click.

``--data-dir DIR`` keeps the seeded store for a later run (as in bench/dashboard.py).
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

from sqlalchemy import bindparam, insert, select, text, update

from dashboard import MEASURED_CAMPAIGN, report_results, seed
from deadpixel.accounts.users import create_user
from deadpixel.config import load_settings
from deadpixel.reports.clickmap import click_map
from deadpixel.server.app import Deadpixel
from deadpixel.server.start import prepare
from deadpixel.store import rollups
from deadpixel.store.db import create_engine
from deadpixel.store.schema import ab_tests, ab_variants, clicks, messages, sent_html, users
from deadpixel.web import clickmap
from harness.common import log

CAMPAIGN_ID = MEASURED_CAMPAIGN + 1  # seed() numbers campaign-N as N + 1
NAME = f"campaign-{MEASURED_CAMPAIGN}"
CLICK_KINDS = ["human"] * 8 + ["scanner", "prefetch"]


def newsletter(links: int, variant: str) -> str:
    """A realistic newsletter: a header image, paragraphs, ``links`` tracked links and a footer."""
    items = "".join(
        f'<tr><td style="padding:8px"><h2>Story {i + 1}</h2><p>{"Lorem ipsum dolor sit amet. " * 12}</p>'
        f'<a href="https://shop.example/story/{i}?ref=news&amp;v={variant}">Read story {i + 1}</a></td></tr>'
        for i in range(links)
    )
    return (
        "<!doctype html><html><head><style>h2{font:bold 18px sans-serif}</style></head><body>"
        '<img src="https://cdn.example/logo.png" alt="Logo" width="200">'
        f"<table>{items}</table>"
        '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
    )


def add_test(url: str, n_links: int, n_clicks: int) -> None:
    """The measured campaign as an A/B test with kept HTML and clicks (counters in step)."""
    rng = random.Random(2)
    engine = create_engine(url)
    with engine.begin() as conn:
        ids = list(conn.execute(select(messages.c.id).where(messages.c.campaign_id == CAMPAIGN_ID)).scalars())
        half = len(ids) // 2
        conn.execute(update(messages).where(messages.c.id.in_(ids[:half])).values(variant="A"))
        conn.execute(update(messages).where(messages.c.id.in_(ids[half:])).values(variant="B"))
        now = time.time()
        conn.execute(insert(ab_tests).values(
            campaign_id=CAMPAIGN_ID, metric="human-open-rate", test_share=1.0, seed="bench",
            sender="b@example.com", created_at=now,
        ))  # fmt: skip
        for label, mid in (("A", ids[0]), ("B", ids[half])):
            html = newsletter(n_links, label)
            conn.execute(
                insert(ab_variants).values(campaign_id=CAMPAIGN_ID, label=label, subject=label, html=html)
            )
            conn.execute(insert(sent_html).values(
                campaign_id=CAMPAIGN_ID, variant=label, message_id=mid, html=html, stored_at=now
            ))  # fmt: skip
        rows, human = [], dict.fromkeys(ids, 0)
        for _ in range(n_clicks):
            mid = ids[int(rng.paretovariate(1.5)) % len(ids)] if rng.random() < 0.3 else rng.choice(ids)
            kind = rng.choice(CLICK_KINDS)
            human[mid] += kind == "human"
            rows.append({
                "message_id": mid, "link": min(int(rng.expovariate(0.3)), n_links - 1), "at": now - 86400,
                "ip": "192.0.2.0", "user_agent": "UA", "method": "GET", "kind": kind, "reason": "seeded",
                "rule": "seeded",
            })  # fmt: skip
        conn.execute(insert(clicks), rows)
        bump = [{"mid": mid, "n": n} for mid, n in human.items() if n]
        conn.execute(
            update(messages).where(messages.c.id == bindparam("mid")).values(
                human_click_count=bindparam("n"), click_count=bindparam("n")
            ),
            bump,
        )  # fmt: skip
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("COMMIT"))
            conn.execute(text("ANALYZE"))
        else:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


CPU: dict[str, list[float]] = {}


def timed(work: object, repeat: int, name: str) -> list[float]:
    """Wall milliseconds per call; this process's CPU milliseconds per call go to ``CPU[name]`` (on a busy
    shared machine the wall time mostly measures the neighbours; the CPU time much less so)."""
    spent, cpu = [], CPU.setdefault(name, [])
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        work()  # type: ignore[operator]
        spent.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--opens", type=int, default=1_000_000)
    parser.add_argument("--links", type=int, default=20)
    parser.add_argument("--clicks", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (a fresh database you can fill); default SQLite"
    )
    parser.add_argument("--data-dir", help="keep the data dir here and reuse its seeded store next time")
    opts = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        data_dir = opts.data_dir or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="deadpixel-clickmap-")
        )
        results = run(opts, Path(data_dir))
    for name, used in CPU.items():
        log(f"{name:<34} CPU median {statistics.median(used):7.1f} ms")
    return report_results(results)


def run(opts: argparse.Namespace, data_dir: Path) -> dict[str, list[float]]:
    from starlette.testclient import TestClient

    env = {"DEADPIXEL_DATA_DIR": str(data_dir)}
    if opts.database_url:
        env["DEADPIXEL_DATABASE_URL"] = opts.database_url
    settings = load_settings(env)
    marker = data_dir / "bench-click-map-seeded"
    prepare(settings)
    if not marker.exists():
        started = time.perf_counter()
        seed(settings.database_url, opts.campaigns, opts.messages, opts.opens)
        add_test(settings.database_url, opts.links, opts.clicks)
        marker.write_text(f"{opts.opens:,} opens, {opts.messages:,} messages, {opts.clicks:,} clicks\n")
        log(f"seeded {opts.opens:,} opens over {opts.messages:,} messages and {opts.clicks:,} clicks in"
            f" {time.perf_counter() - started:.0f} s")  # fmt: skip
    engine = create_engine(settings.database_url)
    writer = create_engine(settings.database_url, writer=True)
    rollups.catch_up(writer, engine)
    writer.dispose()
    with engine.begin() as conn:
        if not conn.execute(select(users.c.id).where(users.c.name == "bench")).first():
            create_user(conn, "bench", "bench")
    own = settings.base_url + "/"

    def rendered() -> None:
        with engine.connect() as conn:
            for copy in click_map(conn, NAME):
                clickmap.render(copy, own)

    with engine.connect() as conn:
        some_message = conn.execute(
            select(messages.c.id).where(messages.c.campaign_id == CAMPAIGN_ID).limit(1)
        ).scalar_one()

    def new_click() -> None:
        """A scanner's click: a new newest click, so the page counts the campaign's clicks again."""
        with engine.begin() as conn:
            conn.execute(insert(clicks).values(
                message_id=some_message, link=0, at=time.time(), ip="192.0.2.1", user_agent="UA",
                method="GET", kind="scanner", reason="bench", rule="bench",
            ))  # fmt: skip

    with TestClient(Deadpixel(settings), base_url="http://testserver") as client:
        page = client.get("/login")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        assert (
            client.post("/login", data={"csrf": csrf, "name": "bench", "password": "bench"}).status_code
            == 200
        )

        def whole_page() -> None:
            response = client.get(f"/campaigns/{NAME}")
            assert response.status_code == 200 and 'class="click-map"' in response.text
            assert "dp-badge" in response.text and 'id="variants"' in response.text

        def plain_page() -> None:
            response = client.get(f"/campaigns/campaign-{MEASURED_CAMPAIGN - 1}")
            assert response.status_code == 200 and 'class="click-map"' not in response.text

        after_click = []
        for _ in range(opts.repeat):
            new_click()
            after_click.extend(timed(whole_page, 1, "page after a new click"))
        results = {
            "click map counted and drawn": timed(rendered, opts.repeat, "click map counted and drawn"),
            "page after a new click": after_click,
            "page reloaded": timed(whole_page, opts.repeat, "page reloaded"),
            "page without a map (campaign-2)": timed(plain_page, opts.repeat, "page without a map"),
        }
    engine.dispose()
    return results


if __name__ == "__main__":
    sys.exit(main())
