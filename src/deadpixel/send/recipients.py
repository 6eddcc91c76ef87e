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


class Rows(Protocol):
    """Where a run's rows come from: a recipient list, a segment (deadpixel.send.segment_rows), a stored
    campaign's rows (deadpixel.send.stored), or an A/B test's share or rest (deadpixel.send.abtest)."""

    def rows(self) -> Iterator[Row | BadRow]: ...


class RowSource(Rows, Protocol):
    """A campaign's whole recipient list, counted first for the progress bar: this CSV, a segment, or the
    contacts with a tag (deadpixel.send.tag_recipients)."""

    def count(self) -> int: ...


def _open(path: Path) -> TextIO:
    return path.open(encoding="utf-8-sig", newline="")


def _raise_field_size_limit() -> None:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long HTML snippet in a column is legitimate


class RecipientList:
    def __init__(
        self, path: Path, text: str | None = None, email_columns: tuple[str, ...] = ("email",)
    ) -> None:
        """The list in the file ``path``; or, given ``text``, the CSV in it (``path`` then names it).
        ``email_columns``: the names (lower case) the address's column may have; the first found counts."""
        self.path = path
        self._text = text
        _raise_field_size_limit()
        with self._open() as fh:
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

    @classmethod
    def from_text(cls, text: str, name: str = "the CSV") -> RecipientList:
        return cls(Path(name), text)

    def _open(self) -> TextIO:
        return (
            _open(self.path)
            if self._text is None
            else io.StringIO(self._text.removeprefix("\ufeff"), newline="")
        )

    def count(self) -> int:
        """Rows after the header (one streaming pass), for a progress bar with an ETA."""
        with self._open() as fh:
            try:
                return sum(1 for row in csv.reader(fh) if row) - 1
            except (csv.Error, UnicodeDecodeError):
                return 0  # reading the rows will report where

    def rows(self) -> Iterator[Row | BadRow]:
        with self._open() as fh:
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
