"""Account names: the one rule that user accounts (``deadpixel.accounts.users``) and API tokens share.

Here in the store, below both, so that the token table can check a name without importing the accounts'
policy module, which itself imports the store.
"""

from __future__ import annotations

import re

from deadpixel.errors import DeadpixelError

__all__ = ["NAME", "UserError", "check_name"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class UserError(DeadpixelError):
    """A name or password that cannot be used, or an account that exists (or not) when it should not."""


def check_name(name: str) -> str:
    """``name`` itself when it is a usable account or token name; UserError saying why not otherwise."""
    if not NAME.fullmatch(name):
        raise UserError(
            f"{name!r} is not a usable name: 1 to 64 letters, digits or . _ @ + -, not starting with a symbol"
        )
    return name
