"""Campaigns the server sends: the stored campaign and its send job, its recipient rows, its problems.

New tables only; nothing existing is rewritten.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.Integer, nullable=False, server_default="0")


def upgrade() -> None:
    op.create_table(
        "campaign_jobs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("due_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("options", sa.Text, nullable=False),
        _counter("total"),
        _counter("sent"),
        _counter("failed"),
        _counter("skipped"),
        _counter("remaining"),
        sa.Column("lease_owner", sa.String(32), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_jobs"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_jobs_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_campaign_jobs_state_due_at", "campaign_jobs", ["state", "due_at"])
    op.create_index("ix_campaign_jobs_campaign_id", "campaign_jobs", ["campaign_id"])
    op.create_table(
        "campaign_job_rows",
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("line", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.Column("track", sa.Boolean, nullable=False),
        sa.Column("due_at", sa.Float, nullable=True),
        sa.Column("problem", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("job_id", "line", name="pk_campaign_job_rows"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["campaign_jobs.id"],
            name="fk_campaign_job_rows_job_id_campaign_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "campaign_job_problems",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_job_problems"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["campaign_jobs.id"],
            name="fk_campaign_job_problems_job_id_campaign_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_campaign_job_problems_job_id_line", "campaign_job_problems", ["job_id", "line"])


def downgrade() -> None:
    op.drop_index("ix_campaign_job_problems_job_id_line", "campaign_job_problems")
    op.drop_table("campaign_job_problems")
    op.drop_table("campaign_job_rows")
    op.drop_index("ix_campaign_jobs_campaign_id", "campaign_jobs")
    op.drop_index("ix_campaign_jobs_state_due_at", "campaign_jobs")
    op.drop_table("campaign_jobs")
