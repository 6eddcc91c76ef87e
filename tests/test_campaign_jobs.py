"""Stored campaigns sent by the server: scheduled by the command line and the API, sent at their time by a
real ``deadpixel serve`` to a real SMTP server, paused, resumed and cancelled within about a second, never
sent twice across a kill -9 or two servers on one store, and refused to a viewer's token."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, update
from starlette.testclient import TestClient

from deadpixel.config import load_settings
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.job_runner import CampaignJobs
from deadpixel.send.when import BadWhen, due_time, parse_duration, parse_time
from deadpixel.server.app import Deadpixel
from deadpixel.store import audit
from deadpixel.store import campaign_jobs as jobs
from deadpixel.store.api_tokens import create_token
from deadpixel.store.db import create_engine
from deadpixel.store.roles import Role
from deadpixel.store.schema import campaign_jobs as jobs_table

from .conftest import Server
from .helpers import deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)

UTC = ZoneInfo("UTC")
HTML = "<p>Hello {{ name }}</p>"


# --- TIME and DURATION -------------------------------------------------------------------------------------


def test_times_and_durations_are_read_as_documented() -> None:
    assert parse_duration("90m") == 5400 and parse_duration("4h") == 14400 and parse_duration("2d") == 172800
    assert parse_duration("1h30m") == 5400 and parse_duration("45s") == 45
    berlin = ZoneInfo("Europe/Berlin")
    assert parse_time("2026-12-07 09:00", berlin) == dt.datetime(2026, 12, 7, 8, 0, tzinfo=UTC).timestamp()
    assert parse_time("2026-12-07T09:00:00+01:00", UTC) == parse_time("2026-12-07T08:00:00Z", UTC)
    now = dt.datetime(2026, 12, 6, tzinfo=UTC).timestamp()
    assert due_time(None, "90m", UTC, now) == now + 5400
    for bad in ("", "90", "m", "1.5h", "-1h", "1 h", "1w", "h1"):
        with pytest.raises(BadWhen):
            parse_duration(bad)
    with pytest.raises(BadWhen, match="has passed"):
        due_time("2020-01-01 09:00", None, UTC, now)
    with pytest.raises(BadWhen, match="either"):
        due_time("2026-12-07 09:00", "1h", UTC, now)
    with pytest.raises(BadWhen, match="ISO 8601"):
        parse_time("tomorrow 9am", UTC)


@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from("smhd")), min_size=1, max_size=4))
def test_a_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration(text) == sum(n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


@given(st.text(max_size=12))
def test_any_text_is_a_duration_or_a_clear_refusal(text: str) -> None:
    try:
        assert parse_duration(text) >= 0
    except BadWhen as exc:
        assert "duration" in str(exc)


# --- helpers -----------------------------------------------------------------------------------------------


def recipients(tmp_path: Path, n: int, extra: str = "") -> Path:
    path = tmp_path / f"list{n}.csv"
    path.write_text("email,name\n" + "".join(f"r{i}@example.org,R{i}\n" for i in range(n)) + extra)
    return path


def schedule(tmp_path: Path, name: str, csv: Path, *options: str) -> dict[str, Any]:
    html = tmp_path / "mail.html"
    html.write_text(HTML)
    ran = deadpixel(
        "campaign", "send", name, "--recipients", str(csv), "--subject", "Hi {{ name }}", "--html", str(html),
        "--retry-backoff", "0.01", "--json", *options, check=True,
    )  # fmt: skip
    made: dict[str, Any] = json.loads(ran.stdout)
    return made


def status(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(deadpixel("campaign", "status", name, "--json", check=True).stdout)
    return found


def make_due(engine: Engine, name: str) -> None:
    """As if the scheduled time had come."""
    with engine.begin() as conn:
        job = jobs.latest(conn, name)
        assert job is not None
        conn.execute(update(jobs_table).where(jobs_table.c.id == job.id).values(due_at=time.time() - 1))


def state_of(engine: Engine, name: str) -> str | None:
    """Read straight from the store: light enough to poll beside the SMTP sink in this process."""
    with engine.connect() as conn:
        job = jobs.latest(conn, name)
    return None if job is None else job.state


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def sender_jobs(smtp: SMTPServerHandle, engine: Engine) -> CampaignJobs:
    settings = load_settings()  # after the smtp fixture set DEADPIXEL_SMTP_*
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    return CampaignJobs(settings, engine, signer, heartbeat=0.1)


def received(smtp: SMTPServerHandle) -> Counter[str]:
    return Counter(rcpt for message in smtp.sink.messages for rcpt in message.rcpt_tos)


# --- in process: the runner, the command line ---------------------------------------------------------------


def test_a_scheduled_campaign_waits_for_its_time_then_goes_once_per_recipient_with_its_problems_kept(
    tmp_path: Path, smtp: SMTPServerHandle, engine: Engine, sender_jobs: CampaignJobs
) -> None:
    csv = recipients(tmp_path, 20, extra="not-an-address,X\nr3@example.org,again\nshort\n")
    made = schedule(tmp_path, "winter", csv, "--after", "1h")
    assert made["state"] == "scheduled" and made["total"] == 23
    assert not sender_jobs.run_due() and not smtp.sink.messages  # not due yet
    listed = deadpixel("campaign", "list", check=True).stdout
    assert "winter" in listed and "scheduled" in listed
    make_due(engine, "winter")
    assert sender_jobs.run_due()
    got = received(smtp)
    assert got == Counter({f"r{i}@example.org": 1 for i in range(20)})
    assert "Hello R7" in next(m for m in smtp.sink.messages if m.rcpt_tos == ["r7@example.org"]).html()
    view = status("winter")
    assert (view["state"], view["sent"], view["failed"], view["skipped"], view["left"]) == (
        "done",
        20,
        0,
        3,
        0,
    )
    problems = json.loads(deadpixel("campaign", "problems", "winter", "--json", check=True).stdout)
    assert {(p["line"], p["kind"]) for p in problems} == {(22, "invalid"), (23, "duplicate"), (24, "invalid")}
    as_csv = deadpixel("campaign", "problems", "winter", "--csv", check=True).stdout
    assert as_csv.splitlines()[0] == "line,value,kind,reason" and "not-an-address" in as_csv
    assert not sender_jobs.run_due()  # done is done
    with engine.connect() as conn:
        actions = [(r.actor, r.action) for r in audit.recent(conn)]
    assert ("cli", "campaign.schedule") in actions
    # a bad schedule is one clear line, and nothing is stored
    bad = deadpixel("campaign", "send", "spring", "--recipients", str(csv), "--subject", "x",
                    "--html", str(tmp_path / "mail.html"), "--after", "soon")  # fmt: skip
    assert bad.returncode == 1 and "duration 'soon'" in bad.stderr and "Traceback" not in bad.stderr
    assert deadpixel("campaign", "status", "spring").returncode == 1


def _run_in_thread(sender_jobs: CampaignJobs) -> threading.Thread:
    thread = threading.Thread(target=sender_jobs.run_due, daemon=True)
    thread.start()
    return thread


@pytest.mark.serial  # it times the pause
def test_pause_stops_within_a_second_resume_finishes_and_cancel_stops_for_good(
    tmp_path: Path, smtp: SMTPServerHandle, engine: Engine, sender_jobs: CampaignJobs
) -> None:
    schedule(tmp_path, "slow", recipients(tmp_path, 150), "--after", "1h", "--rate", "50/s")
    make_due(engine, "slow")
    thread = _run_in_thread(sender_jobs)
    wait_for(lambda: len(smtp.sink.messages) >= 10, 5, "the first messages")
    asked = time.monotonic()
    assert "paused" in deadpixel("campaign", "pause", "slow", check=True).stdout
    thread.join(5)
    stopped_after = time.monotonic() - asked
    assert not thread.is_alive() and stopped_after < 1.5, stopped_after
    count = len(smtp.sink.messages)
    time.sleep(0.3)
    assert len(smtp.sink.messages) == count < 150  # nothing more goes while paused
    view = status("slow")
    assert view["state"] == "paused" and view["sent"] == count and view["left"] == 150 - count
    assert not sender_jobs.run_due()  # a paused send is not due
    deadpixel("campaign", "resume", "slow", check=True)
    assert sender_jobs.run_due()
    assert received(smtp) == Counter({f"r{i}@example.org": 1 for i in range(150)})
    assert status("slow")["state"] == "done"
    assert deadpixel("campaign", "resume", "slow").returncode == 1  # done: nothing to resume

    smtp.sink.messages.clear()
    schedule(tmp_path, "gone", recipients(tmp_path, 100), "--after", "1h", "--rate", "50/s")
    make_due(engine, "gone")
    thread = _run_in_thread(sender_jobs)
    wait_for(lambda: len(smtp.sink.messages) >= 5, 5, "the first messages")
    deadpixel("campaign", "cancel", "gone", check=True)
    thread.join(2)
    assert not thread.is_alive()
    count = len(smtp.sink.messages)
    assert count < 100 and status("gone")["state"] == "cancelled"
    assert deadpixel("campaign", "resume", "gone").returncode == 1
    assert not sender_jobs.run_due() and len(smtp.sink.messages) == count
    with engine.connect() as conn:
        actions = [r.action for r in audit.recent(conn)]
    assert {"campaign.pause", "campaign.resume", "campaign.cancel"} <= set(actions)


# --- the API, in process ------------------------------------------------------------------------------------


@pytest.fixture
def client(settings: Any) -> Iterator[tuple[TestClient, dict[Role, dict[str, str]]]]:
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        tokens = {
            role: {"authorization": f"Bearer {create_token(conn, f't-{role.label}', role)[1]}"}
            for role in Role
        }
    engine.dispose()
    with TestClient(Deadpixel(settings)) as test_client:
        yield test_client, tokens


CAMPAIGN_BODY = {
    "name": "api spring",
    "from": "News <news@example.com>",
    "subject": "Hi {{ name }}",
    "html": HTML,
    "recipients": [
        {"email": "a@example.org", "fields": {"name": "A"}},
        {"email": "b@example.org", "fields": {"name": "B"}, "track": False},
    ],
    "after": "2h",
    "options": {"rate": "20/s", "notify": "each"},
}


def test_the_api_stores_schedules_pauses_resumes_cancels_and_reports_and_a_viewer_changes_nothing(
    client: tuple[TestClient, dict[Role, dict[str, str]]], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api, tokens = client
    base = "/api/v1/campaigns"
    viewer, sender = tokens[Role.VIEWER], tokens[Role.SENDER]
    changes = [(base, CAMPAIGN_BODY)] + [
        (f"{base}/api spring/{action}", {"after": "1h"} if action == "schedule" else {})
        for action in ("send", "schedule", "pause", "resume", "cancel")
    ]
    for path, body in changes:
        answer = api.post(path, json=body, headers=viewer)
        assert answer.status_code == 403, (path, answer.text)
    assert api.get(f"{base}/api spring/status", headers=viewer).status_code == 404  # nothing was stored

    made = api.post(base, json=CAMPAIGN_BODY, headers=sender)
    assert made.status_code == 201, made.text
    assert made.json()["state"] == "scheduled" and made.json()["total"] == 2
    again = api.post(base, json=CAMPAIGN_BODY, headers=sender)
    assert again.status_code == 409 and "cancel it" in again.json()["error"]
    steps = [("pause", "paused"), ("resume", "scheduled"), ("schedule", "scheduled"), ("cancel", "cancelled")]
    for action, state in steps:
        body = {"at": "2027-06-01 03:04"} if action == "schedule" else None
        answer = api.post(f"{base}/api spring/{action}", json=body, headers=sender)
        assert answer.status_code == 200 and answer.json()["state"] == state, (action, answer.text)
    assert (
        api.get(f"{base}/api spring/status", headers=viewer).json()["due_at"].startswith("2027-06-01T03:04")
    )
    assert api.post(f"{base}/api spring/resume", headers=sender).status_code == 409
    assert api.get(f"{base}/api spring/problems", headers=viewer).json() == {"items": []}
    csv_answer = api.get(f"{base}/api spring/problems.csv", headers=viewer)
    assert csv_answer.status_code == 200 and csv_answer.text.startswith("line,value,kind,reason")

    # CSV text as the rows; a draft without at/after; send now makes it due at once
    csv_body = {"name": "csv one", "subject": "Hi", "html": "<p>x</p>", "from": "a@example.com",
                "recipients_csv": "email,name\nx@example.org,X\n=bad,Y\n"}  # fmt: skip
    draft = api.post(base, json=csv_body, headers=sender)
    assert draft.status_code == 201 and draft.json()["state"] == "draft" and draft.json()["total"] == 2
    sent_now = api.post(f"{base}/csv one/send", headers=sender).json()
    assert sent_now["state"] in ("scheduled", "sending", "paused")  # the server's runner may take it at once

    # bad bodies: one clear 422 naming the field, nothing stored
    for bad, field in [
        ({**CAMPAIGN_BODY, "name": "x", "after": "soon"}, "after"),
        ({**CAMPAIGN_BODY, "name": "x", "recipients": [{"email": 5}]}, "recipients"),
        ({**CAMPAIGN_BODY, "name": "x", "html": "{% if %}"}, None),
        ({**CAMPAIGN_BODY, "name": "x", "options": {"concurrency": 99}}, "options"),
        ({k: v for k, v in CAMPAIGN_BODY.items() if k != "recipients"} | {"name": "x"}, "recipients"),
    ]:
        answer = api.post(base, json=bad, headers=sender)
        assert answer.status_code == 422, answer.text
        assert answer.json().get("parameter") == field, answer.json()
    monkeypatch.setattr(jobs, "MAX_ROWS", 1)
    too_many = api.post(base, json={**CAMPAIGN_BODY, "name": "big"}, headers=sender)
    assert too_many.status_code == 422 and "at most 1" in too_many.json()["error"]
    assert api.get(f"{base}/x/status", headers=viewer).status_code == 404
    with create_engine(settings.database_url).connect() as conn:
        rows = [(r.actor, r.action) for r in audit.recent(conn)]
    for action in ("schedule", "pause", "resume", "cancel", "send"):
        assert ("token:t-sender", f"campaign.{action}") in rows
    assert not [r for r in rows if r[0] == "token:t-viewer"]


# --- real servers: the process is the point ---------------------------------------------------------------


@pytest.mark.slow
def test_a_real_server_sends_at_the_time_and_a_kill_9_mid_send_loses_and_duplicates_nothing(
    tmp_path: Path, smtp: SMTPServerHandle, server_factory: type[Server], env: dict[str, str], engine: Engine
) -> None:
    # whole seconds, as --at is written below: a dropped fraction would make the due time earlier than `at`
    at = (dt.datetime.now(UTC) + dt.timedelta(seconds=3)).replace(microsecond=0)
    schedule(tmp_path, "timed", recipients(tmp_path, 30), "--at", at.isoformat(timespec="seconds"))
    server = server_factory(env=dict(env)).start()
    while time.time() < at.timestamp() - 0.3:
        assert not smtp.sink.messages, "sent before its time"
        time.sleep(0.05)
    wait_for(lambda: state_of(engine, "timed") == "done", 60, "the scheduled send", 0.2)
    assert received(smtp) == Counter({f"r{i}@example.org": 1 for i in range(30)})

    smtp.sink.messages.clear()
    schedule(tmp_path, "crash", recipients(tmp_path, 200), "--after", "1s", "--rate", "100/s")
    wait_for(lambda: len(smtp.sink.messages) >= 40, 60, "the send to be under way")
    server.kill()
    before = len(smtp.sink.messages)
    assert before < 200 and state_of(engine, "crash") == "sending"
    with engine.begin() as conn:  # the dead server's lease runs out
        conn.execute(update(jobs_table).values(lease_until=time.time() - 1))
    server_factory(env=dict(env)).start()
    wait_for(lambda: state_of(engine, "crash") == "done", 60, "the send to finish after the restart", 0.2)
    got = received(smtp)
    assert max(got.values()) == 1  # nobody twice
    problems = json.loads(deadpixel("campaign", "problems", "crash", "--json", check=True).stdout)
    uncertain = {p["value"] for p in problems if p["kind"] == "uncertain"}
    everyone = {f"r{i}@example.org" for i in range(200)}
    # Every row the ledger is sure of went exactly once; the ones in flight at the kill are reported
    # uncertain (some of them did arrive: the kill came between SMTP's 250 and the ledger's commit).
    assert everyone - uncertain <= set(got) and set(got) | uncertain == everyone and uncertain
    assert len(uncertain) <= 4 * 50  # at most the chunks in hand when it died


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_servers_on_one_postgresql_store_send_a_campaign_once(
    tmp_path: Path, smtp: SMTPServerHandle, server_factory: type[Server], env: dict[str, str], engine: Engine
) -> None:
    servers = [server_factory(env=dict(env)).start() for _ in range(2)]
    schedule(tmp_path, "shared", recipients(tmp_path, 200), "--after", "1s")
    wait_for(lambda: state_of(engine, "shared") == "done", 60, "the send", 0.2)
    assert received(smtp) == Counter({f"r{i}@example.org": 1 for i in range(200)})
    assert all(s.process is not None and s.process.poll() is None for s in servers)
    with httpx.Client() as http:
        assert all(http.get(s.url + "/healthz").status_code == 200 for s in servers)
