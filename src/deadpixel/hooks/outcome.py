"""What one attempt to deliver an outbox row came to: shared by webhooks and read notices."""

from __future__ import annotations

from dataclasses import dataclass

COULD_NOT_CONNECT = "could not connect"
NOT_ACCEPTED = "the receiver did not accept the delivery"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None
    error: str | None  # generic, for the outbox and the settings page
    detail: str | None = None  # what exactly went wrong, for the log and ``deadpixel webhook test``

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300
