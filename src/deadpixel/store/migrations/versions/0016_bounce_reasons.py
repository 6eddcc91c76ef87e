"""Each bounce's reason in the vocabulary of deadpixel.bounces.reasons, and the latest one on its message.

Rows stored before this revision keep NULL: the migration does not classify (the rules live above the
store, and they change); ``deadpixel bounces reclassify`` fills them, and reports count them as
"unclassified" until then.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("bounces") as batch:
        batch.add_column(sa.Column("reason_code", sa.String(24), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("bounce_reason_code", sa.String(24), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("bounce_reason_code")
    with op.batch_alter_table("bounces") as batch:
        batch.drop_column("reason_code")
