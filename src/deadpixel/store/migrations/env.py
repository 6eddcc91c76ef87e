"""Alembic environment: deadpixel always hands it an open connection (see deadpixel.store.migrate)."""

from alembic import context

from deadpixel.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
