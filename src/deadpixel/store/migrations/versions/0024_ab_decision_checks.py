"""A/B tests decided by the server: why the last check did not pick a winner, and how many checks ran.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ab_tests") as batch:
        batch.add_column(sa.Column("decide_note", sa.Text, nullable=True))
        batch.add_column(sa.Column("decide_checks", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("ab_tests") as batch:
        batch.drop_column("decide_checks")
        batch.drop_column("decide_note")
