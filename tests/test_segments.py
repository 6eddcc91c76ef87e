"""Segments with real verdicts: a campaign goes out through a real SMTP server, its pixels are fetched through
the whole app by Apple's prefetch, Gmail's proxy, a scanner and a person on Thunderbird at home, and the
segments say who opened; a follow-up to the non-openers reaches exactly them, once.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update
from starlette.testclient import TestClient

from deadpixel.accounts.users import create_user
from deadpixel.config import load_settings
from deadpixel.reports import segments
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.server.app import Deadpixel
from deadpixel.store import segments as saved
from deadpixel.store.api_tokens import create_token
from deadpixel.store.roles import Role
from deadpixel.store.schema import campaigns, messages, opens

from .helpers import deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_dashboard import sign_in
from .test_verdicts_e2e import APPLE_MPP, CHROME, GMAIL_PROXY, HOME, THUNDERBIRD

APPLE = "17.58.0.1"  # Apple's network: Mail Privacy Protection
GMAIL = "66.249.84.10"  # Google's image proxy
SCANNER = "40.107.3.9"  # Microsoft's mail scanning network
PEOPLE = ("ann", "bob", "cat", "dan", "eve", "fay")
LIST = "email,first_name\n" + "".join(f"{p}@example.org,{p.title()}\n" for p in PEOPLE)


def as_json(*args: str) -> Any:
    return json.loads(deadpixel(*args, "--json", check=True).stdout)


def send(tmp_path: Path, name: str, *source: str) -> dict[str, Any]:
    html = tmp_path / "mail.html"
    html.write_text("<html><body><p>Hello {{ email }}</p></body></html>", encoding="utf-8")
    ran = deadpixel("campaign", "send", name, *source, "--subject", "News", "--html", str(html), "--json")
    assert ran.stdout, ran.stderr
    found: dict[str, Any] = json.loads(ran.stdout)
    return found


def message_ids(engine: Engine, campaign: str) -> dict[str, str]:
    """Each recipient's local part -> their message in the campaign."""
    m = messages.c
    query = select(m.recipient, m.id).join(campaigns, campaigns.c.id == m.campaign_id)
    with engine.connect() as conn:
        rows = conn.execute(query.where(campaigns.c.name == campaign)).all()
    return {recipient.split("@")[0]: mid for recipient, mid in rows}


def fetch_pixels(monkeypatch: pytest.MonkeyPatch, fetches: list[tuple[str, str, str]]) -> None:
    """Each (message id, user agent, client address) loads its pixel through the whole app, in process,
    behind a trusted proxy that names the client, so the real classification path decides each verdict."""
    monkeypatch.setenv("DEADPIXEL_TRUSTED_PROXIES", "127.0.0.1")
    settings = load_settings()
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    with TestClient(Deadpixel(settings), client=("127.0.0.1", 40000)) as client:
        for mid, agent, ip in fetches:
            answer = client.get(
                f"/o/{signer.pixel_token(mid)}.gif", headers={"user-agent": agent, "x-forwarded-for": ip}
            )
            assert answer.status_code == 200 and answer.headers["content-type"] == "image/gif"


def sent_hours_ago(engine: Engine, hours: float) -> None:
    """Move the sends back: an open seconds after its send is a scanner's, rightly."""
    with engine.begin() as conn:
        conn.execute(update(messages).values(sent_at=messages.c.sent_at - hours * 3600))


def emails(rows: list[dict[str, Any]]) -> list[str]:
    return [row["email"].split("@")[0] for row in rows]


def who(campaign: str, segment: str) -> list[str]:
    return emails(as_json("segment", campaign, "--who", segment)["recipients"])


@pytest.fixture
def news(
    smtp: SMTPServerHandle, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The campaign ``news`` sent to six people a day ago: ann reads it on Thunderbird at home; Apple's
    prefetch fetches bob's and nobody reads it; cat reads hers through Gmail's proxy; a scanner fetches
    dan's; eve's is never fetched; fay's bounced hard."""
    (tmp_path / "list.csv").write_text(LIST, encoding="utf-8")
    summary = send(tmp_path, "news", "--recipients", str(tmp_path / "list.csv"))
    assert summary["sent"] == len(PEOPLE), summary
    sent_hours_ago(engine, 24)
    ids = message_ids(engine, "news")
    with engine.begin() as conn:  # the state a hard bounce report leaves (deadpixel.bounces.record)
        conn.execute(update(messages).where(messages.c.id == ids["fay"]).values(bounce="hard"))
    fetch_pixels(
        monkeypatch,
        [
            (ids["bob"], APPLE_MPP, APPLE),
            (ids["ann"], APPLE_MPP, APPLE),  # ann's iPhone prefetched too, before she read it at home
            (ids["ann"], THUNDERBIRD, HOME),
            (ids["cat"], GMAIL_PROXY, GMAIL),
            (ids["dan"], CHROME, SCANNER),
            (ids["ann"], APPLE_MPP, APPLE),  # and fetched again after she read it: her newest open
        ],
    )
    with engine.connect() as conn:
        kinds = {(mid, kind) for mid, kind in conn.execute(select(opens.c.message_id, opens.c.kind))}
    assert kinds == {
        (ids["bob"], "prefetch"), (ids["ann"], "prefetch"), (ids["ann"], "human"), (ids["cat"], "proxy"),
        (ids["dan"], "scanner"),
    }  # fmt: skip
    smtp.sink.messages.clear()
    return ids


def test_the_campaign_segments_follow_the_verdicts(news: dict[str, str]) -> None:
    assert who("news", "openers") == ["ann", "cat"]
    assert who("news", "non-openers") == ["bob", "dan", "eve"]  # bob's only open was Apple's prefetch
    assert who("news", "machine-only") == ["bob", "dan"]
    assert who("news", "clickers") == []
    listed = as_json("segment", "news", "--who", "openers")
    assert listed["spec"] == "news:openers" and "`proxy`" in listed["definition"]
    ann = listed["recipients"][0]
    assert (ann["message_id"], ann["human_opens"], ann["machine_opens"]) == (news["ann"], 1, 2)
    assert ann["last_human_open"] is not None and ann["last_human_open"] < ann["last_open_at"]
    assert [row["last_human_open"] is None for row in listed["recipients"]] == [False, False]
    text = deadpixel("segment", "news", "--who", "machine-only", "--explain", check=True).stdout.splitlines()
    assert text[0].startswith("# news:machine-only: the non-openers of news") and text[1] == "# 2 recipients"
    assert text[2:] == ["bob@example.org", "dan@example.org"]
    plain = deadpixel("segment", "news", "--who", "openers", check=True).stdout
    assert plain == "ann@example.org\ncat@example.org\n"


def test_counts_agree_with_the_lists_and_the_report(news: dict[str, str], engine: Engine) -> None:
    with engine.connect() as conn:
        counts = segments.campaign_counts(conn, "news")
        for name, n in counts.items():
            assert n == segments.count(conn, segments.Segment(name, "news")) == len(who("news", name))
    report = as_json("report", "news")
    assert counts["openers"] == report["human_opens"]
    assert counts["non-openers"] == report["delivered"] - report["human_opens"]
    assert counts["machine-only"] == report["machine_opens"]


def test_audience_segments(news: dict[str, str], engine: Engine) -> None:
    assert emails(as_json("segment", "--audience", "never-opened")["recipients"]) == ["bob", "dan", "eve"]
    assert emails(as_json("segment", "--client", "thunderbird")["recipients"]) == ["ann"]
    assert emails(as_json("segment", "--client", "Gmail")["recipients"]) == ["cat"]
    assert emails(as_json("segment", "--country", "gb")["recipients"]) == ["ann"]  # not cat: a proxy
    assert emails(as_json("segment", "--device", "desktop")["recipients"]) == ["ann"]
    # Mailed a day ago: nobody was mailed more than two days ago, so nobody is inactive for two days yet.
    assert as_json("segment", "--audience", "inactive", "--days", "2")["recipients"] == []
    month_later = time.time() + 30 * 86_400
    with engine.connect() as conn:
        inactive = segments.members(conn, segments.audience("inactive", "10"), now=month_later)
    assert emails(inactive) == [p for p in PEOPLE if p != "fay"]  # fay's mail bounced: she is not inactive
    today = as_json("segment", "--audience", "inactive", "--days", "1")["recipients"]
    assert emails(today) == ["bob", "dan", "eve"]  # ann and cat read it today


def test_a_follow_up_to_the_non_openers_reaches_exactly_them_once(
    news: dict[str, str], smtp: SMTPServerHandle, tmp_path: Path
) -> None:
    deadpixel("suppression", "add", "dan@example.org", check=True)
    first = send(tmp_path, "news again", "--segment", "news:non-openers")
    assert (first["sent"], first["suppressed"], first["rows"]) == (2, 1, 3), first
    assert sorted(smtp.sink.by_recipient()) == ["bob@example.org", "eve@example.org"]
    (bob,) = smtp.sink.by_recipient()["bob@example.org"]
    assert "Hello bob@example.org" in bob.html()
    again = send(tmp_path, "news again", "--segment", "news:non-openers")
    assert (again["sent"], again["already_sent"]) == (0, 2), again
    assert len(smtp.sink.messages) == 2


def test_a_saved_segment_is_evaluated_when_used(
    news: dict[str, str], engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = deadpixel("segment", "save", "quiet", "news:non-openers", check=True)
    assert "news:non-openers" in saved.stdout
    assert as_json("segment", "list")[0]["spec"] == "news:non-openers"
    assert emails(as_json("segment", "show", "quiet")["recipients"]) == ["bob", "dan", "eve"]
    fetch_pixels(monkeypatch, [(news["eve"], THUNDERBIRD, HOME)])  # eve reads it at last
    assert emails(as_json("segment", "show", "quiet")["recipients"]) == ["bob", "dan"]
    assert deadpixel("segment", "--saved", "quiet", check=True).stdout.split() == [
        "bob@example.org",
        "dan@example.org",
    ]
    taken = deadpixel("segment", "save", "quiet", "news:openers")
    assert taken.returncode == 1 and "exists already" in taken.stderr
    assert deadpixel("segment", "delete", "quiet", check=True).returncode == 0
    gone = deadpixel("segment", "show", "quiet")
    assert gone.returncode == 1 and "no saved segment named 'quiet'" in gone.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the answers are the CLI's own
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("segment", "news", "--who", "everyone"), "Invalid value for '--who'"),
        (("segment", "nosuch", "--who", "openers"), "no campaign named 'nosuch'"),
        (("segment", "news"), "--who is needed"),
        (("segment", "--audience", "inactive"), "needs --days"),
        (("segment", "news", "--who", "openers", "--client", "x"), "name one segment"),
        (("segment", "save", "x", "news:everyone"), "is not a segment"),
        (("segment", "save", "x", "@inactive:soon"), "number of days"),
        (("segment", "save", "a:b", "news:openers"), "not a usable name"),
        (("segment", "delete", "nothing"), "no saved segment"),
        (("campaign", "send", "x", "--subject", "s", "--html", "{html}"), "one of --recipients"),
        (("campaign", "send", "x", "--segment", "gone", "--subject", "s", "--html", "{html}"), "no saved"),
    ],
)
def test_bad_input_gets_a_clear_answer(
    args: tuple[str, ...], says: str, engine: Engine, tmp_path: Path, smtp: SMTPServerHandle
) -> None:
    html = tmp_path / "m.html"
    html.write_text("<p>hi</p>", encoding="utf-8")
    with engine.begin() as conn:
        conn.execute(campaigns.insert().values(name="news", created_at=time.time()))
    ran = deadpixel(*(a.replace("{html}", str(html)) for a in args))
    assert ran.returncode != 0 and says in ran.stderr, ran.stderr
    assert smtp.sink.messages == []


def test_definitions_read_back() -> None:
    for spec in ("spring: a:b:openers", "@inactive:90", "@never-opened", "@client:Apple Mail", "@country:DE"):
        assert segments.parse(spec).spec == spec
    assert segments.parse("@country:de").value == "DE"
    with pytest.raises(segments.BadSegment):
        segments.parse("@never-opened:5")


def test_the_api_gives_counts_pages_and_csv_to_a_viewer(news: dict[str, str], engine: Engine) -> None:
    with engine.begin() as conn:
        _, secret = create_token(conn, "reader", Role.VIEWER)
        saved.save(conn, "quiet", "news:non-openers")
    auth = {"authorization": f"Bearer {secret}"}
    with TestClient(Deadpixel(load_settings())) as client:

        def get(path: str, status: int = 200, **query: str) -> Any:
            answer = client.get("/api/v1" + path, params=query, headers=auth)
            assert answer.status_code == status, answer.text
            return answer

        overview = get("/campaigns/news/segments").json()
        counts = {item["who"]: item["count"] for item in overview["items"]}
        assert counts == {"openers": 2, "non-openers": 3, "machine-only": 2, "clickers": 0}
        assert all(item["definition"] for item in overview["items"])
        first = get("/campaigns/news/segments/non-openers", limit="2").json()
        assert (emails(first["items"]), first["count"]) == (["bob", "dan"], 3)
        assert "bob" not in first["next"] and "cursor=2" in first["next"]  # no address in a URL
        rest = client.get(first["next"], headers=auth).json()
        assert (emails(rest["items"]), rest["next"]) == (["eve"], None)
        table = get("/campaigns/news/segments/openers", format="csv")
        assert table.headers["content-type"].startswith("text/csv")
        lines = table.text.splitlines()
        assert lines[0].startswith("email,message_id,") and [line.split(",")[0] for line in lines[1:]] == [
            "ann@example.org",
            "cat@example.org",
        ]
        listed = get("/segments").json()["items"]
        assert [(s["name"], s["spec"], s["count"]) for s in listed] == [("quiet", "news:non-openers", 3)]
        assert emails(get("/segments/quiet").json()["items"]) == ["bob", "dan", "eve"]
        get("/campaigns/news/segments/everyone", 404)
        get("/campaigns/nosuch/segments", 404)
        get("/segments/nosuch", 404)
        get("/campaigns/news/segments/openers", 400, format="xml")
        assert client.get("/api/v1/segments").status_code == 401


def test_the_campaign_page_shows_segments_and_filters_the_table_by_them(
    news: dict[str, str], engine: Engine
) -> None:
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse", Role.VIEWER)
    with TestClient(Deadpixel(load_settings()), base_url="http://testserver") as client:
        assert sign_in(client) == 303
        page = client.get("/campaigns/news")
        assert page.status_code == 200
        table = page.text.split('id="segments"', 1)[1].split("</table>", 1)[0]
        for name, n in {"openers": 2, "non-openers": 3, "machine-only": 2, "clickers": 0}.items():
            row = table.split(f'data-segment="{name}"', 1)[1].split("</tr>", 1)[0]
            assert f'<td class="n" data-count>{n}</td>' in row
            assert segments.Segment(name, "news").definition() in html.unescape(row)
        listed = client.get("/campaigns/news", params={"segment": "non-openers"}).text
        shown = listed.split('id="recipients"', 1)[1].split("</table>", 1)[0]
        assert [p for p in PEOPLE if f"{p}@example.org" in shown] == ["bob", "dan", "eve"]
        assert "3 recipients in non-openers" in listed
        download = client.get("/segments/machine-only.csv", params={"campaign": "news"})
        assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
        assert [line.split(",")[0] for line in download.text.splitlines()[1:]] == [
            "bob@example.org",
            "dan@example.org",
        ]
        assert client.get("/campaigns/news", params={"segment": "everyone"}).status_code == 400
        assert client.get("/segments/everyone.csv", params={"campaign": "news"}).status_code == 404
        assert client.get("/segments/openers.csv", params={"campaign": "nosuch"}).status_code == 404


@given(st.text(max_size=80))
@hypothesis_settings(max_examples=300, deadline=None)
def test_any_text_is_a_segment_that_reads_back_or_a_clear_refusal(text: str) -> None:
    try:
        found = segments.parse(text)
    except segments.BadSegment as exc:
        assert "segment" in str(exc) or "@" in str(exc)
        return
    assert segments.parse(found.spec) == found
    assert found.definition()
