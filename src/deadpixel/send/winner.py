"""An A/B test's winner: decided once, by a person (``campaign winner --now``) or by the server at the
test's ``decide_at`` (``WinnerSends``); either way through ``decide`` below, and sent to the waiting rest
by ``CampaignRunner``, whose ledger sends nobody twice.

When the leader is not yet 95% likely better, the server records why (shown by ``campaign winner`` and the
report) and looks again every ``RECHECK`` seconds. After ``MAX_CHECKS`` such looks (a day) the leader is
sent anyway, with the reason recorded: the rest of the list was meant to get the campaign, and a leader
that could not be told apart from the others is no worse a choice than any of them. On a tie the first
variant goes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.mail.utm import Utm
from deadpixel.reports.analytics import iso
from deadpixel.reports.variants import ab_test
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.abtest import WaitingList
from deadpixel.send.campaign import CampaignRunner, Problem, Summary
from deadpixel.send.job_runner import SERVER_STOPPING
from deadpixel.send.smtp_config import smtp_settings
from deadpixel.send.stored import build_spec
from deadpixel.send.tracked import Tracker
from deadpixel.store import abtests
from deadpixel.store.campaign_jobs import Content
from deadpixel.store.messages import campaign_id as find_campaign

log = logging.getLogger(__name__)

RECHECK = 3600.0  # seconds between the server's looks while no variant is 95% likely better
MAX_CHECKS = 24  # looks before the leader goes anyway
LEASE = 900.0  # seconds a server holds a test's check; past it (the server died) another server takes it
RETRY_SEND = 300.0  # seconds before a stopped send of the winner (SMTP trouble) is taken up again


@dataclass(frozen=True, slots=True)
class Decision:
    standing: dict[str, Any]
    test: abtests.AbTest
    winner: str | None  # the winner that stands (chosen now or before); None: none yet


def decide(
    conn: Connection, name: str, metric: str | None = None, *, choose: bool = True, anyway: bool = False
) -> Decision | None:
    """The test's standing, and its winner: the one chosen before, else (``choose``) the leader when it is
    decided (``anyway``: the leader, or the first variant on a tie, even when it is not). A winner is
    chosen once for all. None when the campaign is no A/B test; UnknownCampaign when there is none."""
    standing = ab_test(conn, name, metric)
    if standing is None:
        return None
    campaign_id = find_campaign(conn, name)
    assert campaign_id is not None
    test = abtests.load(conn, campaign_id)
    assert test is not None
    winner = test.winner
    if choose and winner is None and (standing["decided"] or anyway):
        winner = abtests.choose_winner(conn, campaign_id, standing["leader"] or test.variants[0].label)
    return Decision(standing, test, winner)


def winner_content(test: abtests.AbTest, winner: str) -> Content:
    chosen = next(v for v in test.variants if v.label == winner)
    return Content(test.sender, chosen.subject, chosen.html, test.text_template)


@dataclass
class _Logged:
    """The runner's problems, logged (the per-row outcomes are in the campaign's ledger and report)."""

    campaign: str
    problems: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, problem: Problem) -> None:
        with self.lock:
            self.problems += 1
        log.info("campaign %r winner: line %d: %s", self.campaign, problem.line, problem.reason)

    def advance(self, rows: int) -> None:
        pass


class WinnerSends:
    """Due work: at an A/B test's ``decide_at``, decide and send the winner to the waiting rest."""

    name = "A/B winners"

    def __init__(
        self, settings: Settings, engine: Engine, signer: TokenSigner, *, reads: Engine | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.reads = reads or engine
        self.signer = signer
        self._stopping = threading.Event()
        self._runner: CampaignRunner | None = None
        self._lock = threading.Lock()

    def run_due(self, now: float | None = None) -> bool:
        """Check one due test this server can claim (``now``: the clock, for tests); True if it did."""
        if self._stopping.is_set():
            return False
        now = time.time() if now is None else now
        with self.reads.connect() as conn:
            candidates = abtests.due_decisions(conn, now)
        for campaign_id, name, seen in candidates:
            with self.engine.begin() as conn:
                won = abtests.claim_decision(conn, campaign_id, seen, now + LEASE)
            if won:
                self._check(campaign_id, name, now)
                return True
        return False

    def stop(self) -> None:
        """The server is stopping: a winner's send in hand stops after the messages in flight."""
        self._stopping.set()
        with self._lock:
            if self._runner is not None:
                self._runner.stop(SERVER_STOPPING)

    def _check(self, campaign_id: int, name: str, now: float) -> None:
        with self.engine.begin() as conn:
            test = abtests.load(conn, campaign_id)
            if test is None:
                return
            found = decide(conn, name, anyway=test.decide_checks + 1 >= MAX_CHECKS)
            assert found is not None
            if found.winner is None:
                note = f"no winner at {iso(now)}: {found.standing['statement']}; looking again in an hour"
                abtests.record_check(conn, campaign_id, note, now + RECHECK)
                return
        why = found.standing["statement"]
        if not found.standing["decided"] and found.test.winner is None:
            why = f"sent without a 95% winner after {MAX_CHECKS} checks ({why})"
        summary = self._send(name, found)
        with self.engine.begin() as conn:
            if summary.stopped is not None:
                again = 0.0 if summary.stopped == SERVER_STOPPING else RETRY_SEND  # the next server goes on
                note = f"sending {found.winner} stopped: {summary.stopped}; trying again"
                abtests.record_check(conn, campaign_id, note, time.time() + again, counted=False)
            else:
                note = f"{found.winner} sent to {summary.sent} waiting at {iso(now)}: {why}"
                abtests.record_check(conn, campaign_id, note, None, counted=False)
        log.info("campaign %r: %s", name, note)

    def _send(self, name: str, found: Decision) -> Summary:
        assert found.winner is not None
        test = found.test
        try:
            spec = build_spec(self.settings, self.signer, name, winner_content(test, found.winner))
            smtp = smtp_settings(self.settings)
        except DeadpixelError as exc:
            return Summary(stopped=exc.one_line())
        utm = Utm(name, test.utm_source) if test.utm_source else None
        runner = CampaignRunner(
            self.settings, self.engine, smtp, spec, Tracker(self.settings, self.signer, utm), _Logged(name)
        )
        with self._lock:
            self._runner = runner
        try:
            return runner.run(WaitingList(self.reads, test.campaign_id))
        finally:
            with self._lock:
                self._runner = None
