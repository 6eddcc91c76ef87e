"""What a check found: a status, a sentence, and the fix when there is something to do."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail", "skip"]
_RANK: dict[Status, int] = {"skip": 0, "ok": 1, "warn": 2, "fail": 3}


@dataclass(frozen=True, slots=True)
class Finding:
    """What one check returns; the runner adds the check's name."""

    status: Status
    message: str
    fix: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    status: Status
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "status": self.status, "message": self.message, "fix": self.fix}


def worst(statuses: Iterable[Status]) -> Status:
    """The most serious of several statuses (skip < ok < warn < fail)."""
    return max(statuses, key=_RANK.__getitem__, default="skip")


def ok(message: str) -> Finding:
    return Finding("ok", message)


def warn(message: str, fix: str) -> Finding:
    return Finding("warn", message, fix)


def fail(message: str, fix: str) -> Finding:
    return Finding("fail", message, fix)


def skip(message: str) -> Finding:
    return Finding("skip", message)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: drivers' messages run over several, with hints and SQL."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig if orig is not None else exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
