"""bench/bounces.py counts what it says: Sisimai 4.x's and 5.x's verdicts read alike, the hard/soft line
compared with Sisimai's own verdict, and bench/bounce_sisimai.pl's output in the form the bench reads."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deadpixel.bounces.parse import read_report

ROOT = Path(__file__).resolve().parent.parent
MTA = ROOT / "tests" / "data" / "bounces" / "mta"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_bounces", ROOT / "bench" / "bounces.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.mark.parametrize(
    ("line", "want"),
    [
        ({"hard": 1}, True),
        ({"hard": 0}, False),
        ({"hard": None}, None),
        ({"softbounce": 0}, True),  # answers saved from Sisimai 4 by the older script
        ({"softbounce": 1}, False),
        ({"softbounce": -1}, None),
        ({}, None),
    ],
)
def test_sisimai_4_and_5_verdicts_read_alike(line: dict[str, Any], want: bool | None) -> None:
    assert bench.sisimai_hard(line) is want


def _sisimai(reason: str, hard: int | None) -> list[dict[str, Any]]:
    return [{"address": "user-unknown@receiver.example", "reason": reason, "hard": hard, "status": "5.1.1"}]


def test_the_hard_soft_line_counts_agreement_with_sisimais_own_verdict() -> None:
    report = read_report((MTA / "postfix-user-unknown.eml").read_bytes())
    assert report.failures[0].suppress
    agreed, differed = bench.Measure(), bench.Measure()
    bench.compare(agreed, "a", report, _sisimai("userunknown", 1))
    bench.compare(differed, "b", report, _sisimai("filtered", 0))
    line = "suppress agrees (Sisimai's hard/soft)"
    assert (agreed.tallies[line].count, agreed.tallies[line].of) == (1, 1)
    assert (differed.tallies[line].count, differed.tallies[line].of) == (0, 1)
    assert any("Sisimai filtered (soft)" in what for what in differed.disagreements["b"])


def test_sisimai_5s_new_sender_side_reasons_count_as_sender_side() -> None:
    report = read_report((MTA / "postfix-blocked.eml").read_bytes())
    measure = bench.Measure()
    results = [{"address": f.recipient, "reason": "badreputation", "hard": 0} for f in report.failures]
    bench.compare(measure, "c", report, results)
    tally = measure.tallies["sender-side failures suppressing"]
    assert (tally.count, tally.of) == (0, len(report.failures))


def _perl_has_sisimai() -> bool:
    perl = shutil.which("perl")
    if perl is None:
        return False
    return subprocess.run([perl, "-MSisimai", "-e1"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _perl_has_sisimai(), reason="perl with Sisimai (libsisimai-perl) is not installed")
def test_the_sisimai_script_writes_one_verdict_line_per_file() -> None:
    sample = MTA / "exim-user-unknown.eml"
    done = subprocess.run(
        ["perl", str(ROOT / "bench" / "bounce_sisimai.pl"), str(sample)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = done.stdout.splitlines()
    entry = json.loads(line)
    assert entry["file"] == str(sample)
    (result,) = entry["results"]
    assert result["reason"] == "userunknown"
    assert result["hard"] == 1
    assert result["sisimai"].startswith("v")
