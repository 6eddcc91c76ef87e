"""Contacts and their tags, and an index on messages by lower-cased recipient.

The index is built over every message row once (a few seconds per million messages); the pixel's writes
never change ``recipient``, so it costs them nothing.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("spelling", sa.String(320), nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("fields", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.UniqueConstraint("address", name="uq_contacts_address"),
    )
    op.create_table(
        "contact_tags",
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("tag", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(
            ["address"], ["contacts.address"], name="fk_contact_tags_address_contacts", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("address", "tag", name="pk_contact_tags"),
    )
    op.create_index("ix_contact_tags_tag", "contact_tags", ["tag"])
    op.create_index("ix_messages_recipient_key", "messages", [sa.text("lower(recipient)")])


def downgrade() -> None:
    op.drop_index("ix_messages_recipient_key", table_name="messages")
    op.drop_index("ix_contact_tags_tag", table_name="contact_tags")
    op.drop_table("contact_tags")
    op.drop_table("contacts")
