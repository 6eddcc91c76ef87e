"""``deadpixel campaign send`` against a real SMTP server and real stores: merge, per-row problems,
resuming after dropped connections and Ctrl-C, and nobody ever getting two copies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from deadpixel.config import Settings
from deadpixel.send.merge import TemplateProblem, Templates
from deadpixel.send.ratelimit import RateLimiter, parse_rate
from deadpixel.store.db import create_engine
from deadpixel.store.schema import campaign_recipients, campaigns, messages

from . import forkserver
from .helpers import Ran, deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

HTML = (
    "<html><body><p>Hello {{ first_name }},</p>"
    "{% if vip == 'yes' %}<p>Your code: {{ vip_code }}</p>{% endif %}"
    '<p><a href="https://shop.example/?who={{ first_name | urlencode }}">Shop</a></p>'
    "</body></html>"
)
SUBJECT = "Hi {{ first_name }}"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def campaign(tmp_path: Path, name: str, csv_text: str, *extra: str, html: str = HTML) -> Ran:
    recipients = write(tmp_path / f"{name}.csv", csv_text)
    template = write(tmp_path / f"{name}.html", html)
    return deadpixel(
        "campaign", "send", name, "--recipients", str(recipients),
        "--subject", SUBJECT, "--html", str(template), "--retry-backoff", "0.01", *extra,
    )  # fmt: skip


def as_json(result: Ran) -> Any:
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def states(settings: Settings) -> dict[str, str]:
    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        found = dict(conn.execute(select(campaign_recipients.c.address, campaign_recipients.c.status)).all())
    engine.dispose()
    return found


def report(name: str) -> Any:
    return json.loads(deadpixel("report", name, "--json", check=True).stdout)


LIST = """\
email,first_name,vip,track
ann@example.org,Ann,no,
"Bob Bee <bob@example.org>",<b>Bob</b>,no,yes
not-an-address,Nobody,no,
carol@example.org,Carol,yes,
ANN@example.org,Ann again,no,
dan@example.org,Dan,no,no
gone@example.org,Gone,no,
eve@example.org,Eve
fay@example.org,Fay,no,maybe
"gus@example.org","Gus
(two lines)",no,
"""


def test_a_campaign_with_problem_rows(smtp: SMTPServerHandle, settings: Settings, tmp_path: Path) -> None:
    smtp.sink.reject.add("gone@example.org")
    result = campaign(tmp_path, "spring", LIST, "--json")
    assert result.returncode == 1
    summary = as_json(result)
    problems = {(p["line"], p["kind"]): p for p in summary["problems"]}
    assert set(problems) == {(4, "invalid"), (5, "failed"), (6, "duplicate"), (8, "failed"), (9, "invalid"),
                             (10, "invalid")}  # fmt: skip
    assert problems[(4, "invalid")]["value"] == "not-an-address"
    assert "'vip_code' is undefined" in problems[(5, "failed")]["reason"]  # only for the VIP row
    assert problems[(6, "duplicate")]["reason"].startswith("duplicate of line 2")
    assert "550" in problems[(8, "failed")]["reason"] and "no such user" in problems[(8, "failed")]["reason"]
    assert "has 2 fields, the header has 4" in problems[(9, "invalid")]["reason"]
    assert "track must be yes or no" in problems[(10, "invalid")]["reason"]
    counts = [summary[k] for k in ("sent", "untracked", "failed", "invalid", "duplicates")]
    assert counts == [4, 1, 2, 3, 1]

    got = smtp.sink.by_recipient()
    assert sorted(got) == ["ann@example.org", "bob@example.org", "dan@example.org", "gus@example.org"]
    assert all(len(copies) == 1 for copies in got.values())
    ann = got["ann@example.org"][0]
    assert ann.message["Subject"] == "Hi Ann"
    html = ann.html()
    assert "Hello Ann," in html and html.count("<img ") == 1 and "/c/" in html and "shop.example" not in html
    bob = got["bob@example.org"][0]
    assert bob.message["To"] == "Bob Bee <bob@example.org>"
    assert "Hello &lt;b&gt;Bob&lt;/b&gt;," in bob.html()  # CSV data is escaped in HTML
    assert bob.message["Subject"] == "Hi <b>Bob</b>"  # ... but not in the subject, which is not HTML
    dan = got["dan@example.org"][0].html()  # track=no: the HTML as rendered, no pixel, real links
    assert "<img " not in dan and 'href="https://shop.example/?who=Dan"' in dan
    assert got["gus@example.org"][0].message["Subject"] == "Hi Gus (two lines)"

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        stored = {row.recipient: row for row in conn.execute(select(messages))}
    engine.dispose()
    assert stored["ann@example.org"].status == "sent" and stored["ann@example.org"].sent_at is not None
    assert "dan@example.org" not in stored  # untracked: nothing recorded about the message
    assert report("spring")["sent"] == 3  # tracked and accepted: ann, bob, gus
    assert states(settings)["gone@example.org"] == "failed"

    # Run again with the rejection gone: only the failed recipient is sent; nobody gets two.
    smtp.sink.reject.clear()
    again = as_json(campaign(tmp_path, "spring", LIST, "--json"))
    assert (again["sent"], again["already_sent"], again["failed"]) == (1, 4, 1)
    assert sorted(smtp.sink.by_recipient()) == sorted([*got, "gone@example.org"])
    assert all(len(copies) == 1 for copies in smtp.sink.by_recipient().values())
    assert report("spring")["sent"] == 4

    # Forgetting a person also erases what the campaign recorded about them.
    deadpixel("forget", "ann@example.org", "--yes", check=True)
    assert "ann@example.org" not in states(settings) and "bob@example.org" in states(settings)


@SQLITE_ONLY
def test_plain_output_names_line_value_and_reason(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = campaign(tmp_path, "plain", "email,first_name,vip\nok@example.org,Ok,no\nbad@,Bad,no\n")
    assert result.returncode == 1
    assert "line 3: 'bad@': invalid address: " in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Campaign 'plain': 2 rows read"
    assert any(line.split()[:2] == ["sent", "1"] for line in lines)
    assert any(line.split()[:2] == ["invalid", "1"] for line in lines)
    # The first command on a new machine: no data dir, no keys, no store yet.
    monkeypatch.setenv("DEADPIXEL_DATA_DIR", str(tmp_path / "fresh"))
    monkeypatch.setenv("DEADPIXEL_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh.db'}")
    clean = campaign(tmp_path, "plain2", "email,first_name,vip\nok@example.org,Ok,no\n")
    assert clean.returncode == 0
    assert [
        line for line in clean.stderr.splitlines() if not line.startswith("Warning: DEADPIXEL_BASE_URL")
    ] == []


@SQLITE_ONLY
def test_the_server_going_away_midway_then_a_rerun_completes(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path
) -> None:
    rows = "".join(f"r{i}@example.org,R{i},no\n" for i in range(30))
    text = "email,first_name,vip\n" + rows
    smtp.sink.down_after = 10
    first = as_json(campaign(tmp_path, "drop", text, "--json", "--retries", "2"))
    delivered = len(smtp.sink.messages)  # 10, or a few more that were already under way on other connections
    assert 10 <= delivered < 30 and first["sent"] == delivered
    assert "does not take mail" in first["stopped"] and "421" in first["stopped"]
    assert first["ok"] is False

    smtp.sink.down_after = None
    second = as_json(campaign(tmp_path, "drop", text, "--json"))
    assert (second["sent"], second["already_sent"], second["stopped"]) == (30 - delivered, delivered, None)
    got = smtp.sink.by_recipient()
    assert sorted(got) == sorted(f"r{i}@example.org" for i in range(30))
    assert all(len(copies) == 1 for copies in got.values())  # nobody got two
    assert set(states(settings).values()) == {"sent"}


@SQLITE_ONLY
def test_a_connection_lost_after_sending_is_not_sent_twice(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path
) -> None:
    text = "email,first_name,vip\n" + "".join(f"r{i}@example.org,R{i},no\n" for i in range(5))
    smtp.sink.drop_in_data = 1  # the first message arrives, then the line goes dead before the answer
    first = as_json(campaign(tmp_path, "unsure", text, "--json", "--concurrency", "1"))
    assert (first["sent"], first["uncertain"]) == (4, 1)
    [problem] = first["problems"]
    assert problem["line"] == 2 and "may have accepted it" in problem["reason"]
    again = as_json(campaign(tmp_path, "unsure", text, "--json"))
    assert (again["sent"], again["already_sent"], again["uncertain"]) == (0, 4, 1)
    assert "--retry-uncertain" in again["problems"][0]["reason"]
    forced = as_json(campaign(tmp_path, "unsure", text, "--json", "--retry-uncertain"))
    assert (forced["sent"], forced["already_sent"]) == (1, 4)
    assert sorted(smtp.sink.by_recipient()) == [f"r{i}@example.org" for i in range(5)]


@SQLITE_ONLY
@pytest.mark.slow
def test_ctrl_c_then_rerun_sends_everyone_exactly_once(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path
) -> None:
    text = "email,first_name,vip\n" + "".join(f"r{i}@example.org,R{i},no\n" for i in range(40))
    recipients = write(tmp_path / "int.csv", text)
    template = write(tmp_path / "int.html", HTML)
    process = forkserver.spawn(
        ["campaign", "send", "int", "--recipients", str(recipients),
         "--subject", SUBJECT, "--html", str(template), "--rate", "40/s"],
        dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while len(smtp.sink.messages) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    out = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 1
    assert "Stopped early: interrupted" in out
    delivered_first = len(smtp.sink.messages)
    assert 5 <= delivered_first < 40
    assert "sending" not in states(settings).values()  # nothing left in flight after a clean stop

    second = as_json(campaign(tmp_path, "int", text, "--json"))
    assert second["ok"] is True and second["sent"] + second["already_sent"] == 40
    assert second["sent"] == 40 - delivered_first
    got = smtp.sink.by_recipient()
    assert len(got) == 40 and all(len(copies) == 1 for copies in got.values())


@SQLITE_ONLY
def test_bad_files_and_templates_stop_before_anything_is_sent(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path
) -> None:
    cases = [
        (campaign(tmp_path, "a", "name,first_name\nx,y\n"), "no 'email' column (columns: name, first_name)"),
        (campaign(tmp_path, "b", ""), "empty file"),
        (campaign(tmp_path, "c", "email\na@example.org\n", html="<p>{% if %}</p>"), "HTML template, line 1:"),
        (campaign(tmp_path, "d", "email,Email\na@example.org,b\n"), "column names appear twice: email"),
    ]
    latin = tmp_path / "latin.csv"
    latin.write_bytes("email,first_name\na@example.org,Jos\xe9\n".encode("latin-1"))
    html = write(tmp_path / "t.html", HTML)
    cases.append((
        deadpixel("campaign", "send", "e", "--recipients", str(latin), "--subject", "s", "--html", str(html)),
        "not UTF-8",
    ))  # fmt: skip
    for result, expected in cases:
        assert result.returncode == 1, result
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    bad_rate = campaign(tmp_path, "f", "email\na@example.org\n", "--rate", "fast")
    assert bad_rate.returncode == 2 and "not a rate like 10/s" in bad_rate.stderr
    assert smtp.sink.messages == []


def test_templates_are_sandboxed_strict_and_escaped() -> None:
    templates = Templates("Hi {{ name }}", "<p>{{ name }}</p>", "Hi {{ name }}\n")
    rendered = templates.render({"name": "<Ann & Co>"})
    assert (rendered.subject, rendered.html, rendered.text) == (
        "Hi <Ann & Co>",
        "<p>&lt;Ann &amp; Co&gt;</p>",
        "Hi <Ann & Co>\n",
    )
    with pytest.raises(TemplateProblem, match="subject: 'name' is undefined"):
        templates.render({})
    escape = Templates("s", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateProblem, match="HTML template"):
        escape.render({})
    with pytest.raises(TemplateProblem, match="text template, line 2: "):
        Templates("s", "h", "ok\n{% endif %}")


def test_rates_and_the_limiter() -> None:
    assert parse_rate("10/s") == 10 and parse_rate("600/m") == 10 and parse_rate("3600/h") == 1
    assert parse_rate("2.5") == 2.5 and parse_rate("off") is None and parse_rate("0") is None
    for bad in ("fast", "10/d", "-1/s", "nan/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire()
    assert slept == [0.25, 0.5]  # evenly spaced, never a burst
    RateLimiter(None, sleep=sleep).acquire()
    assert len(slept) == 2


def test_a_recipient_another_run_takes_meanwhile_is_skipped_not_sent_twice(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path
) -> None:
    """Another run of the same campaign claims a recipient between this run's read and its claim: the
    chunk's one-statement claim fails, every row is claimed on its own, and only the taken one is skipped."""
    from sqlalchemy import Connection, insert

    from deadpixel.security.keys import load_or_create_keys
    from deadpixel.security.tokens import TokenSigner
    from deadpixel.send.campaign import CampaignRunner, CampaignSpec, Problem
    from deadpixel.send.recipients import RecipientList
    from deadpixel.send.smtp_config import smtp_settings
    from deadpixel.send.tracked import Tracker

    def taken_meanwhile(conn: Connection, keys: list[str]) -> set[str]:
        # Runs in the chunk's transaction after this run read the recipients' state: the other run wins.
        race = conn.execute(select(campaigns.c.id).where(campaigns.c.name == "race")).scalar_one()
        conn.execute(
            insert(campaign_recipients).values(
                campaign_id=race, address="r1@example.org", line=2, run_id="otherrun", status="sending",
                updated_at=time.time(),
            )
        )  # fmt: skip
        return set()

    class Problems:
        def __init__(self) -> None:
            self.found: list[Problem] = []

        def problem(self, problem: Problem) -> None:
            self.found.append(problem)

        def advance(self, rows: int) -> None:
            pass

    recipients = write(tmp_path / "race.csv", "email\n" + "".join(f"r{i}@example.org\n" for i in range(3)))
    spec = CampaignSpec(
        name="race", sender="news@example.com", templates=Templates("Hi", "<p>Hello</p>", None),
        suppressed=taken_meanwhile,
    )  # fmt: skip
    engine = create_engine(settings.database_url)
    reporter = Problems()
    tracker = Tracker(settings, TokenSigner(load_or_create_keys(settings.keys_file)))
    summary = CampaignRunner(settings, engine, smtp_settings(settings), spec, tracker, reporter).run(
        RecipientList(recipients)
    )
    assert (summary.sent, summary.busy) == (2, 1)
    assert [(p.line, p.kind) for p in reporter.found] == [(3, "busy")]
    assert sorted(smtp.sink.by_recipient()) == ["r0@example.org", "r2@example.org"]
    with engine.connect() as conn:
        rows = dict(conn.execute(select(campaign_recipients.c.address, campaign_recipients.c.run_id)).all())
        stored = conn.execute(select(messages.c.recipient).order_by(messages.c.recipient)).scalars().all()
    engine.dispose()
    assert rows["r1@example.org"] == "otherrun"
    assert stored == ["r0@example.org", "r2@example.org"]  # no message row for the one not sent


def test_an_address_that_smtp_would_read_as_another_is_refused_not_sent_around_the_suppression_list(
    smtp: SMTPServerHandle, settings: Settings, tmp_path: Path
) -> None:
    """The address checked against the suppression list is the one RCPT TO carries: a quoted local part
    (which SMTP libraries unquote into a different address) is a per-row problem, never sent."""
    added = deadpixel("suppression", "add", "victim@evil.example")
    assert added.returncode == 0, added.stderr
    rows = """email,first_name,vip,track
\"\"\"victim@evil.example>\"\"@example.com\",Vic,no,
\"\"\"a b\"\"@example.com\",Space,no,
ann@example.org,Ann,no,
"""
    summary = as_json(campaign(tmp_path, "quoted", rows, "--json"))
    assert sorted(smtp.sink.by_recipient()) == ["ann@example.org"]
    problems = {p["line"]: p for p in summary["problems"]}
    assert set(problems) == {2, 3} and {p["kind"] for p in problems.values()} == {"invalid"}
    assert problems[2]["value"] == '"victim@evil.example>"@example.com'
    assert all("needs quoting" in p["reason"] for p in problems.values())
    assert (summary["sent"], summary["invalid"]) == (1, 2)
    for action in ("add", "remove"):  # the suppression list takes the same addresses, no others
        refused = deadpixel("suppression", action, '"victim@evil.example>"@example.com')
        assert refused.returncode == 2 and "needs quoting" in refused.stderr, refused.stderr
