"""What every check is given: the settings, the timeout, and connections shared between checks."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from deadpixel.config import Settings
from deadpixel.doctor.probe import Probe

if TYPE_CHECKING:
    from sqlalchemy import Engine

DEFAULT_TIMEOUT = 5.0  # seconds for each network step: long enough for a slow link, short for a dead one


class Context:
    def __init__(
        self,
        settings: Settings,
        timeout: float = DEFAULT_TIMEOUT,
        nameservers: list[tuple[str, int]] | None = None,
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        self.nameservers = nameservers  # None: the system's resolver configuration
        self._engine: Engine | None = None

    @cached_property
    def probe(self) -> Probe:
        return Probe(self.settings.base_url, self.timeout)

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite file of the store, or None on PostgreSQL."""
        from sqlalchemy.engine import make_url

        url = make_url(self.settings.database_url)
        if url.get_backend_name() != "sqlite":
            return None
        return Path(url.database or "")

    def engine(self) -> Engine:
        """An engine that never creates or migrates anything, and gives up on a dead server quickly."""
        if self._engine is None:
            from sqlalchemy import create_engine

            from deadpixel.store.db import normalise_url

            url = normalise_url(self.settings.database_url)
            if self.sqlite_path is not None:
                self._engine = create_engine(url, connect_args={"timeout": self.timeout})
            else:
                self._engine = create_engine(url, connect_args={"connect_timeout": max(1, int(self.timeout))})
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
