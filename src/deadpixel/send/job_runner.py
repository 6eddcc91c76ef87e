"""The server's side of stored campaigns: take a due send under a lease and send it with ``CampaignRunner``.

``CampaignJobs.run_due`` is one of the server's due-work functions (``deadpixel.server.due``): it takes the
first due job it can claim and sends it to the end, in the calling thread. Sending is ``CampaignRunner``'s,
exactly as ``campaign send`` does it on the command line, so the ledger's claims hold here too: a server
killed mid-send leaves rows ``sending`` that the next run reports as uncertain and never sends twice.

While the runner sends, a watcher thread renews the lease and writes progress and problems every
``heartbeat`` seconds; when it finds the job paused or cancelled (or its lease taken), it stops the runner,
which finishes the messages in hand and records the rest as never attempted: a resume sends those.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Engine

from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.mail.utm import Utm
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.campaign import CampaignRunner, Problem, Summary
from deadpixel.send.recipients import Rows
from deadpixel.send.segment_rows import SegmentRecipients
from deadpixel.send.smtp_config import smtp_settings
from deadpixel.send.stored import StoredRecipients, build_spec
from deadpixel.send.tracked import Tracker
from deadpixel.store import campaign_jobs as jobs

log = logging.getLogger(__name__)

LEASE = 30.0  # seconds a claimed job stays this server's without a renewal
HEARTBEAT = 0.25  # seconds between the watcher's looks: a pause takes effect within about this
SERVER_STOPPING = "the server is stopping"


@dataclass
class _JobReporter:
    """Collects the runner's problems for the watcher to store (the runner calls it from one thread)."""

    pending: list[jobs.JobProblem] = field(default_factory=list)
    kept: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, problem: Problem) -> None:
        with self.lock:
            if self.kept < jobs.MAX_PROBLEMS:
                self.kept += 1
                self.pending.append(
                    jobs.JobProblem(problem.line, problem.value, problem.kind, problem.reason)
                )

    def advance(self, rows: int) -> None:
        pass

    def take(self) -> list[jobs.JobProblem]:
        with self.lock:
            taken, self.pending = self.pending, []
        return taken


def progress(summary: Summary, total: int) -> jobs.Progress:
    """A run's counts as a job shows them: rows sent (now or by an earlier run), failed, skipped (invalid,
    duplicate, suppressed, uncertain, busy) and left."""
    s = summary
    sent = s.sent + s.already_sent
    skipped = s.invalid + s.duplicates + s.suppressed + s.uncertain + s.busy
    return jobs.Progress(sent, s.failed, skipped, max(0, total - sent - s.failed - skipped))


class CampaignJobs:
    """Due work: send the stored campaigns that are due, one at a time in this process."""

    name = "campaign sends"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        signer: TokenSigner,
        *,
        lease: float = LEASE,
        heartbeat: float = HEARTBEAT,
        reads: Engine | None = None,
    ) -> None:
        """``engine`` writes (on SQLite, one that takes the write lock up front); ``reads``, if given, serves
        the look for due jobs every second, so that an idle look never takes SQLite's write lock."""
        self.settings = settings
        self.engine = engine
        self.reads = reads or engine
        self.signer = signer
        self.owner = uuid.uuid4().hex
        self.lease = lease
        self.heartbeat = heartbeat
        self._stopping = threading.Event()
        self._runner: CampaignRunner | None = None
        self._lock = threading.Lock()

    def run_due(self, now: float | None = None) -> bool:
        """Send one due job if there is one this server can claim; True if it sent one. ``now``: the clock
        that says what is due (the real one unless given, as tests give it)."""
        if self._stopping.is_set():
            return False
        with self.reads.connect() as conn:
            candidates = jobs.due(conn, time.time() if now is None else now)
        for job_id in candidates:
            with self.engine.begin() as conn:
                won = jobs.claim(conn, job_id, self.owner, self.lease, time.time() if now is None else now)
            if won:
                self._send(job_id, time.time() if now is None else now)
                return True
        return False

    def stop(self) -> None:
        """The server is stopping: the job in hand stops after the messages in flight and is due again."""
        self._stopping.set()
        with self._lock:
            if self._runner is not None:
                self._runner.stop(SERVER_STOPPING)

    def _send(self, job_id: int, now: float) -> None:
        started = time.time()
        with self.engine.begin() as conn:
            job = jobs.get(conn, job_id)
            content = jobs.content(conn, job_id)
            jobs.clear_problems(conn, job_id)
        assert job is not None
        empty = jobs.Progress(0, 0, 0, job.total)
        try:
            spec = build_spec(self.settings, self.signer, job.campaign, content)
            smtp = smtp_settings(self.settings)
            recipients, job = self._recipients(job, content, now)
        except DeadpixelError as exc:  # a setting missing: paused with the reason, resumed once fixed
            with self.engine.begin() as conn:
                jobs.release(conn, job_id, self.owner, empty, state=jobs.PAUSED, note=exc.one_line())
            return
        source = content.options.get("utm_source")
        tracker = Tracker(self.settings, self.signer, Utm(job.campaign, source) if source else None)
        reporter = _JobReporter()
        runner = CampaignRunner(self.settings, self.engine, smtp, spec, tracker, reporter)
        with self._lock:
            self._runner = runner
        if self._stopping.is_set():
            runner.stop(SERVER_STOPPING)
        done = threading.Event()
        watcher = threading.Thread(
            target=self._watch,
            args=(job, runner, reporter, done),
            name="deadpixel-campaign-watch",
            daemon=True,
        )
        watcher.start()
        log.info("campaign %r: sending (send %d, %d rows)", job.campaign, job_id, job.total)
        try:
            summary = runner.run(recipients)
        finally:
            done.set()
            watcher.join()
            with self._lock:
                self._runner = None
        self._finish(job, summary, reporter, started, now)

    def _recipients(self, job: jobs.Job, content: jobs.Content, now: float) -> tuple[Rows, jobs.Job]:
        """The stored rows due by now; or, for a follow-up to a segment, the segment's addresses as of now
        (so that someone who opened since it was scheduled is left out), with the job's total set to them."""
        segment = content.options.get("segment")
        if segment is None:
            return StoredRecipients(self.engine, job.id, now), job
        found = SegmentRecipients(self.reads, str(segment))
        with self.engine.begin() as conn:
            jobs.set_total(conn, job.id, found.count())
        return found, dataclasses.replace(job, total=found.count())

    def _watch(
        self, job: jobs.Job, runner: CampaignRunner, reporter: _JobReporter, done: threading.Event
    ) -> None:
        while not done.wait(self.heartbeat):
            try:
                with self.engine.begin() as conn:
                    jobs.add_problems(conn, job.id, reporter.take())
                    state = jobs.renew(
                        conn, job.id, self.owner, self.lease, progress(runner.summary, job.total)
                    )
            except Exception:
                log.warning(
                    "campaign %r: could not record progress; trying again", job.campaign, exc_info=True
                )
                continue
            if state is None:
                runner.stop("another server took the send over")
            elif state != jobs.SENDING:
                runner.stop(state)

    def _finish(
        self, job: jobs.Job, summary: Summary, reporter: _JobReporter, started: float, now: float
    ) -> None:
        """Let go of the job: done, due again (rows due later, the server stopping) or paused with why."""
        final = progress(summary, job.total)
        due_at: float | None = None
        note: str | None = None
        with self.engine.begin() as conn:
            jobs.add_problems(conn, job.id, reporter.take())
            later = jobs.next_row_due(conn, job.id, now)
            if summary.stopped == SERVER_STOPPING:
                state, due_at = jobs.SCHEDULED, time.time()
            elif summary.stopped is not None:
                state, note = jobs.PAUSED, summary.stopped  # SMTP trouble (or a pause, which stays as it is)
            elif later is not None:
                state, due_at = jobs.SCHEDULED, later
            else:
                state = jobs.DONE
            jobs.release(conn, job.id, self.owner, final, state=state, due_at=due_at, note=note)
        log.info(
            "campaign %r: %s after %.1f s (%d sent, %d failed, %d skipped, %d left)",
            job.campaign, state, time.time() - started,
            final.sent, final.failed, final.skipped, final.remaining,
        )  # fmt: skip
