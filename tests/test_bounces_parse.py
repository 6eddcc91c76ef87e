"""Reading reports (deadpixel.bounces.parse.read_report): each kind, the formats beside RFC 3464, bounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deadpixel.bounces import describe, parse, vendors
from deadpixel.bounces.parse import read_report
from deadpixel.bounces.reasons import Reason
from deadpixel.bounces.vendors import Found
from tests import bounce_samples as samples
from tests.helpers import deadpixel

VERP = "bounces+abc@bounces.sender.example"


def _crlf(text: str) -> bytes:
    return text.encode().replace(b"\n", b"\r\n")


def test_a_gone_address_suppresses_a_sender_side_failure_does_not() -> None:
    (gone,) = read_report(samples.dsn(VERP, "ann@example.org")).failures
    assert (gone.reason, gone.suppress, gone.hard) == (Reason.USER_UNKNOWN, True, True)
    spf = samples.dsn(VERP, "bob@example.org", status="5.7.1",
                      diagnostic="smtp; 550 5.7.1 SPF check failed for sender.example")  # fmt: skip
    (failure,) = read_report(spf).failures
    assert (failure.reason, failure.suppress, failure.hard) == (Reason.AUTHENTICATION, False, True)
    full = samples.dsn(VERP, "cy@example.org", status="5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full")
    assert read_report(full).failures[0].suppress is False


def test_a_temporary_user_unknown_does_not_suppress() -> None:
    said = "smtp; 450 4.1.1 <{rcpt}>: Recipient address rejected: unverified address"
    raw = samples.dsn(VERP, "ann@example.org", status="4.1.1", action="delayed", diagnostic=said)
    (failure,) = read_report(raw).failures
    assert (failure.hard, failure.reason, failure.suppress) == (False, Reason.USER_UNKNOWN, False)


def test_a_generic_status_gives_way_to_the_diagnostic_code() -> None:
    raw = samples.dsn(VERP, "ann@example.org", status="5.0.0", diagnostic="smtp; 550 5.2.2 over quota")
    (failure,) = read_report(raw).failures
    assert (failure.status, failure.reason) == ("5.2.2", Reason.MAILBOX_FULL)
    raw = samples.dsn(VERP, "ann@example.org", status="5.0.0", diagnostic="smtp; 550 No such user here")
    assert read_report(raw).failures[0].status == "5.1.1"


def test_an_x400_gateways_supplementary_info_gives_the_reason_its_code_does_not() -> None:
    x400 = "X400; Reason 1 (Unable-To-Transfer); Diagnostic -1 (Unknown)"
    said = "MTA '192.0.2.7' gives error message 5.7.1 Unable to relay for ann@example.org"
    raw = samples.dsn(VERP, "ann@example.org", status="5.0.0", diagnostic=x400)
    with_info = raw.replace(
        b"(Unknown)\r\n", b"(Unknown)\r\nX400-Supplementary-Info: " + said.encode() + b"\r\n"
    )
    (failure,) = read_report(with_info).failures
    assert (failure.status, failure.reason, failure.suppress) == ("5.7.1", Reason.POLICY, False)
    assert read_report(raw).failures[0].reason is Reason.OTHER
    known = samples.dsn(VERP, "ann@example.org", status="5.1.1")  # a reason already: the field is not read
    with_info = known.replace(
        b"Status: 5.1.1\r\n", b"Status: 5.1.1\r\nX400-Supplementary-Info: " + said.encode() + b"\r\n"
    )
    assert read_report(with_info).failures[0].reason is Reason.USER_UNKNOWN


def test_a_success_notice_is_a_delivery_not_a_bounce() -> None:
    raw = samples.dsn(VERP, "ann@example.org", status="2.0.0", action="delivered", diagnostic="smtp; 250 ok")
    report = read_report(raw)
    assert (report.kind, report.failures, report.recipients) == ("delivered", (), ("ann@example.org",))
    relayed = samples.dsn(VERP, "ann@example.org", status="2.0.0", action="relayed", diagnostic="smtp; 250")
    assert read_report(relayed).kind == "delivered"


EXCHANGE_TEXT = """\
From: postmaster@exchange.example
To: {verp}
Subject: Undeliverable: Spring news
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="X"

--X
Content-Type: text/plain; charset=us-ascii

Delivery has failed to these recipients or groups:

ann@example.org
The email address you entered couldn't be found.

Diagnostic information for administrators:

    Reporting-MTA: dns; mail.exchange.example

    Final-Recipient: rfc822; ann@example.org
    Action: failed
    Status: 5.1.10
    Diagnostic-Code: smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound;
        Recipient not found by SMTP address lookup

--X--
"""


def test_a_delivery_status_block_in_a_text_part_is_read() -> None:
    (failure,) = read_report(_crlf(EXCHANGE_TEXT.format(verp=VERP))).failures
    assert (failure.recipient, failure.status, failure.reason) == (
        "ann@example.org",
        "5.1.10",
        Reason.USER_UNKNOWN,
    )
    assert (
        failure.diagnostic is not None and "Recipient not found by SMTP address lookup" in failure.diagnostic
    )


def test_a_free_form_bounce_gets_its_code_and_reason_from_the_words_near_the_address() -> None:
    report = read_report(samples.qmail_bounce(VERP, "ann@example.org"))
    (failure,) = report.failures
    assert (failure.recipient, failure.status, failure.reason, failure.suppress) == (
        "ann@example.org", "5.1.1", Reason.USER_UNKNOWN, True,
    )  # fmt: skip


@pytest.fixture
def vendor_reader(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    seen: list[object] = []

    def read(message: object) -> list[Found] | None:
        seen.append(message)
        return [Found("ann@example.org", None, "553 sorry, relaying denied from your location", True)]

    monkeypatch.setattr(vendors, "READERS", (("example-mta", read),))
    yield seen


def test_the_projects_own_readers_come_before_flufl_bounce(vendor_reader: list[object]) -> None:
    report = read_report(samples.qmail_bounce(VERP, "zed@example.org"))
    assert report.note == "non-standard bounce (example-mta)"
    (failure,) = report.failures
    assert (failure.recipient, failure.hard, failure.status) == ("ann@example.org", True, "5.7.1")
    # an RFC 3464 report never reaches them
    assert read_report(samples.dsn(VERP, "ann@example.org")).note == "delivery status report"
    assert len(vendor_reader) == 1


def test_an_opt_out_report_is_a_complaint_of_that_type() -> None:
    report = read_report(samples.arf(VERP, feedback_type="opt-out"))
    assert (report.kind, report.feedback_type) == ("complaint", "opt-out")
    assert read_report(samples.arf(VERP, feedback_type="not-spam")).kind == "other"


HOTMAIL = """\
From: staff@hotmail.com
To: fbl@sender.example
Subject: complaint about message from 192.0.2.1
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="H"

--H
Content-Type: text/plain

This is a complaint about a message. The message is attached.

--H
Content-Type: message/rfc822
Content-Disposition: inline

X-HmXmrOriginalRecipient: <ann@hotmail.example>
Return-Path: <{verp}>
From: News <news@sender.example>
To: ann@hotmail.example
Subject: Spring news

Hello!
--H--
"""


def test_a_hotmail_style_complaint_is_read_without_a_feedback_part() -> None:
    report = read_report(_crlf(HOTMAIL.format(verp=VERP)))
    assert (report.kind, report.feedback_type, report.recipients) == (
        "complaint",
        "abuse",
        ("ann@hotmail.example",),
    )
    assert report.original_from == (f"<{VERP}>",)
    # the same shape from anyone else is no complaint
    assert read_report(
        _crlf(HOTMAIL.format(verp=VERP).replace("staff@hotmail.com", "x@example.net"))
    ).kind != ("complaint")


def _ses(notification: Mapping[str, object], *, sns: bool = False) -> bytes:
    body = json.dumps({"Type": "Notification", "Message": json.dumps(notification)} if sns else notification)
    message = EmailMessage()
    message["From"] = "no-reply@sns.amazonaws.example"
    message["To"] = "ops@sender.example"
    message["Subject"] = "AWS Notification Message"
    message.set_content(body)
    return message.as_bytes()


MAIL = {"source": VERP, "destination": ["ann@example.org"], "messageId": "0100"}


@pytest.mark.parametrize("sns", [False, True])
def test_amazon_ses_notifications(sns: bool) -> None:
    bounce = {"notificationType": "Bounce", "mail": MAIL, "bounce": {
        "bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [
            {"emailAddress": "ann@example.org", "status": "5.1.1", "action": "failed",
             "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
            {"emailAddress": "Bob <bob@example.org>",
             "diagnosticCode": "smtp; 550 5.7.1 blocked using spamhaus"},
        ]}}  # fmt: skip
    report = read_report(_ses(bounce, sns=sns))
    assert (report.kind, report.original_from) == ("bounce", (VERP,))
    ann, bob = report.failures
    assert (ann.recipient, ann.status, ann.suppress) == ("ann@example.org", "5.1.1", True)
    assert (bob.recipient, bob.status, bob.reason, bob.suppress) == (
        "bob@example.org",
        "5.7.1",
        Reason.BLOCKED,
        False,
    )
    transient = {"notificationType": "Bounce", "mail": MAIL, "bounce": {
        "bounceType": "Transient", "bounceSubType": "MailboxFull",
        "bouncedRecipients": [{"emailAddress": "ann@example.org"}]}}  # fmt: skip
    (full,) = read_report(_ses(transient, sns=sns)).failures
    assert (full.hard, full.reason, full.status) == (False, Reason.MAILBOX_FULL, "4.2.2")
    complaint = {"notificationType": "Complaint", "mail": MAIL, "complaint": {
        "complainedRecipients": [{"emailAddress": "ann@example.org"}],
        "complaintFeedbackType": "abuse"}}  # fmt: skip
    report = read_report(_ses(complaint, sns=sns))
    assert (report.kind, report.feedback_type, report.recipients) == (
        "complaint",
        "abuse",
        ("ann@example.org",),
    )
    delivery = {"eventType": "Delivery", "mail": MAIL, "delivery": {"recipients": ["ann@example.org"]}}
    assert read_report(_ses(delivery, sns=sns)).kind == "delivered"


def test_json_that_is_no_notification_is_other_mail() -> None:
    assert read_report(_ses({"hello": "world"})).kind == "other"
    assert read_report(_ses({"notificationType": "Bounce", "bounce": "x"})).kind == "malformed"


def _nested(depth: int) -> bytes:
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth)
    )
    tail = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    body = b"Content-Type: text/plain\r\n\r\nann@example.org: 550 5.1.1 user unknown"
    return b"From: MAILER-DAEMON@mx.example\r\nSubject: failure\r\nMIME-Version: 1.0\r\n" + head + body + tail


def _quick(raw: bytes) -> parse.Report:
    """The report, checked to take under 50 ms (the best of three runs: the cost of the work, not of a
    busy machine's scheduler)."""
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        report = read_report(raw)
        best = min(best, time.thread_time() - start)
        if best < 0.05:
            break
    assert best < 0.05
    return report


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3000))
def test_deep_nesting_is_refused_quickly(depth: int) -> None:
    report = _quick(_nested(depth))
    assert report.kind in ("bounce", "malformed", "other")
    if depth > parse.MAX_DEPTH * 3:
        assert report.kind == "malformed"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_raise_and_stay_quick(raw: bytes) -> None:
    assert _quick(raw).kind in ("bounce", "complaint", "auto-reply", "delivered", "other", "malformed")


def test_many_parts_and_huge_headers_are_refused_quickly() -> None:
    parts = b"--b\r\nContent-Type: text/plain\r\n\r\nann@example.org: user unknown\r\n" * 20000
    raw = b"From: MAILER-DAEMON@x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    assert _quick(raw).kind == "malformed"
    assert _quick(b"Subject: " + b"a" * 5_000_000).kind == "malformed"
    assert _quick(b"X: " + b"\xff\xfe" * 100_000 + b"\r\n\r\nbody").kind in ("other", "malformed")


def test_bounces_parse_says_what_each_file_is(tmp_path: Path) -> None:
    hard = tmp_path / "hard.eml"
    hard.write_bytes(samples.dsn(VERP, "ann@example.org"))
    spf = tmp_path / "spf.eml"
    spf.write_bytes(
        samples.dsn(VERP, "bob@example.org", status="5.7.26", diagnostic="smtp; 550 5.7.26 DMARC")
    )
    complaint = tmp_path / "complaint.eml"
    complaint.write_bytes(samples.arf(VERP, feedback_type="opt-out"))
    big = tmp_path / "big.eml"
    big.write_bytes(b"x" * (describe.MAX_BYTES + 1))
    ran = deadpixel("bounces", "parse", str(hard), str(spf), str(complaint), str(big), str(tmp_path / "gone"),
                    "-", "--json", input="just a note\n")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.splitlines() == [
        f"deadpixel: {big}: larger than {describe.MAX_BYTES} bytes, not read",
        f"deadpixel: {tmp_path / 'gone'}: cannot read: No such file or directory",
    ]
    entries = json.loads(ran.stdout)
    assert [(e["file"], e["kind"]) for e in entries] == [
        (str(hard), "bounce"), (str(spf), "bounce"), (str(complaint), "complaint"), (str(big), "malformed"),
        (str(tmp_path / "gone"), "malformed"), ("-", "other"),
    ]  # fmt: skip
    assert entries[0]["recipients"] == [
        {"address": "ann@example.org", "status": "5.1.1", "reason": "user unknown", "suppress": True}
    ]
    assert entries[1]["recipients"][0]["reason"] == "authentication failure"
    assert entries[1]["recipients"][0]["suppress"] is False
    assert entries[2]["feedback_type"] == "opt-out"

    text = deadpixel("bounces", "parse", str(hard), str(spf), check=True).stdout.splitlines()
    assert text == [
        f"{hard}\tbounce\tann@example.org\t5.1.1\tuser unknown\tsuppress",
        f"{spf}\tbounce\tbob@example.org\t5.7.26\tauthentication failure\tkeep",
    ]


@pytest.mark.slow
def test_bounces_parse_needs_no_settings(tmp_path: Path) -> None:
    sample = tmp_path / "hard.eml"
    sample.write_bytes(samples.dsn(VERP, "ann@example.org"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEADPIXEL_")}
    env["HOME"] = str(home)
    env.pop("XDG_CONFIG_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "deadpixel", "bounces", "parse", str(sample)],
        capture_output=True, text=True, env=env, cwd=home, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"{sample}\tbounce\tann@example.org\t5.1.1\tuser unknown\tsuppress\n"
    assert list(home.iterdir()) == []  # nothing written: no data directory, no keys
