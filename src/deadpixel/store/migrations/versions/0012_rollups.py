"""Rollups of opens per campaign and quarter hour and per breakdown value, and each message's first human
open, for the dashboard's charts.

Empty at first: the first read after the upgrade (or ``deadpixel serve`` starting) folds in every open.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "open_slots",
        sa.Column("campaign_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("slot", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("opens", sa.Integer, nullable=False),
        sa.Column("human", sa.Integer, nullable=False),
        sa.Column("machine", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "slot", name="pk_open_slots"),
    )
    op.create_table(
        "open_values",
        sa.Column("campaign_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("field", sa.String(8), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        sa.Column("opens", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "field", "value", name="pk_open_values"),
    )
    op.create_table(
        "first_human_opens",
        sa.Column("message_id", sa.String(16), nullable=False),
        sa.Column("campaign_id", sa.Integer, nullable=False),
        sa.Column("wait", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("message_id", name="pk_first_human_opens"),
    )
    op.create_index("ix_first_human_opens_campaign_id_wait", "first_human_opens", ["campaign_id", "wait"])
    state = op.create_table(
        "rollup_state",
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_rollup_state"),
    )
    # One row, there from the start, so concurrent first folds lock it instead of racing to create it.
    op.bulk_insert(state, [{"name": "opens", "watermark": 0, "updated_at": 0.0}])
    op.create_table(
        "rollup_gaps",
        sa.Column("id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("noted_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_gaps"),
    )


def downgrade() -> None:
    op.drop_table("rollup_gaps")
    op.drop_table("rollup_state")
    op.drop_table("first_human_opens")
    op.drop_table("open_values")
    op.drop_table("open_slots")
