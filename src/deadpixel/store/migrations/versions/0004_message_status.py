"""Message status: draft, sent or failed, so that only mail the SMTP server accepted counts as sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every message stored so far is a hand-made pixel, which counts as sent.
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("status", sa.String(8), nullable=False, server_default="sent"))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("status")
