"""What a failure's reason does once recorded: who is suppressed, the soft streak, opt-out reports,
``bounces reclassify``, and the breakdown by reason in the report, the API and the dashboard.

The store is a real SQLite file and a real PostgreSQL schema. Most failures are built directly with the
reason under test (record takes Failure objects, as the demo does); the ones read from a whole report go
through the processor, so they also check that reasons.classify reads them as they must be read.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from sqlalchemy import Engine, insert, select, update

from deadpixel.bounces.handle import Processor
from deadpixel.bounces.parse import Failure, Report
from deadpixel.bounces.reasons import Reason, suppresses
from deadpixel.bounces.record import Recorded, record
from deadpixel.bounces.verp import bounce_address
from deadpixel.config import Settings
from deadpixel.reports import analytics
from deadpixel.store.messages import create_message
from deadpixel.store.schema import bounces, messages
from deadpixel.store.suppressions import list_suppressions, suppress

from . import bounce_samples as samples
from .helpers import deadpixel
from .test_bounces import DOMAIN, processor_fixture  # noqa: F401  (the fixture)

DMARC = (
    "smtp; 550 5.7.26 Unauthenticated email from sender.example is not accepted due to domain's DMARC policy"
)
SPAMHAUS = "smtp; 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"


def sent(engine: Engine, recipient: str, at: float | None = None, campaign: str = "spring") -> str:
    with engine.begin() as conn:
        return create_message(
            conn, recipient=recipient, subject="Hi", campaign=campaign, sent_at=at or time.time()
        )


def failed(
    engine: Engine, message_id: str, reason: Reason, *, hard: bool, status: str, text: str
) -> Recorded:
    """Record one failure with this reason about the message's recipient, as a parsed report would."""
    with engine.begin() as conn:
        address = conn.execute(select(messages.c.recipient).where(messages.c.id == message_id)).scalar_one()
        failure = Failure(address, address, hard, status, text, reason, suppresses(reason))
        return record(
            conn, Report("bounce", "test", (failure,)), message_id, source="smtp",
            key=f"{message_id}-{time.monotonic_ns()}", soft_limit=3, at=time.time(),
        )  # fmt: skip


def on_list(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {row["address"]: row["source"] for row in list_suppressions(conn)}


def row_of(engine: Engine, message_id: str) -> dict[str, object]:
    with engine.connect() as conn:
        found = conn.execute(select(messages).where(messages.c.id == message_id)).one()
    return dict(found._mapping)


def reasons(engine: Engine, campaign: str = "spring") -> dict[str, object]:
    with engine.connect() as conn:
        return analytics.bounce_reasons(conn, campaign)


# --- recording: only a gone address suppresses ------------------------------------------------------------


def test_user_unknown_suppresses_at_once(processor: Processor, engine: Engine) -> None:
    ann = sent(engine, "ann@example.org")
    verp = bounce_address(processor.signer, ann, DOMAIN)
    recorded = processor.process(samples.dsn(verp, "ann@example.org"), source="smtp", envelope_to=[verp])
    assert recorded == Recorded(ann, "hard", "ann@example.org", "user unknown")
    assert on_list(engine) == {"ann@example.org": "hard-bounce"}
    assert row_of(engine, ann)["bounce_reason_code"] == "user unknown"
    assert reasons(engine) == {"by_reason": {"user unknown": 1}, "sender_side": 0}


def test_a_dmarc_rejection_written_by_postfix_is_hard_and_suppresses_nobody(
    processor: Processor, engine: Engine
) -> None:
    ann = sent(engine, "ann@example.org")
    verp = bounce_address(processor.signer, ann, DOMAIN)
    raw = samples.dsn(verp, "ann@example.org", status="5.7.26", diagnostic=DMARC)
    recorded = processor.process(raw, source="smtp", envelope_to=[verp])
    assert recorded is not None and (recorded.outcome, recorded.suppressed) == ("hard", None)
    assert on_list(engine) == {}
    assert row_of(engine, ann)["bounce"] == "hard"  # it did not arrive: bounced, not delivered
    with engine.connect() as conn:
        figures = analytics.report(conn, "spring")
    assert (figures["bounced"], figures["delivered"]) == (1, 0)


def test_a_dmarc_rejection_is_an_authentication_failure(processor: Processor, engine: Engine) -> None:
    ann = sent(engine, "ann@example.org")
    verp = bounce_address(processor.signer, ann, DOMAIN)
    raw = samples.dsn(verp, "ann@example.org", status="5.7.26", diagnostic=DMARC)
    recorded = processor.process(raw, source="smtp", envelope_to=[verp])
    assert recorded is not None and recorded.reason == "authentication failure"
    assert reasons(engine) == {"by_reason": {"authentication failure": 1}, "sender_side": 1}


@pytest.mark.parametrize(
    ("reason", "status", "text"),
    [
        (Reason.AUTHENTICATION, "5.7.26", DMARC),
        (Reason.BLOCKED, "5.7.1", SPAMHAUS),
        (
            Reason.MAILBOX_DISABLED,
            "5.2.1",
            "smtp; 550 5.2.1 The email account that you tried to reach is disabled",
        ),
        (Reason.POLICY, "5.7.1", "smtp; 550 5.7.1 Message rejected by the recipient's rules"),
    ],
)
def test_a_hard_failure_that_is_not_a_gone_address_suppresses_nobody(
    engine: Engine, reason: Reason, status: str, text: str
) -> None:
    ann = sent(engine, "ann@example.org")
    recorded = failed(engine, ann, reason, hard=True, status=status, text=text)
    assert recorded == Recorded(ann, "hard", None, reason.value)
    assert on_list(engine) == {}
    with engine.connect() as conn:
        stored = conn.execute(select(bounces.c.kind, bounces.c.status, bounces.c.reason_code)).one()
    assert tuple(stored) == ("hard", status, reason.value)


def test_sender_side_soft_failures_in_a_row_do_not_suppress(engine: Engine) -> None:
    now = time.time()
    ids = [sent(engine, "ann@example.org", at=now - 300 + i) for i in range(4)]
    causes = [
        (Reason.RATE_LIMITED, "4.7.0", "smtp; 421 4.7.0 Too many messages from your IP, try again later"),
        (Reason.BLOCKED, "4.7.1", SPAMHAUS.replace("554 5.7.1", "450 4.7.1")),
        (Reason.AUTHENTICATION, "4.7.26", "smtp; 451 4.7.26 SPF check failed, try again later"),
        (Reason.SPAM, "4.7.0", "smtp; 450 4.7.0 Message looks like spam"),
    ]
    for message_id, (reason, status, text) in zip(ids, causes, strict=True):
        assert failed(engine, message_id, reason, hard=False, status=status, text=text).outcome == "soft"
    assert on_list(engine) == {}
    found = reasons(engine)
    assert found["sender_side"] == 4 and sum(found["by_reason"].values()) == 4  # type: ignore[attr-defined]


def test_mailbox_full_in_a_row_suppresses(engine: Engine) -> None:
    now = time.time()
    first, second, third = (sent(engine, "ann@example.org", at=now - 300 + i) for i in range(3))
    full = {"hard": False, "status": "4.2.2", "text": "smtp; 452 4.2.2 Mailbox full"}
    assert failed(engine, first, Reason.MAILBOX_FULL, **full).outcome == "soft"  # type: ignore[arg-type]
    assert failed(engine, second, Reason.MAILBOX_FULL, **full).outcome == "soft"  # type: ignore[arg-type]
    assert on_list(engine) == {}
    recorded = failed(engine, third, Reason.MAILBOX_FULL, **full)  # type: ignore[arg-type]
    assert recorded == Recorded(third, "hard", "ann@example.org", "mailbox full")
    assert on_list(engine) == {"ann@example.org": "soft-bounces"}
    assert row_of(engine, third)["bounce"] == "hard"


def test_a_sender_side_failure_breaks_the_streak(engine: Engine) -> None:
    now = time.time()
    first, second, third = (sent(engine, "ann@example.org", at=now - 300 + i) for i in range(3))
    failed(engine, first, Reason.MAILBOX_FULL, hard=False, status="4.2.2", text="452 4.2.2 Mailbox full")
    failed(engine, second, Reason.RATE_LIMITED, hard=False, status="4.7.0", text="421 4.7.0 Slow down")
    recorded = failed(engine, third, Reason.MAILBOX_FULL, hard=False, status="4.2.2", text="452 Mailbox full")
    assert recorded.outcome == "soft" and on_list(engine) == {}


def test_full_mailbox_reports_in_a_row_suppress(processor: Processor, engine: Engine) -> None:
    now = time.time()
    ids = [sent(engine, "ann@example.org", at=now - 300 + i) for i in range(3)]
    soft = {"status": "4.2.2", "action": "delayed", "diagnostic": "smtp; 452 4.2.2 Mailbox full"}
    for message_id in ids:
        verp = bounce_address(processor.signer, message_id, DOMAIN)
        processor.process(samples.dsn(verp, "ann@example.org", **soft), source="imap")
    assert on_list(engine) == {"ann@example.org": "soft-bounces"}


# --- complaints and what is not a bounce ------------------------------------------------------------------


def test_an_opt_out_report_unsubscribes_and_is_no_complaint(engine: Engine) -> None:
    ann = sent(engine, "ann@example.org")
    report = Report("complaint", "feedback report (opt-out)", feedback_type="opt-out")
    with engine.begin() as conn:
        recorded = record(conn, report, ann, source="imap", key="k", soft_limit=3, at=time.time())
    assert recorded == Recorded(ann, "unsubscribe", "ann@example.org")
    assert on_list(engine) == {"ann@example.org": "opt-out-report"}
    assert row_of(engine, ann)["complained_at"] is None
    with engine.connect() as conn:
        assert analytics.report(conn, "spring")["complaints"] == 0
        assert conn.execute(select(bounces.c.kind)).scalars().all() == ["opt-out"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_opt_out_feedback_report_from_a_mailbox_unsubscribes(processor: Processor, engine: Engine) -> None:
    ann = sent(engine, "ann@example.org")
    verp = bounce_address(processor.signer, ann, DOMAIN)
    recorded = processor.process(samples.arf(verp, feedback_type="opt-out"), source="imap")
    assert recorded is not None and recorded.outcome == "unsubscribe"
    assert on_list(engine) == {"ann@example.org": "opt-out-report"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_delivery_notice_is_ignored_with_a_log_line(
    processor: Processor, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ann = sent(engine, "ann@example.org")
    verp = bounce_address(processor.signer, ann, DOMAIN)
    raw = samples.dsn(verp, "ann@example.org", status="2.0.0", action="delivered", diagnostic="smtp; 250 ok")
    caplog.set_level(logging.INFO, logger="deadpixel.bounces")
    assert processor.process(raw, source="smtp", envelope_to=[verp]) is None
    assert "ignored" in caplog.text
    with engine.connect() as conn:
        assert conn.execute(select(bounces)).all() == []
    assert row_of(engine, ann)["bounce"] is None


# --- bounces reclassify -----------------------------------------------------------------------------------


def old_bounce(
    engine: Engine, message_id: str, kind: str, status: str, text: str, source: str | None
) -> None:
    """A bounce as stored before reasons were: no reason code, and suppressed as the old rules did."""
    with engine.begin() as conn:
        conn.execute(
            insert(bounces).values(
                message_id=message_id, at=time.time(), kind=kind, status=status, reason=text,
                source="smtp", report_key=f"old-{message_id}",
            )
        )  # fmt: skip
        conn.execute(
            update(messages).where(messages.c.id == message_id).values(bounce="hard", bounce_reason=text)
        )
        address = conn.execute(select(messages.c.recipient).where(messages.c.id == message_id)).scalar_one()
        if source is not None:
            suppress(conn, address, source)


def test_reclassify_lifts_an_old_over_suppression_and_keeps_the_rest(
    settings: Settings, engine: Engine
) -> None:
    ann, bob, cy = (sent(engine, f"{name}@example.org") for name in ("ann", "bob", "cy"))
    old_bounce(engine, ann, "hard", "5.7.26", DMARC, "hard-bounce")  # the old rules: any hard suppressed
    old_bounce(engine, bob, "hard", "5.7.26", DMARC, None)
    with engine.begin() as conn:
        suppress(conn, "bob@example.org", "cli")  # a person put bob on the list
        suppress(conn, "dee@example.org", "hard-bounce")  # its messages are forgotten: nothing to judge by
    old_bounce(engine, cy, "hard", "5.1.1", "smtp; 550 5.1.1 <cy@example.org>: User unknown", "hard-bounce")
    before = on_list(engine)

    dry = deadpixel("bounces", "reclassify", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["reports"] == 3 and plan["changed"] == 3
    assert [(x["address"], x["source"]) for x in plan["lifted"]] == [("ann@example.org", "hard-bounce")]
    assert "do not say the address is gone" in plan["lifted"][0]["why"]
    assert on_list(engine) == before  # a dry run changes nothing
    with engine.connect() as conn:
        assert set(conn.execute(select(bounces.c.reason_code)).scalars()) == {None}

    done = deadpixel("bounces", "reclassify")
    assert done.returncode == 0, done.stderr
    assert "1 suppression(s) lifted, 2 added by bounces kept" in done.stdout
    assert "ann@example.org  (hard-bounce)" in done.stdout
    assert on_list(engine) == {
        "bob@example.org": "cli",
        "cy@example.org": "hard-bounce",
        "dee@example.org": "hard-bounce",
    }
    assert row_of(engine, cy)["bounce_reason_code"] == "user unknown"
    assert row_of(engine, ann)["bounce"] == "hard"  # a hard report still means it did not arrive
    with engine.connect() as conn:
        assert None not in set(conn.execute(select(bounces.c.reason_code)).scalars())

    again = json.loads(deadpixel("bounces", "reclassify", "--json").stdout)
    assert (again["changed"], again["lifted"], again["kept"]) == (0, [], 2)


def test_reclassify_lifts_a_streak_of_sender_side_failures(settings: Settings, engine: Engine) -> None:
    now = time.time()
    ids = [sent(engine, "ann@example.org", at=now - 300 + i) for i in range(3)]
    with engine.begin() as conn:
        for i, message_id in enumerate(ids):
            conn.execute(
                insert(bounces).values(
                    message_id=message_id, at=now + i, kind="soft", status="4.7.0",
                    reason="smtp; 421 4.7.0 Too many connections from your IP", source="smtp",
                    report_key=f"old-{i}",
                )
            )  # fmt: skip
        conn.execute(update(messages).values(bounce="soft", soft_bounce_count=1))
        conn.execute(update(messages).where(messages.c.id == ids[-1]).values(bounce="hard"))
        suppress(conn, "ann@example.org", "soft-bounces")
    done = json.loads(deadpixel("bounces", "reclassify", "--json").stdout)
    assert [x["address"] for x in done["lifted"]] == ["ann@example.org"]
    assert on_list(engine) == {}
    assert row_of(engine, ids[-1])["bounce"] == "soft"  # counted hard only for the run: soft again


# --- the report, the API and the dashboard ----------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_face_shows_bounces_by_reason_and_the_sender_side_notice(
    settings: Settings, engine: Engine
) -> None:
    import jsonschema_rs
    from starlette.testclient import TestClient

    from deadpixel.accounts.users import create_user
    from deadpixel.api.openapi import document
    from deadpixel.server.app import Deadpixel

    from .test_api import new_token
    from .test_dashboard import sign_in

    ann, bob, cy = (sent(engine, f"{name}@example.org") for name in ("ann", "bob", "cy"))
    failed(engine, ann, Reason.USER_UNKNOWN, hard=True, status="5.1.1", text="550 5.1.1 User unknown")
    failed(engine, bob, Reason.AUTHENTICATION, hard=True, status="5.7.26", text=DMARC)
    failed(engine, cy, Reason.BLOCKED, hard=True, status="5.7.1", text=SPAMHAUS)
    want = {"by_reason": {"authentication failure": 1, "blocked": 1, "user unknown": 1}, "sender_side": 2}

    stats = json.loads(deadpixel("report", "spring", "--json").stdout)
    assert stats["bounces"] == want and stats["bounced"] == 3  # the keys before are still there
    text = deadpixel("report", "spring").stdout
    assert "bounces by reason" in text and "authentication failure" in text
    assert "2 bounces are a sender-side problem" in text and "check SPF, DKIM, DMARC" in text

    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    schemas = document()["components"]["schemas"]
    with TestClient(Deadpixel(settings), base_url="http://testserver") as client:
        auth = {"authorization": f"Bearer {new_token(settings)}"}
        served = client.get("/api/v1/campaigns/spring/stats", headers=auth).json()
        jsonschema_rs.validate({**schemas["Report"], "components": {"schemas": schemas}}, served)
        assert served["bounces"] == want
        assert sign_in(client) == 303
        page = client.get("/campaigns/spring").text
    assert 'data-notice="sender-side"' in page
    assert "2 bounces are a sender-side problem (authentication/blocked/spam/rate)" in page
    assert "these recipients were not suppressed." in page
    assert '<tr data-reason="user unknown"><td>user unknown</td><td>1</td></tr>' in page


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_notice_without_sender_side_bounces(settings: Settings, engine: Engine) -> None:
    ann = sent(engine, "ann@example.org")
    failed(engine, ann, Reason.USER_UNKNOWN, hard=True, status="5.1.1", text="550 5.1.1 User unknown")
    text = deadpixel("report", "spring").stdout
    assert "user unknown" in text and "sender-side" not in text
