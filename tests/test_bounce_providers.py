"""One sample (at least) of every mail system a sender meets, read right: each row of
tests/data/bounces/providers.tsv names a sample (under tests/data/bounces/) and the kind, failed address,
status, reason and suppress decision deadpixel must read from it. The providers' sender-side refusals
(unauthenticated mail, blocked IPs, deferrals for complaints) are among them: none may suppress."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from deadpixel.bounces.parse import Report, read_report
from deadpixel.bounces.reasons import Reason, sender_side

DATA = Path(__file__).parent / "data" / "bounces"
TABLE = DATA / "providers.tsv"
COLUMNS = ["file", "system", "kind", "address", "status", "reason", "suppress", "note"]
# Every mail system the bounce rules promise to read has a row (complaints and notices included).
SYSTEMS = {
    "Postfix", "Exim", "sendmail", "sendmail V5", "qmail", "OpenSMTPD", "Exchange", "Microsoft 365", "Gmail",
    "Google Workspace", "Yahoo", "Outlook.com", "Amazon SES", "Amazon SES (JSON)", "SendGrid", "Mailgun",
    "Zoho", "iCloud", "GMX/Web.de", "Orange", "mail.ru", "KDDI/au", "docomo", "SoftBank", "RFC 5965",
    "Outlook.com (Hotmail style)", "delivery notice (DSN)", "auto-reply (RFC 3834)",
}  # fmt: skip
ROWS = list(
    csv.DictReader(
        [line for line in TABLE.read_text().splitlines() if line and not line.startswith("#")], delimiter="\t"
    )
)


def _read(row: dict[str, str]) -> Report:
    return read_report((DATA / row["file"]).read_bytes())


def test_the_table_is_well_formed_and_names_every_provider_sample() -> None:
    assert ROWS and list(ROWS[0]) == COLUMNS
    files = [row["file"] for row in ROWS]
    assert len(files) == len(set(files))
    assert {f for f in files if f.startswith("providers/")} == {
        f"providers/{p.name}" for p in (DATA / "providers").glob("*.eml")
    }
    for row in ROWS:
        assert (DATA / row["file"]).is_file(), row["file"]
        if row["kind"] == "bounce":
            assert row["reason"] in {str(r) for r in Reason}, row["file"]
            assert row["suppress"] in ("yes", "no"), row["file"]
        else:
            assert not (row["status"] or row["reason"] or row["suppress"]), row["file"]


def test_every_mail_system_has_a_sample() -> None:
    assert {row["system"] for row in ROWS} >= SYSTEMS


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_a_provider_sample_reads_as_the_table_says(row: dict[str, str]) -> None:
    report = _read(row)
    assert report.kind == row["kind"], report.note
    if row["kind"] != "bounce":
        assert not report.failures
        assert report.recipients == ((row["address"],) if row["address"] else ())
        return
    assert len(report.failures) == 1, report
    failure = report.failures[0]
    got = (
        row["address"] in (failure.recipient, failure.original_recipient),
        failure.status,
        str(failure.reason),
        "yes" if failure.suppress else "no",
    )
    assert got == (True, row["status"], row["reason"], row["suppress"]), failure


def test_no_sender_side_refusal_of_a_provider_suppresses() -> None:
    sender_side_rows = [row for row in ROWS if row["reason"] and sender_side(Reason(row["reason"]))]
    assert len(sender_side_rows) >= 10
    for row in sender_side_rows:
        assert not any(f.suppress for f in _read(row).failures), row["file"]
