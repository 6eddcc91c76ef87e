"""A click group that imports a command's module only when that command runs.

``deadpixel --help`` lists every command from a table of names, short help and "module:attribute" without
importing any of them; ``deadpixel report`` imports the report module and what it needs, nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import click

from deadpixel.cli.errors import one_line


class Entry(NamedTuple):
    """Where a command lives and the first paragraph of its help, as ``deadpixel --help`` shows it."""

    target: str  # "package.module:attribute"
    help: str


class LazyGroup(click.Group):
    """The root group: commands come from ``entries``; the errors a user can fix end in one clear line."""

    def __init__(self, *args: Any, entries: dict[str, Entry], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entries = entries

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.entries})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        entry = self.entries.get(cmd_name)
        return None if entry is None else load(entry.target)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table alone, shortened exactly as click shortens a command's help."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows = []
        for name in names:
            if name in self.entries:
                # A stand-in command carrying the table's help shortens it the way the real one would.
                short = click.Command(name, help=self.entries[name].help).get_short_help_str(limit)
            else:
                short = self.commands[name].get_short_help_str(limit)
            rows.append((name, short))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            line = one_line(exc)
            if line is None:
                raise
            raise click.ClickException(line) from None


def load(target: str) -> click.Command:
    """Import "module:attribute" and check that it is a click command."""
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command
