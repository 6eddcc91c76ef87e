"""Each message's opens as a chain (``opens.prev_id`` from ``messages.last_open_id``) instead of an index on
``opens.message_id``: the index took an insert at a random place for every open, the chain takes none
(the message's row is rewritten by the counters anyway).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("opens", sa.Column("prev_id", EventId, nullable=True))
    op.add_column("messages", sa.Column("last_open_id", sa.BigInteger, nullable=True))
    # Link the opens already stored, while the old index still helps.
    op.execute(
        "UPDATE opens SET prev_id = chain.prev FROM ("
        " SELECT id, lag(id) OVER (PARTITION BY message_id ORDER BY id) AS prev FROM opens"
        ") AS chain WHERE opens.id = chain.id AND chain.prev IS NOT NULL"
    )
    op.execute(
        "UPDATE messages SET last_open_id = newest.id FROM ("
        " SELECT message_id, max(id) AS id FROM opens GROUP BY message_id"
        ") AS newest WHERE messages.id = newest.message_id"
    )
    op.drop_index("ix_opens_message_id_at", table_name="opens")


def downgrade() -> None:
    op.create_index("ix_opens_message_id_at", "opens", ["message_id", "at"])
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("last_open_id")
    with op.batch_alter_table("opens") as batch:
        batch.drop_column("prev_id")
