"""What every command shares within one invocation: the settings, loaded once, and the store.

Commands reach it with ``@pass_cli``. Nothing heavy is imported here at module level: SQLAlchemy, the
migrations and the settings parser load when a command first asks for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from deadpixel.config import Settings
    from deadpixel.mail.addresses import Recipient

F = TypeVar("F", bound=Callable[..., Any])


class Cli:
    """The object on ``click.Context.obj`` for one run of ``deadpixel``."""

    def __init__(self) -> None:
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The settings from the environment and the config file, read and checked on first use."""
        return self.load()

    def load(self, **overrides: Any) -> Settings:
        """Read the settings once, with a command's options (``--host``, ``--port``) over the environment."""
        if self._settings is None:
            from deadpixel.config import load_settings

            self._settings = load_settings(**overrides)
        elif overrides:
            raise RuntimeError("the settings were read before the command's options could apply")
        return self._settings

    @contextmanager
    def engine(self, *, writer: bool = False) -> Iterator[Engine]:
        """An engine on the store, with the data dir and its files made private first (every way in does)."""
        from deadpixel.config import ensure_data_dir
        from deadpixel.store.db import create_engine

        settings = self.settings
        ensure_data_dir(settings)
        engine = create_engine(settings.database_url, writer=writer)
        try:
            yield engine
        finally:
            engine.dispose()

    @contextmanager
    def migrated(self, *, writer: bool = False) -> Iterator[Engine]:
        """An engine on a store that is migrated to the current schema (created on first use); ``writer``: one
        that takes SQLite's write lock when a transaction begins (for a read-then-write beside a server)."""
        from deadpixel.store.migrate import ensure_current

        with self.engine(writer=writer) as engine:
            ensure_current(engine)
            yield engine

    @contextmanager
    def store(self, *, writer: bool = False) -> Iterator[Connection]:
        """A connection, in a transaction, to a store migrated to the current schema."""
        with self.migrated(writer=writer) as engine, engine.begin() as conn:
            yield conn

    def fold_rollups(self) -> None:
        """Bring the charts' rollups up to date, through an engine that takes SQLite's write lock up front."""
        from deadpixel.store import rollups

        with self.engine(writer=True) as writer:
            rollups.catch_up(writer)


pass_cli = click.make_pass_decorator(Cli, ensure=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)


def recipient_address(ctx: click.Context, param: click.Parameter, value: str) -> Recipient:
    """An address on the command line (a click callback), under the one address rule of every way in
    (``deadpixel.mail.addresses``); a refused one is a usage error naming the parameter."""
    from deadpixel.mail.addresses import BadAddress, parse_recipient

    try:
        return parse_recipient(value)
    except BadAddress as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from None
