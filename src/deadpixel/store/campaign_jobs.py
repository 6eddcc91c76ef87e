"""Stored campaigns and their send jobs: content, recipient rows, state, lease, progress and problems.

A job moves draft -> scheduled -> sending -> done, and can be paused (then resumed: scheduled again) or
cancelled on the way. Every change of state is a conditional update on the state the caller expects, so a
pause and a server finishing the job cannot both win. A server takes a due job with a lease (``claim``, a
conditional update: on PostgreSQL two servers asking at once both run it, and only one sees its row
changed); it renews the lease while it sends, and a job whose lease ran out (its server died) is due again.

Bounds: MAX_ROWS rows per job, MAX_FIELDS_BYTES of template variables per row, MAX_CONTENT characters per
template; a bigger campaign is refused as a whole with a ``CampaignTooBig`` naming the bound.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from deadpixel.errors import DeadpixelError
from deadpixel.store.driver import execute_many
from deadpixel.store.schema import campaign_job_problems as problems_table
from deadpixel.store.schema import campaign_job_rows as rows_table
from deadpixel.store.schema import campaign_jobs as jobs
from deadpixel.store.schema import campaigns

DRAFT, SCHEDULED, SENDING, PAUSED, CANCELLED, DONE = (
    "draft", "scheduled", "sending", "paused", "cancelled", "done",
)  # fmt: skip
STATES = (DRAFT, SCHEDULED, SENDING, PAUSED, CANCELLED, DONE)
ACTIVE = (DRAFT, SCHEDULED, SENDING, PAUSED)  # a campaign has at most one job in these
MAX_ROWS = 100_000
MAX_FIELDS_BYTES = 16 * 1024
MAX_CONTENT = 1024 * 1024
MAX_PROBLEMS = 10_000  # kept per run; past this only the counts grow
PAGE = 500


class CampaignTooBig(DeadpixelError):
    """A stored campaign over one of the bounds above."""


class JobStateError(DeadpixelError):
    """A change the job's state does not allow (resuming a job that is done, say)."""


@dataclass(frozen=True, slots=True)
class Content:
    sender: str
    subject: str
    html: str
    text: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # notify, rate, concurrency, retries, ...


@dataclass(frozen=True, slots=True)
class StoredRow:
    line: int
    email: str
    fields: dict[str, str]
    track: bool = True
    due_at: float | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    campaign: str
    campaign_id: int
    state: str
    due_at: float | None
    created_at: float
    updated_at: float
    created_by: str
    total: int
    sent: int
    failed: int
    skipped: int
    remaining: int
    note: str | None
    problems: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "campaign": self.campaign, "state": self.state, "due_at": self.due_at,
            "created_at": self.created_at, "updated_at": self.updated_at, "created_by": self.created_by,
            "total": self.total, "sent": self.sent, "failed": self.failed, "skipped": self.skipped,
            "left": self.remaining, "problems": self.problems, "note": self.note,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Progress:
    sent: int
    failed: int
    skipped: int
    remaining: int


@dataclass(frozen=True, slots=True)
class JobProblem:
    line: int
    value: str
    kind: str
    reason: str


def check_bounds(content: Content, rows: Sequence[StoredRow]) -> None:
    """Raise CampaignTooBig for the first bound the campaign passes."""
    for what, value in (("subject", content.subject), ("HTML", content.html), ("text", content.text or "")):
        if len(value) > MAX_CONTENT:
            raise CampaignTooBig(f"the {what} template has {len(value)} characters; at most {MAX_CONTENT}")
    if len(rows) > MAX_ROWS:
        raise CampaignTooBig(f"{len(rows)} recipient rows; a stored campaign takes at most {MAX_ROWS}")


def _encoded_fields(row: StoredRow) -> str:
    encoded = json.dumps(row.fields, ensure_ascii=False, separators=(",", ":"))
    if len(encoded.encode("utf-8")) > MAX_FIELDS_BYTES:
        raise CampaignTooBig(f"row {row.line}: its fields take more than {MAX_FIELDS_BYTES} bytes")
    return encoded


def create(
    conn: Connection,
    campaign_id: int,
    content: Content,
    rows: Sequence[StoredRow],
    *,
    actor: str,
    due_at: float | None,
) -> int:
    """Store a campaign's content and rows as a new job: scheduled at ``due_at``, or a draft without one.
    Refused while the campaign has an unfinished job (cancel it first)."""
    check_bounds(content, rows)
    active = conn.execute(
        select(jobs.c.state).where(jobs.c.campaign_id == campaign_id, jobs.c.state.in_(ACTIVE))
    ).scalar()
    if active is not None:
        raise JobStateError(f"the campaign already has a {active} send; cancel it or let it finish first")
    now = time.time()
    job_id = conn.execute(
        insert(jobs)
        .values(
            campaign_id=campaign_id, state=DRAFT if due_at is None else SCHEDULED, due_at=due_at,
            created_at=now, updated_at=now, created_by=actor[:80], sender=content.sender,
            subject=content.subject, html=content.html, text=content.text,
            options=json.dumps(content.options, separators=(",", ":")), total=len(rows),
            remaining=len(rows),
        )
        .returning(jobs.c.id)
    ).scalar_one()  # fmt: skip
    stored = [
        {"job_id": job_id, "line": r.line, "email": r.email, "fields": _encoded_fields(r), "track": r.track,
         "due_at": r.due_at, "problem": r.problem}
        for r in rows
    ]  # fmt: skip
    for start in range(0, len(stored), PAGE):
        execute_many(conn, insert(rows_table), stored[start : start + PAGE])
    return int(job_id)


def _job_query() -> Any:
    count = (
        select(func.count())
        .where(problems_table.c.job_id == jobs.c.id)
        .correlate(jobs)
        .scalar_subquery()
        .label("problems")
    )
    return select(
        jobs.c.id, campaigns.c.name, jobs.c.campaign_id, jobs.c.state, jobs.c.due_at, jobs.c.created_at,
        jobs.c.updated_at, jobs.c.created_by, jobs.c.total, jobs.c.sent, jobs.c.failed, jobs.c.skipped,
        jobs.c.remaining, jobs.c.note, count,
    ).select_from(jobs.join(campaigns, campaigns.c.id == jobs.c.campaign_id))  # fmt: skip


def latest(conn: Connection, campaign: str) -> Job | None:
    """The campaign's newest job, or None when it has never had one."""
    row = conn.execute(
        _job_query().where(campaigns.c.name == campaign).order_by(jobs.c.id.desc()).limit(1)
    ).first()
    return Job(*row) if row else None


def get(conn: Connection, job_id: int) -> Job | None:
    row = conn.execute(_job_query().where(jobs.c.id == job_id)).first()
    return Job(*row) if row else None


def newest_per_campaign(conn: Connection) -> dict[str, Job]:
    """Each campaign's newest job, by campaign name (for ``campaign list``)."""
    newest = select(func.max(jobs.c.id)).group_by(jobs.c.campaign_id).scalar_subquery()
    return {row.name: Job(*row) for row in conn.execute(_job_query().where(jobs.c.id.in_(newest)))}


def content(conn: Connection, job_id: int) -> Content:
    row = conn.execute(
        select(jobs.c.sender, jobs.c.subject, jobs.c.html, jobs.c.text, jobs.c.options).where(
            jobs.c.id == job_id
        )
    ).one()
    return Content(row.sender, row.subject, row.html, row.text, json.loads(row.options))


# --- changes of state ---------------------------------------------------------------------------------------

# action -> (the states it applies to, the state it leaves)
CHANGES: dict[str, tuple[tuple[str, ...], str]] = {
    "schedule": ((DRAFT, SCHEDULED, PAUSED), SCHEDULED),
    "pause": ((SCHEDULED, SENDING), PAUSED),
    "resume": ((PAUSED,), SCHEDULED),
    "cancel": ((DRAFT, SCHEDULED, SENDING, PAUSED), CANCELLED),
}


def change(conn: Connection, job: Job, action: str, due_at: float | None = None) -> str:
    """Apply ``action`` to ``job`` as it was read; JobStateError when its state does not allow it (or changed
    meanwhile). ``due_at``: for schedule, the time; for resume, kept from before when not given."""
    allowed, new_state = CHANGES[action]
    if job.state not in allowed:
        raise JobStateError(f"the send is {job.state}: it cannot {action} ({'/'.join(allowed)} only)")
    values: dict[str, Any] = {"state": new_state, "updated_at": time.time()}
    if due_at is not None:
        values["due_at"] = due_at
    elif action == "resume" and job.due_at is None:
        values["due_at"] = time.time()
    if action != "pause":
        values["note"] = None
    changed = conn.execute(
        update(jobs).where(jobs.c.id == job.id, jobs.c.state == job.state).values(**values)
    ).rowcount
    if not changed:
        raise JobStateError("the send changed meanwhile; look at its status and try again")
    return new_state


# --- the sending server's side ------------------------------------------------------------------------------


def due(conn: Connection, now: float, limit: int = 10) -> list[int]:
    """Jobs a server may take: scheduled and due, or sending under a lease that ran out (its server died)."""
    query = (
        select(jobs.c.id)
        .where(
            or_(
                and_(jobs.c.state == SCHEDULED, jobs.c.due_at <= now),
                and_(jobs.c.state == SENDING, jobs.c.lease_until < now),
            )
        )
        .order_by(jobs.c.due_at, jobs.c.id)
        .limit(limit)
    )
    return [int(job_id) for job_id in conn.execute(query).scalars()]


def claim(conn: Connection, job_id: int, owner: str, lease: float, now: float) -> bool:
    """Take the job for ``lease`` seconds if it is still due: one conditional update, so of several servers
    asking at once exactly one gets it."""
    result = conn.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            or_(
                and_(jobs.c.state == SCHEDULED, jobs.c.due_at <= now),
                and_(jobs.c.state == SENDING, jobs.c.lease_until < now),
            ),
        )
        .values(state=SENDING, lease_owner=owner, lease_until=now + lease, updated_at=now, note=None)
    )
    return bool(result.rowcount)


def renew(conn: Connection, job_id: int, owner: str, lease: float, progress: Progress) -> str | None:
    """Extend the lease and record progress; returns the job's state, or None when the lease is no longer
    this server's. A paused or cancelled job keeps its lease until its runner lets go (``release``)."""
    now = time.time()
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
        .values(
            lease_until=now + lease, sent=progress.sent, failed=progress.failed, skipped=progress.skipped,
            remaining=progress.remaining,
        )
    )  # fmt: skip
    found = conn.execute(select(jobs.c.state, jobs.c.lease_owner).where(jobs.c.id == job_id)).first()
    if found is None or found.lease_owner != owner:
        return None
    return str(found.state)


def release(
    conn: Connection,
    job_id: int,
    owner: str,
    progress: Progress,
    *,
    state: str | None,
    due_at: float | None = None,
    note: str | None = None,
) -> None:
    """Let go of the job with its final progress. ``state``: the state it moves to if it is still sending
    (done, scheduled again, paused with a note); a pause or cancel that came meanwhile stays."""
    now = time.time()
    base = update(jobs).where(jobs.c.id == job_id, jobs.c.lease_owner == owner)
    values: dict[str, Any] = {
        "lease_owner": None, "lease_until": None, "updated_at": now, "sent": progress.sent,
        "failed": progress.failed, "skipped": progress.skipped, "remaining": progress.remaining,
    }  # fmt: skip
    if state is not None:
        moved = conn.execute(
            base.where(jobs.c.state == SENDING).values(**values, state=state, due_at=due_at, note=note)
        ).rowcount
        if moved:
            return
    conn.execute(base.values(**values))


def set_total(conn: Connection, job_id: int, total: int) -> None:
    """A follow-up's row count, known only when its segment is evaluated at the send."""
    conn.execute(update(jobs).where(jobs.c.id == job_id).values(total=total, remaining=total))


def rows_page(conn: Connection, job_id: int, now: float, after: int) -> list[StoredRow]:
    """The next PAGE of the job's rows due by ``now``, after line ``after``, in order. A page per call, so a
    reader holds no transaction open between pages (SQLite's writer engine would hold its lock)."""
    page = conn.execute(
        select(rows_table)
        .where(
            rows_table.c.job_id == job_id,
            rows_table.c.line > after,
            or_(rows_table.c.due_at.is_(None), rows_table.c.due_at <= now),
        )
        .order_by(rows_table.c.line)
        .limit(PAGE)
    ).all()
    return [
        StoredRow(row.line, row.email, json.loads(row.fields), bool(row.track), row.due_at, row.problem)
        for row in page
    ]


def next_row_due(conn: Connection, job_id: int, now: float) -> float | None:
    """The earliest due time of a row not due yet, or None when every row is."""
    return conn.execute(
        select(func.min(rows_table.c.due_at)).where(rows_table.c.job_id == job_id, rows_table.c.due_at > now)
    ).scalar()


def clear_problems(conn: Connection, job_id: int) -> None:
    conn.execute(delete(problems_table).where(problems_table.c.job_id == job_id))


def add_problems(conn: Connection, job_id: int, found: Iterable[JobProblem]) -> None:
    now = time.time()
    batch = [
        {
            "job_id": job_id,
            "line": p.line,
            "value": p.value[:998],
            "kind": p.kind,
            "reason": p.reason,
            "at": now,
        }
        for p in found
    ]
    if batch:
        execute_many(conn, insert(problems_table), batch)


def list_problems(conn: Connection, job_id: int, limit: int = MAX_PROBLEMS) -> list[JobProblem]:
    query = (
        select(problems_table.c.line, problems_table.c.value, problems_table.c.kind, problems_table.c.reason)
        .where(problems_table.c.job_id == job_id)
        .order_by(problems_table.c.line, problems_table.c.id)
        .limit(limit)
    )
    return [JobProblem(*row) for row in conn.execute(query)]
