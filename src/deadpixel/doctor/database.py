"""The store answers and its schema is the one this deadpixel expects."""

from __future__ import annotations

from deadpixel.doctor.context import Context
from deadpixel.doctor.result import Finding, fail, ok, one_line

UPGRADE = "back up first (deadpixel backup DIR, or pg_dump), then run: deadpixel db upgrade"


def database(ctx: Context) -> Finding:
    """Reachable, and migrated to the newest revision this version knows (never migrates by itself)."""
    from deadpixel.store.migrate import SCHEMA_REVISION, current_revision

    path = ctx.sqlite_path
    if path is not None and not path.is_file():
        return fail(
            f"no database at {path}",
            "check DEADPIXEL_DATABASE_URL and DEADPIXEL_DATA_DIR; deadpixel serve creates the store",
        )
    kind = "SQLite" if path is not None else "PostgreSQL"
    try:
        revision = current_revision(ctx.engine())
    except Exception as exc:
        return fail(
            f"cannot read the {kind} database: {one_line(exc)}",
            "check DEADPIXEL_DATABASE_URL and that the database server runs and lets this user in",
        )
    if revision == SCHEMA_REVISION:
        return ok(f"{kind} answers, schema at revision {revision} (the newest)")
    if revision is None:
        return fail(f"the {kind} database has no deadpixel schema", "run: deadpixel db upgrade")
    if revision.isdigit() and SCHEMA_REVISION.isdigit() and int(revision) > int(SCHEMA_REVISION):
        return fail(
            f"the {kind} schema is at revision {revision}, newer than this deadpixel's {SCHEMA_REVISION}",
            "run the same deadpixel version as the servers (pip install -U deadpixel)",
        )
    return fail(
        f"the {kind} schema is at revision {revision}, behind the newest ({SCHEMA_REVISION})", UPGRADE
    )
