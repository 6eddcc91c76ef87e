"""A/B tests end to end: ``campaign send`` with variants to a real SMTP server, opens recorded through the
real app and its verdicts (a reader at home, Apple's prefetch from Apple's network), ``campaign winner``
and the winner's send to the rest, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings, load_settings
from deadpixel.server.app import Deadpixel
from deadpixel.store.db import create_engine
from deadpixel.store.schema import ab_waiting, messages, sent_html

from .helpers import deadpixel
from .smtp_sink import Received, SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_dashboard import sign_in

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.3.1"
APPLE_MPP = "Mozilla/5.0"
HOME = "81.2.69.142"  # a residential address in GB
APPLE = "17.58.0.1"  # Apple's network: Mail Privacy Protection fetches from here
PIXEL = re.compile(r'src="https?://[^/"]+(/o/[^"]+\.gif)"')
CLICK = re.compile(r'href="https?://[^/"]+(/c/[^"]+)"')
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/142.0.0.0 Safari/537.36"
)
HTML_A = (
    '<html><body><p>Hi {{ name }}</p><p><a href="https://shop.example/a?x=1#top">Shop A</a></p></body></html>'
)
HTML_B = '<html><body><p>Hello {{ name }}</p><p><a href="https://shop.example/b">Shop B</a></p></body></html>'


def write_list(path: Path, n: int) -> Path:
    path.write_text("email,name\n" + "".join(f"r{i}@example.org,R{i}\n" for i in range(n)), encoding="utf-8")
    return path


def send_test(tmp_path: Path, name: str, n: int, share: str, *extra: str) -> dict[str, Any]:
    (tmp_path / "a.html").write_text(HTML_A, encoding="utf-8")
    (tmp_path / "b.html").write_text(HTML_B, encoding="utf-8")
    ran = deadpixel(
        "campaign", "send", name, "--recipients", str(write_list(tmp_path / "list.csv", n)),
        "--subject", "A: hi {{ name }}", "--subject", "B: hello {{ name }}",
        "--html", str(tmp_path / "a.html"), "--html", str(tmp_path / "b.html"),
        "--test-share", share, "--json", *extra,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return dict(json.loads(ran.stdout))


def pixel_path(mail: Received) -> str:
    [path] = PIXEL.findall(mail.html())
    return str(path)


def open_as(paths: list[str], agent: str, ip: str) -> None:
    """Fetch pixels (or follow links) through the whole app, its verdicts and writer, as ``agent`` from
    ``ip``."""
    with TestClient(Deadpixel(load_settings()), client=(ip, 40000)) as reader:
        for path in paths:
            got = reader.get(path, headers={"user-agent": agent}, follow_redirects=False)
            assert got.status_code in (200, 302), got.status_code


def dashboard_page(settings: Settings, path: str) -> str:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    engine.dispose()
    with TestClient(Deadpixel(settings), base_url="http://testserver") as browser:
        assert sign_in(browser) == 303
        page = browser.get(path)
        assert page.status_code == 200
        return page.text


def sent_an_hour_ago(engine: Engine) -> None:
    """Time passes: opens now come long after the send, so no timing rule takes a reader for a scanner."""
    with engine.begin() as conn:
        conn.execute(update(messages).values(sent_at=messages.c.sent_at - 3600))


def variants_by_address(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(messages.c.recipient, messages.c.variant)).all())  # type: ignore[arg-type]


def standing(name: str, *extra: str) -> dict[str, Any]:
    ran = deadpixel("campaign", "winner", name, "--json", *extra)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return dict(json.loads(ran.stdout))


@pytest.mark.slow
def test_an_ab_test_splits_evenly_waits_and_apple_prefetches_never_make_a_winner(
    smtp: SMTPServerHandle, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    summary = send_test(tmp_path, "ab", 30, "0.667", "--pick-winner-after", "4h")
    assert summary["sent"] == 20 and summary["waiting"] == 10
    variants = variants_by_address(engine)
    labels = list(variants.values())
    assert labels.count("A") == 10 and labels.count("B") == 10
    mails = smtp.sink.by_recipient()
    assert len(mails) == 20 and all(len(m) == 1 for m in mails.values())
    for address, [mail] in mails.items():  # each got its own variant's subject and body
        assert mail.message["subject"].startswith(f"{variants[address]}: ")
        assert ("Shop A" in mail.html()) == (variants[address] == "A")
    with engine.connect() as conn:
        waiting = set(conn.execute(select(ab_waiting.c.address)).scalars())
        kept = dict(conn.execute(select(sent_html.c.variant, sent_html.c.html)).all())
    assert waiting == {f"r{i}@example.org" for i in range(30)} - set(variants)
    assert set(kept) == {"A", "B"} and "Shop A" in kept["A"] and "/c/" not in kept["A"]  # as written

    # Too little data yet: --now sends nothing and says why, exit status 0.
    early = standing("ab", "--now")
    assert early["status"] == "too little data" and early["winner"] is None
    assert len(smtp.sink.messages) == 20

    sent_an_hour_ago(engine)
    by_variant: dict[str, list[str]] = {"A": [], "B": []}
    for address, [mail] in sorted(mails.items()):
        by_variant[str(variants[address])].append(pixel_path(mail))
    # Apple's prefetch fetches every B message (never a person), a person on Thunderbird reads 8 of A's
    # and 1 of B's: B has every message "opened" and still loses.
    open_as(by_variant["B"], APPLE_MPP, APPLE)
    open_as(by_variant["A"][:8] + by_variant["B"][:1], THUNDERBIRD, HOME)
    first_a = next(m for a, [m] in sorted(mails.items()) if variants[a] == "A")
    open_as([CLICK.findall(first_a.html())[-1]], CHROME, HOME)  # the last /c/ link: the visible one

    found = standing("ab")
    rows = {v["label"]: v for v in found["variants"]}
    assert (rows["A"]["sent"], rows["A"]["human_opens"]) == (10, 8)
    assert (rows["B"]["sent"], rows["B"]["human_opens"]) == (10, 1)
    assert found["leader"] == "A" and found["decided"] and found["probability"] > 0.99
    assert found["statement"].startswith("A is better with 99")
    assert found["pick_winner_after_seconds"] == 4 * 3600

    report = json.loads(deadpixel("report", "ab", "--json", check=True).stdout)
    assert report["ab_test"]["statement"] == found["statement"]
    assert report["unique_opens"] == 18  # the prefetches count as machine opens, and only there
    assert report["unique_clicks"] == 1 and rows["A"]["clicks"] == 1
    assert f"A/B test         {found['statement']}" in deadpixel("report", "ab", check=True).stdout

    page = dashboard_page(settings, "/campaigns/ab")
    assert "A is better with 99" in page and 'data-variant="A" class="leader"' in page
    maps = re.findall(r'<section class="click-map" data-variant="(\w)">.*?srcdoc="([^"]*)"', page, re.S)
    assert [label for label, _ in maps] == ["A", "B"]
    shown_a = unescape(maps[0][1])
    assert 'data-clicks="1"' in shown_a and "#1 · 1 click · 100% of clickers" in shown_a
    assert "href" not in shown_a and "Shop A" in shown_a
    assert 'data-clicks="0"' in unescape(maps[1][1])
    assert "shop.example/a?x=1#top" in page  # the links table names the URL as written
    assert 'id="best-hours"' in page and "over 9 human opens" in page

    sent = json.loads(deadpixel("campaign", "winner", "ab", "--now", "--json", check=True).stdout)
    assert sent["winner"] == "A" and sent["sent"] == 10
    rest = smtp.sink.by_recipient()
    assert len(rest) == 30 and all(len(m) == 1 for m in rest.values())
    for address in waiting:
        [mail] = rest[address]
        assert mail.message["subject"].startswith("A: ") and "Shop A" in mail.html()
    assert variants_by_address(engine)[next(iter(waiting))] is None  # the rest is not part of the test

    again = json.loads(deadpixel("campaign", "winner", "ab", "--now", "--json", check=True).stdout)
    assert again["sent"] == 0 and again["already_sent"] == 10 and len(smtp.sink.messages) == 30
    after = standing("ab")
    assert {v["label"]: v["sent"] for v in after["variants"]} == {"A": 10, "B": 10}


def test_a_rerun_splits_the_same_way_and_sends_nobody_twice(
    smtp: SMTPServerHandle, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    first = send_test(tmp_path, "again", 12, "0.5")
    assert first["sent"] == 6 and first["waiting"] == 6
    before = variants_by_address(engine)
    second = send_test(tmp_path, "again", 12, "0.5")
    assert second["sent"] == 0 and second["already_sent"] == 6
    assert variants_by_address(engine) == before and len(smtp.sink.messages) == 6


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_variant_options_are_checked(settings: Settings, tmp_path: Path) -> None:
    listed = str(write_list(tmp_path / "list.csv", 2))
    page = tmp_path / "p.html"
    page.write_text("<p>x</p>", encoding="utf-8")
    base = ("campaign", "send", "x", "--recipients", listed, "--html", str(page))
    no_share = deadpixel(*base, "--subject", "a", "--subject", "b")
    assert no_share.returncode == 2 and "--test-share" in no_share.stderr
    mismatch = deadpixel(*base, "--html", str(page), "--html", str(page), "--subject", "a", "--subject", "b",
                         "--test-share", "0.5")  # fmt: skip
    assert mismatch.returncode == 2 and "--subject is given 2 times: give it once or 3" in mismatch.stderr
    lone = deadpixel(*base, "--subject", "a", "--test-share", "0.5")
    assert lone.returncode == 2 and "two or more variants" in lone.stderr
    bad_after = deadpixel(*base, "--subject", "a", "--subject", "b", "--test-share", "0.5",
                          "--pick-winner-after", "soon")  # fmt: skip
    assert bad_after.returncode == 2 and "not a duration" in bad_after.stderr
    not_a_test = deadpixel("campaign", "winner", "nope")
    assert not_a_test.returncode == 1 and "no campaign named 'nope'" in not_a_test.stderr


def stored_links(engine: Engine) -> list[str]:
    from deadpixel.events import HIDDEN_LINK
    from deadpixel.store.schema import links

    with engine.connect() as conn:  # the hidden link's target is the site's root: never tagged
        query = select(links.c.url).where(links.c.number != HIDDEN_LINK).order_by(links.c.url)
        return list(conn.execute(query).scalars())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_utm_tags_go_on_the_stored_targets_of_a_test_and_its_rest(
    smtp: SMTPServerHandle, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    send_test(tmp_path, "Spring sale", 4, "0.5", "--utm", "--utm-source", "newsletter")
    for [mail] in smtp.sink.by_recipient().values():  # the mail shows click URLs only: tags go on targets
        assert "utm_" not in mail.html()
    for url in stored_links(engine):
        assert url.endswith("utm_source=newsletter&utm_medium=email&utm_campaign=Spring%20sale") or (
            "x=1&utm_source=newsletter&utm_medium=email&utm_campaign=Spring%20sale#top" in url
        ), url


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_single_send_tags_its_links_and_keeps_their_own_parameters(
    smtp: SMTPServerHandle, settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    page = tmp_path / "one.html"
    page.write_text(
        '<p><a href="https://shop.example/?utm_source=partner&amp;q=a%20b">Go</a></p>', encoding="utf-8"
    )
    sent = deadpixel("send", "--to", "ann@example.org", "--subject", "Hi", "--html", str(page),
                     "--campaign", "Q3", "--utm", check=True)  # fmt: skip
    assert "1 tracked links" in sent.stdout
    assert stored_links(engine) == [
        "https://shop.example/?utm_source=partner&q=a%20b&utm_medium=email&utm_campaign=Q3"
    ]
    lone = deadpixel(
        "send", "--to", "ann@example.org", "--subject", "Hi", "--html", str(page), "--utm-source", "x"
    )
    assert lone.returncode == 2 and "--utm-source goes with --utm" in lone.stderr
