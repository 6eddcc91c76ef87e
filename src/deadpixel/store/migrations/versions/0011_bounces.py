"""Bounces and complaints: a summary on each message, and every report as it came in.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("bounce", sa.String(4), nullable=True))
        batch.add_column(sa.Column("soft_bounce_count", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("bounced_at", sa.Float, nullable=True))
        batch.add_column(sa.Column("bounce_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("complained_at", sa.Float, nullable=True))
    op.create_table(
        "bounces",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False, autoincrement=True
        ),
        sa.Column("message_id", sa.String(16), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(9), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("report_key", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bounces"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_bounces_message_id_messages", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("report_key", name="uq_bounces_report_key"),
    )
    op.create_index("ix_bounces_message_id", "bounces", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_bounces_message_id", table_name="bounces")
    op.drop_table("bounces")
    with op.batch_alter_table("messages") as batch:
        for column in ("complained_at", "bounce_reason", "bounced_at", "soft_bounce_count", "bounce"):
            batch.drop_column(column)
