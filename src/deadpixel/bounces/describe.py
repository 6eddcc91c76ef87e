"""What ``deadpixel bounces parse`` prints: a report read from a file, as JSON or as lines of text.

Nothing here records anything or needs settings; it is the reading half of deadpixel's bounce handling,
shown so that a person can check what a given message would do.
"""

from __future__ import annotations

import sys
from typing import Any

from deadpixel.bounces.parse import Report, read_report

MAX_BYTES = 10 * 1024 * 1024  # the default of DEADPIXEL_BOUNCE_MAX_SIZE: the most the listener takes


def read_bounded(name: str) -> tuple[bytes | None, str | None]:
    """(the file's bytes, None), or (None, why it was not read); ``-`` is standard input."""
    try:
        if name == "-":
            raw = sys.stdin.buffer.read(MAX_BYTES + 1)
        else:
            with open(name, "rb") as handle:
                raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or type(exc).__name__}"
    if len(raw) > MAX_BYTES:
        return None, f"larger than {MAX_BYTES} bytes, not read"
    return raw, None


def describe(name: str, report: Report) -> dict[str, Any]:
    """The JSON object for one file. A complaint's recipients are suppressed (an opt-out as an
    unsubscribe); a delivery notice's are not."""
    recipients: list[dict[str, Any]] = [
        {
            "address": failure.recipient or failure.original_recipient,
            "status": failure.status,
            "reason": failure.reason.value,
            "suppress": failure.suppress,
        }
        for failure in report.failures
    ]
    if report.kind in ("complaint", "delivered"):
        suppress = report.kind == "complaint"
        recipients = [
            {"address": a, "status": None, "reason": None, "suppress": suppress} for a in report.recipients
        ]
    entry: dict[str, Any] = {"file": name, "kind": report.kind, "note": report.note, "recipients": recipients}
    if report.kind == "complaint":
        entry["feedback_type"] = report.feedback_type
    return entry


def unreadable(name: str, error: str) -> dict[str, Any]:
    return {"file": name, "kind": "malformed", "note": error, "recipients": []}


def read_file(name: str) -> tuple[dict[str, Any], str | None]:
    """(the file's JSON object, the error to tell on standard error, if it could not be read)."""
    raw, error = read_bounded(name)
    if raw is None:
        return unreadable(name, error or "not read"), error
    return describe(name, read_report(raw)), None


def lines(entry: dict[str, Any]) -> list[str]:
    """Text output, tab-separated: file, kind, address, status, reason, suppress or keep; a file with no
    recipient gets one line whose reason column says what it is."""
    if not entry["recipients"]:
        return ["\t".join((entry["file"], entry["kind"], "-", "-", entry["note"] or "-", "-"))]
    return [
        "\t".join((
            entry["file"], entry["kind"], r["address"] or "-", r["status"] or "-",
            r["reason"] or entry.get("feedback_type") or "-", "suppress" if r["suppress"] else "keep",
        ))
        for r in entry["recipients"]
    ]  # fmt: skip
