"""The SMTP relay: accounts (shared with the dashboard later) and what was relayed to whom.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "relayed",
        sa.Column("message_key", sa.String(64), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(16), nullable=True),
        sa.Column("campaign_id", sa.Integer, nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("untracked", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("message_key", "recipient", name="pk_relayed"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_relayed_message_id_messages", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name="fk_relayed_campaign_id_campaigns", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_relayed_campaign_id", "relayed", ["campaign_id"])


def downgrade() -> None:
    op.drop_table("relayed")
    op.drop_table("users")
