"""CSV exports: exact content with hostile cells defused, streamed in bounded memory, from the command line,
the API and the dashboard."""

from __future__ import annotations

import csv
import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import Settings
from deadpixel.enrich.opens import OpenClassifier
from deadpixel.events import ClickEvent, OpenEvent
from deadpixel.reports import exports
from deadpixel.reports.analytics import UnknownCampaign, iso
from deadpixel.server.app import Deadpixel
from deadpixel.store.api_tokens import create_token
from deadpixel.store.clicks import write_clicks
from deadpixel.store.db import create_engine
from deadpixel.store.links import save_links
from deadpixel.store.messages import create_message
from deadpixel.store.writes import write_opens

from .conftest import Server
from .helpers import deadpixel
from .test_dashboard import sign_in

THUNDERBIRD = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.0"
HOSTILE_AGENT = '=cmd|" /C calc"!A0, "quoted"'
T0 = 1_764_000_000.0


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    made = create_engine(settings.database_url)
    yield made
    made.dispose()


def seed(engine: Engine, settings: Settings) -> dict[str, str]:
    """spring: ann opened (Thunderbird) and clicked; a hostile recipient's message opened by a hostile agent;
    bob never opened. autumn: one open."""
    classifier = OpenClassifier.from_settings(settings)
    with engine.begin() as conn:
        ann = create_message(conn, recipient="Ann, Smith <ann@example.com>", subject='Line one\nsays "hi"',
                             campaign="spring", sent_at=T0 - 3600)  # fmt: skip
        evil = create_message(
            conn, recipient="@evil@example.com", subject='=HYPERLINK("x")', campaign="spring"
        )
        bob = create_message(conn, recipient="bob@example.com", subject="+1 offer", campaign="spring")
        other = create_message(conn, recipient="cy@example.com", subject="Autumn", campaign="autumn")
        save_links(conn, [(ann, ["https://shop.example/sale?a=1,2"])])
        events = [
            OpenEvent(ann, T0, "198.51.100.7", THUNDERBIRD, "GET"),
            OpenEvent(evil, T0 + 1, "198.51.100.8", HOSTILE_AGENT, "GET"),
            OpenEvent(other, T0 + 2, "198.51.100.9", THUNDERBIRD, "GET"),
        ]
        write_opens(conn, events, classifier)
        write_clicks(
            conn, [ClickEvent(ann, 0, T0 + 5, "198.51.100.7", THUNDERBIRD, "GET")], classifier.clicks
        )
    return {"ann": ann, "evil": evil, "bob": bob, "other": other}


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def test_exports_are_exact_and_defuse_formulas(engine: Engine, settings: Settings) -> None:
    ids = seed(engine, settings)
    opened = read_csv(b"".join(exports.stream(engine, "opens", "spring")))
    assert [(r["message_id"], r["campaign"], r["recipient"], r["subject"], r["at"]) for r in opened] == [
        (ids["ann"], "spring", "Ann, Smith <ann@example.com>", 'Line one\nsays "hi"', iso(T0)),
        (ids["evil"], "spring", "'@evil@example.com", '\'=HYPERLINK("x")', iso(T0 + 1)),
    ]
    assert opened[0]["client"] == "Thunderbird" and opened[0]["kind"] == "human"
    assert opened[1]["user_agent"] == "'" + HOSTILE_AGENT
    assert list(opened[0]) == ["id", "at", "message_id", "campaign", "recipient", "subject", "kind", "reason",
                               "client", "device", "os", "country", "region", "city", "network_owner", "ip",
                               "user_agent", "method"]  # fmt: skip
    assert len(read_csv(b"".join(exports.stream(engine, "opens")))) == 3

    (clicked,) = read_csv(b"".join(exports.stream(engine, "clicks", "spring")))
    assert (clicked["message_id"], clicked["link"], clicked["url"], clicked["at"]) == (
        ids["ann"], "0", "https://shop.example/sale?a=1,2", iso(T0 + 5)
    )  # fmt: skip

    people = read_csv(b"".join(exports.stream(engine, "recipients", "spring")))
    assert [(r["message_id"], r["status"], r["opens"], r["human_clicks"], r["subject"]) for r in people] == [
        (ids["ann"], "clicked", "1", "1", 'Line one\nsays "hi"'),
        (ids["evil"], "machine only" if opened[1]["kind"] in ("scanner", "prefetch") else "opened", "1", "0",
         "'=HYPERLINK(\"x\")"),
        (ids["bob"], "not opened", "0", "0", "'+1 offer"),
    ]  # fmt: skip
    assert people[0]["sent_at"] == iso(T0 - 3600) and people[2]["first_open_at"] == ""

    raw = b"".join(exports.stream(engine, "clicks", "autumn"))
    header = "id,at,message_id,campaign,recipient,subject,link,url,kind,reason,client,device,os,country,"
    assert raw == (header + "network_owner,ip,user_agent,method\r\n").encode()
    with engine.connect() as conn, pytest.raises(UnknownCampaign):
        exports.query(conn, "opens", "nope")


def _export_measured(engine: Engine, campaign: str) -> tuple[int, int, int, int]:
    """Chunks, bytes, lines of an export, and the most memory it held at once (statement already cached)."""
    chunks = size = lines = 0
    tracemalloc.start()
    try:
        for chunk in exports.stream(engine, "opens", campaign):
            chunks += 1
            size += len(chunk)
            lines += chunk.count(b"\r\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return chunks, size, lines, peak


@pytest.mark.slow
def test_a_big_export_streams_in_bounded_memory(engine: Engine, settings: Settings) -> None:
    """Five times the rows, about the same memory: the export holds a chunk, never the whole."""
    sizes = {"small": 4_000, "big": 20_000}
    with engine.begin() as conn:
        for campaign, rows in sizes.items():
            mids = [create_message(conn, recipient=f"r{n}@example.com", campaign=campaign) for n in range(50)]
            events = [OpenEvent(mids[n % 50], T0 + n, "198.51.100.7", THUNDERBIRD + " x" * 20, "GET")
                      for n in range(rows)]  # fmt: skip
            write_opens(conn, events, OpenClassifier(None))
    b"".join(exports.stream(engine, "opens", "small"))  # compile and cache the statement first
    small = _export_measured(engine, "small")
    chunks, size, lines, peak = _export_measured(engine, "big")
    assert lines == sizes["big"] + 1 and chunks == sizes["big"] // exports.CHUNK and size > 4_000_000
    assert small[2] == sizes["small"] + 1
    assert peak < 1.5 * small[3], f"{peak} bytes at most for 20,000 rows, {small[3]} for 4,000: not streamed"
    assert peak < size / 2


def test_export_command(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    ids = seed(engine, settings)
    target = tmp_path / "people.csv"
    run = deadpixel("export", "recipients", "--campaign", "spring", "--output", str(target))
    assert run.returncode == 0, run.stderr
    assert [r["message_id"] for r in read_csv(target.read_bytes())] == [ids["ann"], ids["evil"], ids["bob"]]
    to_stdout = deadpixel("export", "opens")
    assert to_stdout.stdout_bytes == b"".join(exports.stream(engine, "opens"))
    missing = deadpixel("export", "opens", "--campaign", "nope", "-o", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "no campaign named 'nope'" in missing.stderr
    assert not (tmp_path / "nope.csv").exists()


@pytest.mark.slow
def test_the_api_streams_exports_in_chunks(engine: Engine, settings: Settings, server: Server) -> None:
    ids = seed(engine, settings)
    with engine.begin() as conn:
        _, token = create_token(conn, "exports")
        mids = [create_message(conn, recipient=f"r{n}@example.com", campaign="big") for n in range(3000)]
    auth = {"authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{server.url}/api/v1/exports/recipients.csv", params={"campaign": "big"},
                      headers=auth) as response:  # fmt: skip
        assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
        assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
        body = response.read()
    assert sorted(r["message_id"] for r in read_csv(body)) == sorted(mids)
    spring = httpx.get(f"{server.url}/api/v1/exports/opens.csv?campaign=spring", headers=auth)
    assert spring.content == b"".join(exports.stream(engine, "opens", "spring")) and ids["ann"] in spring.text
    unknown = httpx.get(f"{server.url}/api/v1/exports/clicks.csv?campaign=nope", headers=auth)
    assert unknown.status_code == 400 and unknown.json()["parameter"] == "campaign"
    assert httpx.get(f"{server.url}/api/v1/exports/opens.csv").status_code == 401


def test_the_campaign_page_offers_the_exports(engine: Engine, settings: Settings) -> None:
    seed(engine, settings)
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    with TestClient(Deadpixel(settings), base_url="http://testserver") as client:
        assert client.get("/exports/opens.csv?campaign=spring", follow_redirects=False).status_code == 303
        assert sign_in(client) == 303
        page = client.get("/campaigns/spring")
        assert 'href="/exports/recipients.csv?campaign=spring"' in page.text
        download = client.get("/exports/recipients.csv?campaign=spring")
        assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
        assert download.content == b"".join(exports.stream(engine, "recipients", "spring"))
        assert client.get("/exports/secrets.csv").status_code == 404
        assert client.get("/exports/opens.csv?campaign=nope").status_code == 404
        assert client.get("/exports/opens.csv?campaign=%00").status_code == 404
        assert client.get("/feed?campaign=a%00b").status_code == 404
        assert len(read_csv(client.get("/exports/opens.csv").content)) == 3
