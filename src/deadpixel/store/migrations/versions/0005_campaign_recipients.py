"""Campaign recipients: what each run recorded before sending and learnt after, for resumable campaigns.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_recipients",
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(16), nullable=True),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "address", name="pk_campaign_recipients"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_recipients_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_campaign_recipients_campaign_id_status", "campaign_recipients", ["campaign_id", "status"]
    )


def downgrade() -> None:
    op.drop_table("campaign_recipients")
