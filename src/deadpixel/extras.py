"""Optional extras: when one is missing, say which, in one line with the command that installs it.

Every other third-party import is a runtime dependency in ``pyproject.toml``; an import that only an extra
provides lives here, behind ``try``/``except ImportError``, so its absence is a message, never a traceback.
"""

from __future__ import annotations

from deadpixel.errors import DeadpixelError


class MissingExtra(DeadpixelError):
    """A feature was asked for whose extra is not installed; the message names the pip command."""

    def __init__(self, extra: str, feature: str, reason: str) -> None:
        super().__init__(f"{feature} needs {reason}; install it with: pip install 'deadpixel[{extra}]'")
        self.extra = extra


def require_postgres() -> None:
    """Check that the PostgreSQL driver (the ``postgres`` extra) imports, before any engine is built."""
    try:
        import psycopg  # noqa: F401  (imported to prove it is there; SQLAlchemy loads it itself)
    except ImportError as exc:
        raise MissingExtra("postgres", "PostgreSQL", f"the psycopg driver ({exc})") from None
