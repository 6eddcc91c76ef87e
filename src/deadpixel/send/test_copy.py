"""A campaign's test copy: one row's message, sent to the sender's own address through the configured SMTP.

The copy is the preview's (deadpixel.send.preview, ``test_to``): marked ``[Test]`` in the subject and with
``X-Deadpixel-Test: yes``, without a pixel or tracked links, and no message row is stored for it, so it
counts in no report, open rate, segment or read notice. Who sent it is in the audit log (the caller writes
that, in its own transaction).
"""

from __future__ import annotations

from collections.abc import Mapping

from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.mail.smtp import DeliveryError
from deadpixel.send.preview import Content, Preview, preview
from deadpixel.send.single import deliver
from deadpixel.send.smtp_config import smtp_settings

__all__ = ["TestNotSent", "send_test"]


class TestNotSent(DeadpixelError):
    """The test copy could not be made or the SMTP server did not take it; the message says why."""

    __test__ = False  # not a pytest class, whatever its name


def send_test(settings: Settings, content: Content, row: Mapping[str, str], to: str) -> Preview:
    """Send the test copy of ``row``'s message to ``to``; the copy as sent. Blocking (SMTP): call it off the
    event loop. Raises TestNotSent, or ConfigError when no SMTP server is set."""
    try:
        address = parse_recipient(to).address
    except BadAddress as exc:
        raise TestNotSent(f"the test address {to!r}: {exc}") from None
    smtp = smtp_settings(settings)
    made = preview(content, row, base_url=settings.base_url, test_to=address)
    if made.message is None:
        unusable = [w.message for w in made.warnings if w.code == "address"]
        raise TestNotSent("; ".join(unusable) or "the message cannot be composed")
    try:
        deliver(smtp, made.message, envelope_from=None, recipients=[address], retries=1, backoff=0.5)
    except DeliveryError as exc:
        raise TestNotSent(f"the SMTP server did not take the test: {exc}") from None
    return made
