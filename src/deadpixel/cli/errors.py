"""The one place where deadpixel's own errors become one line and exit status 1.

Every error deadpixel raises on purpose derives from ``deadpixel.errors.DeadpixelError`` and says what to fix
(``one_line``); anything else is a bug, and keeps its traceback. The root class is looked up only if its
module is already imported: an error of a class that never loaded cannot have been raised, so ``deadpixel
--help`` imports nothing more for this check.
"""

from __future__ import annotations

import sys


def one_line(exc: BaseException) -> str | None:
    """The line to print for ``exc``, or None when it is not an error the user can fix."""
    errors = sys.modules.get("deadpixel.errors")
    if errors is None or not isinstance(exc, errors.DeadpixelError):
        return None
    line: str = exc.one_line()
    return line
