"""Deliver messages over SMTP, telling failures worth retrying from those that are not.

The transaction is driven command by command (MAIL, RCPT, DATA) rather than through smtplib.sendmail(), so
that we know how far it got when a connection breaks: before the message was handed over nothing can have
been delivered and a retry is safe; after it, the server may have taken it.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import getaddresses
from types import TracebackType
from typing import Literal

from deadpixel.errors import DeadpixelError

__all__ = ["DeliveryError", "SMTPSender", "SMTPSettings", "send_with_retries"]

log = logging.getLogger(__name__)

Refused = dict[str, tuple[int, bytes]]


@dataclass(frozen=True)
class SMTPSettings:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: Literal["starttls", "ssl", "none"]
    timeout: float = 30.0
    local_hostname: str | None = None  # the EHLO name; None asks the OS (socket.getfqdn)


def _is_permanent(code: int | None) -> bool:
    return code is not None and 500 <= code < 600


class DeliveryError(DeadpixelError):
    """A message was not delivered (to some or all recipients).

    ``permanent`` means retrying the same message cannot help (5xx replies, refused credentials, an
    untrusted certificate); otherwise it is worth retrying later (4xx, dropped connection, timeout).
    ``recipients`` holds per-recipient replies when the server refused recipients. ``uncertain`` means the
    connection broke after the whole message was sent, so the server may have accepted it.
    """

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool,
        code: int | None = None,
        recipients: Mapping[str, tuple[int, bytes]] | None = None,
        uncertain: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.code = code
        self.recipients: Refused = dict(recipients or {})
        self.uncertain = uncertain

    def __reduce__(self) -> tuple[Callable[..., DeliveryError], tuple[object, ...]]:
        # keyword-only arguments: without this the error would not survive a process pool
        return _restore_error, (self.reason, self.permanent, self.code, self.recipients, self.uncertain)

    def __str__(self) -> str:
        kind = "permanent" if self.permanent else "temporary"
        code = f" {self.code}" if self.code is not None else ""
        return f"{kind} SMTP failure{code}: {self.reason}"


def _restore_error(
    reason: str, permanent: bool, code: int | None, recipients: Refused, uncertain: bool
) -> DeliveryError:
    return DeliveryError(reason, permanent=permanent, code=code, recipients=recipients, uncertain=uncertain)


def _reply_text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _reply_error(what: str, code: int, reply: bytes) -> DeliveryError:
    return DeliveryError(f"{what}: {code} {_reply_text(reply)}", permanent=_is_permanent(code), code=code)


def _all_refused(refused: Refused) -> DeliveryError:
    permanent = all(_is_permanent(code) for code, _ in refused.values())
    code = next(code for code, _ in refused.values() if _is_permanent(code) == permanent)
    details = "; ".join(f"{rcpt}: {code} {_reply_text(reply)}" for rcpt, (code, reply) in refused.items())
    return DeliveryError(
        f"all recipients refused ({details})", permanent=permanent, code=code, recipients=refused
    )


def _classify(exc: Exception, *, uncertain: bool) -> DeliveryError:
    """Map what smtplib and the socket layer raise onto permanent or temporary."""
    if isinstance(exc, smtplib.SMTPResponseException):  # connect, HELO, AUTH, sender or data refused
        code = exc.smtp_code
        return DeliveryError(_reply_text(exc.smtp_error), permanent=_is_permanent(code), code=code)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return DeliveryError(f"connection lost: {exc}", permanent=False, uncertain=uncertain)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(f"TLS certificate not trusted: {exc}", permanent=True)
    if isinstance(exc, smtplib.SMTPException):  # no STARTTLS, no usable AUTH mechanism: configuration
        return DeliveryError(str(exc), permanent=True)
    return DeliveryError(f"connection failed: {exc}", permanent=False, uncertain=uncertain)


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _flatten(message: EmailMessage, *, utf8: bool) -> bytes:
    if "Bcc" in message or "Resent-Bcc" in message:
        message = copy.copy(message)  # as smtplib.send_message does: blind copies stay blind
        del message["Bcc"]
        del message["Resent-Bcc"]
    buffer = io.BytesIO()
    policy = message.policy
    if utf8 and isinstance(policy, EmailPolicy):
        policy = policy.clone(utf8=True)  # SMTPUTF8: headers go out as raw UTF-8
    BytesGenerator(buffer, policy=policy).flatten(message, linesep="\r\n")
    return buffer.getvalue()


def _envelope_from(message: EmailMessage) -> str:
    for name in ("Sender", "From"):
        addresses = [addr for _, addr in getaddresses([str(v) for v in message.get_all(name, [])]) if addr]
        if addresses:
            return addresses[0]
    raise ValueError("message has neither Sender nor From; pass envelope_from")


def _envelope_recipients(message: EmailMessage) -> list[str]:
    values = [str(value) for name in ("To", "Cc", "Bcc") for value in message.get_all(name, [])]
    return [addr for _, addr in getaddresses(values) if addr]


class _Stale(Exception):
    """A reused connection turned out closed before anything could have been delivered."""


class SMTPSender:
    """One connection kept open for many messages, reopened when the server has dropped it.

    Not thread-safe: use one sender per worker.
    """

    def __init__(self, settings: SMTPSettings, ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = settings
        self._ssl_context = ssl_context
        self._smtp: smtplib.SMTP | None = None
        self._stage = "idle"
        self.connections = 0  # connections opened so far

    def __enter__(self) -> SMTPSender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Say QUIT if the connection is still up."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def connect(self) -> None:
        """Open the connection now (EHLO, STARTTLS or TLS, AUTH) without sending anything: how
        ``deadpixel doctor`` checks a login. Raises DeliveryError."""
        if self._smtp is not None:
            return
        try:
            self._open()
        except (OSError, smtplib.SMTPException) as exc:
            raise _classify(exc, uncertain=False) from exc

    def _discard(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _open(self) -> smtplib.SMTP:
        s = self.settings
        self._stage = "connect"
        smtp: smtplib.SMTP
        if s.tls == "ssl":
            smtp = smtplib.SMTP_SSL(
                s.host, s.port, local_hostname=s.local_hostname, timeout=s.timeout, context=self._tls()
            )
        else:
            smtp = smtplib.SMTP(s.host, s.port, local_hostname=s.local_hostname, timeout=s.timeout)
        try:
            # Every command goes out in one write, but a message over TLS is several records: with Nagle on,
            # the last one waits for the server's delayed ACK (40 ms on Linux) before it is sent.
            assert smtp.sock is not None
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo_or_helo_if_needed()
            if s.tls == "starttls":
                smtp.starttls(context=self._tls())  # refuses, rather than falling back to plain text
                smtp.ehlo()
            if s.username is not None:
                smtp.login(s.username, s.password or "")
        except BaseException:
            smtp.close()
            raise
        self.connections += 1
        self._smtp = smtp
        return smtp

    def send(
        self,
        message: EmailMessage,
        *,
        envelope_from: str | None = None,
        recipients: Sequence[str] | None = None,
    ) -> Refused:
        """Deliver one message; return the recipients refused while others were accepted.

        Envelope addresses default to Sender/From and To/Cc/Bcc; Bcc headers are not transmitted.
        Raises DeliveryError when nobody got the message.
        """
        from_addr = envelope_from if envelope_from is not None else _envelope_from(message)
        rcpts = list(recipients) if recipients is not None else _envelope_recipients(message)
        utf8 = not all(address.isascii() for address in (from_addr, *rcpts))
        return self.send_bytes(
            _flatten(message, utf8=utf8), envelope_from=from_addr, recipients=rcpts, smtputf8=utf8
        )

    def send_bytes(
        self, data: bytes, *, envelope_from: str, recipients: Sequence[str], smtputf8: bool = False
    ) -> Refused:
        """Deliver a message that is already bytes, exactly as given (the relay's copies).

        ``smtputf8`` asks for SMTPUTF8 (headers in raw UTF-8); non-ASCII addresses ask for it anyway.
        """
        from_addr, rcpts = envelope_from, list(recipients)
        if not rcpts:
            raise ValueError("message has no recipients")
        utf8 = smtputf8 or not all(address.isascii() for address in (from_addr, *rcpts))
        try:
            return self._attempt(from_addr, rcpts, data, utf8)
        except _Stale:
            log.info("SMTP connection to %s was closed by the server; reconnecting", self.settings.host)
            return self._attempt(from_addr, rcpts, data, utf8)

    def _attempt(self, from_addr: str, rcpts: list[str], data: bytes, utf8: bool) -> Refused:
        reused = self._smtp is not None
        try:
            smtp = self._smtp if self._smtp is not None else self._open()
            return self._transaction(smtp, from_addr, rcpts, data, utf8)
        except DeliveryError as error:
            if reused and self._stage == "mail" and error.code == 421:
                self._discard()
                raise _Stale from error
            self._reset(error)
            raise
        except (OSError, smtplib.SMTPException) as exc:  # smtplib's errors are OSErrors too
            stage = self._stage
            self._discard()
            if (
                reused
                and stage == "mail"
                and isinstance(exc, smtplib.SMTPServerDisconnected | ConnectionError)
            ):
                raise _Stale from exc
            raise _classify(exc, uncertain=stage == "content") from exc

    def _reset(self, error: DeliveryError) -> None:
        """Leave the connection ready for the next message, or drop it if the server is going away."""
        if self._smtp is None:
            return
        if error.code == 421:
            self._discard()
            return
        try:
            code, _ = self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            code = -1
        if code != 250:
            self._discard()

    def _transaction(
        self, smtp: smtplib.SMTP, from_addr: str, rcpts: list[str], data: bytes, utf8: bool
    ) -> Refused:
        options: list[str] = []
        if utf8:
            if not smtp.has_extn("smtputf8"):
                raise DeliveryError(
                    "non-ASCII addresses need SMTPUTF8, which the server lacks", permanent=True
                )
            options.append("SMTPUTF8")
        if not data.isascii() and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        self._stage = "mail"
        code, reply = smtp.mail(from_addr, options)
        if code != 250:
            raise _reply_error(f"sender {from_addr} refused", code, reply)
        self._stage = "rcpt"
        refused: Refused = {}
        for rcpt in rcpts:
            code, reply = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = (code, reply)
                if code == 421:
                    raise _reply_error("server closing the connection", code, reply)
        if len(refused) == len(rcpts):
            raise _all_refused(refused)
        self._stage = "data"
        code, reply = smtp.docmd("DATA")
        if code != 354:
            raise _reply_error("DATA refused", code, reply)
        self._stage = "content"
        payload = _LEADING_DOT.sub(b"..", data)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        smtp.send(payload + b".\r\n")
        code, reply = smtp.getreply()
        if code != 250:
            raise _reply_error("message refused", code, reply)
        self._stage = "idle"
        return refused


def send_with_retries(
    sender: SMTPSender,
    message: EmailMessage,
    *,
    envelope_from: str | None = None,
    recipients: Sequence[str] | None = None,
    attempts: int = 4,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    retry_uncertain: bool = True,
    sleep: Callable[[float], object] = time.sleep,
) -> Refused:
    """Send, retrying temporary failures after backoff, 2*backoff, 4*backoff... seconds.

    Recipients refused with a 4xx while others were accepted are retried on their own, so nobody who got
    the message gets it twice. Returns the recipients finally refused; raises DeliveryError when nobody got
    it (at once for a permanent failure). ``retry_uncertain=False`` gives up instead of retrying when the
    connection broke after the message was sent, for callers who prefer a missed mail to a duplicate.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    pending = list(recipients) if recipients is not None else _envelope_recipients(message)
    refused: Refused = {}
    delivered = False
    for attempt in range(attempts):
        if attempt:
            sleep(min(backoff * 2 ** (attempt - 1), max_backoff))
        try:
            result = sender.send(message, envelope_from=envelope_from, recipients=pending)
        except DeliveryError as error:
            failed = error.recipients or {rcpt: (error.code or -1, error.reason.encode()) for rcpt in pending}
            last = attempt == attempts - 1 or (error.uncertain and not retry_uncertain)
            if error.permanent or last:
                if delivered:
                    return refused | failed
                if refused:
                    raise DeliveryError(
                        error.reason,
                        permanent=error.permanent,
                        code=error.code,
                        recipients=refused | failed,
                        uncertain=error.uncertain,
                    ) from error
                raise
            log.info("temporary SMTP failure (attempt %d of %d): %s", attempt + 1, attempts, error)
            refused |= {rcpt: reply for rcpt, reply in failed.items() if _is_permanent(reply[0])}
            pending = [rcpt for rcpt, reply in failed.items() if not _is_permanent(reply[0])]
            continue
        delivered = True
        temporary = {rcpt: reply for rcpt, reply in result.items() if not _is_permanent(reply[0])}
        refused |= {rcpt: reply for rcpt, reply in result.items() if rcpt not in temporary}
        if not temporary or attempt == attempts - 1:
            return refused | temporary
        pending = list(temporary)
    raise AssertionError("unreachable")
