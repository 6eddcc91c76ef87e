"""The server's scheduled work, driven in process through the due-work objects' ``run_due(now=...)``: an A/B
test's winner decided and sent at ``decide_at`` (once, with two servers racing; not at all, with the reason
recorded, while the data is too thin; never because of Apple's prefetches), best-time rows sent at their
recipients' hours, and a scheduled follow-up to non-openers that leaves out who opened meanwhile."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from deadpixel.config import load_settings
from deadpixel.reports.analytics import iso
from deadpixel.security.keys import load_or_create_keys
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.job_runner import CampaignJobs
from deadpixel.send.winner import RECHECK, WinnerSends
from deadpixel.store.schema import ab_tests, campaign_job_rows, links, messages, opens

from .helpers import deadpixel
from .smtp_sink import SMTPServerHandle, smtp_fixture  # noqa: F401  (the fixture)
from .test_abtest_send import (
    APPLE,
    APPLE_MPP,
    HOME,
    THUNDERBIRD,
    open_as,
    pixel_path,
    send_test,
    sent_an_hour_ago,
    variants_by_address,
)
from .test_segments import fetch_pixels, message_ids, sent_hours_ago

UTC = dt.UTC


def signer() -> TokenSigner:
    return TokenSigner(load_or_create_keys(load_settings().keys_file))


def received(smtp: SMTPServerHandle) -> Counter[str]:
    return Counter(rcpt for message in smtp.sink.messages for rcpt in message.rcpt_tos)


def as_json(*args: str) -> Any:
    return json.loads(deadpixel(*args, "--json", check=True).stdout)


def decide_at(engine: Engine) -> float | None:
    with engine.connect() as conn:
        found = conn.execute(select(ab_tests.c.decide_at)).scalar()
    return None if found is None else float(found)


# --- A/B: the winner at decide_at -------------------------------------------------------------------------


@pytest.mark.slow
def test_the_server_decides_at_decide_at_waits_on_thin_data_and_sends_the_human_winner_once(
    smtp: SMTPServerHandle, engine: Engine, tmp_path: Path
) -> None:
    summary = send_test(tmp_path, "ab", 30, "0.667", "--pick-winner-after", "4h")
    assert (
        summary["sent"] == 20 and summary["waiting"] == 10
    )  # the test share went before the command returned
    variants = variants_by_address(engine)
    mails = smtp.sink.by_recipient()
    due = decide_at(engine)
    assert due is not None
    settings = load_settings()
    first, second = (WinnerSends(settings, engine, signer()) for _ in range(2))

    assert not first.run_due(now=due - 60)  # not yet due: nothing happens
    # Due, with nobody having opened anything: no winner, nothing sent, the reason kept and shown.
    assert first.run_due(now=due)
    assert len(smtp.sink.messages) == 20
    standing = as_json("campaign", "winner", "ab")
    assert standing["winner"] is None and "too little data" in standing["last_check"]
    assert decide_at(engine) == due + RECHECK
    shown = deadpixel("campaign", "winner", "ab", check=True).stdout
    assert "last check: no winner" in shown
    assert "too little data" in as_json("report", "ab")["ab_test"]["last_check"]

    # Apple's prefetch fetches every B message; a person on Thunderbird reads 8 of A's and 1 of B's.
    sent_an_hour_ago(engine)
    by_variant: dict[str, list[str]] = {"A": [], "B": []}
    for address, [mail] in sorted(mails.items()):
        by_variant[str(variants[address])].append(pixel_path(mail))
    open_as(by_variant["B"], APPLE_MPP, APPLE)
    open_as(by_variant["A"][:8] + by_variant["B"][:1], THUNDERBIRD, HOME)

    # Two servers look at the same moment: one takes the check, the winner goes to the rest once.
    results: list[bool] = []
    racers = [
        threading.Thread(target=lambda w=w: results.append(w.run_due(now=due + RECHECK)))
        for w in (first, second)
    ]  # type: ignore[misc]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert sorted(results) == [False, True]
    assert not first.run_due(now=due + 10 * RECHECK) and not second.run_due(now=due + 10 * RECHECK)
    rest = {rcpt: n for rcpt, n in received(smtp).items() if rcpt not in variants}
    assert len(rest) == 10 and set(rest.values()) == {1}
    assert all(m.message["subject"].startswith("A: ") for m in smtp.sink.messages[20:])
    standing = as_json("campaign", "winner", "ab")
    assert standing["winner"] == "A" and standing["last_check"].startswith("A sent to 10 waiting")
    assert decide_at(engine) is None


def test_after_a_day_of_thin_data_the_leader_goes_anyway_and_says_so(
    smtp: SMTPServerHandle, engine: Engine, tmp_path: Path
) -> None:
    send_test(tmp_path, "thin", 6, "0.5", "--pick-winner-after", "1h")
    with engine.begin() as conn:
        conn.execute(update(ab_tests).values(decide_checks=23))
    due = decide_at(engine)
    assert due is not None and WinnerSends(load_settings(), engine, signer()).run_due(now=due)
    assert len(smtp.sink.messages) == 6
    assert "without a 95% winner" in as_json("campaign", "winner", "thin")["last_check"]


# --- best time ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_best_time_rows_go_at_their_recipients_hours(
    smtp: SMTPServerHandle, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = ("ann", "bob", "cat")
    (tmp_path / "list.csv").write_text("email\n" + "".join(f"{p}@example.org\n" for p in people))
    (tmp_path / "mail.html").write_text("<p>Hello</p>", encoding="utf-8")
    html = str(tmp_path / "mail.html")
    deadpixel("campaign", "send", "spring", "--recipients", str(tmp_path / "list.csv"), "--subject", "S",
              "--html", html, check=True)  # fmt: skip
    sent_hours_ago(engine, 72)
    ids = message_ids(engine, "spring")
    fetch_pixels(monkeypatch, [(ids["ann"], THUNDERBIRD, HOME), (ids["bob"], THUNDERBIRD, HOME)])
    day = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    hours = {"ann": 7, "bob": 19}  # ann reads at 07:10, bob at 19:20 (GB: UTC in winter)
    with engine.begin() as conn:
        for who, hour in hours.items():
            at = day.replace(hour=hour, minute=10 + hour).timestamp()
            conn.execute(update(opens).where(opens.c.message_id == ids[who]).values(at=at))
    smtp.sink.messages.clear()

    stored = as_json("campaign", "send", "summer", "--recipients", str(tmp_path / "list.csv"), "--subject",
                     "S2", "--html", html, "--at-best-time")  # fmt: skip
    assert stored["state"] == "scheduled" and stored["left"] == 3
    with engine.connect() as conn:
        due = {
            e.split("@")[0]: float(at)
            for e, at in conn.execute(select(campaign_job_rows.c.email, campaign_job_rows.c.due_at))
        }
    for who, hour in hours.items():
        when = dt.datetime.fromtimestamp(due[who], UTC)
        assert (when.hour, when.minute) == (hour, 0)
        assert 0 < due[who] - dt.datetime.now(UTC).timestamp() <= 86400
    assert dt.datetime.fromtimestamp(due["cat"], UTC).minute == 0  # the audience's best hour: one of theirs
    runner = CampaignJobs(load_settings(), engine, signer(), heartbeat=0.05)
    moments = sorted(set(due.values()))  # cat may share ann's or bob's hour (the audience's best)
    assert not runner.run_due(now=moments[0] - 60)
    for i, moment in enumerate(moments):
        assert runner.run_due(now=moment)
        assert set(received(smtp)) == {f"{p}@example.org" for p, at in due.items() if at <= moment}
        status = as_json("campaign", "status", "summer")
        assert status["left"] == sum(at > moment for at in due.values())
        if i + 1 < len(moments):
            assert status["state"] == "scheduled" and status["due_at"] == iso(moments[i + 1])
            shown = deadpixel("campaign", "status", "summer", check=True).stdout
            assert f"next message due {iso(moments[i + 1])}" in shown and f"left {status['left']}" in shown
    assert as_json("campaign", "status", "summer")["state"] == "done"
    assert set(received(smtp).values()) == {1}


# --- follow-ups ---------------------------------------------------------------------------------------------


def test_a_scheduled_follow_up_skips_who_opened_after_it_was_scheduled(
    smtp: SMTPServerHandle, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = ("ann", "bob", "cat")
    (tmp_path / "list.csv").write_text("email\n" + "".join(f"{p}@example.org\n" for p in people))
    (tmp_path / "mail.html").write_text('<p>Hi <a href="https://shop.example/x">shop</a></p>')
    html = str(tmp_path / "mail.html")
    deadpixel("campaign", "send", "spring", "--recipients", str(tmp_path / "list.csv"), "--subject", "S",
              "--html", html, check=True)  # fmt: skip
    sent_hours_ago(engine, 24)
    ids = message_ids(engine, "spring")
    fetch_pixels(monkeypatch, [(ids["ann"], THUNDERBIRD, HOME), (ids["cat"], APPLE_MPP, APPLE)])
    smtp.sink.messages.clear()

    stored = as_json("campaign", "send", "spring-again", "--segment", "spring:non-openers", "--subject",
                     "Did you see?", "--html", html, "--after", "2d", "--utm")  # fmt: skip
    assert stored["state"] == "scheduled"
    fetch_pixels(monkeypatch, [(ids["bob"], THUNDERBIRD, HOME)])  # bob reads it after all, meanwhile

    runner = CampaignJobs(load_settings(), engine, signer(), heartbeat=0.05)
    assert not runner.run_due()  # two days to go
    assert runner.run_due(now=dt.datetime.now(UTC).timestamp() + 2 * 86400 + 1)
    assert received(smtp) == Counter({"cat@example.org": 1})  # cat's only "open" was Apple's prefetch
    status = as_json("campaign", "status", "spring-again")
    assert status["state"] == "done" and status["total"] == 1 and status["sent"] == 1
    with engine.connect() as conn:
        urls = list(
            conn.execute(
                select(links.c.url)
                .join(messages, messages.c.id == links.c.message_id)
                .where(messages.c.recipient == "cat@example.org", messages.c.subject == "Did you see?")
            ).scalars()
        )
    assert "https://shop.example/x?utm_source=deadpixel&utm_medium=email&utm_campaign=spring-again" in urls


def test_what_cannot_be_scheduled_yet_is_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("email\na@example.org\n")
    (tmp_path / "m.html").write_text("<p>x</p>")
    common = ("--recipients", str(tmp_path / "list.csv"), "--html", str(tmp_path / "m.html"))
    ab = deadpixel(
        "campaign",
        "send",
        "x",
        *common,
        "--subject",
        "a",
        "--subject",
        "b",
        "--test-share",
        "0.5",
        "--after",
        "1h",
    )
    assert ab.returncode == 2 and "do not take an A/B test yet" in ab.stderr
    both = deadpixel("campaign", "send", "x", *common, "--subject", "a", "--at-best-time", "--after", "1h")
    assert both.returncode == 2 and "leave out --at/--after" in both.stderr
