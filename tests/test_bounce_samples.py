"""Bounces written by real MTAs (Postfix, Exim, OpenSMTPD; tests/data/bounces/make_mta_samples.py) read as
they must be: each sample's kind, failed address, status, reason and suppress decision, from the table
tests/data/bounces/mta.tsv. A field the table marks pending is checked as an expected failure."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from deadpixel.bounces.parse import Failure, Report, read_report
from deadpixel.bounces.reasons import Reason

DATA = Path(__file__).parent / "data" / "bounces"
SAMPLES = DATA / "mta"
TABLE = DATA / "mta.tsv"
FIELDS = ("kind", "address", "status", "reason", "suppress")


@dataclass(frozen=True)
class Expected:
    file: str
    kind: str
    address: str
    status: frozenset[str]  # any of these
    reason: frozenset[str]
    suppress: bool
    pending: frozenset[str]  # fields the classification rules do not give yet


def _table() -> list[Expected]:
    lines = [line for line in TABLE.read_text().splitlines() if line and not line.startswith("#")]
    rows = []
    for row in csv.DictReader(lines, delimiter="\t"):
        pending = frozenset(p for p in row["pending"].split(",") if p)
        assert pending <= set(FIELDS), row
        assert row["suppress"] in ("yes", "no"), row
        rows.append(
            Expected(
                row["file"], row["kind"], row["address"], frozenset(row["status"].split("|")),
                frozenset(row["reason"].split("|")), row["suppress"] == "yes", pending,
            )
        )  # fmt: skip
    return rows


EXPECTED = _table()


def _cases() -> Sequence[object]:
    cases = []
    for expected in EXPECTED:
        for name in FIELDS:
            marks = (
                [pytest.mark.xfail(strict=False, reason="pending in mta.tsv: the rules do not give it yet")]
                if name in expected.pending
                else []
            )
            cases.append(pytest.param(expected, name, marks=marks, id=f"{expected.file}-{name}"))
    return cases


def _only_failure(report: Report) -> Failure:
    assert len(report.failures) == 1, report
    return report.failures[0]


def test_the_table_names_every_sample_once() -> None:
    files = [e.file for e in EXPECTED]
    assert len(files) == len(set(files))
    assert set(files) == {p.name for p in SAMPLES.glob("*.eml")}
    for expected in EXPECTED:
        assert expected.reason <= {str(r) for r in Reason}, expected.file


@pytest.mark.parametrize(("expected", "field"), _cases())
def test_a_real_mta_bounce_reads_as_expected(expected: Expected, field: str) -> None:
    report = read_report((SAMPLES / expected.file).read_bytes())
    if field == "kind":
        assert report.kind == expected.kind, report.note
        return
    failure = _only_failure(report)
    if field == "address":
        assert expected.address in (failure.recipient, failure.original_recipient)
    elif field == "status":
        assert failure.status in expected.status, failure
    elif field == "reason":
        assert str(failure.reason) in expected.reason, failure
    else:
        assert failure.suppress is expected.suppress, failure
