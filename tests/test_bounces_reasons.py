"""The reason rules (deadpixel.bounces.reasons.classify): real-world wordings, and any input at all."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deadpixel.bounces.reasons import ADDRESS_GONE, SENDER_SIDE, Reason, classify, suppresses

R = Reason
# (status in the report, the server's text, the status we end with, the reason). Worded as the big
# providers and the common MTAs word them; addresses and hosts are invented.
EXAMPLES: list[tuple[str | None, str, str | None, Reason]] = [
    # gone addresses
    (
        "5.1.1",
        "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address for typos",
        "5.1.1",
        R.USER_UNKNOWN,
    ),
    (
        None,
        "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown in local recipient table",
        "5.1.1",
        R.USER_UNKNOWN,
    ),
    (
        None,
        "550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown in virtual alias table",
        "5.1.1",
        R.USER_UNKNOWN,
    ),
    (None, "Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1", R.USER_UNKNOWN),
    (
        None,
        "554 delivery error: dd This user doesn't have a yahoo.com account (ann@yahoo.com) [0] - "
        "mta1001.mail.example.yahoo.com",
        "5.1.1",
        R.USER_UNKNOWN,
    ),
    (None, "552 1 Requested mail action aborted, mailbox not found", "5.1.1", R.USER_UNKNOWN),
    ("5.0.0", "550 User unknown", "5.1.1", R.USER_UNKNOWN),
    (
        None,
        "SMTP error from remote mail server after RCPT TO:<ann@example.org>: 550 No Such User Here",
        "5.1.1",
        R.USER_UNKNOWN,
    ),
    (
        "5.1.10",
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "5.1.10",
        R.USER_UNKNOWN,
    ),
    (
        None,
        "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)",
        "5.5.0",
        R.USER_UNKNOWN,
    ),
    (None, "550 Requested action not taken: mailbox unavailable", "5.1.1", R.USER_UNKNOWN),
    (None, "550 5.1.1 <ann@example.org>... User unknown", "5.1.1", R.USER_UNKNOWN),
    (None, "550 5.1.1 <ann@icloud.example>: user does not exist", "5.1.1", R.USER_UNKNOWN),
    (None, "550 Unknown user ann@docomo.example.jp", "5.1.1", R.USER_UNKNOWN),
    (None, "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", "5.4.1", R.USER_UNKNOWN),
    (
        None,
        "550 Adresse d au moins un destinataire invalide. Invalid recipient. OFR_416",
        "5.1.1",
        R.USER_UNKNOWN,
    ),
    (
        None,
        "550 Message was not accepted -- invalid mailbox. Local mailbox ann@example.ru is unavailable: "
        "user not found",
        "5.1.1",
        R.USER_UNKNOWN,
    ),
    (
        "5.1.6",
        "550 5.1.6 Recipient addresses in this domain not accepted: mailbox has moved",
        "5.1.6",
        R.USER_UNKNOWN,
    ),
    ("5.0.0", "smtp; 550 5.1.1 user unknown", "5.1.1", R.USER_UNKNOWN),
    (
        None,
        "Amazon SES has suppressed sending to this address because it has a recent history of bouncing "
        "as an invalid address.",
        None,
        R.USER_UNKNOWN,
    ),
    (
        "5.1.2",
        "Host or domain name not found. Name service error for name=nx.example type=A: Host not found",
        "5.1.2",
        R.DOMAIN_NOT_FOUND,
    ),
    (
        "5.4.4",
        "Host or domain name not found. Name service error for name=nx.example type=AAAA: Host not found",
        "5.4.4",
        R.DOMAIN_NOT_FOUND,
    ),
    (None, "Sorry, I couldn't find any host named nx.example. (#5.1.2)", "5.1.2", R.DOMAIN_NOT_FOUND),
    (None, "Unrouteable address", None, R.DOMAIN_NOT_FOUND),
    (None, "all relevant MX records point to non-existent hosts", None, R.DOMAIN_NOT_FOUND),
    ("5.0.0", "550 Host unknown (Name server: nx.example: host not found)", "5.1.2", R.DOMAIN_NOT_FOUND),
    (None, "554 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", "5.4.4", R.DOMAIN_NOT_FOUND),
    (
        None,
        "556 5.1.10 <ann@nx.example>: Recipient address rejected: Domain nx.example does not accept mail "
        "(nullMX)",
        "5.1.10",
        R.DOMAIN_NOT_FOUND,
    ),
    (
        None,
        "Address not found: Your message wasn't delivered to ann@nx.example because the domain nx.example "
        "couldn't be found.",
        None,
        R.DOMAIN_NOT_FOUND,
    ),
    # the recipient's mailbox, there but not taking mail
    (
        "5.2.1",
        "550-5.2.1 The email account that you tried to reach is disabled.",
        "5.2.1",
        R.MAILBOX_DISABLED,
    ),
    (
        None,
        "554 delivery error: dd Sorry your message to ann@yahoo.example cannot be delivered. This mailbox "
        "is disabled (554.30)",
        "5.2.1",
        R.MAILBOX_DISABLED,
    ),
    ("5.0.0", "550 5.2.1 Mailbox inactive", "5.2.1", R.MAILBOX_DISABLED),
    (
        None,
        "550 Message was not accepted -- invalid mailbox. Local mailbox ann@example.ru is unavailable: "
        "account is disabled",
        "5.2.1",
        R.MAILBOX_DISABLED,
    ),
    ("5.1.1", "550 5.1.1 ann@example.org: account has been suspended", "5.1.1", R.MAILBOX_DISABLED),
    (None, "550 Boite du destinataire archivee. Archived recipient. OFR_418", "5.2.1", R.MAILBOX_DISABLED),
    ("4.2.2", "452-4.2.2 The email account that you tried to reach is over quota.", "4.2.2", R.MAILBOX_FULL),
    ("5.2.2", "552 5.2.2 <ann@example.org>: user is over quota", "5.2.2", R.MAILBOX_FULL),
    (None, "user is over quota. (#5.1.1)", "5.1.1", R.MAILBOX_FULL),
    (None, "Mailbox quota exceeded", None, R.MAILBOX_FULL),
    # Postfix's maildir delivery quoting a quota check; the text outweighs the report's 5.2.3 (too big).
    (
        "5.2.3",
        "maildir delivery failed: Sorry, the user's maildir has overdrawn his diskspace quota, please try "
        "again later.",
        "5.2.3",
        R.MAILBOX_FULL,
    ),
    (None, "552 Mailbox full", "5.2.2", R.MAILBOX_FULL),
    (None, "452 4.2.2 The recipient's inbox is out of storage space.", "4.2.2", R.MAILBOX_FULL),
    (None, "552 Boite du destinataire pleine. Recipient overquota. OFR_417", "5.2.2", R.MAILBOX_FULL),
    # the sender's own problem
    (
        "5.7.26",
        "550-5.7.26 This mail is unauthenticated, which poses a security risk to the sender and "
        "Gmail users, and has been blocked.",
        "5.7.26",
        R.AUTHENTICATION,
    ),
    (
        "5.7.1",
        "550 5.7.1 Email rejected per SPF policy (ann@example.org is not allowed by example.com)",
        "5.7.1",
        R.AUTHENTICATION,
    ),
    (
        None,
        "550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification and has "
        "a DMARC policy of reject.",
        "5.7.509",
        R.AUTHENTICATION,
    ),
    (
        None,
        "550 5.7.23 The message was rejected because of Sender Policy Framework violation",
        "5.7.23",
        R.AUTHENTICATION,
    ),
    (
        None,
        "550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all "
        "senders to authenticate with either SPF or DKIM.",
        "5.7.9",
        R.AUTHENTICATION,
    ),
    (None, "550 5.7.1 DKIM signature verification failed", "5.7.1", R.AUTHENTICATION),
    ("5.1.1", "550 5.1.1 rejected: SPF fail for example.com", "5.1.1", R.AUTHENTICATION),
    (
        "5.7.1",
        "550 5.7.1 Unfortunately, messages from [192.0.2.7] weren't sent. Please contact your "
        "Internet service provider since part of their network is on our block list (S3150).",
        "5.7.1",
        R.BLOCKED,
    ),
    (
        None,
        "554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using zen.spamhaus.org",
        "5.7.1",
        R.BLOCKED,
    ),
    (None, "550 5.7.606 Access denied, banned sending IP [192.0.2.7]", "5.7.606", R.BLOCKED),
    (
        None,
        "421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume or "
        "user complaints",
        "4.7.0",
        R.BLOCKED,
    ),
    (
        None,
        "550 5.7.25 The IP address sending this message does not have a PTR record setup",
        "5.7.25",
        R.BLOCKED,
    ),
    (None, "450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.7]", "4.7.1", R.BLOCKED),
    (
        None,
        "521 5.2.1 192.0.2.7 blocked by sbc:blacklist.mailrelay.example. DNSRBL: Blocked for abuse.",
        "5.2.1",
        R.BLOCKED,
    ),
    (
        None,
        "421-4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your "
        "IP address.",
        "4.7.28",
        R.BLOCKED,
    ),
    (
        None,
        "550 5.7.1 Our system has detected that this message is likely unsolicited mail.",
        "5.7.1",
        R.SPAM,
    ),
    (
        None,
        "552-5.7.0 This message was blocked because its content presents a potential security issue.",
        "5.7.0",
        R.SPAM,
    ),
    (None, "550 5.7.1 Message rejected as spam by Content Filtering.", "5.7.1", R.SPAM),
    (None, "554 5.7.1 Virus found in message", "5.7.1", R.SPAM),
    ("5.1.1", "550 5.1.1 User unknown; see https://example.net/spam-policy", "5.1.1", R.USER_UNKNOWN),
    (None, "552 5.3.4 Message size exceeds fixed limit", "5.3.4", R.MESSAGE_TOO_BIG),
    (None, "552-5.2.3 Your message exceeded Google's message size limits.", "5.2.3", R.MESSAGE_TOO_BIG),
    (None, "552 Message too large", "5.3.4", R.MESSAGE_TOO_BIG),
    (None, "550 5.4.5 Daily user sending quota exceeded.", "5.4.5", R.RATE_LIMITED),
    (
        None,
        "450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        "4.2.1",
        R.RATE_LIMITED,
    ),
    (None, "421 4.7.0 Too many connections from your host", "4.7.0", R.RATE_LIMITED),
    (None, "Throttling failure: Maximum sending rate exceeded.", None, R.RATE_LIMITED),
    (None, "550 5.1.8 Access denied, bad outbound sender", "5.1.8", R.BLOCKED),
    (
        "5.1.8",
        "553 5.1.8 <bounces@example.com>: Sender address rejected: Domain not found",
        "5.1.8",
        R.POLICY,
    ),
    (None, "554 5.7.1 <ann@example.org>: Relay access denied", "5.7.1", R.POLICY),
    (None, "554 5.7.9 Message not accepted for policy reasons.", "5.7.9", R.POLICY),
    (None, "554 5.7.1 [CS01] Message rejected due to local policy", "5.7.1", R.POLICY),
    (
        None,
        "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required",
        "5.7.133",
        R.POLICY,
    ),
    # time, network, the receiving system
    ("4.4.7", "Delivery time expired", "4.4.7", R.EXPIRED),
    ("5.4.7", "retry timeout exceeded", "5.4.7", R.EXPIRED),
    (None, "I'm not going to try again; this message has been in the queue too long.", None, R.EXPIRED),
    (None, "retry time not reached for any host after a long failure period", None, R.EXPIRED),
    (
        "4.4.7",
        "delivery temporarily suspended: connect to mx.example.org[192.0.2.1]:25: Connection timed out",
        "4.4.7",
        R.EXPIRED,
    ),
    ("4.4.1", "connect to mx.example.org[192.0.2.1]:25: Connection refused", "4.4.1", R.NETWORK),
    (None, "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)", "4.4.1", R.NETWORK),
    (
        "4.4.3",
        "Host or domain name not found. Name service error for name=example.org type=MX: Host not "
        "found, try again",
        "4.4.3",
        R.NETWORK,
    ),
    (None, "mail for example.org loops back to myself", None, R.SYSTEM),
    (None, "451 4.3.0 Temporary local problem - please try later", "4.3.0", R.SYSTEM),
    ("5.3.0", "554 5.3.0 Internal error", "5.3.0", R.SYSTEM),
    (None, "Hello, this is the mail system at host example.org.", None, R.OTHER),
    # Exchange 5.5-2003 and GroupWise notices
    (None, "The recipient name is not recognized", None, R.USER_UNKNOWN),
    # the sending side gave up: expired, whatever network trouble made the attempts fail
    (None, "retry timeout exceeded", None, R.EXPIRED),
    ("4.4.7", "Delivery time expired", "4.4.7", R.EXPIRED),
    (None, "ann@example.org: Envelope expired", None, R.EXPIRED),  # OpenSMTPD
    (
        None,
        "Your message was not delivered because the destination computer was not reachable within the "
        "allowed queue period.",
        None,
        R.EXPIRED,
    ),
    # a local delivery program's failure is the receiving system's, whatever its own words say
    (
        "4.0.0",
        "X-Postfix; temporary failure. Command output: avpcheck: unable to connect to avp daemon: "
        "Connection refused",
        "4.3.0",
        R.SYSTEM,
    ),
    (
        None,
        "The following mail has been returned because it encountered an error while being processed.",
        None,
        R.SYSTEM,
    ),
    (None, "host mx.example.org[192.0.2.1]: connection to mail exchanger failed", None, R.NETWORK),
    (
        "5.0.0",
        "550 5.5.0 Le compte du destinataire est bloque. The recipient account isblocked. LPN007_426",
        "5.5.0",
        R.MAILBOX_DISABLED,
    ),
]


@pytest.mark.parametrize(("status", "text", "want_status", "want"), EXAMPLES)
def test_real_world_wordings(status: str | None, text: str, want_status: str | None, want: Reason) -> None:
    verdict = classify(status, text)
    assert (verdict.reason, verdict.status) == (want, want_status)


def test_there_are_many_examples_and_every_reason_has_some() -> None:
    assert len(EXAMPLES) >= 60
    assert {want for *_, want in EXAMPLES} == set(Reason)


def test_only_a_gone_address_suppresses_and_no_sender_side_failure_does() -> None:
    gone = [text for _, text, _, want in EXAMPLES if suppresses(want)]
    assert gone and all(classify(None, text).reason in ADDRESS_GONE for text in gone)
    for status, text, _, want in EXAMPLES:
        if want in SENDER_SIDE:
            assert not suppresses(classify(status, text).reason), text


@pytest.mark.parametrize(
    ("status", "want"),
    [("5.1.1", R.USER_UNKNOWN), ("5.1.2", R.DOMAIN_NOT_FOUND), ("5.2.2", R.MAILBOX_FULL),
     ("4.4.7", R.EXPIRED), ("5.7.26", R.AUTHENTICATION), ("5.7.1", R.POLICY), ("5.0.0", R.OTHER),
     ("4.4.4", R.NETWORK), ("5.4.4", R.DOMAIN_NOT_FOUND), ("5.3.4", R.MESSAGE_TOO_BIG)],
)  # fmt: skip
def test_the_code_speaks_when_the_text_says_nothing_known(status: str, want: Reason) -> None:
    assert classify(status, None) == classify(status, "") == classify(status, "see you")
    assert classify(status, None).reason is want


def test_a_code_is_read_from_the_text_in_all_its_usual_forms() -> None:
    for text in ("550 5.1.1 no", "550-5.1.1 no", "(#5.1.1)", "smtp; 550 5.1.1 no", "5.1.1 no"):
        assert classify(None, text).status == "5.1.1", text
    # IP addresses and version numbers are no status codes
    assert classify(None, "host 10.5.1.1 said nothing").status is None
    assert classify(None, "host 5.1.1.9 said nothing").status is None
    # a basic code alone gives the class; with no reason known the detail stays 0.0
    assert classify(None, "550 Blocked").status == "5.7.1"
    assert classify(None, "550 hello").status == "5.0.0"
    assert classify(None, "user unknown").status is None
    assert classify(None, "user unknown", permanent=True).status == "5.1.1"
    assert classify(None, "mailbox full", permanent=False).status == "4.2.2"


def test_a_generic_code_in_the_report_gives_way_to_the_text() -> None:
    assert classify("5.0.0", "550 5.2.2 mailbox full") == classify(None, "550 5.2.2 mailbox full")
    assert classify("5.7.1", "550 5.7.1 user unknown").reason is R.USER_UNKNOWN
    # a specific code in the report is kept even when the text carries another one
    assert classify("5.1.1", "550 5.7.1 no such user").status == "5.1.1"


def test_a_specific_code_in_the_text_wins_over_a_generic_one_of_another_class() -> None:
    # Exim reports "Status: 5.0.0" for a temporary refusal it gave up retrying
    verdict = classify("5.0.0", "451 4.7.1 <ann@example.org>: rate limit exceeded; retry timeout exceeded")
    assert verdict == classify(None, "451 4.7.1 rate limit exceeded; retry timeout exceeded")
    assert verdict.status == "4.7.1"
    assert verdict.reason is R.RATE_LIMITED  # a sender-side reason stays, even when the sender gave up


def test_a_failure_the_sender_gave_up_on_is_expired() -> None:
    # Gmail: a permanent failure that carries a temporary one
    text = (
        "TEMP_FAILURE: Could not initiate SMTP conversation with any hosts: "
        "[example.org (1): Connection timed out]"
    )
    assert classify(None, text, permanent=True) == classify(None, text, permanent=True, delayed=True)
    assert classify(None, text, permanent=True).reason is R.EXPIRED
    assert classify(None, text, permanent=True).status == "5.4.7"
    # a delay notice (Action: delayed) about a network failure
    assert classify("4.4.1", "no answer from host", permanent=False, delayed=True).reason is R.EXPIRED
    assert classify("4.4.1", "no answer from host", permanent=False).reason is R.NETWORK
    # a reason about the mailbox or the sender stays what it is
    assert classify(None, "452 4.2.2 mailbox full", permanent=True, delayed=True).reason is R.MAILBOX_FULL
    assert classify(None, "421 4.7.0 blocked using zen.spamhaus.org", delayed=True).reason is R.BLOCKED


def test_an_address_in_the_text_is_no_reason() -> None:
    assert classify(None, "550 <blocked@example.org>... User unknown").reason is R.USER_UNKNOWN
    assert classify(None, "550 ann@example.net...User unknown").reason is R.USER_UNKNOWN
    assert classify(None, "rate-limited@example.org: 550 no such user here").reason is R.USER_UNKNOWN
    assert classify(None, "spam@example.org").reason is R.OTHER


def test_the_verdict_is_stable_when_rerun_on_its_own_status() -> None:
    for status, text, _, _ in EXAMPLES:
        first = classify(status, text)
        assert classify(first.status, text) == first, text


@settings(max_examples=300, deadline=None)
@given(
    status=st.one_of(
        st.none(), st.text(max_size=20), st.from_regex(r"[245]\.\d{1,3}\.\d{1,3}", fullmatch=True)
    ),
    text=st.one_of(st.none(), st.text(max_size=3000)),
    permanent=st.one_of(st.none(), st.booleans()),
)
def test_any_status_and_any_text_give_a_verdict(
    status: str | None, text: str | None, permanent: bool | None
) -> None:
    verdict = classify(status, text, permanent)
    assert isinstance(verdict.reason, Reason)
    assert verdict.status is None or verdict.status[0] in "245"


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet="ab .:-<>@#5Ssu", min_size=1, max_size=200), st.integers(1, 1000))
def test_long_hostile_text_stays_fast(chunk: str, times: int) -> None:
    best = float("inf")
    for _ in range(3):  # the best of three: the cost of the rules, not of a busy machine's scheduler
        start = time.thread_time()
        classify(None, chunk * times)
        best = min(best, time.thread_time() - start)
    assert best < 0.05


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("550 5.7.1 This message fails to pass authentication checks", R.AUTHENTICATION),
        ("535 5.7.8 Username and Password not accepted", R.AUTHENTICATION),
        ("550 5.7.1 Too many invalid recipients", R.RATE_LIMITED),
        ("554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", R.RATE_LIMITED),
        ("550 5.7.1 Daily SMTP relay limit exceeded for user", R.RATE_LIMITED),
        ("550 5.7.133 Sender not authenticated for group", R.POLICY),
        ("554 5.7.1 Access denied, bad HELO", R.BLOCKED),
        ("530 5.7.0 Must issue a STARTTLS command first", R.POLICY),
        ("552 5.7.0 Attachment extension is forbidden", R.SPAM),
        ("421 4.3.2 System not accepting network messages", R.SYSTEM),
        ("501 5.1.0 Emetteur invalide. Invalid Sender. OFR004_405 [405]", R.POLICY),
        ("553 Relaying disallowed. Invalid Domain - ann@example.org", R.POLICY),
        ("550 5.7.511 Access denied, banned sender[192.0.2.1]. To request removal ...", R.BLOCKED),
    ],
)
def test_the_providers_own_wordings_for_sender_side_trouble(text: str, want: Reason) -> None:
    verdict = classify(None, text)
    assert verdict.reason is want
    assert not suppresses(verdict.reason)
