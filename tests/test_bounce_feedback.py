"""Complaints, delivery notices and auto-replies (tests/data/bounces/feedback/, written in the formats
Yahoo, AOL, Comcast, Outlook.com, Amazon SES and common mail programs use) read as what they are: never a
bounce. The expected kind, feedback type and address of each are in tests/data/bounces/feedback.tsv."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from deadpixel.bounces.parse import read_report

DATA = Path(__file__).parent / "data" / "bounces"
SAMPLES = DATA / "feedback"
ROWS = list(
    csv.DictReader(
        [line for line in (DATA / "feedback.tsv").read_text().splitlines() if line and line[0] != "#"],
        delimiter="\t",
    )
)


def test_the_table_names_every_sample_once() -> None:
    files = [row["file"] for row in ROWS]
    assert len(files) == len(set(files))
    assert set(files) == {p.name for p in SAMPLES.iterdir()}


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_a_complaint_or_notice_reads_as_its_kind(row: dict[str, str]) -> None:
    report = read_report((SAMPLES / row["file"]).read_bytes())
    assert (report.kind, report.feedback_type or "") == (row["kind"], row["feedback_type"]), report.note
    assert not report.failures
    if row["address"]:
        assert report.recipients == (row["address"],)
