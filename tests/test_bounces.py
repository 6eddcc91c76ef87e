"""Bounces and complaints: VERP addresses, reading reports, recording them, suppression and the reports.

Reports are the samples of tests/bounce_samples.py, written to a folder each run and parsed from there; the
store is a real SQLite file and a real PostgreSQL schema.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from deadpixel.bounces.handle import Processor
from deadpixel.bounces.parse import read_report
from deadpixel.bounces.verp import bounce_address, message_for, messages_in
from deadpixel.config import Settings
from deadpixel.reports import analytics
from deadpixel.security.keys import SigningKeys, load_or_create_keys
from deadpixel.security.tokens import TokenSigner, new_message_id
from deadpixel.store.messages import create_message
from deadpixel.store.schema import bounces, messages
from deadpixel.store.suppressions import list_suppressions, suppressed

from . import bounce_samples as samples
from . import forkserver

DOMAIN = "bounces.example.com"
SIGNER = TokenSigner(SigningKeys(3, {3: b"k" * 32}))
EXAMPLES = hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- VERP addresses ---------------------------------------------------------------------------------------


@EXAMPLES
@given(st.binary(min_size=10, max_size=10))
def test_a_bounce_address_names_its_message_and_nothing_else(raw_id: bytes) -> None:
    import base64

    message_id = base64.b32hexencode(raw_id).decode().lower()
    address = bounce_address(SIGNER, message_id, DOMAIN)
    local = address.split("@")[0]
    assert local.startswith("bounces+") and len(local) == len("bounces+") + 32
    assert message_for(SIGNER, address, DOMAIN) == message_id
    assert message_for(SIGNER, f"<{address.upper()}>", DOMAIN) == message_id  # case-insensitive
    assert message_for(SIGNER, address, "other.example.com") is None
    assert messages_in(SIGNER, [f"Delivered-To: {address}"], DOMAIN) == [message_id]


@EXAMPLES
@given(
    st.binary(min_size=10, max_size=10),
    st.integers(0, 31),
    st.sampled_from("0123456789abcdefghijklmnopqrstuv"),
)
def test_a_changed_token_is_refused(raw_id: bytes, position: int, char: str) -> None:
    import base64

    message_id = base64.b32hexencode(raw_id).decode().lower()
    address = bounce_address(SIGNER, message_id, DOMAIN)
    start = len("bounces+")
    token = address[start : start + 32]
    if token[position] == char:
        return
    forged = address[:start] + token[:position] + char + token[position + 1 :] + address[start + 32 :]
    assert message_for(SIGNER, forged, DOMAIN) is None
    assert messages_in(SIGNER, [forged], DOMAIN) == []


@EXAMPLES
@given(st.text(max_size=400))
def test_any_text_is_no_bounce_address(text: str) -> None:
    assert message_for(SIGNER, text, DOMAIN) is None
    assert message_for(SIGNER, f"bounces+{text}@{DOMAIN}", DOMAIN) is None
    assert messages_in(SIGNER, [text], DOMAIN) == []


def test_tokens_of_other_purposes_and_keys_are_no_bounce_addresses() -> None:
    message_id = new_message_id()
    pixel = SIGNER.pixel_token(message_id)
    assert message_for(SIGNER, f"bounces+{pixel}@{DOMAIN}", DOMAIN) is None
    other_key = TokenSigner(SigningKeys(3, {3: b"x" * 32}))
    assert message_for(SIGNER, bounce_address(other_key, message_id, DOMAIN), DOMAIN) is None


# --- reading reports --------------------------------------------------------------------------------------


@pytest.fixture
def sample_files(tmp_path: Path) -> dict[str, Path]:
    return samples.write_samples(
        tmp_path / "samples", bounce_address(SIGNER, new_message_id(), DOMAIN), "ann@example.org"
    )


def test_a_hard_bounce_is_read_with_its_status_and_diagnostic(sample_files: dict[str, Path]) -> None:
    report = read_report(sample_files["hard"].read_bytes())
    assert report.kind == "bounce"
    (failure,) = report.failures
    assert (failure.recipient, failure.original_recipient, failure.hard) == (
        "ann@example.org", "ann@example.org", True,
    )  # fmt: skip
    assert failure.status == "5.1.1"
    assert failure.diagnostic is not None and "User unknown" in failure.diagnostic


def test_a_delay_is_a_soft_bounce(sample_files: dict[str, Path]) -> None:
    (failure,) = read_report(sample_files["soft"].read_bytes()).failures
    assert (failure.hard, failure.status) == (False, "4.2.2")


def test_only_real_status_codes_count() -> None:
    (failure,) = read_report(samples.dsn("x@y.example", "ann@example.org", status="55.1.1")).failures
    assert (failure.status, failure.hard) == ("5.1.1", True)  # not the Status field: the Diagnostic-Code's
    raw = samples.dsn("x@y.example", "ann@example.org", status="55.1.1", diagnostic="smtp; no")
    (failure,) = read_report(raw).failures
    assert (failure.status, failure.hard) == (None, True)  # Action: failed still says it failed
    raw = samples.dsn("x@y.example", "a@example.org", status="45.0.0", action="x")
    assert read_report(raw).kind == "malformed"  # a recipient block that says neither failed nor delivered


def test_a_success_notice_is_not_a_bounce() -> None:
    raw = samples.dsn("x@y.example", "ann@example.org", status="2.0.0", action="delivered")
    assert read_report(raw).kind == "delivered"


def test_a_complaint_names_the_original_sender(sample_files: dict[str, Path]) -> None:
    report = read_report(sample_files["complaint"].read_bytes())
    assert report.kind == "complaint"
    assert any("bounces+" in value for value in report.original_from)
    assert read_report(samples.arf("x@y.example", feedback_type="not-spam")).kind == "other"


def test_an_auto_reply_is_ignored(sample_files: dict[str, Path]) -> None:
    assert read_report(sample_files["auto-reply"].read_bytes()).kind == "auto-reply"


def test_a_non_standard_bounce_is_read_by_flufl(sample_files: dict[str, Path]) -> None:
    report = read_report(sample_files["qmail"].read_bytes())
    assert report.kind == "bounce"
    assert [(f.recipient, f.hard) for f in report.failures] == [("ann@example.org", True)]


def test_a_broken_report_is_malformed_not_a_crash() -> None:
    raw = (
        b"From: MAILER-DAEMON@x.example\r\nContent-Type: multipart/report; report-type=delivery-status;"
        b' boundary="b"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\ngarbage\r\n--b--\r\n'
    )
    assert read_report(raw).kind == "malformed"


@hsettings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.integers(0, 4000), st.binary(max_size=40))
def test_reading_never_raises(noise: bytes, cut: int, splice: bytes) -> None:
    read_report(noise)
    real = samples.dsn("bounces+x@b.example", "ann@example.org")
    read_report(real[:cut] + splice + real[cut:])
    read_report(real[:cut])


# --- recording: the store, the suppression list, the reports ----------------------------------------------


@pytest.fixture(name="processor")
def processor_fixture(settings: Settings, engine: Engine) -> Processor:
    """The bounce processor over the test's store (test_bounces_recording.py takes it too)."""
    signer = TokenSigner(load_or_create_keys(settings.keys_file))
    return Processor(engine, signer, DOMAIN, soft_limit=3, max_size=200_000)


def sent(engine: Engine, recipient: str, campaign: str = "spring", at: float | None = None) -> str:
    with engine.begin() as conn:
        return create_message(
            conn, recipient=recipient, subject="Hi", campaign=campaign, sent_at=at or time.time()
        )


def verp(processor: Processor, message_id: str) -> str:
    return bounce_address(processor.signer, message_id, DOMAIN)


def message_row(engine: Engine, message_id: str) -> dict[str, object]:
    with engine.connect() as conn:
        found = analytics.get_message(conn, message_id)
    assert found is not None
    return found


def figures(engine: Engine, campaign: str = "spring") -> dict[str, object]:
    with engine.connect() as conn:
        return analytics.report(conn, campaign)


def on_list(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {row["address"]: row["source"] for row in list_suppressions(conn)}


def test_a_hard_bounce_marks_the_message_suppresses_and_moves_the_rates(
    processor: Processor, engine: Engine
) -> None:
    ann, bob, cy, _dee = (sent(engine, f"{n}@example.org") for n in ("ann", "bob", "cy", "dee"))
    with engine.begin() as conn:  # two of the four were opened by people
        conn.execute(
            update(messages).where(messages.c.id.in_([bob, cy])).values(open_count=1, human_open_count=1)
        )
    assert figures(engine)["open_rate"] == 0.5  # over sent: no bounce data yet
    recorded = processor.process(
        samples.dsn(verp(processor, ann), "ann@example.org"),
        source="smtp",
        envelope_to=[verp(processor, ann)],
    )
    assert recorded is not None and recorded.outcome == "hard" and recorded.suppressed == "ann@example.org"
    found = message_row(engine, ann)
    assert (found["status"], found["bounce"]) == ("bounced", "hard")
    assert "5.1.1" in str(found["bounce_reason"]) and "User unknown" in str(found["bounce_reason"])
    report = figures(engine)
    assert (report["sent"], report["bounced"], report["delivered"], report["complaints"]) == (4, 1, 3, 0)
    assert report["bounce_rate"] == 0.25
    assert report["open_rate"] == pytest.approx(2 / 3)  # over delivered now
    assert on_list(engine) == {"ann@example.org": "hard-bounce"}
    # The same report again (a re-delivery) changes nothing.
    again = processor.process(samples.dsn(verp(processor, ann), "ann@example.org"), source="imap")
    assert again is not None and again.outcome == "duplicate"
    with engine.connect() as conn:
        assert len(conn.execute(select(bounces)).all()) == 1
    assert figures(engine)["bounced"] == 1


def test_a_complaint_suppresses_but_counts_as_delivered(processor: Processor, engine: Engine) -> None:
    ann = sent(engine, "ann@example.org")
    recorded = processor.process(samples.arf(verp(processor, ann)), source="imap")
    assert recorded is not None and (recorded.outcome, recorded.suppressed) == (
        "complaint",
        "ann@example.org",
    )
    report = figures(engine)
    assert (report["complaints"], report["bounced"], report["delivered"]) == (1, 0, 1)
    assert message_row(engine, ann)["complained_at"] is not None
    assert on_list(engine) == {"ann@example.org": "complaint"}


def test_soft_bounces_in_a_row_count_as_hard(processor: Processor, engine: Engine) -> None:
    now = time.time()
    first, second, third = (sent(engine, "ann@example.org", at=now - 300 + i) for i in range(3))
    soft = {"status": "4.2.2", "action": "delayed", "diagnostic": "smtp; 452 4.2.2 Mailbox full"}
    for message_id in (first, second):
        recorded = processor.process(
            samples.dsn(verp(processor, message_id), "ann@example.org", **soft), source="imap"
        )
        assert recorded is not None and recorded.outcome == "soft"
    assert on_list(engine) == {}
    report = figures(engine)
    assert (report["bounced"], report["soft_bounced"], report["delivered"]) == (0, 2, 3)
    recorded = processor.process(
        samples.dsn(verp(processor, third), "ann@example.org", **soft), source="imap"
    )
    assert recorded is not None and recorded.outcome == "hard"
    assert message_row(engine, third)["bounce"] == "hard"
    assert message_row(engine, first)["soft_bounce_count"] == 1
    assert on_list(engine) == {"ann@example.org": "soft-bounces"}


def test_an_open_between_soft_bounces_breaks_the_streak(processor: Processor, engine: Engine) -> None:
    now = time.time()
    ids = [sent(engine, "ann@example.org", at=now - 300 + i) for i in range(3)]
    with engine.begin() as conn:
        conn.execute(update(messages).where(messages.c.id == ids[1]).values(open_count=1, human_open_count=1))
    for message_id in ids:
        raw = samples.dsn(verp(processor, message_id), "ann@example.org", status="4.4.1", action="delayed")
        processor.process(raw, source="smtp", envelope_to=[verp(processor, message_id)])
    assert on_list(engine) == {}
    assert figures(engine)["bounced"] == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_reports_are_ignored_with_a_log_line_and_change_nothing(
    processor: Processor, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ann = sent(engine, "ann@example.org")
    genuine = verp(processor, ann)
    start = len("bounces+")
    forged = genuine[:start] + ("0" if genuine[start] != "0" else "1") + genuine[start + 1 :]
    caplog.set_level(logging.INFO, logger="deadpixel.bounces")
    cases = {
        "forged token": (samples.dsn(forged, "ann@example.org"), [forged]),
        "forged, from a mailbox": (samples.dsn(forged, "ann@example.org"), None),
        "another key": (samples.dsn(bounce_address(SIGNER, ann, DOMAIN), "ann@example.org"), None),
        "someone else bounced": (samples.dsn(genuine, "eve@example.org"), [genuine]),
        "auto-reply": (samples.auto_reply(genuine), [genuine]),
        "malformed": (b"Content-Type: multipart/report; report-type=delivery-status\n\n\x00\xff", [genuine]),
        "gigantic": (samples.dsn(genuine, "ann@example.org") + b"x" * 300_000, [genuine]),
        "not mail at all": (bytes(range(256)) * 10, None),
    }
    for name, (raw, envelope) in cases.items():
        caplog.clear()
        recorded = processor.process(raw, source="smtp", envelope_to=envelope)
        assert recorded is None or recorded.outcome == "other recipient", name
        assert caplog.records, f"{name}: no log line"
    assert message_row(engine, ann)["bounce"] is None
    assert on_list(engine) == {}
    with engine.connect() as conn:
        assert conn.execute(select(bounces)).all() == []


def test_a_report_about_an_erased_message_is_ignored(processor: Processor, engine: Engine) -> None:
    gone = new_message_id()
    recorded = processor.process(samples.dsn(verp(processor, gone), "ann@example.org"), source="imap")
    assert recorded is not None and recorded.outcome == "unknown message"
    assert on_list(engine) == {}


def test_suppressed_addresses_include_bounces(processor: Processor, engine: Engine) -> None:
    ann = sent(engine, "Ann@Example.org")
    processor.process(samples.dsn(verp(processor, ann), "ann@example.org"), source="imap")
    with engine.connect() as conn:
        assert suppressed(conn, ["ann@example.org", "bob@example.org"]) == {"ann@example.org"}


# --- what every face shows: the API (and its schema) and the dashboard -------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_api_and_the_dashboard_show_bounces(
    settings: Settings, processor: Processor, engine: Engine
) -> None:
    import jsonschema_rs  # schemathesis's validator
    from starlette.testclient import TestClient

    from deadpixel.accounts.users import create_user
    from deadpixel.api.openapi import document
    from deadpixel.server.app import Deadpixel

    from .test_api import new_token
    from .test_dashboard import sign_in

    ann, bob, _cy = (sent(engine, f"{n}@example.org") for n in ("ann", "bob", "cy"))
    processor.process(samples.dsn(verp(processor, ann), "ann@example.org"), source="imap")
    processor.process(samples.arf(verp(processor, bob)), source="imap")
    with engine.begin() as conn:
        create_user(conn, "ann", "correct horse")
    schemas = document()["components"]["schemas"]

    def valid(value: object, schema: str) -> None:
        jsonschema_rs.validate({**schemas[schema], "components": {"schemas": schemas}}, value)

    with TestClient(Deadpixel(settings), base_url="http://testserver") as client:
        auth = {"authorization": f"Bearer {new_token(settings)}"}
        stats = client.get("/api/v1/campaigns/spring/stats", headers=auth).json()
        valid(stats, "Report")
        assert (stats["sent"], stats["bounced"], stats["delivered"], stats["complaints"]) == (3, 1, 2, 1)
        assert "delivered" in stats["definitions"]["open_rate"]
        detail = client.get(f"/api/v1/messages/{ann}", headers=auth).json()
        valid(detail, "Message")
        assert (detail["status"], detail["bounce"]) == ("bounced", "hard")
        assert "User unknown" in detail["bounce_reason"]
        listed = client.get("/api/v1/messages", params={"campaign": "spring"}, headers=auth).json()
        valid(listed, "MessagePage")
        valid(client.get("/api/v1/campaigns", headers=auth).json(), "CampaignList")

        assert sign_in(client) == 303
        page = client.get("/campaigns/spring").text
        assert 'data-figure="bounced">1<' in page and 'data-figure="delivered">2<' in page
        assert 'data-figure="complaints">1<' in page and "User unknown" in page
        message = client.get(f"/messages/{ann}").text
        assert "Bounced" in message and "5.1.1" in message
        assert "Complaint" in client.get(f"/messages/{bob}").text


# --- the kept samples, settings and the commands ----------------------------------------------------------

KEPT = Path(__file__).parent / "mail_samples" / "bounces"
KEPT_ADDRESS = "bounces+0123456789abcdefghijklmnopqrstuv@bounces.example.com"


def test_the_kept_samples_are_what_the_tests_write(tmp_path: Path) -> None:
    """tests/mail_samples/bounces holds each sample as bounce_samples writes it (and postfix-hard.eml from a
    Postfix run, see test_bounces_postfix.py), so they can be read and diffed by people too."""
    for name, path in samples.write_samples(tmp_path, KEPT_ADDRESS, "ann@example.org").items():
        assert (KEPT / f"{name}.eml").read_bytes() == path.read_bytes(), name


@pytest.mark.parametrize(
    ("name", "kind", "hard"),
    [("hard", "bounce", True), ("soft", "bounce", False), ("qmail", "bounce", True),
     ("postfix-hard", "bounce", True), ("complaint", "complaint", None), ("auto-reply", "auto-reply", None)],
)  # fmt: skip
def test_every_kept_sample_reads_as_what_it_is(name: str, kind: str, hard: bool | None) -> None:
    report = read_report((KEPT / f"{name}.eml").read_bytes())
    assert report.kind == kind
    assert [f.hard for f in report.failures] == ([] if hard is None else [hard])


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("BOUNCE_DOMAIN", "", "DEADPIXEL_BOUNCE_DOMAIN: is not set"),
        ("BOUNCE_DOMAIN", "not a domain", "DEADPIXEL_BOUNCE_DOMAIN: must be a domain name"),
        ("BOUNCE_DOMAIN", "-bad.example.com", "DEADPIXEL_BOUNCE_DOMAIN: must be a domain name"),
        ("SOFT_BOUNCE_LIMIT", "0", "DEADPIXEL_SOFT_BOUNCE_LIMIT: must be between 1 and 1000"),
        ("BOUNCE_IMAP_TLS", "maybe", "DEADPIXEL_BOUNCE_IMAP_TLS: must be one of ssl, starttls, none"),
        (
            "BOUNCE_IMAP_PASSWORD",
            "secret",
            "DEADPIXEL_BOUNCE_IMAP_USERNAME: and DEADPIXEL_BOUNCE_IMAP_PASSWORD",
        ),
        ("BOUNCE_MAX_SIZE", "10", "DEADPIXEL_BOUNCE_MAX_SIZE: must be between 1024"),
    ],
)
def test_a_bad_bounce_setting_stops_start_up_with_one_line(
    tmp_path: Path, name: str, value: str, fragment: str
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("DEADPIXEL_")}
    env.update({"DEADPIXEL_DATA_DIR": str(tmp_path), f"DEADPIXEL_{name}": value})
    for command in (["bounces", "listen"], ["bounces", "fetch"]):
        done = subprocess.run(
            [sys.executable, "-m", "deadpixel", *command], capture_output=True, text=True, env=env
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1, done.stderr
        assert lines[0].startswith(f"Error: bad setting: {fragment}")


def test_settings_read_the_domain_in_lower_case(tmp_path: Path) -> None:
    from deadpixel.config import load_settings

    found = load_settings(
        {"DEADPIXEL_DATA_DIR": str(tmp_path), "DEADPIXEL_BOUNCE_DOMAIN": "Bounces.Example.COM."}
    )
    assert (found.bounce_domain, found.soft_bounce_limit, found.bounce_imap_tls) == (DOMAIN, 3, "ssl")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_listen_command_serves_until_sigterm(
    settings: Settings, engine: Engine, env: dict[str, str]
) -> None:
    import os
    import signal
    import smtplib
    import subprocess

    from .conftest import free_port

    port = free_port()
    process = forkserver.spawn(
        ["bounces", "listen", "--port", str(port)],
        {**os.environ, **env, "DEADPIXEL_BOUNCE_DOMAIN": DOMAIN}, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        ann = sent(engine, "ann@example.org")
        address = bounce_address(TokenSigner(load_or_create_keys(settings.keys_file)), ann, DOMAIN)
        deadline = time.monotonic() + 20
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the listener did not start"
                time.sleep(0.05)
        with client:
            client.sendmail("<>", [address], samples.dsn(address, "ann@example.org"))
    finally:
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=20)[1].decode()
    assert process.returncode == 0, stderr
    assert "taking bounces for bounces.example.com" in stderr and f"on message {ann}: hard" in stderr
    assert message_row(engine, ann)["bounce"] == "hard"
