"""The one place where the project's errors a user can fix become one line and exit status 1."""

from __future__ import annotations

import sys
from collections.abc import Callable

# (module, exception class, message). A module is looked up only if it is already imported: an exception
# of a class whose module never loaded cannot have been raised, so this check costs no import.
_ONE_LINE: tuple[tuple[str, str, Callable[[BaseException], str]], ...] = (
    ("deadpixel.config", "ConfigError", lambda exc: f"bad setting: {exc}"),
    ("deadpixel.keys", "KeyFileError", str),
    ("deadpixel.analytics", "UnknownCampaign", lambda exc: f"no campaign named {exc.args[0]!r}"),
)


def one_line(exc: BaseException) -> str | None:
    """The line to print for ``exc``, or None when it is not an error the user can fix."""
    for module_name, class_name, say in _ONE_LINE:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return say(exc)
    return None
