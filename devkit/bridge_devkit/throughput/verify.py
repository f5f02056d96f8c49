"""Measuring and verifying one finished benchmark run (a fast wrong answer is a failure).

Exactly one result per command (a run stopped early: at most one, and per order a prefix of its
sequence) with the expected outcome and source; no dead letters; one snapshot per applied
command, in command order per order; the simulator's history of every order equals the
commands' targets, and its order equals the last snapshot; the bridge counted nothing failed.
For a sample of orders (``BYTE_SAMPLE``, every order when there are fewer) the last snapshot's
value bytes must equal what the bridge's own codec makes of the order the simulator serves now
(``AvroCodec`` + ``snapshot_from_order``, with the snapshot's ``fetchedAt``/ids): for the
reference pipeline this proves it does the bridge's work, not less; for the bridge it checks the
check. The same sample's last order state record (the bridge's order state store, issue 14) must
equal, byte for byte, what ``bridge.order_state.OrderState`` makes of that order with the
snapshot's time and command id, and every snapshot must have come with one state record: four
records per command for both pipelines.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from bridge.codec import AvroCodec
from bridge.events import parse_rfc3339, snapshot_from_order
from bridge.order_state import OrderState
from bridge_devkit.harness import OutputRecord, SimulatorAdmin
from bridge_devkit.harness.verify import snapshot_diff
from bridge_devkit.throughput.runs import WARMUP_S, RunResult, interpolate, percentile
from bridge_devkit.throughput.workload import Sent, Workload

BYTE_SAMPLE = 100


@dataclass
class RunOutputs:
    """What one run left behind."""

    calls: list[dict[str, Any]]  # the simulator's call log
    results: list[OutputRecord]
    snapshots: list[OutputRecord]
    dead_letters: int
    states: list[OutputRecord] | None = None  # the order state topic, raw (None: not read)


def first_call(result: RunResult, calls: list[dict[str, Any]]) -> float | None:
    """The time of the run's first API request (None, and failed, when there was none)."""
    result.api_requests = len(calls)
    bad_calls = Counter(str(c["status"]) for c in calls if (c["status"] or 0) >= 300)
    if bad_calls:
        result.failures.append(f"simulator answered non-2xx: {dict(bad_calls)}")
    if not calls:
        result.failures.append("the simulator saw no API request")
        return None
    return min(datetime.fromisoformat(c["ts"]).timestamp() for c in calls)


def check_results(
    result: RunResult, workload: Workload, sent: dict[str, Sent], results: list[OutputRecord]
) -> Counter[str]:
    """At most one result per command (exactly one unless the run was stopped early), the
    expected outcome, the right source record; per order a prefix of its sequence."""
    fail = result.failures.append
    seen: Counter[str] = Counter()
    for rec in results:
        r = rec.value or {}
        cid = r["commandId"]
        seen[cid] += 1
        planned = workload.by_id.get(cid)
        if planned is None:
            fail(f"result for an unknown command {cid}")
            continue
        if r["outcome"] != planned.expect:
            fail(f"{cid} ({planned.state}): outcome {r['outcome']} ({r.get('reason')})")
        src = sent[cid]
        if (r["source"]["partition"], r["source"]["offset"]) != (src.partition, src.offset):
            fail(f"{cid}: result names source {r['source']}, sent to {src}")
    missing = [c.command_id for c in workload.commands if seen[c.command_id] == 0]
    dupes = [cid for cid, n in seen.items() if n > 1]
    if missing and result.spec.stop_after_s is None:
        fail(f"{len(missing)} commands without a result, e.g. {missing[:3]}")
    if dupes:
        fail(f"{len(dupes)} commands with more than one result, e.g. {dupes[:3]}")
    return seen


def done_per_order(result: RunResult, workload: Workload, seen: Counter[str]) -> dict[str, int]:
    """Per order, how many commands (a prefix: nothing skipped or reordered) have a result."""
    done: dict[str, int] = {}
    for order_id, seq in workload.per_order.items():
        k = 0
        while k < len(seq) and seen[seq[k].command_id]:
            k += 1
        done[order_id] = k
        later = [c.index for c in seq[k:] if seen[c.command_id]]
        if later:
            result.failures.append(
                f"{order_id}: commands {later[:3]} have results but #{k} has none"
            )
    return done


def check_snapshots(
    result: RunResult,
    workload: Workload,
    sent: dict[str, Sent],
    snapshots: list[OutputRecord],
    seen: Counter[str],
) -> dict[str, OutputRecord]:
    """One snapshot per applied command, in command order per order; the latency per command
    (paced runs: also apart for the first ``WARMUP_S`` and after). Returns the last snapshot
    record of every order."""
    fail = result.failures.append
    last: dict[str, OutputRecord] = {}
    last_index: dict[str, int] = {}
    snapped: set[str] = set()
    latencies: list[float] = []
    sent_at: list[int] = []
    values: list[dict[str, Any]] = []  # the snapshots, for the paced runs' split at fetchedAt
    for rec in snapshots:
        order_id = rec.key
        if rec.value is None:
            fail(f"unexpected tombstone for {order_id}")
            continue
        snap = rec.value
        cid = snap["commandId"]
        planned = workload.by_id.get(cid)
        if planned is None or planned.order_id != order_id or snap["id"] != order_id:
            fail(f"snapshot keyed {order_id} carries foreign command {cid}")
            continue
        if not seen[cid]:
            fail(f"{cid}: snapshot published but no result")
        if planned.index <= last_index.get(order_id, -1):
            fail(f"{order_id}: snapshot of command #{planned.index} after a later one")
        last_index[order_id] = planned.index
        last[order_id] = rec
        if cid in snapped:
            fail(f"{cid}: more than one snapshot")
        snapped.add(cid)
        latencies.append(rec.timestamp_ms - sent[cid].timestamp_ms)
        sent_at.append(sent[cid].timestamp_ms)
        values.append(snap)
    # Every applied command publishes a snapshot; an already_applied one may (a re-fetch).
    applied = {
        c.command_id for c in workload.commands if c.expect == "applied" and seen[c.command_id]
    }
    if applied - snapped:
        fail(f"{len(applied - snapped):,} applied commands without a snapshot")
    result.latency_samples = len(latencies)
    result.p50_ms = percentile(latencies, 50)
    result.p99_ms = percentile(latencies, 99)
    if result.spec.rate is not None and sent_at:
        start = min(s.timestamp_ms for s in sent.values())
        cut = start + WARMUP_S * 1000
        warm = [x for x, t in zip(latencies, sent_at, strict=True) if t < cut]
        steady = [x for x, t in zip(latencies, sent_at, strict=True) if t >= cut]
        result.warmup_samples = len(warm)
        result.warmup_p99_ms = percentile(warm, 99)
        result.steady_p99_ms = percentile(steady, 99)
        split = []
        for x, t, snap in zip(latencies, sent_at, values, strict=True):
            started = fetched_at(snap) if t >= cut else None
            if started is not None:
                to_start = started.timestamp() * 1000 - t
                split.append((to_start, x - to_start))
        result.steady_p99_to_start_ms = percentile([a for a, _ in split], 99)
        result.steady_p99_start_to_snapshot_ms = percentile([b for _, b in split], 99)
        per_second: dict[int, list[float]] = {}
        for x, t in zip(latencies, sent_at, strict=True):
            per_second.setdefault((t - start) // 1000, []).append(x)
        result.paced_seconds = [
            (int(second), len(xs), percentile(xs, 50), percentile(xs, 99), max(xs))
            for second, xs in sorted(per_second.items())
        ]
    return last


async def check_simulator(
    result: RunResult,
    sim: SimulatorAdmin,
    workload: Workload,
    done: dict[str, int],
    last: dict[str, OutputRecord],
    codec: AvroCodec,
    sample: set[str],
    states: dict[str, OutputRecord] | None = None,
) -> None:
    """Per order: the simulator's history, and its order against the last snapshot (for the
    orders of ``sample`` also byte for byte against the bridge's codec, and, when ``states``
    (the last state record per order) is given, its state record against the bridge's)."""
    gate = asyncio.Semaphore(16)
    problems: list[str] = []
    byte_problems: list[str] = []
    state_problems: list[str] = []

    async def check(order_id: str) -> None:
        async with gate:
            history = await sim.history(order_id)
            response = await sim.get_order(order_id)
        want = workload.history(order_id, done[order_id])
        if history != want:
            problems.append(f"{order_id}: history {history} != {want}")
        if response.status_code != 200:
            problems.append(f"{order_id}: GET answered {response.status_code}")
        elif order_id not in last:
            if done[order_id]:
                problems.append(f"{order_id}: no snapshot")
        elif snapshot_diff(last[order_id].value or {}, response.json()):
            problems.append(f"{order_id}: last snapshot differs from the simulator's order")
        elif order_id in sample:
            result.bytes_checked += 1
            if last[order_id].raw != bridge_snapshot_bytes(codec, last[order_id], response.content):
                byte_problems.append(order_id)
            if states is not None:
                record = states.get(order_id)
                want_state = bridge_state_bytes(last[order_id], response.content)
                if record is None or record.raw != want_state:
                    state_problems.append(order_id)

    await asyncio.gather(*(check(o) for o in workload.per_order))
    if problems:
        result.failures.append(f"{len(problems)} orders wrong, e.g. " + "; ".join(problems[:3]))
    if byte_problems:
        result.failures.append(
            f"{len(byte_problems)} of {result.bytes_checked} sampled orders: last snapshot bytes "
            f"differ from the bridge codec's, e.g. {byte_problems[:3]}"
        )
    if state_problems:
        result.failures.append(
            f"{len(state_problems)} of {result.bytes_checked} sampled orders: last order state "
            f"record missing or not the bridge's OrderState, e.g. {state_problems[:3]}"
        )


def fetched_at(snapshot: dict[str, Any]) -> datetime | None:
    """A snapshot value's ``fetchedAt``: when its command's work started (None if unreadable)."""
    return parse_rfc3339(str(snapshot.get("fetchedAt")))


def bridge_snapshot_bytes(codec: AvroCodec, snapshot: OutputRecord, order_json: bytes) -> bytes:
    """What the bridge publishes for ``order_json`` with the snapshot's own time and ids."""
    value = snapshot.value or {}
    fetched = fetched_at(value)
    if fetched is None:
        return b""
    record = snapshot_from_order(
        orjson.loads(order_json),
        fetched_at=fetched,
        command_id=value.get("commandId"),
        correlation_id=value.get("correlationId"),
    )
    return codec.encode("OrderSnapshot", record)


def bridge_state_bytes(snapshot: OutputRecord, order_json: bytes) -> bytes:
    """The order state record the bridge writes with ``snapshot`` of ``order_json``."""
    value = snapshot.value or {}
    fetched = fetched_at(value)
    if fetched is None:
        return b""
    state = OrderState.of_order(
        orjson.loads(order_json), now=fetched, command_id=str(value.get("commandId"))
    )
    return state.encode()


def last_states(
    result: RunResult, states: list[OutputRecord] | None, snapshots: int
) -> dict[str, OutputRecord] | None:
    """The last order state record per order (records in partition-offset order), after
    checking that every snapshot came with one (None when the run did not read the topic)."""
    if states is None:
        return None
    if len(states) != snapshots:
        result.failures.append(
            f"{len(states):,} order state records for {snapshots:,} snapshots (one each)"
        )
    return {rec.key: rec for rec in states}


def byte_sample(order_ids: list[str], seed: int, everything: bool) -> set[str]:
    """The orders compared byte for byte: ``BYTE_SAMPLE`` of them (all when fewer, or asked)."""
    if everything or len(order_ids) <= BYTE_SAMPLE:
        return set(order_ids)
    return set(random.Random(seed).sample(order_ids, BYTE_SAMPLE))


def check_counters(result: RunResult, workload: Workload, seen: Counter[str]) -> None:
    """The bridge's own counters (its "bridge stopped" line) agree with what it published."""
    counters = result.bridge_counters
    want = Counter(c.expect for c in workload.commands if seen[c.command_id])
    for name in ("applied", "already_applied"):
        if counters and counters.get(name) != want[name]:
            result.failures.append(
                f"bridge counted {name}={counters.get(name)}, expected {want[name]}"
            )
    for name in ("failed", "dead_lettered", "rejected", "expired", "errors", "unsupported"):
        if counters.get(name):
            result.failures.append(f"bridge counted {name}={counters[name]}")


async def measure_and_verify(
    result: RunResult,
    sim: SimulatorAdmin,
    workload: Workload,
    sent: dict[str, Sent],
    outputs: RunOutputs,
    samples: list[tuple[float, float]],
    spawned: float,
    codec: AvroCodec,
    all_bytes: bool = False,
) -> None:
    t_first = first_call(result, outputs.calls)
    if t_first is None:
        return
    result.startup_s = t_first - spawned
    if outputs.dead_letters:
        result.failures.append(f"{outputs.dead_letters} dead letters")
    if not outputs.results:
        result.failures.append("no results")
        return
    t_last = max(r.timestamp_ms for r in outputs.results) / 1000
    result.window_s = t_last - t_first
    if samples:
        result.cpu_s = interpolate(samples, t_last) - interpolate(samples, t_first)
    seen = check_results(result, workload, sent, outputs.results)
    result.processed = len(seen)
    result.throughput = result.processed / result.window_s
    done = done_per_order(result, workload, seen)
    last = check_snapshots(result, workload, sent, outputs.snapshots, seen)
    states = last_states(result, outputs.states, len(outputs.snapshots))
    await sim.set_faults(latency_ms=0, jitter_ms=0)
    sample = byte_sample(sorted(workload.per_order), len(outputs.results), all_bytes)
    await check_simulator(result, sim, workload, done, last, codec, sample, states)
    check_counters(result, workload, seen)
