"""The reference pipeline writes the bridge's order state record, and the benchmark checks it.

Since issue 14 the bridge publishes a fourth record per command (its order state store); the
reference does the same work with its own code (``reference.state_record``), and the benchmark
compares each sampled order's last state record with ``bridge.order_state.OrderState``. Both
halves are checked here without a broker: the reference's bytes equal the bridge's for the
simulator's generated orders, and the benchmark's check fails a run whose state records are
missing, one short, or not the bridge's.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
from bridge_devkit.harness import OutputRecord
from bridge_devkit.throughput.reference import order_view, state_record
from bridge_devkit.throughput.reference_avro import rfc3339_now
from bridge_devkit.throughput.runs import RunResult, RunSpec
from bridge_devkit.throughput.verify import bridge_state_bytes, last_states
from norce_simulator.data import OrderFactory

from bridge.events import parse_rfc3339
from bridge.order_state import OrderState, decode_state


def orders(count: int, seed: int) -> list[dict[str, Any]]:
    factory = OrderFactory(random.Random(seed))
    now = datetime.now(UTC)
    built = (
        factory.build(order_id=f"o_state{i:04d}", merchant="norce", channel="1", now=now)
        for i in range(count)
    )
    return [orjson.loads(orjson.dumps(order)) for order in built]  # JSON as the API serves it


def test_reference_state_record_is_the_bridges_byte_for_byte() -> None:
    for i, order in enumerate(orders(50, seed=14)):
        at, cid = rfc3339_now(), f"cmd-{i}"
        moment = parse_rfc3339(at)
        assert moment is not None
        want = OrderState.of_order(order, now=moment, command_id=cid).encode()
        got = state_record(order, order_view(order), at, cid)
        assert got == want
        state = decode_state(got)
        assert state is not None
        assert state.command_id == cid
        assert not state.deleted


def snapshot(order_id: str, fetched_at: str, command_id: str) -> OutputRecord:
    value = {"id": order_id, "fetchedAt": fetched_at, "commandId": command_id}
    return OutputRecord("snapshots", 0, 0, order_id, "OrderSnapshot", value, b"")


def state(order_id: str, offset: int, raw: bytes) -> OutputRecord:
    return OutputRecord("state", 0, offset, order_id, None, None, raw)


def result() -> RunResult:
    spec = RunSpec(
        label="t", kind="throughput", mode="key", latency_ms=0, commands=2, orders=1,
        max_in_flight=1, http_backend="aiohttp",
    )  # fmt: skip
    return RunResult(spec)


def test_the_benchmark_check_wants_one_state_record_per_snapshot_and_the_bridges_bytes() -> None:
    order = orders(1, seed=3)[0]
    order_id, body = order["id"], orjson.dumps(order)
    snap = snapshot(order_id, rfc3339_now(), "cmd-2")
    right = bridge_state_bytes(snap, body)
    assert decode_state(right) is not None

    run = result()
    found = last_states(run, [state(order_id, 0, b"older"), state(order_id, 1, right)], 2)
    assert run.failures == []
    assert found is not None
    assert found[order_id].raw == right

    short = result()
    last_states(short, [state(order_id, 0, right)], 2)
    assert short.failures
    assert "1 order state records for 2 snapshots" in short.failures[0]

    assert last_states(result(), None, 2) is None  # a run that did not read the topic
    other_command = bridge_state_bytes(snapshot(order_id, rfc3339_now(), "cmd-1"), body)
    assert other_command != right
