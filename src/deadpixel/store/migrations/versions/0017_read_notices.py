"""Read notices: a per-message and per-campaign notify mode, the first read's marker, notice rows in the
webhook outbox, and the notify targets set on the dashboard.

Columns are added with defaults (no table rewrite on PostgreSQL 11+, an ALTER TABLE ADD on SQLite): instant
on a million opens, since no opens row changes.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("notify", sa.Integer, nullable=False, server_default="0"))
    op.add_column("messages", sa.Column("read_notice_at", sa.Float, nullable=True))
    op.add_column("campaigns", sa.Column("notify", sa.Integer, nullable=False, server_default="0"))
    op.add_column("campaigns", sa.Column("digest_through", sa.Float, nullable=True))
    op.add_column("webhook_deliveries", sa.Column("target", sa.String(8), nullable=True))
    op.create_table(
        "notify_settings",
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_notify_settings"),
    )


def downgrade() -> None:
    op.drop_table("notify_settings")
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_column("target")
    with op.batch_alter_table("campaigns") as batch:
        batch.drop_column("digest_through")
        batch.drop_column("notify")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("read_notice_at")
        batch.drop_column("notify")
