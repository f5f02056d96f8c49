"""Verifying the join run, where a rebalance happens mid-run (at_least_once): nothing lost.

Every command has at least one result, each naming its source record and ending as planned — an
``applied`` command found already applied during a replay may answer ``already_applied`` with
``replayed=true``; duplicates and replays are counted, not failures. No dead letters. Every order's
``/__admin/history`` equals its commands' targets (nothing lost, nothing applied twice or out of
order), and the newest snapshot as a version-aware reader sees it equals ``GET`` of the order.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from bridge.codec import AvroCodec
from bridge_devkit.harness import Outputs, SimulatorAdmin, result_source
from bridge_devkit.harness.verify import snapshot_diff
from bridge_devkit.throughput.scalereport import ScaleResult
from bridge_devkit.throughput.workload import Sent, Workload


def check_results_at_least_once(
    result: ScaleResult, workload: Workload, sent: dict[str, Sent], outputs: Outputs
) -> None:
    fail = result.failures.append
    by_command = outputs.results_by_command()
    for cid, results in by_command.items():
        planned = workload.by_id.get(cid)
        if planned is None:
            fail(f"result for an unknown command {cid}")
            continue
        result.duplicates += len(results) - 1
        src = sent[cid]
        for r in results:
            result.replayed += bool(r.get("replayed"))
            if result_source(r) != (src.partition, src.offset):
                fail(f"{cid}: result names source {r['source']}, sent to {src}")
            replay_of_applied = (
                planned.expect == "applied"
                and r["outcome"] == "already_applied"
                and r.get("replayed")
            )
            if r["outcome"] != planned.expect and not replay_of_applied:
                fail(f"{cid} ({planned.state}): outcome {r['outcome']} ({r.get('reason')})")
    missing = [c.command_id for c in workload.commands if c.command_id not in by_command]
    if missing:
        fail(f"{len(missing)} commands without a result (lost), e.g. {missing[:3]}")
    if outputs.dlq:
        fail(f"{len(outputs.dlq)} dead letters")
    applied = {r["commandId"] for r in outputs.results if r["outcome"] == "applied"}
    snapped = {s["commandId"] for _, s in outputs.snapshots if s is not None}
    if applied - snapped:
        fail(f"{len(applied - snapped):,} applied commands without a snapshot")
    result.stale_snapshots = outputs.stale_snapshots


async def check_orders(
    result: ScaleResult,
    sim: SimulatorAdmin,
    workload: Workload,
    outputs: Outputs,
    codec: AvroCodec,
) -> None:
    """Per order: the simulator's history is exactly the planned one; the newest snapshot
    equals the order the API serves."""
    gate = asyncio.Semaphore(16)
    problems: list[str] = []

    async def check(order_id: str) -> None:
        async with gate:
            history = await sim.history(order_id)
            response = await sim.get_order(order_id)
        want = workload.history(order_id, len(workload.per_order[order_id]))
        if history != want:
            problems.append(f"{order_id}: history {history} != {want}")
        raw = outputs.newest_snapshot.get(order_id)
        if response.status_code != 200:
            problems.append(f"{order_id}: GET answered {response.status_code}")
        elif raw is None:
            problems.append(f"{order_id}: no snapshot")
        else:
            snapshot: dict[str, Any] = codec.decode(raw)[1]
            if snapshot_diff(snapshot, response.json()):
                problems.append(f"{order_id}: newest snapshot differs from the simulator's order")

    await asyncio.gather(*(check(o) for o in workload.per_order))
    if problems:
        result.failures.append(f"{len(problems)} orders wrong, e.g. " + "; ".join(problems[:3]))


def check_counters_at_least_once(
    result: ScaleResult, counters: list[dict[str, int]], joiner: int
) -> None:
    """Nothing failed, rejected, expired or dead-lettered; the joiner did part of the work."""
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    for name in ("failed", "dead_lettered", "rejected", "expired"):
        if total[name]:
            result.failures.append(f"bridges counted {name}={total[name]}")
    result.skipped_replayed = total["skipped_replayed"]
    if joiner < len(counters) and not counters[joiner].get("consumed"):
        result.failures.append("the joining instance consumed nothing: the join was not tested")
