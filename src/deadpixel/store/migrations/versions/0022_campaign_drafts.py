"""Campaign drafts: a campaign written in the dashboard, kept until it is sent.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_drafts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("subject_b", sa.Text, nullable=True),
        sa.Column("ab_share", sa.Integer, nullable=True),
        sa.Column("ab_wait_minutes", sa.Integer, nullable=True),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=True),
        sa.Column("recipients_csv", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaign_drafts"),
    )


def downgrade() -> None:
    op.drop_table("campaign_drafts")
