"""Click tracking: the links of each message, recorded clicks, click counters on messages.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CLICK_COUNTERS = ["click_count", "human_click_count", "machine_click_count", "self_click_count"]


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        for name in CLICK_COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("first_click_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("last_click_at", sa.Float(), nullable=True))
    op.create_table(
        "links",
        sa.Column("message_id", sa.String(16), nullable=False),
        sa.Column("number", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("message_id", "number", name="pk_links"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_links_message_id_messages", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "clicks",
        sa.Column("id", EventId, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(16), nullable=False),
        sa.Column("link", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("user_agent", sa.Text, nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=True),
        sa.Column("client", sa.String(64), nullable=True),
        sa.Column("device", sa.String(16), nullable=True),
        sa.Column("os", sa.String(64), nullable=True),
        sa.Column("country", sa.String(2), nullable=True),
        sa.Column("region", sa.String(128), nullable=True),
        sa.Column("city", sa.String(128), nullable=True),
        sa.Column("asn", sa.BigInteger, nullable=True),
        sa.Column("network_owner", sa.String(256), nullable=True),
        sa.Column("kind", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("rule", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_clicks"),
    )
    op.create_index("ix_clicks_message_id_at", "clicks", ["message_id", "at"])
    op.create_index("ix_clicks_at", "clicks", ["at"])


def downgrade() -> None:
    op.drop_table("clicks")
    op.drop_table("links")
    with op.batch_alter_table("messages") as batch:
        for name in [*CLICK_COUNTERS, "first_click_at", "last_click_at"]:
            batch.drop_column(name)
