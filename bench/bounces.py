"""How well deadpixel reads bounces, measured against Sisimai on a corpus of real messages.

``python bench/bounces.py CORPUS_DIR... [--sisimai FILE.jsonl | --sisimai-perl [--sisimai-lib DIR]] [--json]
[--verbose]``

Every file under the given directories is read by ``deadpixel.bounces.parse.read_report`` and compared with
what Sisimai (the bounce reader of record, Perl) reads from the same file: either answers saved before (a
JSON Lines file, one ``{"file", "results": [...]}`` line per message, as ``bench/bounce_sisimai.pl``
writes it) or answers taken now by running ``bench/bounce_sisimai.pl`` with ``/usr/bin/perl``: Debian's
``libsisimai-perl``, or the Sisimai under ``--sisimai-lib DIR`` (``bench/sisimai_fetch.sh`` unpacks one
there; ``PERL5LIB`` works too). Sisimai 4.x and 5.x are both read; the version is recorded. A saved
line matches a file when its path is a tail of the file's path, so answers saved with paths relative to
any parent directory still match.

What is counted (docs/bounces.md, "Measuring", says why each target):

* bounces recognised: Sisimai reads a failure (a reason other than vacation, feedback or delivered) and
  deadpixel says ``bounce``;
* failed recipient right: of those, the set of failed addresses is the same;
* status present: deadpixel's failures (in those files) that carry an enhanced status code;
* suppress agrees: per recipient both read, deadpixel's ``suppress`` against Sisimai's verdict, two ways:
  with Sisimai's own hard/soft (recipients Sisimai calls neither are left out), and with the rule that only
  a gone address suppresses (Sisimai hard and userunknown, hostunknown, hasmoved or notaccept);
* reason agrees: deadpixel's reason against Sisimai's, through the mapping in docs/bounces.md;
* sender-side suppressing: recipients whose failure Sisimai puts on the sender (blocked, spam, content,
  authentication, rate, size, relaying) that deadpixel would still suppress: must stay near zero;
* complaints recognised: Sisimai reads an abuse feedback report, deadpixel says ``complaint``;
* delivery notices and auto-replies left alone: Sisimai reads only delivered or vacation, deadpixel does
  not say ``bounce``; messages Sisimai reads nothing from are counted the same way on a line of their own;
* parse time per message, median and p99 (each message parsed three times after a warm-up pass; its
  median counts).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deadpixel.bounces.parse import Report, read_report

HERE = Path(__file__).resolve().parent
SISIMAI_SCRIPT = HERE / "bounce_sisimai.pl"
MAX_FILE = 10 * 1024 * 1024  # larger files are left out and named: no bounce is that big
PERL_BATCH = 200  # files per perl run, well under any argument-list limit

NOT_A_FAILURE = frozenset({"vacation", "feedback", "delivered"})
LEFT_ALONE = frozenset({"vacation", "delivered"})
ADDRESS_GONE = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})
SENDER_SIDE = frozenset(
    {
        "blocked", "spamdetected", "contenterror", "authfailure", "toomanyconn", "speeding",
        "mesgtoobig", "exceedlimit", "securityerror", "norelaying",
        # Sisimai 5's names and additions
        "ratelimited", "emailtoolarge", "badreputation", "requireptr", "failedstarttls", "notcompliantrfc",
    }
)  # fmt: skip
# Sisimai's reasons in deadpixel's vocabulary (deadpixel.bounces.reasons.Reason values).
TO_OURS = {
    "userunknown": "user unknown", "hasmoved": "user unknown", "hostunknown": "domain not found",
    "suspend": "mailbox disabled", "mailboxfull": "mailbox full", "mesgtoobig": "message too big",
    "exceedlimit": "message too big", "blocked": "blocked", "spamdetected": "spam/content",
    "contenterror": "spam/content", "virusdetected": "spam/content",
    "authfailure": "authentication failure", "policyviolation": "policy", "rejected": "policy",
    "filtered": "policy", "securityerror": "policy", "norelaying": "policy", "toomanyconn": "rate limited",
    "speeding": "rate limited", "expired": "expired", "networkerror": "network", "systemerror": "system",
    "systemfull": "system", "mailererror": "system", "undefined": "other", "onhold": "other",
    # Sisimai 5's names and additions
    "notaccept": "domain not found", "ratelimited": "rate limited", "emailtoolarge": "message too big",
    "badreputation": "blocked", "requireptr": "policy", "failedstarttls": "policy",
    "notcompliantrfc": "policy", "syntaxerror": "system",
}  # fmt: skip
TARGETS = {
    "bounces recognised": ">= 95%",
    "failed recipient right": ">= 95%",
    "status present": ">= 90%",
    "suppress agrees (Sisimai's hard/soft)": ">= 90%",
    "sender-side failures suppressing": "< 2%",
    "abuse complaints recognised": ">= 90%",
    "delivery notices and auto-replies left alone": ">= 90%",
}


@dataclass
class Tally:
    count: int = 0
    of: int = 0

    def add(self, ok: bool) -> None:
        self.of += 1
        self.count += ok

    @property
    def percent(self) -> float | None:
        return 100.0 * self.count / self.of if self.of else None


@dataclass
class Measure:
    tallies: dict[str, Tally] = field(default_factory=dict)
    disagreements: dict[str, list[str]] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)
    without_verdict: list[str] = field(default_factory=list)
    too_big: list[str] = field(default_factory=list)

    def tally(self, name: str, ok: bool) -> None:
        self.tallies.setdefault(name, Tally()).add(ok)

    def differ(self, file: str, what: str) -> None:
        self.disagreements.setdefault(file, []).append(what)


def corpus_files(dirs: Iterable[Path]) -> Iterator[Path]:
    for root in dirs:
        if root.is_file():
            yield root
            continue
        yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def saved_verdicts(jsonl: Path) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Sisimai's answers by the parts of the path they were saved under."""
    verdicts = {}
    for number, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            verdicts[Path(entry["file"]).parts] = list(entry.get("results") or [])
        except (ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"{jsonl}:{number}: not a Sisimai verdict line ({exc})") from None
    return verdicts


def perl_command(lib: Path | None) -> list[str]:
    """How to run bench/bounce_sisimai.pl: with the Sisimai under ``lib`` first, when given."""
    return ["/usr/bin/perl", *([f"-I{lib}"] if lib is not None else []), str(SISIMAI_SCRIPT)]


def perl_verdicts(files: list[Path], lib: Path | None = None) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Sisimai's answers now, through bench/bounce_sisimai.pl: Debian's libsisimai-perl, or the Sisimai
    unpacked under ``lib``."""
    lines: list[str] = []
    for start in range(0, len(files), PERL_BATCH):
        batch = [str(p) for p in files[start : start + PERL_BATCH]]
        try:
            done = subprocess.run(perl_command(lib) + batch, capture_output=True, text=True, timeout=600)
        except FileNotFoundError:
            raise SystemExit("/usr/bin/perl is missing (Debian: apt-get install libsisimai-perl)") from None
        if done.returncode != 0:
            raise SystemExit(f"Sisimai failed (is libsisimai-perl installed?): {done.stderr[-500:]}")
        lines += done.stdout.splitlines()
    verdicts = {}
    for line in lines:
        entry = json.loads(line)  # our own script's output
        verdicts[Path(entry["file"]).parts] = list(entry.get("results") or [])
    return verdicts


def verdict_for(
    path: Path, verdicts: dict[tuple[str, ...], list[dict[str, Any]]]
) -> list[dict[str, Any]] | None:
    parts = path.parts
    for start in range(len(parts)):
        found = verdicts.get(parts[start:])
        if found is not None:
            return found
    return None


def timed_read(raw: bytes) -> tuple[Report, float]:
    """The report and the median of three parse times, in milliseconds."""
    times = []
    report = read_report(raw)
    for _ in range(3):
        started = time.perf_counter()
        report = read_report(raw)
        times.append((time.perf_counter() - started) * 1000)
    return report, statistics.median(times)


def _our_addresses(report: Report, theirs: set[str]) -> dict[str, Any]:
    """Each of our failures under the address Sisimai would name: Final-Recipient, else Original-Recipient."""
    ours = {}
    for failure in report.failures:
        candidates = [a for a in (failure.recipient, failure.original_recipient) if a]
        address = next((a for a in candidates if a in theirs), candidates[0] if candidates else "")
        ours[address] = failure
    return ours


def compare(measure: Measure, name: str, report: Report, results: list[dict[str, Any]]) -> None:
    """One file: what deadpixel read against what Sisimai read."""
    failed = [r for r in results if r.get("reason") not in NOT_A_FAILURE]
    complaints = [r for r in results if r.get("reason") == "feedback"]
    if failed:
        measure.tally("bounces recognised", report.kind == "bounce")
        if report.kind != "bounce":
            measure.differ(name, f"not read as a bounce: ours {report.kind} ({report.note})")
        theirs = {str(r["address"]).lower(): r for r in failed}
        ours = _our_addresses(report, set(theirs))
        right = set(ours) == set(theirs)
        measure.tally("failed recipient right", right)
        if not right and report.kind == "bounce":
            measure.differ(name, f"recipients: ours {sorted(ours)}, Sisimai {sorted(theirs)}")
        for address, failure in ours.items():
            measure.tally("status present", failure.status is not None)
            if failure.status is None:
                measure.differ(name, f"{address}: no status (diagnostic {failure.diagnostic!r})")
        for address in sorted(set(ours) & set(theirs)):
            _compare_recipient(measure, name, address, ours[address], theirs[address])
    elif complaints:
        abuse = [r for r in complaints if str(r.get("feedbacktype", "")).lower() == "abuse"]
        if abuse:
            measure.tally("abuse complaints recognised", report.kind == "complaint")
            if report.kind != "complaint":
                measure.differ(name, f"abuse complaint read as {report.kind} ({report.note})")
    elif results and {r.get("reason") for r in results} <= LEFT_ALONE:
        measure.tally("delivery notices and auto-replies left alone", report.kind != "bounce")
        if report.kind == "bounce":
            measure.differ(name, f"Sisimai: {results[0].get('reason')}; ours: bounce ({report.note})")
    elif not results:
        measure.tally("not a bounce to Sisimai, left alone", report.kind != "bounce")
        if report.kind == "bounce":
            addresses = [f.recipient for f in report.failures]
            measure.differ(name, f"Sisimai reads nothing; ours: bounce {addresses} ({report.note})")


def sisimai_hard(result: dict[str, Any]) -> bool | None:
    """Sisimai's hard (True) or soft (False) verdict, or None where it gives neither: ``hard`` as
    bench/bounce_sisimai.pl writes it for 4.x and 5.x alike, else (answers saved by an older script)
    Sisimai 4's ``softbounce`` (0 hard, 1 soft, -1 neither)."""
    if "hard" in result:
        hard = result["hard"]
        return None if hard is None else bool(hard)
    soft = result.get("softbounce")
    return {0: True, 1: False}.get(soft) if isinstance(soft, int) else None


def _compare_recipient(
    measure: Measure, name: str, address: str, failure: Any, theirs: dict[str, Any]
) -> None:
    reason = str(theirs.get("reason", "")).lower()
    verdict = sisimai_hard(theirs)
    hard = verdict is True
    if verdict is not None:
        measure.tally("suppress agrees (Sisimai's hard/soft)", failure.suppress == hard)
    gone = hard and reason in ADDRESS_GONE
    measure.tally("suppress agrees (only a gone address)", failure.suppress == gone)
    if failure.suppress != hard or failure.suppress != gone:
        measure.differ(
            name, f"{address}: suppress {failure.suppress}, Sisimai {reason} ({'hard' if hard else 'soft'})"
        )
    expected = TO_OURS.get(reason)
    if expected is not None:
        measure.tally("reason agrees (mapped)", str(failure.reason) == expected)
        if str(failure.reason) != expected:
            ours = str(failure.reason)
            measure.differ(name, f"{address}: reason {ours!r}, Sisimai {reason} ({expected!r})")
    if reason in SENDER_SIDE:
        measure.tally("sender-side failures suppressing", bool(failure.suppress))
        if failure.suppress:
            measure.differ(name, f"{address}: suppressed, yet Sisimai says {reason} (the sender's side)")


def measure_corpus(files: list[Path], verdicts: dict[tuple[str, ...], list[dict[str, Any]]]) -> Measure:
    measure = Measure()
    for path in files:
        name = str(path)
        if path.stat().st_size > MAX_FILE:
            measure.too_big.append(name)
            continue
        report, took = timed_read(path.read_bytes())
        measure.times_ms.append(took)
        results = verdict_for(path.resolve(), verdicts)
        if results is None:
            results = verdict_for(path, verdicts)
        if results is None:
            measure.without_verdict.append(name)
            continue
        compare(measure, name, report, results)
    return measure


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def as_json(measure: Measure, files: int, verbose: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "files": files,
        "without_sisimai_verdict": measure.without_verdict,
        "too_big": measure.too_big,
        "metrics": {
            name: {"count": t.count, "of": t.of, "percent": t.percent, "target": TARGETS.get(name)}
            for name, t in measure.tallies.items()
        },
        "parse_ms": {
            "median": statistics.median(measure.times_ms) if measure.times_ms else None,
            "p99": percentile(measure.times_ms, 0.99),
            "target_median": "< 2",
        },
    }
    if verbose:
        out["disagreements"] = measure.disagreements
    return out


ORDER = [
    "bounces recognised",
    "failed recipient right",
    "status present",
    "suppress agrees (Sisimai's hard/soft)",
    "suppress agrees (only a gone address)",
    "reason agrees (mapped)",
    "sender-side failures suppressing",
    "abuse complaints recognised",
    "delivery notices and auto-replies left alone",
    "not a bounce to Sisimai, left alone",
]


def as_table(measure: Measure, files: int) -> str:
    lines = ["| measure | count | of | % | target |", "| --- | ---: | ---: | ---: | --- |"]
    for name in ORDER:
        t = measure.tallies.get(name, Tally())
        percent = f"{t.percent:.1f}" if t.percent is not None else "n/a"
        lines.append(f"| {name} | {t.count} | {t.of} | {percent} | {TARGETS.get(name, '')} |")
    median = statistics.median(measure.times_ms) if measure.times_ms else float("nan")
    p99 = percentile(measure.times_ms, 0.99) or float("nan")
    lines.append(f"| parse time per message, median / p99 (ms) | {median:.3f} | {p99:.3f} | | median < 2 |")
    notes = [f"{files} files"]
    if measure.without_verdict:
        notes.append(f"{len(measure.without_verdict)} without a Sisimai verdict (left out)")
    if measure.too_big:
        notes.append(f"{len(measure.too_big)} over {MAX_FILE} bytes (left out)")
    return "\n".join([*lines, "", "; ".join(notes) + "."])


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=HERE).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "?")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU ({cpu}), {memory:.0f} GB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}; load average at the end {load}"
    )


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def sisimai_version(lib: Path | None, verdicts: dict[tuple[str, ...], list[dict[str, Any]]]) -> str:
    """The Sisimai that gave the answers: as the answers say (saved or taken now), else as perl finds it."""
    said = {str(r["sisimai"]) for results in verdicts.values() for r in results if r.get("sisimai")}
    if said:
        return " and ".join(sorted(said))
    return _run([*perl_command(lib), "--version"]) or "?"


def versions(sisimai: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("deadpixel", "flufl.bounce"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} ?")
    return ", ".join([*found, f"Sisimai {sisimai}"])


def record(path: Path, argv: list[str], tables: list[tuple[str, str]], sisimai: str) -> None:
    """A dated result file: machine, commit, the command that re-measures it, and the tables."""
    commit = _run(["git", "rev-parse", "--short", "HEAD"])
    dirty = " (with uncommitted changes)" if _run(["git", "status", "--porcelain", "--", "../src"]) else ""
    command = shlex.join(["python", "bench/bounces.py", *argv])
    lines = [
        "# Bounce reading against Sisimai",
        "",
        f"- Date: {datetime.date.today().isoformat()}.",
        f"- Machine: {machine()}.",
        f"- Commit: {commit}{dirty}; {versions(sisimai)}.",
        f"- Command (re-measures and rewrites this file): `{command}`",
        "- Corpora: `bench/bounce_corpus.sh DIR` gathers the public ones from PyPI and npm; "
        "tests/data/bounces/mta holds bounces written by real MTAs.",
        '- What each line counts, and the targets: docs/bounces.md, "Measuring".',
    ]
    for title, table in tables:
        lines += ["", f"## {title}", "", table]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("dirs", nargs="+", type=Path, help="directories (or files) of messages, one per file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sisimai", type=Path, metavar="FILE.jsonl", help="Sisimai's answers, saved")
    source.add_argument("--sisimai-perl", action="store_true", help="run Sisimai (libsisimai-perl) now")
    parser.add_argument(
        "--sisimai-lib",
        type=Path,
        metavar="DIR",
        help="with --sisimai-perl: the Perl library holding Sisimai.pm (bench/sisimai_fetch.sh unpacks one)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--verbose", action="store_true", help="list every file where the two disagree")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="FILE.md",
        help="also write a dated result file (machine, commit, command)",
    )
    args = parser.parse_args(argv)
    for path in args.dirs:
        if not path.exists():
            parser.error(f"{path} does not exist")
    files = list(corpus_files(args.dirs))
    if not files:
        parser.error("no files under the given directories")
    if args.sisimai is not None:
        if args.sisimai_lib is not None:
            parser.error("--sisimai-lib goes with --sisimai-perl")
        if not args.sisimai.is_file():
            parser.error(f"{args.sisimai} is not a file")
        verdicts = saved_verdicts(args.sisimai)
    else:
        if args.sisimai_lib is not None and not (args.sisimai_lib / "Sisimai.pm").is_file():
            parser.error(f"{args.sisimai_lib} holds no Sisimai.pm")
        verdicts = perl_verdicts([p.resolve() for p in files], args.sisimai_lib)
    measure = measure_corpus(files, verdicts)
    if args.record is not None:
        tables = [(", ".join(str(d) for d in args.dirs), as_table(measure, len(files)))]
        if len(args.dirs) > 1:
            for root in args.dirs:
                part = list(corpus_files([root]))
                tables.append((str(root), as_table(measure_corpus(part, verdicts), len(part))))
        sisimai = sisimai_version(args.sisimai_lib, verdicts)
        record(args.record, sys.argv[1:] if argv is None else argv, tables, sisimai)
    if args.json:
        print(json.dumps(as_json(measure, len(files), args.verbose), indent=2))
        return 0
    print(as_table(measure, len(files)))
    if args.verbose:
        print()
        for name, what in sorted(measure.disagreements.items()):
            print(name)
            for line in what:
                print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
