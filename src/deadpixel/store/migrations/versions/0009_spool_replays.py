"""Markers of spooled batches replayed into the store, so each is stored exactly once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "spool_replays",
        sa.Column("id", sa.String(80), nullable=False),
        sa.Column("replayed_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_spool_replays"),
    )


def downgrade() -> None:
    op.drop_table("spool_replays")
