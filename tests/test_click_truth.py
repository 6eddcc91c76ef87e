"""Who really clicked, end to end: a campaign goes out through a real SMTP server; a security gateway follows
every link of the delivered message (the hidden one included, last) within a second, from an address no list
knows, as a current Chrome; later the reader clicks one visible link from home. A real ``deadpixel serve``
behind a trusted proxy header records exactly one human click and the gateway's all machine, with reasons;
counters agree with the events, the webhook receiver hears of one human click, and nobody is unsubscribed.
"""

from __future__ import annotations

import json
import re
import time
from html import unescape
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings
from deadpixel.enrich import Enricher, GeoLookup
from deadpixel.events import HIDDEN_LINK
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.server.app import Deadpixel
from deadpixel.store.db import create_engine
from deadpixel.store.schema import clicks, messages, suppressions

from .conftest import Server
from .helpers import deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_dashboard import sign_in
from .test_webhooks import (  # noqa: F401  (a fixture)
    Receiver,
    allow_loopback,
    delivered_bodies,
    receiver_fixture,
)

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/142.0.0.0 Safari/537.36"
)
GATEWAY = "37.120.160.77"  # a hosting company's address that no list names
HOME = "81.2.69.142"  # a residential address in GB
NEWSLETTER = (
    "<!doctype html><html><head><title>News</title></head><body>"
    "<h1>Hello {{ first_name }}</h1>"
    '<p><a href="https://shop.example/sale">The sale</a> <a href="https://shop.example/new">New in</a></p>'
    '<p><a href="https://blog.example/post">Read the post</a></p>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
)


def test_the_gateway_is_known_to_no_list() -> None:
    facts = Enricher(GeoLookup()).address(GATEWAY)
    assert facts.listed is None and facts.owner is None


@pytest.mark.slow
def test_a_gateway_following_every_link_is_machine_and_the_reader_is_one_human_click(
    smtp: SMTPServerHandle,
    settings: Settings,
    server_factory: type[Server],
    env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    server = server_factory(env={**env, "DEADPIXEL_TRUSTED_PROXIES": "127.0.0.1"}).start()
    added = deadpixel("webhook", "add", receiver.url, "--events", "click")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    (tmp_path / "list.csv").write_text("email,first_name\nann@example.org,Ann\n", encoding="utf-8")
    (tmp_path / "news.html").write_text(NEWSLETTER, encoding="utf-8")
    sent = deadpixel("campaign", "send", "truth", "--recipients", str(tmp_path / "list.csv"),
                     "--subject", "News", "--html", str(tmp_path / "news.html"), "--json")  # fmt: skip
    assert json.loads(sent.stdout)["sent"] == 1, sent.stderr
    [delivered] = smtp.sink.by_recipient()["ann@example.org"]
    hrefs = [unescape(h) for h in re.findall(r'href="([^"]+)"', delivered.html())]
    tracked = [h for h in hrefs if h.startswith(settings.base_url + "/c/")]
    [unsubscribe] = [h for h in hrefs if h.startswith(settings.base_url + "/u/")]
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    numbers = [signer.click_target(h.rsplit("/", 1)[1]) for h in tracked]
    assert [n for _, n in numbers if n is not None] == [HIDDEN_LINK, 0, 1, 2]  # the hidden link comes first

    client = httpx.Client(headers={"user-agent": CHROME})

    def follow(url: str, ip: str) -> httpx.Response:
        local = server.url + url[len(settings.base_url) :]
        return client.get(local, headers={"x-forwarded-for": ip})

    time.sleep(2.1)  # delivered and scanned a few seconds after the send, not within the first two
    started = time.monotonic()
    visible_first = [*tracked[1:], tracked[0]]  # the hardest order: the hidden link last
    answers = [follow(url, GATEWAY) for url in visible_first]
    assert time.monotonic() - started < 1.0
    assert follow(unsubscribe, GATEWAY).status_code == 200  # the page with its button, nothing more
    assert [a.status_code for a in answers] == [302] * 4  # the hidden link redirects like the others
    assert answers[-1].headers["location"] == "https://shop.example/"
    time.sleep(1.0)
    reader = follow(tracked[2], HOME)
    assert reader.headers["location"] == "https://shop.example/new"
    client.close()

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(clicks).order_by(clicks.c.at)).all()
        message = conn.execute(select(messages)).one()
        grouped = dict(conn.execute(select(clicks.c.kind, func.count()).group_by(clicks.c.kind)).all())
        unsubscribed = conn.execute(select(func.count()).select_from(suppressions)).scalar()
    engine.dispose()
    humans = [r for r in rows if r.kind == "human"]
    assert [(r.link, r.ip) for r in humans] == [(1, "81.2.69.0")]  # the address as kept (truncated)
    machine = [r for r in rows if r.kind != "human"]
    assert [r.link for r in machine] == [0, 1, 2, HIDDEN_LINK]
    assert all(r.kind == "scanner" and r.reason for r in machine)
    assert {r.rule for r in machine} <= {"click-hidden", "click-near-hidden", "click-burst"}
    assert machine[-1].reason == "followed the hidden link, which no person can see or click"
    assert all("hidden link" in r.reason or "links of the message" in r.reason for r in machine)
    assert grouped == {"human": 1, "scanner": 4}
    assert (message.click_count, message.human_click_count, message.machine_click_count) == (5, 1, 4)
    assert unsubscribed == 0
    report = json.loads(deadpixel("report", "truth", "--json", check=True).stdout)
    assert (report["unique_clicks"], report["total_clicks"], report["unique_opens"]) == (1, 5, 1)

    deadline = time.monotonic() + 30  # a person's click is held a few seconds before it is delivered
    while len(receiver.delivered()) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    bodies = delivered_bodies(receiver, secret)
    assert sorted((b["link"]["number"], b["verdict"]["kind"]) for b in bodies.values()) == [
        (0, "scanner"), (1, "human"), (1, "scanner"), (2, "scanner"), (HIDDEN_LINK, "scanner")
    ]  # fmt: skip

    # Rerunning the rules over history reaches the same verdicts.
    assert "and 5 clicks" in deadpixel("reclassify", check=True).stdout
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        again = conn.execute(select(clicks.c.kind).order_by(clicks.c.at)).scalars().all()
        message = conn.execute(select(messages)).one()
    engine.dispose()
    # (The reason may name another of the rules that apply: history shows every neighbour at once.)
    assert again == [r.kind for r in rows]
    assert (message.human_click_count, message.machine_click_count) == (1, 4)
    assert server.stop() == 0

    # The dashboard shows them apart.
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    engine.dispose()
    with TestClient(Deadpixel(settings), base_url="http://testserver") as dashboard:
        assert sign_in(dashboard) == 303
        page = dashboard.get("/campaigns/truth").text
        assert 'data-figure="human_clicks">1<' in page and 'data-figure="machine_clicks">4<' in page
        assert "https://shop.example/new" in page and "https://shop.example/<" not in page  # no hidden link
        shown = dashboard.get(f"/messages/{message.id}").text
        assert shown.count("followed the hidden link, which no person can see or click") == 1
