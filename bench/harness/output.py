"""Results as text tables and as JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from harness.runs import ServerResult
from harness.stores import UNCLASSIFIED
from harness.verdict import (
    ENRICHMENT_TOLERANCE,
    Check,
    EnrichmentComparison,
    Report,
    mean_cpu_us,
    mean_rps,
    spread,
)


def table(rows: list[list[str]], numbers: bool = True) -> str:
    """Columns padded to their widest cell; with ``numbers``, every column but the first right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if numbers and i > 0 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def server_table(servers: dict[str, ServerResult], server_cpu: int, load_cpu: int) -> str:
    """Shares are of one core: the server's processes, its whole core, wrk, the load core, everything else."""
    with_database = any(result.throughput.database_cpu > 0 for result in servers.values())
    header = ["server", "200/s", "CPU µs/req", "server CPU", f"cpu{server_cpu} busy", "wrk CPU"]
    header += [f"cpu{load_cpu} busy", "other CPU", "non-200", "sock err"]
    if with_database:
        header[3:3] = ["DB µs/req"]
    rows = [header]
    for result in servers.values():
        run = result.throughput
        row = [
            result.label,
            f"{run.rps:,.0f}",
            f"{run.cpu_us_per_request:,.1f}",
            f"{run.busy(run.server_cpu):.0%}",
            f"{run.busy(run.server_core):.0%}",
            f"{run.busy(run.generator_cpu):.0%}",
            f"{run.busy(run.load_core):.0%}",
            f"{run.busy(run.other_cpu):.0%}",
            f"{run.other_total:,}",
            f"{run.socket_errors:,}",
        ]
        if with_database:
            row[3:3] = [f"{run.database_us_per_request:,.1f}" if run.database_cpu else "-"]
        rows.append(row)
    return table(rows)


def latency_text(result: ServerResult) -> str:
    latency = result.latency
    assert latency is not None
    slowest = ", ".join(
        f"{s['second']:.0f}: p99 {s['p99_ms']:.1f} / max {s['max_ms']:.1f} ms"
        for s in sorted(latency.slowest_seconds, key=lambda s: -s["max_ms"])[:3]
    )
    return (
        f"{result.label} latency at a steady {latency.rate:,.0f}/s (half its throughput), "
        f"{latency.connections} connections, {latency.seconds:g} s after {latency.warmup:g} s at that rate:\n"
        f"  p50 {latency.p50_ms:.2f} ms   p90 {latency.p90_ms:.2f} ms   p99 {latency.p99_ms:.2f} ms   "
        f"p99.9 {latency.p999_ms:.2f} ms   max {latency.max_ms:.2f} ms\n"
        f"  slowest seconds {slowest}\n"
        f"  {latency.ok:,} answered 200; {latency.queued:,} waited for a free connection; "
        f"client lag behind schedule p99 {latency.lag_p99_ms:.2f} ms"
    )


def writer_text(result: ServerResult) -> str:
    lines = [f"{result.label} group commit (from its own counters):"]
    phases = [("under full load", result.writer_saturated), ("at half load", result.writer_half_load)]
    for phase, stats in phases:
        if stats is not None and stats.batches:
            lines.append(
                f"  {phase}: {stats.batches:,} batches of {stats.mean_batch:,.1f} opens on average, "
                f"{stats.mean_commit_ms:.2f} ms per commit"
            )
    return "\n".join(lines) if len(lines) > 1 else ""


def comparison_text(comparison: EnrichmentComparison) -> str:
    lines = ["enrichment off vs on (deadpixel, in run order):"]
    for setting, runs in (("off", comparison.off), ("on", comparison.on)):
        rates = ", ".join(f"{result.throughput.rps:,.0f}" for result in runs)
        rps = mean_rps(runs)
        ratio = comparison.ratio(rps)
        line = f"  enrichment {setting + ':':4} {rates} 200/s; mean {rps:,.0f}/s"
        line += f" = {ratio:.3f} of nginx" if ratio is not None else ""
        line += f"; {mean_cpu_us(runs):,.1f} CPU µs/req"
        if len(runs) > 1:
            line += f"; runs {spread(runs):.1%} apart"
        lines.append(line)
    rounds = ", ".join(f"{difference:+.1%}" for difference in comparison.round_differences)
    verdict = "PASS" if comparison.passed else "FAIL"
    lines.append(
        f"  on vs off: {comparison.difference:+.1%} (round by round: {rounds}); "
        f"at most {ENRICHMENT_TOLERANCE:.0%} slower: {verdict}"
    )
    # CPU per request moves far less with other load on the machine than throughput does.
    off_cpu, on_cpu = mean_cpu_us(comparison.off), mean_cpu_us(comparison.on)
    if off_cpu:
        lines.append(f"  server CPU per request, on vs off: {on_cpu / off_cpu - 1:+.1%}")
    return "\n".join(lines)


def kinds_table(servers: dict[str, ServerResult]) -> str:
    """Stored opens by kind (SELECT kind, count(*) FROM opens GROUP BY kind) for each deadpixel run."""
    results = [result for result in servers.values() if result.kinds is not None]
    if not results:
        return ""
    kinds = sorted(
        {kind for result in results for kind in result.kinds or {}}, key=lambda k: (k == UNCLASSIFIED, k)
    )
    rows = [["stored opens by kind", *kinds, "total"]]
    for result in results:
        counts = result.kinds or {}
        rows.append(
            [result.label, *(f"{counts.get(kind, 0):,}" for kind in kinds), f"{sum(counts.values()):,}"]
        )
    return table(rows)


def check_table(checks: list[Check]) -> str:
    rows = [["check", "value", "target", "result"]]
    rows += [[c.name, c.value, c.target, "PASS" if c.passed else "FAIL"] for c in checks]
    return table(rows, numbers=False)


def print_report(report: Report) -> None:
    config = report.config
    print(
        f"deadpixel pixel benchmark: {config['seconds']:g} s per server after a {config['warmup']:g} s "
        f"warm-up, wrk -t1 -c{config['connections']}, {config['messages']:,} pixel URLs in turn"
    )
    print(f"servers on CPU {config['server_cpu']}, load generators on CPU {config['load_cpu']}")
    print(f"deadpixel store: {config['store']}")
    print(f"request mix: {config['mix_description']}")
    print()
    print(server_table(report.servers, config["server_cpu"], config["load_cpu"]))
    for result in report.servers.values():
        if not result.is_deadpixel:
            continue
        if result.latency is not None:
            print()
            print(latency_text(result))
        if text := writer_text(result):
            print(text)
    if report.comparison is not None:
        print()
        print(comparison_text(report.comparison))
    if text := kinds_table(report.servers):
        print()
        print(text)
    print()
    print(check_table(report.checks))
    for warning in report.warnings:
        print(f"warning: {warning}")


def report_json(report: Report) -> dict[str, Any]:
    servers = {}
    for name, result in report.servers.items():
        run = result.throughput
        servers[name] = {
            "label": result.label,
            "rps": run.rps,
            "cpu_us_per_request": run.cpu_us_per_request,
            "database_cpu_us_per_request": run.database_us_per_request if run.database_cpu else None,
            "server_cpu_share": run.busy(run.server_cpu),
            "generator_cpu_share": run.busy(run.generator_cpu),
            "other_cpu_share": run.busy(run.other_cpu),
            "server_core_busy": run.busy(run.server_core),
            "load_core_busy": run.busy(run.load_core),
            "throughput": asdict(run),
            "answered_ok": result.answered_ok,
            "stored": result.stored,
            "stored_label": result.stored_label,
            "exact": result.exact,
            "exit_code": result.exit_code,
            "latency": asdict(result.latency) if result.latency else None,
            "writer_saturated": asdict(result.writer_saturated) if result.writer_saturated else None,
            "writer_half_load": asdict(result.writer_half_load) if result.writer_half_load else None,
            "enrichment": result.enrichment,
            "kinds": result.kinds,
        }
    comparison = None
    if (found := report.comparison) is not None:
        comparison = {
            "off_runs": [result.name for result in found.off],
            "on_runs": [result.name for result in found.on],
            "off_rps": found.off_rps,
            "on_rps": found.on_rps,
            "off_ratio_to_nginx": found.ratio(found.off_rps),
            "on_ratio_to_nginx": found.ratio(found.on_rps),
            "difference": found.difference,
            "round_differences": found.round_differences,
            "tolerance": ENRICHMENT_TOLERANCE,
            "passed": found.passed,
        }
    return {
        "config": report.config,
        "servers": servers,
        "enrichment_comparison": comparison,
        "checks": [asdict(check) for check in report.checks],
        "warnings": report.warnings,
        "correct": report.correct,
        "targets_met": report.targets_met,
    }
