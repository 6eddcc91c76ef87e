"""``deadpixel campaign send``: a mail merge that can be stopped and run again without sending anyone two.

The main thread streams the CSV in chunks. For each chunk, in one transaction, it claims every recipient
(status ``sending`` in ``campaign_recipients``), stores the message and its links, and composes the mail;
only after the commit are the messages handed to the sending workers. Workers (one SMTP connection each)
send under a shared rate limit and report back; the main thread records those outcomes in batches.

A recipient whose last state is ``sent`` is skipped by later runs. ``failed`` and ``pending`` (recorded,
never attempted) are sent again. ``sending`` (a run died while it was in flight) and ``uncertain`` (the
connection broke after the whole message was transmitted) may have been delivered, so they are reported
and left alone unless ``--retry-uncertain`` is given: a missed mail can be sent later, a duplicate cannot
be taken back. For the same reason campaign sends never retry an uncertain failure by themselves.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy import Connection, Engine, insert

from deadpixel.config import Settings
from deadpixel.mail.addresses import BadAddress, Recipient, parse_recipient
from deadpixel.mail.compose import Composed
from deadpixel.mail.smtp import DeliveryError, SMTPSender, SMTPSettings, send_with_retries
from deadpixel.security.tokens import new_message_id
from deadpixel.send.merge import TemplateProblem, Templates
from deadpixel.send.ratelimit import RateLimiter
from deadpixel.send.recipients import BadRow, ListProblem, Recipients, Row
from deadpixel.send.tracked import Tracker
from deadpixel.store import campaign_recipients as state
from deadpixel.store import notices
from deadpixel.store.links import save_links
from deadpixel.store.messages import campaign_id as find_campaign
from deadpixel.store.schema import messages

log = logging.getLogger(__name__)

CHUNK = 50
_NONE = state.Known("", 0, "", None, "")
AUTH_CODES = frozenset({530, 534, 535, 538})


@dataclass(frozen=True, slots=True)
class Problem:
    line: int
    value: str
    reason: str
    kind: str  # invalid, duplicate, failed, uncertain, suppressed, busy


class Reporter(Protocol):
    def problem(self, problem: Problem) -> None: ...

    def advance(self, rows: int) -> None: ...


@dataclass
class Summary:
    rows: int = 0
    sent: int = 0
    untracked: int = 0  # of those sent
    already_sent: int = 0
    failed: int = 0
    invalid: int = 0
    duplicates: int = 0
    uncertain: int = 0
    suppressed: int = 0
    busy: int = 0  # taken by another run of the same campaign at the same time
    not_attempted: int = 0  # recorded, then the run stopped before sending them
    stopped: str | None = None  # why the run ended early

    @property
    def ok(self) -> bool:
        return not (self.failed or self.invalid or self.uncertain or self.not_attempted or self.stopped)


@dataclass
class CampaignSpec:
    name: str
    sender: str
    templates: Templates
    rate: float | None = None  # messages per second; None for no limit
    concurrency: int = 4
    retries: int = 3
    backoff: float = 1.0
    retry_uncertain: bool = False
    # Extra headers and template variables per recipient (the unsubscribe link), from its unsubscribe id.
    extras: Callable[[str], tuple[dict[str, str], dict[str, str]]] | None = None
    suppressed: Callable[[Connection, list[str]], set[str]] | None = None
    # Read notices (deadpixel.store.notices): a mode sets the campaign's; None keeps its own (off at first).
    notify: int | None = None


@dataclass
class _Job:
    key: str
    line: int
    value: str
    address: str
    message_id: str | None
    message: EmailMessage
    envelope_from: str | None  # None: the sender's own address


@dataclass
class _Draft:
    """A row that will be sent, composed but not yet stored."""

    row: Row
    recipient: Recipient
    previous: state.Known | None
    message_id: str | None
    unsubscribe_id: str
    subject: str
    composed: Composed


@dataclass
class _Result:
    job: _Job
    status: str  # sent, failed, uncertain, pending
    error: str | None = None
    at: float = field(default_factory=time.time)


def _stops_everything(error: DeliveryError) -> bool:
    """A failure that is about the server or our account, not this recipient: every next message would
    fail the same way (bad credentials, TLS trouble, sender refused, server gone after all retries)."""
    if error.recipients:
        return False
    if error.permanent:
        return not error.reason.startswith("message refused") or error.code in AUTH_CODES
    return True


class CampaignRunner:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        smtp: SMTPSettings,
        spec: CampaignSpec,
        tracker: Tracker,
        reporter: Reporter,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.smtp = smtp
        self.spec = spec
        self.tracker = tracker
        self.reporter = reporter
        self.summary = Summary()
        self._sleep = sleep
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max(spec.concurrency * 4, CHUNK))
        self._results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stop_reason: str | None = None
        self._limiter = RateLimiter(spec.rate)
        self._outstanding: dict[str, _Job] = {}
        self._unsettled: list[_Result] = []
        self._campaign_id = 0
        self._notify = notices.OFF

    # --- the main thread ------------------------------------------------------------------------------

    def run(self, recipients: Recipients) -> Summary:
        run_id = new_message_id()
        with self.engine.begin() as conn:
            cid = find_campaign(conn, self.spec.name, create=True)
            assert cid is not None
            if self.spec.notify is not None:
                notices.set_campaign_mode(conn, cid, self.spec.notify)
            self._notify = notices.campaign_mode(conn, cid)
        self._campaign_id = cid
        workers = [
            threading.Thread(target=self._work, name=f"deadpixel-send-{i}", daemon=True)
            for i in range(self.spec.concurrency)
        ]
        for worker in workers:
            worker.start()
        rows = recipients.rows()
        try:
            for chunk in _chunks(rows, CHUNK):
                if self._stop.is_set():
                    break
                for job in self._prepare(cid, run_id, chunk):
                    self._outstanding[job.key] = job
                    self._put(job)
                self._drain()
        except KeyboardInterrupt:
            self._halt("interrupted")
        except ListProblem as exc:  # the file breaks off midway: what came before is sent, the rest waits
            self._halt(str(exc))
        finally:
            self._finish(workers)
        return self.summary

    def _put(self, job: _Job) -> None:
        while True:
            try:
                self._jobs.put(job, timeout=0.2)
                return
            except queue.Full:
                self._drain()

    def _halt(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop.set()

    def _finish(self, workers: list[threading.Thread]) -> None:
        for _ in workers:
            self._jobs.put(None)
        for worker in workers:
            while worker.is_alive():
                try:
                    worker.join(0.2)
                    self._drain()
                except KeyboardInterrupt:
                    if self._stop_reason == "interrupted":
                        raise  # a second Ctrl-C: stop now; rows in flight stay "sending" (uncertain)
                    self._halt("interrupted")  # workers finish the message in hand, queued ones wait
        self._drain()
        leftover = list(self._outstanding.values())  # recorded but never handed over (stopped meanwhile)
        if leftover:
            with self.engine.begin() as conn:
                state.settle(
                    conn,
                    self._campaign_id,
                    [state.Outcome(j.key, j.message_id, "pending", None, time.time()) for j in leftover],
                )
            self.summary.not_attempted += len(leftover)
            self._outstanding.clear()
        self.summary.stopped = self._stop_reason

    def _problem(self, line: int, value: str, reason: str, kind: str) -> None:
        self.reporter.problem(Problem(line, value, reason, kind))
        self.reporter.advance(1)

    def _prepare(self, cid: int, run_id: str, chunk: list[Row | BadRow]) -> list[_Job]:
        s = self.summary
        parsed: list[tuple[Row, Recipient]] = []
        for row in chunk:
            s.rows += 1
            if isinstance(row, BadRow):
                s.invalid += 1
                self._problem(row.line, row.value, row.reason, "invalid")
                continue
            try:
                parsed.append((row, parse_recipient(row.email)))
            except BadAddress as exc:
                s.invalid += 1
                self._problem(row.line, row.email, f"invalid address: {exc}", "invalid")
        with self.engine.begin() as conn:
            seen = state.known(conn, cid, (recipient.key for _, recipient in parsed))
            blocked = (
                self.spec.suppressed(conn, [r.key for _, r in parsed]) if self.spec.suppressed else set()
            )
            drafts = [
                draft
                for row, recipient in parsed
                if (draft := self._draft(conn, cid, run_id, row, recipient, seen, blocked)) is not None
            ]
            return self._record(conn, cid, run_id, drafts, seen)

    def _draft(
        self,
        conn: Connection,
        cid: int,
        run_id: str,
        row: Row,
        recipient: Recipient,
        seen: dict[str, state.Known],
        blocked: set[str],
    ) -> _Draft | None:
        """Decide whether this row is sent and compose its mail; nothing is stored for it yet."""
        s, key = self.summary, recipient.key
        previous = seen.get(key)
        if previous is not None and previous.run_id == run_id:
            s.duplicates += 1
            self._problem(
                row.line, row.email, f"duplicate of line {previous.line}: not sent twice", "duplicate"
            )
            return None
        if key in blocked:
            s.suppressed += 1
            self._problem(
                row.line, row.email, "on the suppression list (unsubscribed, bounced or complained): skipped",
                "suppressed",
            )  # fmt: skip
            return None
        if previous is not None and previous.status == "sent":
            s.already_sent += 1
            self._met(conn, cid, run_id, row, previous, seen)
            self.reporter.advance(1)
            return None
        if previous is not None and previous.status in state.UNCERTAIN and not self.spec.retry_uncertain:
            s.uncertain += 1
            self._met(conn, cid, run_id, row, previous, seen)
            self._problem(
                row.line, row.email,
                "an earlier run may have delivered it (the connection broke after the message was sent);"
                " not sent again (use --retry-uncertain to send it anyway)", "uncertain",
            )  # fmt: skip
            return None
        message_id = new_message_id() if row.track else None
        unsubscribe_id = (previous.unsubscribe_id if previous else None) or new_message_id()
        headers, variables = self.spec.extras(unsubscribe_id) if self.spec.extras else ({}, {})
        try:
            rendered = self.spec.templates.render({**variables, **row.values})
            composed = self.tracker.compose(
                message_id, sender=self.spec.sender, to=[recipient.header], subject=rendered.subject,
                html=rendered.html, text=rendered.text, headers=headers,
            )  # fmt: skip
        except TemplateProblem as exc:
            self._refuse(conn, cid, run_id, row, key, seen, f"cannot render: {exc}")
            return None
        except ValueError as exc:  # compose() refuses a header (a line break from the data, say)
            self._refuse(conn, cid, run_id, row, key, seen, f"cannot compose: {exc}")
            return None
        # Taken now, so a later row of the same chunk with this address is a duplicate.
        seen[key] = state.Known(key, row.line, run_id, message_id, "sending", unsubscribe_id)
        return _Draft(row, recipient, previous, message_id, unsubscribe_id, rendered.subject, composed)

    def _record(
        self, conn: Connection, cid: int, run_id: str, drafts: list[_Draft], seen: dict[str, state.Known]
    ) -> list[_Job]:
        """Claim the chunk's recipients and store their messages and links: a few statements per chunk.

        New recipients are claimed with one multi-row insert; when another run took one of them meanwhile
        (the insert fails on its key), each is claimed on its own and the taken ones are skipped.
        """
        for draft in drafts:
            previous = draft.previous
            if previous is not None and previous.message_id and previous.status in state.RESENDABLE:
                state.drop_unsent_message(conn, previous.message_id)
        fresh = [d for d in drafts if d.previous is None]
        claims = [state.Claim(d.recipient.key, d.row.line, d.message_id, d.unsubscribe_id) for d in fresh]
        claimed = fresh if state.claim_new(conn, cid, run_id, claims) else []
        for draft in drafts if not claimed else [d for d in drafts if d.previous is not None]:
            if state.claim(
                conn, cid, draft.recipient.key, line=draft.row.line, run_id=run_id,
                message_id=draft.message_id, status="sending", previous=draft.previous,
                unsubscribe_id=draft.unsubscribe_id,
            ):  # fmt: skip
                claimed.append(draft)
            else:
                if draft.previous is None:
                    del seen[draft.recipient.key]
                else:
                    seen[draft.recipient.key] = draft.previous
                self.summary.busy += 1
                self._problem(
                    draft.row.line, draft.row.email, "being sent by another run right now: skipped", "busy"
                )
        tracked = [d for d in claimed if d.message_id is not None]
        if tracked:
            now = time.time()
            rows = [
                dict(id=d.message_id, campaign_id=cid, recipient=d.recipient.address, subject=d.subject,
                     created_at=now, status="draft", notify=self._notify)
                for d in tracked
            ]  # fmt: skip
            conn.execute(insert(messages), rows)
            save_links(conn, [(d.message_id, d.composed.links) for d in tracked if d.message_id])
        return [
            _Job(d.recipient.key, d.row.line, d.row.email, d.recipient.address, d.message_id,
                 d.composed.message, self.tracker.envelope_from(d.message_id))
            for d in sorted(claimed, key=lambda d: d.row.line)
        ]  # fmt: skip

    @staticmethod
    def _met(
        conn: Connection, cid: int, run_id: str, row: Row, previous: state.Known, seen: dict[str, state.Known]
    ) -> None:
        state.touch(conn, cid, previous.address, line=row.line, run_id=run_id)
        seen[previous.address] = state.Known(
            previous.address, row.line, run_id, previous.message_id, previous.status, previous.unsubscribe_id
        )

    def _refuse(
        self,
        conn: Connection,
        cid: int,
        run_id: str,
        row: Row,
        key: str,
        seen: dict[str, state.Known],
        why: str,
    ) -> None:
        """A row that cannot be sent as it is: recorded as failed (so a re-run retries it once fixed)."""
        if state.claim(
            conn, cid, key, line=row.line, run_id=run_id, message_id=None, status="failed", error=why,
            previous=seen.get(key),
        ):  # fmt: skip
            seen[key] = state.Known(
                key, row.line, run_id, None, "failed", (seen.get(key) or _NONE).unsubscribe_id
            )
        self.summary.failed += 1
        self._problem(row.line, row.email, why, "failed")

    def _drain(self) -> None:
        """Record the workers' outcomes. Results leave ``_unsettled`` only once committed, so a Ctrl-C in
        the middle loses none of them."""
        while True:
            try:
                self._unsettled.append(self._results.get_nowait())
            except queue.Empty:
                break
        if not self._unsettled:
            return
        results = self._unsettled
        outcomes = [state.Outcome(r.job.key, r.job.message_id, r.status, r.error, r.at) for r in results]
        with self.engine.begin() as conn:
            state.settle(conn, self._campaign_id, outcomes)
        self._unsettled = []
        for result in results:
            self._outstanding.pop(result.job.key, None)
        s = self.summary
        for result in results:
            job = result.job
            if result.status == "sent":
                s.sent += 1
                s.untracked += job.message_id is None
                self.reporter.advance(1)
            elif result.status == "failed":
                s.failed += 1
                self._problem(job.line, job.value, result.error or "failed", "failed")
            elif result.status == "uncertain":
                s.uncertain += 1
                self._problem(job.line, job.value, result.error or "uncertain", "uncertain")
            else:
                s.not_attempted += 1
                self.reporter.advance(1)

    # --- the sending workers --------------------------------------------------------------------------

    def _work(self) -> None:
        with SMTPSender(self.smtp) as sender:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if self._stop.is_set():
                    self._results.put(_Result(job, "pending"))
                    continue
                self._results.put(self._send(sender, job))

    def _send(self, sender: SMTPSender, job: _Job) -> _Result:
        self._limiter.acquire()
        try:
            refused = send_with_retries(
                sender, job.message, recipients=[job.address], envelope_from=job.envelope_from,
                attempts=self.spec.retries + 1,
                backoff=self.spec.backoff, retry_uncertain=False, sleep=self._interruptible_sleep,
            )  # fmt: skip
        except DeliveryError as error:
            if error.uncertain:
                reason = (
                    f"{error}; the server may have accepted it, so it is not sent again"
                    " (use --retry-uncertain to send it anyway)"
                )
                return _Result(job, "uncertain", reason)
            if _stops_everything(error):
                self._halt(f"the SMTP server does not take mail: {error}")
                if not error.permanent:
                    return _Result(job, "pending", str(error))
            return _Result(job, "failed", str(error))
        except Exception as exc:  # a bug must cost one row, not the worker and every row after it
            log.exception("sending line %d failed", job.line)
            return _Result(job, "failed", f"{type(exc).__name__}: {exc}")
        if refused:
            return _Result(job, "failed", "; ".join(f"{code} {reply!r}" for code, reply in refused.values()))
        return _Result(job, "sent")

    def _interruptible_sleep(self, seconds: float) -> None:
        """Backoff that ends early when the run is stopping."""
        self._stop.wait(seconds)


def _chunks(rows: Iterator[Row | BadRow], size: int) -> Iterator[list[Row | BadRow]]:
    while True:
        chunk = list(itertools.islice(rows, size))
        if not chunk:
            return
        yield chunk


def summary_lines(name: str, s: Summary) -> list[str]:
    lines = [f"Campaign {name!r}: {s.rows} rows read"]
    parts: Mapping[str, tuple[int, str]] = {
        "sent": (s.sent, f"{s.untracked} untracked" if s.untracked else ""),
        "already sent": (s.already_sent, "by earlier runs"),
        "failed": (s.failed, "a re-run tries these again"),
        "invalid": (s.invalid, "fix the rows and run again"),
        "duplicates": (s.duplicates, "sent once"),
        "suppressed": (s.suppressed, "unsubscribed, bounced or complained"),
        "uncertain": (s.uncertain, "may have been delivered; --retry-uncertain sends them"),
        "not attempted": (s.not_attempted, "a re-run sends these"),
        "busy": (s.busy, "another run had them"),
    }
    for label, (count, note) in parts.items():
        if count or label == "sent":
            lines.append(f"  {label:<14}{count:>7}" + (f"  ({note})" if note else ""))
    if s.stopped:
        lines.append(f"Stopped early: {s.stopped}. Run the same command again to continue.")
    return lines
