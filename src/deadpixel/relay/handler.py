"""One submitted message: record a copy per recipient, give each its pixel, hand them upstream, answer once.

The copies' message rows (and links) are committed before anything goes upstream, so the first pixel fetch
finds them; they become ``sent`` only once the upstream took them. The client hears 250 only when every copy
was taken (see reply.py), so a message is never lost between the relay and the upstream.

A copy is as large as the message, so the copies are built and handed over one at a time: the relay holds
about one copy beside the message, whatever the number of recipients. That number is bounded too
(DEADPIXEL_RELAY_MAX_RECIPIENTS): past it, RCPT gets 452, and the client sends the rest in another
transaction (RFC 5321, 4.5.3.1.10).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from deadpixel.mail.addresses import BadAddress, parse_recipient
from deadpixel.mail.compose import track_html
from deadpixel.mail.smtp import DeliveryError
from deadpixel.relay.message import Submitted, parse
from deadpixel.relay.reply import Failure, client_reply
from deadpixel.relay.upstream import Upstream
from deadpixel.send.tracked import Tracker
from deadpixel.store.relayed import Claim, InFlight, claim, replace_links, settle
from deadpixel.store.suppressions import suppressed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Copy:
    claims: list[Claim]  # one for a tracked copy; every recipient for an untracked one
    data: bytes | None = None  # None: a tracked copy, built when its turn comes


@dataclass(frozen=True, slots=True)
class _Outcome:
    copy: _Copy
    failures: dict[str, Failure]  # by address; a recipient not here was accepted
    at: float


class RelayHandler:
    def __init__(self, engine: Engine, tracker: Tracker, upstream: Upstream) -> None:
        self._engine = engine
        self._tracker = tracker
        self._upstream = upstream
        self._max_recipients = tracker.settings.relay_max_recipients
        self._running: set[asyncio.Future[str]] = set()  # kept referenced until done, even if the client left

    async def drain(self) -> None:
        """Wait for messages still being relayed (their clients may have gone)."""
        if self._running:
            await asyncio.wait(set(self._running))

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        account = session.auth_data if session.authenticated else None
        if not isinstance(account, str):  # aiosmtpd already refuses MAIL before AUTH; never rely on one check
            return "530 5.7.0 Authentication required"
        assert isinstance(envelope.original_content, bytes) and envelope.mail_from is not None
        # A client that hangs up now cancels this coroutine; the relaying goes on regardless, so what reached
        # the upstream is recorded as sent and the client's retry does not send it twice.
        relaying = asyncio.ensure_future(
            self._relay(
                account, envelope.original_content, envelope.mail_from, list(envelope.rcpt_tos),
                any(option.upper() == "SMTPUTF8" for option in envelope.mail_options),
            )
        )  # fmt: skip
        self._running.add(relaying)
        relaying.add_done_callback(self._running.discard)
        return await asyncio.shield(relaying)

    async def _relay(
        self, account: str, raw: bytes, envelope_from: str, addresses: list[str], smtputf8: bool
    ) -> str:
        submitted = parse(raw)
        key = submitted.key_for(account)
        try:
            copies, recipients = await asyncio.to_thread(self._prepare, submitted, key, account, addresses)
        except InFlight:
            return "451 4.4.0 this message is being relayed by another connection right now; try again"
        except SQLAlchemyError:
            log.exception("relay: cannot record a message")
            return "451 4.3.0 cannot record the message right now; try again later"
        outcomes = []
        for copy in copies:  # one at a time: one copy in memory, however many recipients
            data = (
                copy.data if copy.data is not None else await asyncio.to_thread(self._build, submitted, copy)
            )
            outcomes.append(await self._send(copy, data, envelope_from, smtputf8))
            del data
        try:
            await asyncio.to_thread(self._settle, key, outcomes)
        except SQLAlchemyError:  # the upstream has the copies: say so, even if the books are behind
            log.exception("relay: could not record the upstream's answer")
        failures = {rcpt: f for outcome in outcomes for rcpt, f in outcome.failures.items()}
        reply = client_reply(failures, recipients - len(failures))
        log.info(
            "%s: %d recipient(s), %d copies sent now, %s: %s",
            account, recipients, len(copies), submitted.untracked or "tracked", reply,
        )  # fmt: skip
        return reply

    def _prepare(
        self, submitted: Submitted, key: str, account: str, addresses: list[str]
    ) -> tuple[list[_Copy], int]:
        """The copies still to send (those an earlier submission sent are skipped) and how many recipients."""
        with self._engine.begin() as conn:
            claims = claim(
                conn, key=key, account=account, addresses=addresses,
                campaign=submitted.campaign or account, subject=submitted.subject,
                untracked=submitted.untracked, notify=submitted.notify,
            )  # fmt: skip
            copies: list[_Copy] = []
            untracked: list[Claim] = []
            for c in claims:
                if c.already_sent:
                    continue
                if c.message_id is None or submitted.html is None:
                    untracked.append(c)  # one copy for all of them: it is the same for everyone
                    continue
                urls: list[str] = []
                if submitted.track_links:  # the links are minted again, the same, when the copy is built
                    _, urls = self._tracked_html(submitted, c.message_id)
                replace_links(conn, c.message_id, urls)
                copies.append(_Copy([c]))
        if untracked:
            copies.append(_Copy(untracked, submitted.outgoing))
        return copies, len(claims)

    def _tracked_html(self, submitted: Submitted, message_id: str) -> tuple[str, list[str]]:
        assert submitted.html is not None
        if not submitted.track_links:
            return track_html(submitted.html, self._tracker.pixel_url(message_id), None)
        rewrite, hidden = self._tracker.rewriter(message_id), self._tracker.hidden_url(message_id)
        return track_html(submitted.html, self._tracker.pixel_url(message_id), rewrite, hidden)

    def _build(self, submitted: Submitted, copy: _Copy) -> bytes:
        """One recipient's copy: the message with its own pixel (and links)."""
        message_id = copy.claims[0].message_id
        assert message_id is not None
        return submitted.copy_with(self._tracked_html(submitted, message_id)[0])

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        """Addresses on the suppression list (unsubscribed, bounced, complained) are refused one by one, so
        the client tells its user and the others still get the message."""
        if len(envelope.rcpt_tos) >= self._max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self._max_recipients} a message)"
        try:  # the one address checked, recorded and handed upstream (see deadpixel.mail.addresses)
            utf8 = any(option.upper() == "SMTPUTF8" for option in envelope.mail_options)
            recipient = parse_recipient(address, utf8=utf8)
        except BadAddress as exc:
            return f"553 5.1.3 recipient refused: {exc}"
        try:
            blocked = await asyncio.to_thread(self._suppressed, recipient.key)
        except SQLAlchemyError:
            log.exception("relay: cannot read the suppression list")
            return "451 4.3.0 cannot check the recipient right now; try again later"
        if blocked:
            return (
                f"550 5.7.1 <{recipient.address}> is on the suppression list (unsubscribed, bounced or "
                "complained)"
            )
        envelope.rcpt_tos.append(recipient.address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    def _suppressed(self, key: str) -> bool:
        with self._engine.connect() as conn:
            return bool(suppressed(conn, [key]))

    async def _send(self, copy: _Copy, data: bytes, envelope_from: str, smtputf8: bool) -> _Outcome:
        addresses = [c.address for c in copy.claims]
        if len(copy.claims) == 1 and copy.claims[0].message_id is not None:  # one message: its VERP sender
            envelope_from = self._tracker.envelope_from(copy.claims[0].message_id) or envelope_from
        try:
            refused = await self._upstream.send(
                data, envelope_from=envelope_from, recipients=addresses, smtputf8=smtputf8
            )
        except DeliveryError as error:
            if error.recipients:
                failures = {
                    rcpt: Failure(code, reply.decode("utf-8", "replace"))
                    for rcpt, (code, reply) in error.recipients.items()
                }
            else:
                failures = {rcpt: Failure(error.code, error.reason) for rcpt in addresses}
            return _Outcome(copy, failures, time.time())
        failures = {
            rcpt: Failure(code, reply.decode("utf-8", "replace")) for rcpt, (code, reply) in refused.items()
        }
        return _Outcome(copy, failures, time.time())

    def _settle(self, key: str, outcomes: list[_Outcome]) -> None:
        with self._engine.begin() as conn:
            for outcome in outcomes:
                accepted = [c for c in outcome.copy.claims if c.address not in outcome.failures]
                failed = [c for c in outcome.copy.claims if c.address in outcome.failures]
                settle(conn, key, accepted, sent=True, at=outcome.at)
                settle(conn, key, failed, sent=False, at=outcome.at)
