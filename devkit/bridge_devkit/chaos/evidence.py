"""The evidence of a failed chaos run, per failing order: its commands with their results and
dead letters, the simulator's history and call log, and the bridges' log lines about it."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge_devkit.chaos.checks import InputRecord, Problems
from bridge_devkit.chaos.context import RunContext
from bridge_devkit.chaos.fencing import FenceViolation
from bridge_devkit.chaos.fleet import Fleet
from bridge_devkit.harness import Outputs


async def write_evidence(
    ctx: RunContext,
    inputs: list[InputRecord],
    col: Outputs,
    fleet: Fleet,
    problems: Problems,
    violations: list[FenceViolation],
    sim_hist: dict[str, list[str]],
) -> Path:
    """Collect, per failing order: commands, results, simulator history and calls, logs."""
    orders: dict[str, list[str]] = defaultdict(list)
    plan = ctx.plan
    for check, per in problems.orders.items():
        for order_id, why in per.items():
            orders[order_id].append(f"{check}: {why}")
    for check, found in problems.records.items():
        for cid, problem in found:
            spec = plan.specs.get(cid)
            order_id = spec.order_id if spec and spec.order_id else f"(record {cid})"
            orders[order_id].append(f"{check}: {problem}")
    wanted_orders = set(orders)
    cids_by_order: dict[str, set[str]] = defaultdict(set)
    for spec in plan.specs.values():
        if spec.order_id in wanted_orders:
            cids_by_order[spec.order_id].add(spec.cid)
    logs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for inc in fleet.incarnations:
        try:
            lines = inc.log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if '"order_id"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            order_id = rec.get("order_id")
            if order_id in wanted_orders:
                rec["incarnation"] = inc.n
                rec.pop("exc", None)
                logs[order_id].append(rec)
    evidence: dict[str, Any] = {
        "seed": ctx.seed,
        "guarantee": ctx.guarantee,
        "fence_violations": [v.describe() for v in violations],
        "ownership": [
            f"{datetime.fromtimestamp(e.ts, UTC).isoformat(timespec='milliseconds')} "
            f"#{e.incarnation} {e.kind} {sorted(e.partitions)}"
            for e in sorted((e for t in fleet.tails.values() for e in t.events), key=lambda e: e.ts)
        ],
        "orders": {},
    }
    for order_id, order_problems in sorted(orders.items()):
        entry: dict[str, Any] = {"problems": order_problems}
        if order_id in plan.queues or order_id in sim_hist:
            recs = [r for r in inputs if r.spec is not None and r.spec.order_id == order_id]
            entry["commands"] = [
                {
                    "partition": r.partition,
                    "offset": r.offset,
                    "command_id": r.cid,
                    "command": r.spec.describe() if r.spec else "?",
                    "results": [
                        f"{x['outcome']}" + (f" ({x.get('reason')})" if x.get("reason") else "")
                        for x in col.results_at.get((r.partition, r.offset), [])
                    ],
                    "dead_letters": len(col.dlq_at.get((r.partition, r.offset), [])),
                }
                for r in recs
            ]
            entry["simulator_history"] = sim_hist.get(order_id)
            calls = await ctx.sim.calls(order_id)
            entry["simulator_calls"] = [
                f"{c['ts']} {c['headers'].get('x-adapterid')} {c['method']} "
                f"{c['path'].rsplit('/', 1)[-1]}"
                f"{' ' + json.dumps(c['body']) if c.get('body') else ''} -> "
                f"{c['status'] if c['status'] is not None else 'no answer'}"
                f"{' [' + c['fault'] + ']' if c.get('fault') else ''}"
                for c in calls
            ]
            entry["bridge_log"] = [
                " ".join(
                    str(x)
                    for x in (
                        f"#{rec['incarnation']}",
                        rec.get("ts"),
                        rec.get("level"),
                        rec.get("msg"),
                        *(
                            f"{k}={rec[k]}"
                            for k in (
                                "command_id",
                                "outcome",
                                "partition",
                                "offset",
                                "reason",
                                "error",
                                "status",
                                "attempts",
                            )
                            if k in rec
                        ),
                    )
                )
                for rec in logs.get(order_id, [])
            ]
        evidence["orders"][order_id] = entry
    for v in violations[:10]:
        print(f"  FENCING {v.describe()}")
    path = ctx.workdir / f"evidence-{ctx.guarantee}.json"
    path.write_text(json.dumps(evidence, indent=2, default=str))
    # print a few
    for order_id, entry in list(evidence["orders"].items())[:3]:
        print(f"\n  EVIDENCE {order_id}")
        for problem in entry["problems"][:5]:
            print(f"    problem: {problem}")
        for c in entry.get("commands", []):
            res = ", ".join(c["results"]) or "-"
            dl = f" DLQ x{c['dead_letters']}" if c["dead_letters"] else ""
            print(
                f"    p{c['partition']}@{c['offset']} {c['command_id']} {c['command']} -> {res}{dl}"
            )
        if "simulator_history" in entry:
            print(f"    simulator history: {entry['simulator_history']}")
            for call in entry["simulator_calls"][-30:]:
                print(f"    call: {call}")
            for line in entry["bridge_log"][-40:]:
                print(f"    log: {line}")
    return path
