"""The paced runs' steady-state p99 split at the snapshot's ``fetchedAt`` (work start).

``check_snapshots`` reports, for commands sent after the warm-up, the p99 of CreateTime ->
``fetchedAt`` (waiting to be worked on) and of ``fetchedAt`` -> snapshot log-append time (the
work): where a steady-state p99 comes from, for the bridge and the reference alike.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from bridge_devkit.harness import OutputRecord
from bridge_devkit.throughput.runs import WARMUP_S, RunResult, RunSpec
from bridge_devkit.throughput.verify import check_snapshots
from bridge_devkit.throughput.workload import Sent, build_workload

from bridge.timestamps import format_rfc3339


def _stamp(ms: float) -> str:
    return format_rfc3339(datetime.fromtimestamp(ms / 1000, UTC))


def test_steady_state_p99_is_split_at_work_start() -> None:
    workload = build_workload(["o1", "o2"], 8, random.Random(1), "t")
    spec = RunSpec(
        label="paced", kind="paced", mode="key", latency_ms=20, commands=8, orders=2,
        max_in_flight=4, http_backend="aiohttp", rate=1.0,
    )  # fmt: skip
    result = RunResult(spec)
    start = 1_800_000_000_000
    sent: dict[str, Sent] = {}
    snapshots: list[OutputRecord] = []
    for i, cmd in enumerate(workload.commands):
        # one command per second: the first WARMUP_S seconds are warm-up
        t = start + i * 1000
        sent[cmd.command_id] = Sent(0, i, t)
        wait, work = (10 + i, 50 + 2 * i)
        value = {"id": cmd.order_id, "commandId": cmd.command_id, "fetchedAt": _stamp(t + wait)}
        snapshots.append(
            OutputRecord("s", 0, i, cmd.order_id, "OrderSnapshot", value, b"", t + wait + work)
        )
    seen = Counter(c.command_id for c in workload.commands)
    check_snapshots(result, workload, sent, snapshots, seen)
    assert result.failures == []
    last = len(workload.commands) - 1
    assert last > WARMUP_S
    assert result.steady_p99_to_start_ms == pytest.approx(10 + last, abs=0.01)
    assert result.steady_p99_start_to_snapshot_ms == pytest.approx(50 + 2 * last, abs=0.01)
    assert result.steady_p99_ms == 60 + 3 * last
