"""The free-form bounce readers (deadpixel.bounces.vendors): one sample per reader, written in that mail
system's format with invented addresses (tests/data/bounces/vendors/), and messages that are no bounce."""

from __future__ import annotations

import time
from collections.abc import Callable
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deadpixel.bounces.vendors import READERS, Found, read_free_form
from deadpixel.bounces.vendors import text as vendor_text

DATA = Path(__file__).parent / "data" / "bounces" / "vendors"


def message(name: str) -> Message:
    return BytesParser(policy=policy.compat32).parsebytes((DATA / name).read_bytes())


# sample, reader that must claim it, address, status, a piece of the diagnostic, permanent
CASES = [
    ("postfix.eml", "postfix", "ann@example.org", "5.1.1", "User unknown in virtual", True),
    ("postfix_delayed.eml", "postfix", "amy@example.org", None, "Connection timed out", False),
    ("exim.eml", "exim", "bob@example.org", "5.1.1", "no such mailbox here", True),
    ("exim_retry.eml", "exim", "carol@example.org", None, "retry timeout exceeded", False),
    ("sendmail.eml", "sendmail", "dave@example.org", "5.1.1", "User unknown", True),
    (
        "sendmail_v5.eml",
        "sendmail",
        "erin@example.org",
        "5.0.0",
        "550 <erin@example.org>... User unknown",
        None,
    ),
    ("qmail.eml", "qmail", "frank@example.org", "5.1.1", "Recipient address rejected", True),
    ("opensmtpd.eml", "opensmtpd", "grace@example.org", "5.1.1", "Recipient unknown", True),
    ("courier.eml", "courier", "heidi@example.org", "5.1.1", "User unknown", True),
    ("exchange.eml", "exchange", "ivan@example.org", "5.1.10", "RESOLVER.ADR.RecipientNotFound", True),
    ("office365.eml", "exchange", "jim@example.org", "5.1.10", "Recipient jim@example.org not found", True),
    (
        "exchange2003_smtp.eml",
        "exchange",
        "kim@example.org",
        "5.1.1",
        "does not exist at the organization",
        True,
    ),
    ("exchange2003.eml", "exchange", "ivy@example.org", None, "The recipient name is not recognized", True),
    ("gmail.eml", "gmail", "judy@example.org", "5.1.1", "does not exist", True),
    ("yahoo.eml", "yahoo", "ken@example.org", "5.1.1", "User unknown [RCPT_TO]", True),
    ("unable_to_deliver.eml", "unable-to-deliver", "lee@example.org", None, "does not have an account", True),
    ("workmail.eml", "workmail", "mia@example.org", "5.1.1", "User unknown", True),
    ("kddi.eml", "kddi", "nao@example.jp", None, "mailbox is full", True),
    ("mfilter.eml", "mfilter", "nina@example.jp", "5.1.1", "unknown user", True),
    ("amavis.eml", "amavis", "oscar@example.org", "5.7.0", "spam", True),
    ("activehunter.eml", "activehunter", "pat@example.jp", "5.1.1", "no mailbox here by that name", True),
    ("bigfoot.eml", "bigfoot", "quinn@example.org", "5.1.1", "unknown user", True),
    ("interscan.eml", "interscan", "rose@example.org", "5.1.1", "unknown user", True),
    ("imailserver.eml", "imailserver", "rita@example.org", "5.1.1", "Addressee unknown", True),
    ("messagingserver.eml", "messagingserver", "sam@example.org", "5.1.1", "User unknown", True),
    ("dragonfly.eml", "dragonfly", "tom@example.org", "5.2.2", "Mailbox full", True),
    ("einsundeins.eml", "einsundeins", "una@example.org", None, "Mail size limit exceeded", True),
    ("gmx.eml", "gmx", "val@example.org", "5.1.1", "User Unknown", True),
    ("mailru.eml", "mailru", "wes@example.org", "5.1.1", "user not found", True),
    ("zoho.eml", "zoho", "xena@example.org", "5.1.1", "User Unknown", True),
    ("mxlogic.eml", "mxlogic", "yuri@example.org", "5.1.1", "unknown user", True),
    ("domino.eml", "domino", "zoe@example.org", None, "not listed in Domino Directory", True),
    ("notes.eml", "domino", "vic@example.jp", None, "User not listed in public Name & Address Book", True),
    ("generic.eml", "generic", "walt@example.org", "5.1.1", "mailbox unavailable", None),
]
NOT_BOUNCES = ["not_normal.eml", "not_auto_reply.eml", "not_dsn.eml", "not_delivery_receipt.eml"]


@pytest.mark.parametrize(("sample", "reader", "address", "status", "said", "permanent"), CASES)
def test_each_format_gives_address_status_and_reply(
    sample: str, reader: str, address: str, status: str | None, said: str, permanent: bool | None
) -> None:
    result = read_free_form(message(sample))
    assert result is not None
    name, found = result
    assert name == reader
    assert [f.address for f in found] == [address]
    assert found[0].status == status
    assert said in (found[0].diagnostic or "")
    assert found[0].permanent is permanent


def test_every_reader_has_a_sample() -> None:
    assert {name for name, _ in READERS} == {case[1] for case in CASES}


def test_a_reader_asked_directly_claims_its_own_sample() -> None:
    readers = dict(READERS)
    for sample, reader, address, *_ in CASES:
        found = readers[reader](message(sample))
        assert found and found[0].address == address, sample


def test_several_recipients_each_with_their_own_reply() -> None:
    raw = (DATA / "postfix.eml").read_bytes() + (
        b"\n<ben@example.org>: host mx.example.org[192.0.2.10] said: 452 4.2.2 Mailbox full\n"
        b"    (in reply to RCPT TO command)\n"
    )
    result = read_free_form(BytesParser(policy=policy.compat32).parsebytes(raw))
    assert result is not None
    by_address = {f.address: f for f in result[1]}
    assert by_address["ann@example.org"].status == "5.1.1"
    assert by_address["ben@example.org"].status == "4.2.2"
    assert "Mailbox full" in (by_address["ben@example.org"].diagnostic or "")


@pytest.mark.parametrize("sample", NOT_BOUNCES)
def test_no_reader_takes_a_message_that_is_no_free_form_bounce(sample: str) -> None:
    for name, read in READERS:
        assert not read(message(sample)), name
    assert read_free_form(message(sample)) is None


def test_the_returned_original_is_not_read_as_the_notice() -> None:
    # the copy of the message below the qmail marker names another address at the head of a line
    raw = (DATA / "qmail.eml").read_bytes() + b"<someone@example.org>: a line inside the returned message\n"
    result = read_free_form(BytesParser(policy=policy.compat32).parsebytes(raw))
    assert result is not None
    assert [f.address for f in result[1]] == ["frank@example.org"]


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("550 5.1.1 <a@example.org>: no such user", "5.1.1"),
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"),
        ("452 mailbox full", "4.0.0"),
        ("host 192.0.2.1 said: unknown user", None),
        ("version 5.1.1.2 of the software", None),
    ],
)
def test_status_is_read_from_the_reply(text: str, status: str | None) -> None:
    assert vendor_text.status_of(text) == status


def _message_of(subject: str, sender: str, body: str) -> Message:
    raw = f"From: {sender}\nSubject: {subject}\nContent-Type: text/plain; charset=utf-8\n\n{body}"
    return BytesParser(policy=policy.compat32).parsebytes(raw.encode("utf-8", "surrogatepass"))


MARKERS = [
    "This message was created automatically by mail delivery software",
    "Hi. This is the qmail-send program",
    "----- The following addresses had permanent fatal errors -----",
    "----- Transcript of session follows -----",
    "This is the mail system at host x.example.net.\n",
    "Delivery has failed to these recipients or groups:",
    "did not reach the following recipient(s):",
    "<a@example.org>: 550 5.1.1 ",
    "The following address(es) failed:\n  ",
    "was not delivered to:",
    "because:",
    "Unable to deliver message to the following address",
    "This report relates to a message you sent with the following header fields",
    "Recipient address: ",
    "Final-Recipient: rfc822; ",
    "This is the DragonFly Mail Agent",
    "There was an error delivering your mail to <",
    "------- Failure Reasons",
    "Sent <<< RCPT TO:<",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.sampled_from(["failure notice", "Undeliverable Mail", "Undeliverable message", "hello", ""]),
    sender=st.sampled_from(["MAILER-DAEMON@mx.example.net", "postmaster@googlemail.com", "a@example.org"]),
    pieces=st.lists(st.one_of(st.text(max_size=80), st.sampled_from(MARKERS)), max_size=30),
)
def test_random_text_never_raises(subject: str, sender: str, pieces: list[str]) -> None:
    found_message = _message_of(subject, sender, "\n".join(pieces))
    for _, read in READERS:
        result = read(found_message)
        assert result is None or all(isinstance(f, Found) and "@" in f.address for f in result)


@pytest.mark.parametrize(
    "filler",
    [
        "a" * 200_000,  # one endless word
        ("x" * 60 + "@" + "y." * 30 + "\n") * 1500,  # near-addresses
        ("<a@example.org>:\n" + "    550 5.1.1 user unknown\n" * 3) * 4000,  # endless recipient blocks
        ("----- Transcript of session follows -----\n<<< 550 " + "-" * 80 + "\n") * 2000,
    ],
)
def test_each_reader_is_fast_on_200_kb_of_text(filler: str) -> None:
    sample = _message_of(
        "failure notice", "MAILER-DAEMON@mx.example.net", MARKERS[0] + "\n" + filler[:200_000]
    )
    for name, read in READERS:
        elapsed = min(
            _timed(read, sample) for _ in range(3)
        )  # the best of three: a GC pause is not the reader's
        assert elapsed < 0.02, f"{name} took {elapsed * 1000:.1f} ms"


def _timed(read: Callable[[Message], object], sample: Message) -> float:
    """The reader's CPU time on this thread: what a backtracking pattern costs, whatever else the machine
    is running (wall time on a loaded machine measures the neighbours)."""
    vendor_text._cache = None  # each reader's time includes taking the text out of the message
    start = time.thread_time()
    read(sample)
    return time.thread_time() - start


def _nested(depth: int, leaf: str) -> bytes:
    head = b"From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\nMIME-Version: 1.0\n"
    body = leaf.encode()
    for level in range(depth):
        boundary = f"b{level}".encode()
        body = (
            b"Content-Type: multipart/mixed; boundary="
            + boundary
            + b"\n\n--"
            + boundary
            + b"\n"
            + body
            + b"\n--"
            + boundary
            + b"--\n"
        )
    return head + body


def test_deep_nesting_and_many_parts_are_read_within_bounds() -> None:
    leaf = "Content-Type: text/plain\n\n<deep@example.org>: 550 5.1.1 no such user\n"
    deep = BytesParser(policy=policy.compat32).parsebytes(_nested(300, leaf))
    assert read_free_form(deep) is None  # the text sits below the depth followed
    shallow = BytesParser(policy=policy.compat32).parsebytes(_nested(3, leaf))
    result = read_free_form(shallow)
    assert result is not None and result[1][0].address == "deep@example.org"
    parts = "".join(f"--w\nContent-Type: text/plain\n\npart {n}\n" for n in range(5000))
    raw = (
        "From: MAILER-DAEMON@mx.example.net\nSubject: failure notice\n"
        f"Content-Type: multipart/mixed; boundary=w\n\n{parts}--w--\n"
    )
    many = BytesParser(policy=policy.compat32).parsebytes(raw.encode())
    start = time.thread_time()
    assert read_free_form(many) is None
    assert time.thread_time() - start < 0.1
