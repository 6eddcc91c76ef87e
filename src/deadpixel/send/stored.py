"""Stored campaigns, as the command line and the API handle them: store, schedule, pause, resume, cancel.

One implementation for both faces: each change is made and audited (who, what) in one transaction. The
recipient rows come in already read, from whatever source (a CSV file, CSV text, JSON rows, a tag): this
module does not care where they came from. ``build_spec`` turns stored content into the ``CampaignSpec``
that ``CampaignRunner`` sends, for the command line's own sends and for the server's alike.
"""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from deadpixel.config import Settings
from deadpixel.errors import DeadpixelError
from deadpixel.reports.analytics import iso
from deadpixel.reports.exports import cell
from deadpixel.security.tokens import TokenSigner
from deadpixel.send.campaign import CampaignSpec
from deadpixel.send.merge import Templates
from deadpixel.send.recipients import BadRow, Row
from deadpixel.send.unsubscribe import unsubscribe_extras
from deadpixel.store import audit
from deadpixel.store import campaign_jobs as jobs
from deadpixel.store.messages import campaign_id as find_campaign
from deadpixel.store.suppressions import suppressed

# The options a stored campaign keeps, with their defaults (those of ``campaign send``). ``segment``: the
# recipients are this segment's as of the send (a follow-up), not stored rows; ``utm_source``: --utm's.
OPTIONS: dict[str, Any] = {
    "notify": None, "rate": None, "concurrency": 4, "retries": 3, "backoff": 1.0, "retry_uncertain": False,
    "segment": None, "utm_source": None,
}  # fmt: skip


class NoSuchSend(DeadpixelError, LookupError):
    """A campaign with no stored send."""


def build_spec(settings: Settings, signer: TokenSigner, name: str, content: jobs.Content) -> CampaignSpec:
    """The ``CampaignSpec`` of stored (or command-line) content: templates compiled, unsubscribe headers and
    the suppression list on, as every campaign send has them."""
    options = {**OPTIONS, **content.options}
    return CampaignSpec(
        name=name, sender=content.sender, templates=Templates(content.subject, content.html, content.text),
        rate=options["rate"], concurrency=int(options["concurrency"]), retries=int(options["retries"]),
        backoff=float(options["backoff"]), retry_uncertain=bool(options["retry_uncertain"]),
        extras=functools.partial(unsubscribe_extras, settings, signer), suppressed=suppressed,
        notify=options["notify"],
    )  # fmt: skip


def stored_rows(read: Iterable[Row | BadRow]) -> list[jobs.StoredRow]:
    """Rows as a recipient list yields them, to store; refused past MAX_ROWS without reading further."""
    found: list[jobs.StoredRow] = []
    for row in read:
        if len(found) >= jobs.MAX_ROWS:
            raise jobs.CampaignTooBig(f"more than {jobs.MAX_ROWS} recipient rows; split the list")
        if isinstance(row, BadRow):
            found.append(jobs.StoredRow(row.line, row.value, {}, problem=row.reason))
        else:
            found.append(jobs.StoredRow(row.line, row.email, dict(row.values), row.track))
    return found


@dataclass
class StoredRecipients:
    """A job's rows as ``CampaignRunner`` reads a recipient list: the rows due by ``now``, in order."""

    engine: Engine
    job_id: int
    now: float

    def rows(self) -> Iterator[Row | BadRow]:
        after = -1
        while True:
            with self.engine.begin() as conn:
                page = jobs.rows_page(conn, self.job_id, self.now, after)
            if not page:
                return
            for row in page:
                if row.problem is not None:
                    yield BadRow(row.line, row.email, row.problem)
                else:
                    yield Row(row.line, {**row.fields, "email": row.email}, row.email, row.track)
            after = page[-1].line


def store(
    conn: Connection,
    name: str,
    content: jobs.Content,
    rows: list[jobs.StoredRow],
    *,
    actor: str,
    due_at: float | None,
) -> jobs.Job:
    """Store a campaign (a draft when ``due_at`` is None, else scheduled then), audited."""
    Templates(content.subject, content.html, content.text)  # a template that cannot compile is refused now
    unknown = set(content.options) - set(OPTIONS)
    if unknown:
        raise DeadpixelError(f"unknown options: {', '.join(sorted(unknown))}")
    cid = find_campaign(conn, name, create=True)
    assert cid is not None
    job_id = jobs.create(conn, cid, content, rows, actor=actor, due_at=due_at)
    action = "campaign.store" if due_at is None else "campaign.schedule"
    audit.record(conn, actor, action, f"{name} ({len(rows)} rows){_at(due_at)}")
    found = jobs.get(conn, job_id)
    assert found is not None
    return found


def _at(due_at: float | None) -> str:
    if due_at is None:
        return ""
    return " at " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due_at))


def current(conn: Connection, name: str) -> jobs.Job:
    found = jobs.latest(conn, name)
    if found is None:
        raise NoSuchSend(f"campaign {name!r} has no stored send (campaign send --at/--after stores one)")
    return found


def act(conn: Connection, name: str, action: str, *, actor: str, due_at: float | None = None) -> jobs.Job:
    """``send`` (now), ``schedule``, ``pause``, ``resume`` or ``cancel`` the campaign's send, audited."""
    job = current(conn, name)
    if action == "send":
        jobs.change(conn, job, "schedule", time.time())
    else:
        jobs.change(conn, job, action, due_at)
    audit.record(conn, actor, f"campaign.{action}", f"{name}{_at(due_at) if action == 'schedule' else ''}")
    changed = jobs.get(conn, job.id)
    assert changed is not None
    return changed


def status_view(job: jobs.Job) -> dict[str, Any]:
    """A send's state and progress as ``campaign status --json`` and the API show it (times ISO 8601, UTC)."""
    view = job.as_dict()
    for name in ("due_at", "created_at", "updated_at"):
        view[name] = iso(view[name])
    return view


PROBLEM_COLUMNS = ("line", "value", "kind", "reason")


def problems_csv(found: list[dict[str, Any]]) -> str:
    """The problems as CSV (the exports' quoting, formula-looking cells defused)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(PROBLEM_COLUMNS)
    for problem in found:
        writer.writerow([cell(problem[column]) for column in PROBLEM_COLUMNS])
    return out.getvalue()


def problems(conn: Connection, name: str) -> list[dict[str, Any]]:
    job = current(conn, name)
    return [
        {"line": p.line, "value": p.value, "kind": p.kind, "reason": p.reason}
        for p in jobs.list_problems(conn, job.id)
    ]
