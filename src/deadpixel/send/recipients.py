"""The recipient list: a CSV file read row by row (never whole), with the line number of every row.

The header must have an ``email`` column (any case); the other columns become template variables. An
optional ``track`` column (``no``/``false``/``0``/``off``) asks for an untracked copy.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

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


class _Uploaded:
    """A list already in memory (an upload on the dashboard), read by the same rules as a file; it is
    named as the user knows it in every problem."""

    def __init__(self, text: str, name: str) -> None:
        self._text = text.removeprefix("\ufeff")
        self._name = name

    def open(self, encoding: str = "", newline: str = "") -> TextIO:
        return io.StringIO(self._text, newline="")

    def __str__(self) -> str:
        return self._name


def _raise_field_size_limit() -> None:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long HTML snippet in a column is legitimate


def _open(path: Path | _Uploaded) -> TextIO:
    return path.open(encoding="utf-8-sig", newline="")


class RecipientList:
    def __init__(self, path: Path | _Uploaded) -> None:
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
        if "email" not in lowered:
            raise ListProblem(f"{path}: no 'email' column (columns: {', '.join(self.columns) or 'none'})")
        repeated = sorted({name for name in lowered if name and lowered.count(name) > 1})
        if repeated:
            raise ListProblem(f"{path}: column names appear twice: {', '.join(repeated)}")
        self._email = lowered.index("email")
        self._track = lowered.index("track") if "track" in lowered else None

    def count(self) -> int:
        """Rows after the header (one streaming pass), for a progress bar with an ETA."""
        with _open(self.path) as fh:
            try:
                return sum(1 for row in csv.reader(fh) if row) - 1
            except (csv.Error, UnicodeDecodeError):
                return 0  # reading the rows will report where

    @classmethod
    def from_text(cls, text: str, name: str = "the recipient list") -> RecipientList:
        """A list uploaded as text rather than named by path."""
        return cls(_Uploaded(text, name))

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
