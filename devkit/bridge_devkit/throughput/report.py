"""The benchmark's table, the issue 4 targets and the PASS/FAIL lines."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

from bridge_devkit.throughput.bench import say
from bridge_devkit.throughput.runs import PARTITIONS, RunResult
from bridge_devkit.throughput.scalereport import print_section

MEMORY_TARGET_BUFFERED = 10_000


def _f(value: float | None, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


HEADER = (
    f"{'run':<30} {'N':>6} {'cmd/s':>7} {'bound':>7} {'%bound':>6} {'CPU s/1k':>8} "
    f"{'cmd/CPU-s':>9} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>6} {'req/cmd':>7}  verify"
)


def row(r: RunResult) -> str:
    s = r.spec
    n = r.processed or s.commands
    per_cpu = n / r.cpu_s if r.cpu_s and not math.isnan(r.cpu_s) else math.nan
    return (
        f"{s.label:<30} {n:>6} {_f(r.throughput, ',.0f', 7)} {_f(s.bound, ',.0f', 7)} "
        f"{_f(r.pct_of_bound, '.0f', 6)} {_f(r.cpu_ms_per_command, '.3f', 8)} "
        f"{_f(per_cpu, ',.0f', 9)} {_f(r.p50_ms, ',.0f', 7)} {_f(r.p99_ms, ',.0f', 7)} "
        f"{_f(r.peak_rss_mb, '.0f', 6)} {_f(r.api_requests / n, '.2f', 7)}  "
        f"{'PASS' if r.passed else 'FAIL'}"
    )


def targets(results: list[RunResult], args: argparse.Namespace) -> list[str]:
    """Issue 4's targets against this invocation's figures (informational, not pass/fail)."""

    def find(kind: str, mode: str, latency: float) -> RunResult | None:
        for r in results:
            s = r.spec
            if (s.kind, s.mode, s.latency_ms) == (kind, mode, latency) and r.passed:
                return r
        return None

    def verdict(ok: bool, text: str) -> str:
        return f"  {'met   ' if ok else 'MISSED'}  {text}"

    lines: list[str] = []
    key100, part100 = find("throughput", "key", 100), find("throughput", "partition", 100)
    if key100 is not None and key100.spec.bound is not None:
        pct = key100.pct_of_bound
        lines.append(
            verdict(
                pct >= 80,
                f"L=100: key {key100.throughput:,.0f} cmd/s = {pct:.0f}% of the bound "
                f"{key100.spec.bound:,.0f} (target >= 80%)",
            )
        )
        if part100 is not None:
            ratio = key100.throughput / part100.throughput
            lines.append(
                verdict(ratio >= 15, f"L=100: key/partition = {ratio:.1f}x (target >= 15x)")
            )
    key20, part20 = find("throughput", "key", 20), find("throughput", "partition", 20)
    if key20 is not None and part20 is not None:
        ratio = key20.throughput / part20.throughput
        lines.append(verdict(ratio >= 5, f"L=20: key/partition = {ratio:.1f}x (target >= 5x)"))
    key0 = find("throughput", "key", 0)
    if key0 is not None:
        us = key0.cpu_ms_per_command * 1000
        lines.append(
            verdict(
                us <= 500,
                f"L=0: {us:,.0f} us bridge CPU per command = {1e6 / us:,.0f} cmd/CPU-s "
                "(target <= 500 us, >= 2,000 cmd/CPU-s)",
            )
        )
    for r in results:
        if r.spec.scrape and r.passed:
            buffered = r.peak_buffered or 0
            lines.append(
                verdict(
                    r.peak_rss_mb <= 250 and buffered >= MEMORY_TARGET_BUFFERED,
                    f"peak RSS {r.peak_rss_mb:.0f} MB with up to {buffered:,} commands buffered "
                    f"({r.spec.label}) (target <= 250 MB with 10,000 buffered)",
                )
            )
    for r in results:
        if r.spec.kind == "paced" and r.passed:
            limit = 3 * 2 * r.spec.latency_ms + 50
            lines.append(
                verdict(
                    r.p99_ms <= limit,
                    f"L={r.spec.latency_ms:g}: p99 {r.p99_ms:,.0f} ms at {r.spec.rate:,.0f}/s "
                    f"(half capacity) (target <= {limit:,.0f} ms)",
                )
            )
    return lines


def report(results: list[RunResult], args: argparse.Namespace, env: dict[str, Any]) -> None:
    say()
    say("=" * len(HEADER))
    say(
        f"bridge throughput benchmark  (max_in_flight={args.max_in_flight}, {PARTITIONS} "
        f"partitions, {os.cpu_count()} CPUs, load avg {env['load_before']} -> {env['load_after']})"
    )
    say("=" * len(HEADER))
    say(HEADER)
    for kind in ("throughput", "paced", "memory", "http"):
        rows = [r for r in results if r.spec.kind == kind]
        if rows:
            say(f"-- {kind}")
            for r in rows:
                say(row(r))
    ratios = []
    for latency in sorted({r.spec.latency_ms for r in results}):
        k = [r for r in results if r.spec.kind == "throughput" and r.spec.mode == "key"]
        p = [r for r in results if r.spec.kind == "throughput" and r.spec.mode == "partition"]
        kk = [r for r in k if r.spec.latency_ms == latency and r.passed]
        pp = [r for r in p if r.spec.latency_ms == latency and r.passed]
        if kk and pp:
            ratios.append(f"L={latency:g}ms: {kk[0].throughput / pp[0].throughput:.1f}x")
    if ratios:
        say("key/partition throughput: " + ", ".join(ratios))
    http = [r for r in results if r.spec.kind == "http" and r.passed]
    if len(http) > 1:
        say(
            "HTTP transport (key mode): "
            + ", ".join(
                f"{r.spec.http_backend} {r.throughput:,.0f} cmd/s, "
                f"{r.cpu_ms_per_command:.3f} CPU s/1k"
                for r in http
            )
        )
    say()
    say("cmd/s: N / (first Norce API request of the run -> log-append time of the last result)")
    say("bound: max_in_flight (key) or partitions (partition) / (2 x L); req/cmd: API requests")
    say("CPU s/1k: bridge utime+stime per 1,000 commands over the same window (/proc, 50 ms)")
    say("p50/p99: command CreateTime -> snapshot log-append time (back-log runs: mostly queueing)")
    say("RSS: bridge VmHWM. Figures are noisy: 2 shared cores (broker, simulator, bench, others).")
    print_section(results)  # scale-out runs (issue 13)
    lines = targets(results, args)
    if lines and not args.quick:
        say()
        say("issue 4 targets:")
        for line in lines:
            say(line)
    say()
    for r in results:
        if r.passed:
            say(f"PASS {r.spec.label}")
        else:
            say(f"FAIL {r.spec.label}")
            for f in r.failures[:10]:
                say(f"     - {f[:400]}")
