"""Core tables: campaigns, messages with open counters, opens.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.UniqueConstraint("name", name="uq_campaigns_name"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=True),
        sa.Column("recipient", sa.String(320), nullable=True),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=True),
        sa.Column("open_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("first_open_at", sa.Float, nullable=True),
        sa.Column("last_open_at", sa.Float, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_messages_campaign_id_campaigns",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_messages_campaign_id", "messages", ["campaign_id"])
    op.create_index("ix_messages_recipient", "messages", ["recipient"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_table(
        "opens",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(16), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.Text, nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_opens"),
    )
    op.create_index("ix_opens_message_id_at", "opens", ["message_id", "at"])
    op.create_index("ix_opens_at", "opens", ["at"])


def downgrade() -> None:
    op.drop_table("opens")
    op.drop_table("messages")
    op.drop_table("campaigns")
