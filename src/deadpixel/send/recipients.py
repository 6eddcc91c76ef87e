"""The recipient list: a CSV file read row by row (never whole), with the line number of every row.

The header must have an ``email`` column (any case); the other columns become template variables. An
optional ``track`` column (``no``/``false``/``0``/``off``) asks for an untracked copy.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from deadpixel.errors import DeadpixelError

NO = frozenset({"no", "false", "0", "off", "n"})
YES = frozenset({"yes", "true", "1", "on", "y", ""})


class ListProblem(DeadpixelError):
    """The file as a whole cannot be used (no header, no email column, not UTF-8, broken CSV)."""


@dataclass(frozen=True, slots=True)
class Row:
    line: int  # where the row starts in the file, counting from 1 (the header is line 1)
    values: dict[str, str]  # column -> value, for the templates
    email: str
    track: bool


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    value: str
    reason: str


class Recipients(Protocol):
    """What a campaign sends to: a CSV list here, or the contacts with a tag (``send.tag_recipients``)."""

    def count(self) -> int: ...

    def rows(self) -> Iterator[Row | BadRow]: ...


def _open(path: Path) -> TextIO:
    return path.open(encoding="utf-8-sig", newline="")


def _raise_field_size_limit() -> None:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long HTML snippet in a column is legitimate


class RecipientList:
    def __init__(self, path: Path, email_columns: tuple[str, ...] = ("email",)) -> None:
        """``email_columns``: the names (lower case) the address's column may have; the first found counts."""
        self.path = path
        _raise_field_size_limit()
        with _open(path) as fh:
            try:
                header = next(csv.reader(fh), None)
            except UnicodeDecodeError as exc:
                raise ListProblem(f"{path}: not UTF-8 ({exc.reason}); save the list as UTF-8 CSV") from None
            except csv.Error as exc:
                raise ListProblem(f"{path}: cannot read the header: {exc}") from None
        if not header:
            raise ListProblem(f"{path}: empty file; the first line must name the columns (one is 'email')")
        self.columns = [name.strip() for name in header]
        lowered = [name.lower() for name in self.columns]
        email = next((name for name in email_columns if name in lowered), None)
        if email is None:
            wanted = " or ".join(repr(name) for name in email_columns)
            raise ListProblem(f"{path}: no {wanted} column (columns: {', '.join(self.columns) or 'none'})")
        repeated = sorted({name for name in lowered if name and lowered.count(name) > 1})
        if repeated:
            raise ListProblem(f"{path}: column names appear twice: {', '.join(repeated)}")
        self._email = lowered.index(email)
        self._track = lowered.index("track") if "track" in lowered else None

    def count(self) -> int:
        """Rows after the header (one streaming pass), for a progress bar with an ETA."""
        with _open(self.path) as fh:
            try:
                return sum(1 for row in csv.reader(fh) if row) - 1
            except (csv.Error, UnicodeDecodeError):
                return 0  # reading the rows will report where

    def rows(self) -> Iterator[Row | BadRow]:
        with _open(self.path) as fh:
            reader = csv.reader(fh)
            line = 1
            try:
                next(reader)
                line = reader.line_num + 1
                for fields in reader:
                    start, line = line, reader.line_num + 1
                    if not fields or (fields == [""] * len(fields) and len(fields) < len(self.columns)):
                        continue  # blank line
                    yield self._row(start, fields)
            except UnicodeDecodeError as exc:
                raise ListProblem(f"{self.path}, after line {line - 1}: not UTF-8 ({exc.reason})") from None
            except csv.Error as exc:
                raise ListProblem(f"{self.path}, line {line}: broken CSV: {exc}") from None

    def _row(self, line: int, fields: list[str]) -> Row | BadRow:
        email = fields[self._email].strip() if self._email < len(fields) else ""
        if len(fields) != len(self.columns):
            return BadRow(line, email, f"has {len(fields)} fields, the header has {len(self.columns)}")
        track = True
        if self._track is not None:
            flag = fields[self._track].strip().lower()
            if flag not in NO and flag not in YES:
                return BadRow(line, email, f"track must be yes or no (got {fields[self._track]!r})")
            track = flag not in NO
        values = {name: value for name, value in zip(self.columns, fields, strict=True) if name}
        values["email"] = email
        return Row(line, values, email, track)
