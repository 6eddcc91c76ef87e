"""Roles: what an account or an API token may do, from least to most.

``viewer`` reads reports and exports; ``sender`` also composes, sends and imports; ``owner`` also manages
accounts, settings, webhooks and API tokens. Ordered, so "at least sender" is a comparison. Here in the
store, below accounts and the faces, because the users and token tables keep a role in each row.
"""

from __future__ import annotations

from enum import IntEnum

from deadpixel.errors import DeadpixelError

__all__ = ["ROLE_NAMES", "Role", "RoleError", "parse_role"]


class RoleError(DeadpixelError):
    """A role name that is not one of viewer, sender, owner."""


class Role(IntEnum):
    VIEWER = 1
    SENDER = 2
    OWNER = 3

    @property
    def label(self) -> str:
        """The name people type and the store keeps: ``viewer``, ``sender``, ``owner``."""
        return self.name.lower()

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what ``needed`` may: every role may do what the ones below it may."""
        return self >= needed


ROLE_NAMES = tuple(role.label for role in Role)


def parse_role(text: str) -> Role:
    """The role named ``text`` (as stored or typed); RoleError naming the choices otherwise."""
    try:
        return Role[text.strip().upper()]
    except KeyError:
        raise RoleError(f"{text!r} is not a role: one of {', '.join(ROLE_NAMES)}") from None
