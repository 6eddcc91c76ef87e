"""The pixel benchmark's checks and warnings: ratios to the baselines, exactness, the cost of enrichment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.runs import ServerResult
from harness.stores import UNCLASSIFIED

NGINX_RATIO_TARGET = 0.25
NGINX_RATIO_STRETCH = 0.30
NAIVE_RATIO_TARGET = 30.0
P99_TARGET_MS = 10.0
# Enrichment on may cost at most 10% of the ratio to nginx with it off (being faster is noise, not a failure).
ENRICHMENT_TOLERANCE = 0.10


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    target: str
    passed: bool
    correctness: bool  # failing one makes the exit status 1; missing a target does so only with --strict


@dataclass(frozen=True)
class EnrichmentComparison:
    """deadpixel's runs with enrichment off and on (--compare-enrichment), each list in run order."""

    off: list[ServerResult]
    on: list[ServerResult]
    nginx_rps: float | None

    @staticmethod
    def of(servers: dict[str, ServerResult]) -> EnrichmentComparison | None:
        off = [result for result in servers.values() if result.enrichment is False]
        on = [result for result in servers.values() if result.enrichment is True]
        if not off or not on:
            return None
        nginx = servers.get("nginx")
        return EnrichmentComparison(off, on, nginx.throughput.rps if nginx else None)

    @property
    def off_rps(self) -> float:
        return mean_rps(self.off)

    @property
    def on_rps(self) -> float:
        return mean_rps(self.on)

    @property
    def difference(self) -> float:
        """Relative difference of the ratios to nginx (the same as of the mean throughputs): on / off - 1."""
        return self.on_rps / self.off_rps - 1

    @property
    def round_differences(self) -> list[float]:
        """on / off - 1 for each round: how much the comparison varies from round to round."""
        return [
            on.throughput.rps / off.throughput.rps - 1 for off, on in zip(self.off, self.on, strict=False)
        ]

    @property
    def passed(self) -> bool:
        return self.difference >= -ENRICHMENT_TOLERANCE

    def ratio(self, rps: float) -> float | None:
        return rps / self.nginx_rps if self.nginx_rps else None


def mean_rps(results: list[ServerResult]) -> float:
    return sum(result.throughput.rps for result in results) / len(results)


def mean_cpu_us(results: list[ServerResult]) -> float:
    return sum(result.throughput.cpu_us_per_request for result in results) / len(results)


def spread(results: list[ServerResult]) -> float:
    """How far apart the fastest and the slowest run are (max / min - 1)."""
    rates = [result.throughput.rps for result in results]
    return max(rates) / min(rates) - 1 if min(rates) > 0 else math.inf


@dataclass
class Report:
    config: dict[str, Any]
    servers: dict[str, ServerResult]
    checks: list[Check] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    comparison: EnrichmentComparison | None = None

    @property
    def correct(self) -> bool:
        return all(check.passed for check in self.checks if check.correctness)

    @property
    def targets_met(self) -> bool:
        return all(check.passed for check in self.checks if not check.correctness)


def ratio_check(name: str, ours: float, theirs: float, target: float, stretch: float | None = None) -> Check:
    ratio = ours / theirs if theirs else math.inf
    value = f"{ratio:.3f}" if ratio < 10 else f"{ratio:.1f}"
    wanted = f">= {target:g}" + (f" (stretch {stretch:g})" if stretch else "")
    if stretch and ratio >= stretch:
        value += " (stretch met)"
    return Check(name, value, wanted, ratio >= target, correctness=False)


def exactness_check(result: ServerResult) -> Check:
    difference = result.stored - result.answered_ok
    what = "lost" if difference < 0 else "extra"
    value = "0" if difference == 0 else f"{abs(difference):,} {what}"
    value += f" ({result.stored:,} {result.stored_label} / {result.answered_ok:,} answered)"
    name = f"{result.name}: opens lost or extra" if result.name != "nginx" else "nginx: log lines = 200s"
    return Check(name, value, "0", result.exact, correctness=True)


def headline(servers: dict[str, ServerResult]) -> tuple[str, float]:
    """deadpixel's throughput as the targets judge it: with --compare-enrichment, the mean with it on."""
    if "deadpixel" in servers:
        return "deadpixel", servers["deadpixel"].throughput.rps
    on = [result for result in servers.values() if result.enrichment]
    return f"deadpixel (enrichment on, mean of {len(on)})", mean_rps(on)


def comparison_check(comparison: EnrichmentComparison) -> Check:
    value = f"{comparison.difference:+.1%}"
    on_ratio, off_ratio = comparison.ratio(comparison.on_rps), comparison.ratio(comparison.off_rps)
    if on_ratio is not None and off_ratio is not None:
        value += f" ({on_ratio:.3f} vs {off_ratio:.3f})"
    else:
        value += f" ({comparison.on_rps:,.0f}/s vs {comparison.off_rps:,.0f}/s)"
    target = f"at most {ENRICHMENT_TOLERANCE:.0%} slower"
    return Check("enrichment on vs off, ratio to nginx", value, target, comparison.passed, correctness=False)


def enrichment_ran_check(result: ServerResult) -> Check:
    """With enrichment on every stored open has a kind; with it off none has: else the comparison is void."""
    assert result.kinds is not None
    total = sum(result.kinds.values())
    classified = total - result.kinds.get(UNCLASSIFIED, 0)
    wanted = total if result.enrichment else 0
    value = f"{classified:,} of {total:,}"
    target = "all" if result.enrichment else "none"
    return Check(f"{result.name}: opens with a kind", value, target, classified == wanted, correctness=True)


def build_checks(servers: dict[str, ServerResult]) -> list[Check]:
    checks = []
    name, rps = headline(servers)
    if "nginx" in servers:
        nginx_rps = servers["nginx"].throughput.rps
        checks.append(ratio_check(f"{name} / nginx", rps, nginx_rps, NGINX_RATIO_TARGET, NGINX_RATIO_STRETCH))
    if "naive" in servers:
        naive_rps = servers["naive"].throughput.rps
        checks.append(ratio_check(f"{name} / naive", rps, naive_rps, NAIVE_RATIO_TARGET))
    if (comparison := EnrichmentComparison.of(servers)) is not None:
        checks.append(comparison_check(comparison))
    checks.extend(exactness_check(result) for result in servers.values())
    checks.extend(
        enrichment_ran_check(result)
        for result in servers.values()
        if result.enrichment is not None and result.kinds is not None
    )
    for result in servers.values():
        if result.is_deadpixel and result.latency is not None:
            p99 = result.latency.p99_ms
            value, target = f"{p99:.2f} ms", f"< {P99_TARGET_MS:g} ms"
            checks.append(Check(f"{result.name} p99 at half load", value, target, p99 < P99_TARGET_MS, False))
    return checks


def build_warnings(servers: dict[str, ServerResult]) -> list[str]:
    warnings = []
    for result in servers.values():
        run = result.throughput
        if not run.drained:
            warnings.append(f"{result.name}: requests were still in flight when wrk stopped")
        if run.socket_errors:
            warnings.append(f"{result.name}: {run.socket_errors} socket errors (requests that may be lost)")
        if run.other_total:
            warnings.append(f"{result.name}: {run.other_total} answers with a status other than 200")
        load_core, server_core = run.busy(run.load_core), run.busy(run.server_core)
        if load_core > 0.95 and server_core < 0.95:
            warnings.append(
                f"{result.name}: the load core was {load_core:.0%} busy and the server's {server_core:.0%}: "
                "the load generator may be the bottleneck"
            )
        if run.busy(run.other_cpu) > 0.05:
            warnings.append(
                f"{result.name}: other processes took {run.busy(run.other_cpu):.0%} of a core meanwhile: "
                "the figures may be disturbed"
            )
        latency = result.latency
        if latency is not None:
            if latency.unanswered or latency.other_status or latency.lost_connections:
                warnings.append(
                    f"{result.name} latency run: {latency.unanswered} unanswered, {latency.other_status} "
                    f"non-200, {latency.lost_connections} connections lost"
                )
            if latency.lag_p99_ms > 1.0:
                warnings.append(
                    f"{result.name} latency run: the client itself ran {latency.lag_p99_ms:.2f} ms late (p99)"
                )
    if (comparison := EnrichmentComparison.of(servers)) is not None:
        for setting, runs in (("off", comparison.off), ("on", comparison.on)):
            if len(runs) > 1 and spread(runs) > ENRICHMENT_TOLERANCE / 2:
                warnings.append(
                    f"the runs with enrichment {setting} differ by {spread(runs):.1%} among themselves: the "
                    f"machine is too noisy to resolve a {ENRICHMENT_TOLERANCE:.0%} difference reliably"
                )
    return warnings
