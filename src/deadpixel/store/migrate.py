"""Schema migrations with Alembic, run by ``deadpixel db upgrade`` and automatically on first use.

Concurrent start-ups are safe: on PostgreSQL an advisory lock serialises them, on SQLite the migration runs
in a ``BEGIN IMMEDIATE`` transaction; either way the second process finds the schema current and does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from deadpixel.store.db import create_engine, is_sqlite

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest revision, kept here so the check every command makes needs no Alembic import (a quarter of a
# second); a test keeps it equal to the head of the migrations folder.
SCHEMA_REVISION = "0024"
ADVISORY_LOCK_ID = 0x6465_6164  # "dead"


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    if is_sqlite(engine):
        engine = create_engine(engine.url.render_as_string(hide_password=False), writer=True)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
        from alembic import command

        command.upgrade(_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(_config(conn), revision)


def ensure_current(engine: Engine) -> None:
    """Migrate a fresh or older store; a cheap version check when it is already current."""
    if current_revision(engine) != SCHEMA_REVISION:
        upgrade(engine)
