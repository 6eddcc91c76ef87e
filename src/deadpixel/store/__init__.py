"""The event store: one schema for SQLite and PostgreSQL."""
