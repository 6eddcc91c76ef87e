"""The root of every error deadpixel raises on purpose, so callers can catch "ours" in one clause.

A ``DeadpixelError`` says something a person can act on: its text is one line that names the problem. The
command line prints that line and exits with status 1 (``deadpixel.cli.errors``); the JSON API answers it as
a client error (``deadpixel.api.errors``). Classes keep a built-in base (``ValueError``, ``LookupError``)
where callers already catch that one.
"""

from __future__ import annotations

__all__ = ["DeadpixelError"]


class DeadpixelError(Exception):
    """An error deadpixel raised on purpose, with a message meant for the person running it."""

    def one_line(self) -> str:
        """What the command line prints for this error; a subclass may add the words that frame it."""
        return str(self)
