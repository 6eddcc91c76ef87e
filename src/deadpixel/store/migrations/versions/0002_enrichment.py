"""Enrichment on opens (client, device, OS, place, network, verdict) and per-verdict counters on messages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("purpose", sa.String(32)),
    ("client", sa.String(64)),
    ("device", sa.String(16)),
    ("os", sa.String(64)),
    ("country", sa.String(2)),
    ("region", sa.String(128)),
    ("city", sa.String(128)),
    ("asn", sa.BigInteger()),
    ("network_owner", sa.String(256)),
    ("kind", sa.String(16)),
    ("reason", sa.Text()),
    ("rule", sa.String(32)),
]
MESSAGE_COUNTERS = ["human_open_count", "machine_open_count", "self_open_count"]


def upgrade() -> None:
    with op.batch_alter_table("opens") as batch:
        for name, type_ in OPEN_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("messages") as batch:
        for name in MESSAGE_COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
    # Opens recorded before verdicts existed count as unclassified until `deadpixel reclassify` runs.


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        for name in MESSAGE_COUNTERS:
            batch.drop_column(name)
    with op.batch_alter_table("opens") as batch:
        for name, _ in OPEN_COLUMNS:
            batch.drop_column(name)
