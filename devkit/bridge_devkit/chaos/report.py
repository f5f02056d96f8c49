"""The report of a chaos run: what was injected, a PASS/FAIL line per check."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bridge_devkit.chaos.checks import InputRecord, RunReport
from bridge_devkit.chaos.context import READ_TIMEOUT_S
from bridge_devkit.chaos.faults import Faults
from bridge_devkit.chaos.fence_checks import FenceReview
from bridge_devkit.chaos.plan import Plan, Profile


def injected_rows(
    profile: Profile,
    plan: Plan,
    inputs: list[InputRecord],
    stats: dict[str, Any],
    faults: Faults,
    review: FenceReview,
    produced_s: float,
) -> list[tuple[str, str]]:
    """What a run injected, as (what, detail) rows."""
    fleet = faults.fleet
    rows: list[tuple[str, str]] = []
    valid = sum(1 for s in plan.specs.values() if s.kind != "poison")
    poison = len(plan.specs) - valid
    dup = sum(n - 1 for n in Counter(r.cid for r in inputs).values() if n > 1)
    rows.append(
        (
            "input records",
            f"{valid} commands + {poison} poison over {profile.orders} orders, "
            f"{profile.partitions} partitions, produced over "
            f"{produced_s:.1f}s ({dup} duplicated by send retries)",
        )
    )
    rows.append(("bridge incarnations", str(len(fleet.incarnations))))
    for i, k in enumerate(fleet.kills, 1):
        extra = f"; during replay: {k.during_replay}" if k.during_replay else ""
        rows.append(
            (
                f"kill -9 #{i}",
                f"t={k.t:.1f}s bridge #{k.incarnation} (up {k.uptime_s:.1f}s), "
                f"restart after {k.restart_delay_s:.1f}s{extra}",
            )
        )
    selfx = [i for i in fleet.incarnations if i.self_exit]
    rows.append(
        (
            "bridge self-exits",
            f"{len(selfx)}"
            + (
                " (" + ", ".join(f"#{i.n} {i.end} at t={i.ended_t:.1f}s" for i in selfx) + ")"
                if selfx
                else ""
            ),
        )
    )
    if faults.broker_restart:
        at, took = faults.broker_restart
        rows.append(("broker restart", f"t={at:.1f}s, back after {took:.1f}s"))
    else:
        rows.append(("broker restart", "NOT DONE"))
    rows.extend(review.rows())
    if faults.second_window:
        window = "..".join(f"t={t:.1f}s" for t in faults.second_window)
        rows.append(("second bridge instance", window))
    requests = stats.get("requests", 0) or 1
    by_fault = stats.get("by_fault", {})
    rows.append(("simulator API requests", str(stats.get("requests", 0))))
    for name, label in (
        ("error", "5xx"),
        ("rate_limit", "429 + Retry-After"),
        ("hang", f"hang > {READ_TIMEOUT_S:g}s timeout"),
        ("reset", "connection reset"),
        ("after_apply", "write applied, then 500"),
    ):
        n = int(by_fault.get(name, 0))
        rows.append((f"fault: {label}", f"{n} ({100 * n / requests:.1f}%)"))
    return rows


def print_report(report: RunReport, seed: int) -> None:
    width = max(len(k) for k, _ in report.injected) if report.injected else 10
    print(f"\n--- {report.guarantee} (seed {seed}, {report.duration_s:.0f}s) ---")
    print("INJECTED")
    for k, v in report.injected:
        print(f"  {k:<{width}}  {v}")
    print("CHECKED")
    for c in report.checks:
        print(f"  [{'PASS' if c.ok else 'FAIL'}] {c.name:<12} {c.detail}")
    if report.evidence_file is not None:
        print(f"  evidence: {report.evidence_file}")
