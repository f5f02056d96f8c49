"""Exactly-once mode: outputs and offsets commit in one transaction per input partition."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from bridge_devkit.harness import Bridge, delete, poll_until, running_bridge, set_state, simulator

pytestmark = pytest.mark.broker


async def test_exactly_once_results_are_visible_once_and_offsets_commit_with_them(
    kafka_bootstrap: str,
) -> None:
    """Each command has exactly one read_committed result; committed offsets reach the end."""
    async with (
        simulator(latency_ms=2) as sim,
        running_bridge(
            kafka_bootstrap, sim, partitions=3, processing_guarantee="exactly_once"
        ) as bridge,
    ):
        orders = sim.app.seed(30, "norce", "1")
        commands = [
            set_state(o, s) for s in ("processing", "checkout", "processing") for o in orders
        ] + [delete(o) for o in orders[:5]]
        await bridge.send(*commands)
        await bridge.send_raw(b"not json at all")
        out = await bridge.all_handled(timeout_s=60)
        per_command = out.results_by_command()
        assert {k: len(v) for k, v in per_command.items()} == {c.command_id: 1 for c in commands}
        assert len(out.dlq) == 1
        ends = await bridge.end_offsets()
        service = bridge.service
        assert service is not None
        await bridge.collect(lambda o: False, timeout_s=2.0)
        committed = await bridge.committed()
        # The last transaction commits the final offsets.
        assert all(committed.get(p, 0) == end for p, end in ends.items())


async def test_exactly_once_restart_after_abrupt_stop_replays_without_duplicates(
    kafka_bootstrap: str,
) -> None:
    """An instance that dies without committing leaves no visible outputs; the next one redoes
    the work once and reports commands the API already applied as already applied."""
    async with (
        simulator(latency_ms=20) as sim,
        running_bridge(
            kafka_bootstrap,
            sim,
            partitions=2,
            processing_guarantee="exactly_once",
            commit_interval_s=60.0,
        ) as bridge,
    ):
        orders = sim.app.seed(20, "norce", "1")
        commands = [set_state(o, s) for s in ("processing", "accepted") for o in orders]
        await bridge.send(*commands)
        service = bridge.service
        assert service is not None
        # Let it apply some commands at the API; with a 60 s commit interval nothing commits.
        await poll_until(
            lambda: sum(len(sim.app.history(o)) - 1 for o in orders) >= 10, 30, "API progress"
        )
        # Abrupt stop: cancel the runtime task without draining (like kill -9 for Kafka: the
        # open transactions are never committed; the new owner's init_transactions aborts them).
        assert bridge.task is not None
        bridge.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bridge.task
        await service.aclose()
        bridge.service = None
        bridge.task = None
        visible = await bridge.collect(lambda o: False, timeout_s=1.0)
        assert not visible.results, "uncommitted transactional outputs were visible"

        quick = bridge.settings.processing.model_copy(update={"commit_interval_s": 0.2})
        second = Bridge(
            kafka_bootstrap, sim, bridge.settings.model_copy(update={"processing": quick})
        )
        second.sent = bridge.sent
        await second.start()
        try:
            out = await second.all_handled(timeout_s=60)
            per_command = out.results_by_command()
            assert {k: len(v) for k, v in per_command.items()} == {
                c.command_id: 1 for c in commands
            }
            outcomes = {r["outcome"] for r in out.results}
            assert outcomes <= {"applied", "already_applied"}
            assert "already_applied" in outcomes
            for o in orders:
                assert sim.app.history(o) == ["checkout", "processing", "accepted"]
        finally:
            await second.aclose()
