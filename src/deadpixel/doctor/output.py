"""The report: a line per check with its fix beneath, or JSON for scripts."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence

import click

from deadpixel.doctor.result import Result, worst

_COLOURS = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "bright_black"}


def as_json(results: Sequence[Result]) -> str:
    document = {
        "status": worst(result.status for result in results),
        "checks": [result.as_dict() for result in results],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def as_text(results: Sequence[Result], colour: bool = False) -> str:
    width = max((len(result.name) for result in results), default=0)
    lines = []
    for result in results:
        label = f"{result.status:<4}"
        if colour:
            label = click.style(label, fg=_COLOURS[result.status], bold=result.status == "fail")
        lines.append(f"{label}  {result.name:<{width}}  {result.message}")
        if result.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {result.fix}")
    counts = Counter(result.status for result in results)
    summary = ", ".join(
        f"{counts[status]} {status}" for status in ("fail", "warn", "ok", "skip") if counts[status]
    )
    lines.append("")
    lines.append(summary)
    return "\n".join(lines)
