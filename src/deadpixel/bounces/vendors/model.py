"""What a free-form reader gives back, kept apart from the chain so that every reader can import it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message


@dataclass(frozen=True, slots=True)
class Found:
    """One failed recipient as a free-form bounce states it."""

    address: str  # lower-cased
    status: str | None = None  # enhanced status code, when the text gives one
    diagnostic: str | None = None  # the receiving server's reply or the mail system's sentence
    permanent: bool | None = None  # None: the text does not say


Reader = Callable[[Message], "list[Found] | None"]
