"""One address rule for every way in: what is checked against the suppression list is what RCPT TO carries.

The property test sends every accepted address through the real sending code to a real aiosmtpd server and
compares the envelope recipient the server received with the address deadpixel checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, event, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.mail.compose import compose
from deadpixel.mail.smtp import SMTPSender, SMTPSettings

from .smtp_sink import HOST, Sink, SMTPServerHandle

# Characters that matter to address parsers (quotes, brackets, separators, escapes, spaces, controls),
# beside plain ones, so that both accepted and refused addresses come up often.
_SPECIAL = '"<>@,;:\\()[]. \t\x00\x7f'
_PLAIN = "abcXYZ019!#$%&'*+-/=?^_`{|}~"
_PART = st.text(st.sampled_from(_SPECIAL + _PLAIN), min_size=1, max_size=12)
_WORD = st.text(st.sampled_from(_PLAIN), min_size=1, max_size=8)


@st.composite
def written_addresses(draw: st.DrawFn) -> str:
    """Addresses as someone might type or forge them: bare, quoted, with a display name."""
    dotted = st.lists(_WORD, min_size=1, max_size=3).map(".".join)
    local = draw(st.one_of(dotted, dotted, _PART, _PART.map(lambda s: f'"{s}"')))
    domain = draw(st.one_of(st.just("example.com"), _WORD.map(lambda w: f"{w}.example"), _PART))
    address = f"{local}@{domain}"
    return draw(st.sampled_from([address, f"Name <{address}>", f'"A, B" <{address}>', f" {address} "]))


@contextmanager
def _sink() -> Iterator[tuple[SMTPServerHandle, SMTPSender]]:
    handle = SMTPServerHandle(Sink()).start()
    settings = SMTPSettings(HOST, handle.port, None, None, "none", timeout=5, local_hostname="client.test")
    try:
        with SMTPSender(settings) as sender:
            yield handle, sender
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[SMTPServerHandle, SMTPSender]]:
    with _sink() as found:
        yield found


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(written=written_addresses())
@example(written='"victim@evil.example>"@example.com')
@example(written='"a b"@example.com')
@example(written="Zoë <zoe@example.org>")
def test_the_envelope_recipient_is_the_address_checked(
    sink: tuple[SMTPServerHandle, SMTPSender], written: str
) -> None:
    try:
        recipient = parse_recipient(written)
    except BadAddress:
        event("refused")
        return  # refused: nothing is checked, nothing is sent
    event("accepted")
    handle, sender = sink
    message = compose(
        sender="news@example.com", to=[recipient.header], subject="s", html="<p>hi</p>",
        pixel_url=None, rewrite=None,
    ).message  # fmt: skip
    before = len(handle.sink.messages)
    sender.send(message, recipients=[recipient.address])  # as a campaign sends: the checked address
    sender.send(message)  # as the To header says: it must name the same mailbox
    first, second = handle.sink.messages[before:]
    assert first.rcpt_tos == second.rcpt_tos == [recipient.address]
    assert first.rcpt_tos[0].lower() == recipient.key  # the key the suppression list is checked with


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ('"victim@evil.example>"@example.com', "needs quoting"),
        ('"a b"@example.com', "needs quoting"),
        ('"a\\"b"@example.com', "needs quoting"),
        ("a@[192.0.2.1]", "not a mail domain"),
        ("zoë@example.org", "non-ASCII local part"),
        ("a\x00b@example.com", "control character"),
        ("a@example.com, b@example.com", "not exactly one address"),
    ],
)
def test_addresses_that_would_need_quoting_are_refused_with_the_reason(written: str, why: str) -> None:
    with pytest.raises(BadAddress, match=why):
        parse_recipient(written)


def test_accepted_addresses_keep_one_form() -> None:
    quoted_plain = parse_recipient('"john"@Example.COM')
    assert (quoted_plain.address, quoted_plain.key) == ("john@Example.COM", "john@example.com")
    named = parse_recipient('"Doe, Jane" <jane.doe+news@exämple.org>')
    assert named.address == "jane.doe+news@xn--exmple-cua.org"
    assert named.header == '"Doe, Jane" <jane.doe+news@xn--exmple-cua.org>'
    assert parse_recipient("zoë@example.org", utf8=True).address == "zoë@example.org"  # the relay, SMTPUTF8
    with pytest.raises(BadAddress, match="space, control or format"):
        parse_recipient("zo\u200bë@example.org", utf8=True)
