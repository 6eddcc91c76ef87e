"""A/B tests: a variant label per message, each test's settings and variants, the recipients waiting for the
winner, and the HTML each campaign (and variant) was sent with, once, for the dashboard's click map.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _campaign(table: str) -> sa.Column[int]:
    return sa.Column(
        "campaign_id",
        sa.Integer,
        sa.ForeignKey("campaigns.id", name=f"fk_{table}_campaign_id_campaigns", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    op.add_column("messages", sa.Column("variant", sa.String(16), nullable=True))
    op.create_table(
        "ab_tests",
        _campaign("ab_tests"),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("test_share", sa.Float, nullable=False),
        sa.Column("seed", sa.String(32), nullable=False),
        sa.Column("sender", sa.Text, nullable=False),
        sa.Column("text_template", sa.Text, nullable=True),
        sa.Column("utm_source", sa.String(64), nullable=True),
        sa.Column("pick_after", sa.Float, nullable=True),
        sa.Column("decide_at", sa.Float, nullable=True),
        sa.Column("winner", sa.String(16), nullable=True),
        sa.Column("winner_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_ab_tests"),
    )
    op.create_table(
        "ab_variants",
        _campaign("ab_variants"),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "label", name="pk_ab_variants"),
    )
    op.create_table(
        "ab_waiting",
        _campaign("ab_waiting"),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("fields", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "address", name="pk_ab_waiting"),
    )
    op.create_table(
        "sent_html",
        _campaign("sent_html"),
        sa.Column("variant", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(16), nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("stored_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "variant", name="pk_sent_html"),
    )


def downgrade() -> None:
    op.drop_table("sent_html")
    op.drop_table("ab_waiting")
    op.drop_table("ab_variants")
    op.drop_table("ab_tests")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("variant")
