"""Unsubscribing: a link id per campaign recipient, and the suppression list campaign sends respect.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.add_column(sa.Column("unsubscribe_id", sa.String(16), nullable=True))
        batch.create_unique_constraint("uq_campaign_recipients_unsubscribe_id", ["unsubscribe_id"])
    op.create_table(
        "suppressions",
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("address", name="pk_suppressions"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_suppressions_campaign_id_campaigns",
            ondelete="SET NULL",
        ),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    with op.batch_alter_table("campaign_recipients") as batch:
        batch.drop_constraint("uq_campaign_recipients_unsubscribe_id", type_="unique")
        batch.drop_column("unsubscribe_id")
