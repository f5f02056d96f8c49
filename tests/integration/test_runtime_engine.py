"""The engine against the real broker: per-order ordering under concurrency, bounded buffers,
commits with out-of-order completion, and rebalances between two instances."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bridge_devkit.harness import (
    Bridge,
    Outputs,
    make_settings,
    poll_until,
    running_bridge,
    set_state,
    simulator,
)

from bridge.app import Service
from bridge.commands import command_to_json
from bridge.config import load_settings
from bridge.errors import ConfigError

pytestmark = pytest.mark.broker

LIFECYCLE = ["processing", "checkout", "processing", "accepted", "completed"]


def _check_orders(bridge: Bridge, orders: list[str], lifecycle: list[str]) -> None:
    for o in orders:
        assert bridge.sim.app.history(o) == ["checkout", *lifecycle], o
    by_order: dict[str, list[tuple[str | None, str]]] = {}
    for name, e in bridge.outputs.events:
        if name == "OrderStateChanged":
            by_order.setdefault(e["orderId"], []).append((e["previousStatus"], e["newStatus"]))
    for o in orders:
        expected = list(zip(["checkout", *lifecycle[:-1]], lifecycle, strict=True))
        assert by_order[o] == expected, o


async def test_per_order_ordering_with_concurrency_across_orders(kafka_bootstrap: str) -> None:
    """With random API latency, each order's commands apply in offset order while orders overlap."""
    async with (
        simulator(latency_ms=5, jitter_ms=25) as sim,
        running_bridge(kafka_bootstrap, sim, partitions=4, max_in_flight=64) as bridge,
    ):
        orders = sim.app.seed(80, "norce", "1")
        commands = [set_state(o, s) for s in LIFECYCLE for o in orders]
        await bridge.send(*commands)
        out = await bridge.all_handled(timeout_s=90)
        assert not out.dlq
        assert all(r["outcome"] == "applied" for r in out.results)
        _check_orders(bridge, orders, LIFECYCLE)
        # Concurrency happened: API calls of different orders overlapped in time (a behaviour
        # of the bridge, not a wall-clock budget that a busy machine can miss).
        calls = sim.app.calls()
        assert max(_overlap(calls)) > 8, "no overlapping API calls across orders"


def _paused(service: Service) -> float:
    """The paused-partitions gauge the bridge exports."""
    return service.registry.get_sample_value("norce_bridge_paused_partitions") or 0.0


def _assigned(service: Service) -> set[str]:
    """Partitions an instance reports lag for: its assignment (labels go on revoke)."""
    return {
        sample.labels["partition"]
        for metric in service.registry.collect()
        if metric.name == "norce_bridge_consumer_lag"
        for sample in metric.samples
    }


def _overlap(calls: list[dict[str, Any]]) -> list[int]:
    """Number of API calls whose [start, end] windows overlap each call's start (approximate)."""
    times = sorted(float(c["monotonic"]) for c in calls if "monotonic" in c)
    window = 0.005
    return [sum(1 for u in times if t - window <= u <= t + window) for t in times] or [0]


async def test_commands_of_one_order_in_different_partitions_never_run_concurrently(
    kafka_bootstrap: str,
) -> None:
    """The bridge orders by the order id in the value, not by the record key."""
    async with (
        simulator(latency_ms=20) as sim,
        running_bridge(kafka_bootstrap, sim, partitions=4, max_in_flight=64) as bridge,
    ):
        (order,) = sim.app.seed(1, "norce", "1")
        # Alternate keys so that one order's commands land in several partitions, but send each
        # only after the previous one is handled: concurrency would show up as an API error.
        for i, state in enumerate(LIFECYCLE):
            cmd = set_state(order, state)
            await bridge.send_raw(command_to_json(cmd), key=f"k{i}".encode())

            def handled(o: Outputs, n: int = i + 1) -> bool:
                return len(o.results) >= n

            await bridge.collect(handled)
        assert bridge.sim.app.history(order) == ["checkout", *LIFECYCLE]
        assert len({p for p, _ in bridge.sent}) > 1


async def test_out_of_order_completion_commits_only_the_contiguous_prefix(
    kafka_bootstrap: str,
) -> None:
    """A slow command at the head of a partition holds the commit back while later ones finish."""
    async with (
        simulator() as sim,
        running_bridge(kafka_bootstrap, sim, partitions=1, max_in_flight=32) as bridge,
    ):
        slow, *fast = sim.app.seed(21, "norce", "1")
        sim.app.set_faults(
            script=[
                {
                    "method": "PUT",
                    "path_suffix": f"{slow}/state",
                    "status": 503,
                    "count": 1000,
                }
            ]
        )
        await bridge.send(
            set_state(slow, "processing"), *[set_state(o, "processing") for o in fast]
        )
        out = await bridge.collect(lambda o: len(o.results) >= len(fast), timeout_s=30)
        assert {r["orderId"] for r in out.results} == set(fast)
        service = bridge.service
        assert service is not None
        # The slow head is retried (held) while the 20 later records are done: results being
        # visible does not mean the worker has recorded them yet, so poll its counters.
        runtime = service.runtime
        await poll_until(lambda: runtime.counters["applied"] >= len(fast), 15, "later records done")
        await poll_until(lambda: runtime.counters["commits"] >= 1, 15, "a commit")
        committed = await bridge.committed()
        assert committed.get(0, 0) == 0, "committed past the unfinished head"
        sim.app.set_faults(script=[])
        await bridge.all_handled(timeout_s=30)
        end = (await bridge.end_offsets())[0]
        deadline = time.monotonic() + 15
        while (await bridge.committed()).get(0) != end:
            assert time.monotonic() < deadline, "commit did not advance after the head finished"
            await bridge.collect(lambda o: False, timeout_s=0.2)


async def test_bounded_buffers_pause_and_resume_partitions(kafka_bootstrap: str) -> None:
    """A backlog larger than the buffers pauses partitions, memory stays bounded, all complete."""
    async with (
        simulator(latency_ms=10) as sim,
        running_bridge(
            kafka_bootstrap,
            sim,
            start=False,
            partitions=2,
            max_in_flight=8,
            max_buffered_per_partition=20,
            max_buffered_total=30,
        ) as bridge,
    ):
        orders = sim.app.seed(200, "norce", "1")
        await bridge.send(*[set_state(o, "processing") for o in orders])
        service = await bridge.start()
        runtime = service.runtime
        peak = 0
        paused_seen = False
        deadline = time.monotonic() + 90
        while len(bridge.outputs.results) < len(orders):
            assert time.monotonic() < deadline
            peak = max(peak, runtime.buffered)
            paused_seen = paused_seen or _paused(service) > 0
            await bridge.collect(lambda o: False, timeout_s=0.05)
        assert paused_seen, "no partition was ever paused"
        # One fetch batch per partition may land on top of the limit before the pause applies.
        assert peak <= 30 + 2 * 500
        # Once the last outputs are written, the buffers drain and every partition resumes
        # (the bookkeeping finishes after the collector has read the last result: poll).
        await poll_until(
            lambda: _paused(service) == 0 and runtime.buffered == 0,
            30,
            "buffers drained and every partition resumed",
        )
        assert all(sim.app.history(o) == ["checkout", "processing"] for o in orders)


async def test_rebalance_between_two_instances_loses_and_reorders_nothing(
    kafka_bootstrap: str,
) -> None:
    """Two instances split the partitions; stopping one mid-run loses nothing, reorders nothing."""
    async with (
        simulator(latency_ms=5, jitter_ms=10) as sim,
        running_bridge(kafka_bootstrap, sim, partitions=6, max_in_flight=32, start=False) as first,
    ):
        second = Bridge(kafka_bootstrap, sim, first.settings)
        orders = sim.app.seed(120, "norce", "1")
        commands = [set_state(o, s) for s in LIFECYCLE for o in orders]
        half = len(commands) // 2
        await first.send(*commands[:half])
        await first.start()
        await second.start()
        assert first.service is not None
        assert second.service is not None
        s1, s2 = first.service, second.service
        await poll_until(
            lambda: all(map(_assigned, (s1, s2))) and len(_assigned(s1) | _assigned(s2)) == 6,
            30,
            "both instances assigned, all six partitions covered",
        )
        assert not _assigned(s1) & _assigned(s2)
        await first.send(*commands[half:])
        await first.collect(lambda o: len(o.results) >= half // 2, timeout_s=60)
        await second.stop()  # mid-run: its partitions move to the first instance
        out = await first.all_handled(timeout_s=120)
        assert not out.dlq
        per_command = out.results_by_command()
        assert set(per_command) == {c.command_id for c in commands}
        _check_orders(first, orders, LIFECYCLE)
        await second.aclose()


async def test_partition_mode_keeps_one_record_in_flight_per_partition(
    kafka_bootstrap: str,
) -> None:
    """ordering=partition processes a partition's records one at a time, in order."""
    async with (
        simulator(latency_ms=2) as sim,
        running_bridge(
            kafka_bootstrap, sim, partitions=2, ordering="partition", max_in_flight=64
        ) as bridge,
    ):
        orders = sim.app.seed(20, "norce", "1")
        await bridge.send(*[set_state(o, s) for s in ("processing", "accepted") for o in orders])
        service = bridge.service
        assert service is not None
        peak = 0

        def sample() -> bool:
            nonlocal peak
            peak = max(peak, service.runtime.in_flight)
            return len(bridge.outputs.results) >= 40

        while not sample():
            await bridge.collect(lambda o: False, timeout_s=0.02)
        assert peak <= 2
        assert all(sim.app.history(o) == ["checkout", "processing", "accepted"] for o in orders)


def test_settings_reject_unknown_ordering() -> None:
    """Only key and partition are valid ordering modes."""
    with pytest.raises(ConfigError, match="ORDERING"):
        load_settings(processing={"ordering": "random"})
    assert make_settings("x:1", "http://127.0.0.1:1").processing.ordering.value == "key"
