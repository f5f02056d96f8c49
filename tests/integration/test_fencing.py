"""Write fencing: a bridge that lost its partition never writes to Norce again (bridge.lease).

Two real bridge processes share one single-partition topic; the simulator's call log records the
``x-adapterid`` of each request, so every write is attributed to the process that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from bridge_devkit.harness import (
    Bridge,
    assigned_partitions,
    log_lines,
    make_settings,
    poll_until,
    process_env,
    running_bridge,
    set_state,
    simulator,
    spawn_bridge,
    wait_exit,
)
from norce_simulator import SimulatorHandle

from bridge.app import ensure_topics
from bridge.commands import command_to_json

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SESSION_MS = "6000"


@dataclass
class Member:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def assigned(self) -> list[int] | None:
        return assigned_partitions(self.log)

    def logged(self, msg: str) -> list[dict[str, Any]]:
        return [x for x in log_lines(self.log) if x.get("msg") == msg]

    def logged_prefix(self, prefix: str) -> list[dict[str, Any]]:
        return [x for x in log_lines(self.log) if str(x.get("msg", "")).startswith(prefix)]


@contextlib.asynccontextmanager
async def group(
    bootstrap: str,
    sim: SimulatorHandle,
    tmp_path: Path,
    guarantee: str,
    session_ms: str = SESSION_MS,
) -> AsyncIterator[tuple[Bridge, Callable[[str], Member]]]:
    """A single-partition topic set, a reader/sender for it, and a factory of bridge processes."""
    settings = make_settings(bootstrap, sim.url, partitions=1)
    await ensure_topics(settings, {})
    reader = Bridge(bootstrap, sim, settings)
    members: list[Member] = []

    def start(name: str) -> Member:
        env = process_env(
            settings,
            sim.url,
            BRIDGE_NORCE__ADAPTER_ID=name,
            BRIDGE_KAFKA__SESSION_TIMEOUT_MS=session_ms,
            BRIDGE_PROCESSING__REVOKE_DEADLINE_S="3",
            BRIDGE_PROCESSING__DRAIN_DEADLINE_S="5",
            BRIDGE_PROCESSING__PROCESSING_GUARANTEE=guarantee,
            BRIDGE_NORCE__READ_TIMEOUT_S="10",
        )
        log = tmp_path / f"{name}.log"
        member = Member(name, spawn_bridge(env, log), log)
        members.append(member)
        return member

    try:
        yield reader, start
    finally:
        for m in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(m.proc.pid, signal.SIGCONT)
            if m.proc.poll() is None:
                m.proc.terminate()
        for m in members:
            with contextlib.suppress(AssertionError):
                await wait_exit(m.proc, 30, m.log)
        await reader.aclose()


async def two_members(start: Callable[[str], Member]) -> tuple[Member, Member]:
    """Start two members; return (owner of partition 0, the idle one) once the group is stable."""
    suffix = uuid.uuid4().hex[:6]
    first = start(f"bridge-a-{suffix}")
    await poll_until(lambda: first.assigned() == [0], 60, "the first member to own partition 0")
    joins = len(first.logged("partitions assigned"))
    second = start(f"bridge-b-{suffix}")
    await poll_until(
        lambda: (
            second.assigned() is not None
            and len(first.logged("partitions assigned")) > joins
            and sorted((first.assigned() or []) + (second.assigned() or [])) == [0]
        ),
        60,
        "the group to rebalance onto both members",
    )
    return (first, second) if first.assigned() == [0] else (second, first)


def refuse_next_put(sim: SimulatorHandle, retry_after_s: int) -> None:
    """The next PUT of a state is answered 503 with Retry-After: its command waits in backoff."""
    sim.app.set_faults(
        script=[
            {
                "method": "PUT",
                "path_suffix": "/state",
                "status": 503,
                "headers": {"Retry-After": str(retry_after_s)},
                "count": 1,
            }
        ]
    )


def puts_by(sim: SimulatorHandle, order_id: str, adapter: str) -> list[dict[str, Any]]:
    return [
        c
        for c in sim.app.calls(order_id)
        if c["method"] in ("PUT", "DELETE") and c["headers"]["x-adapterid"] == adapter
    ]


async def results_for(reader: Bridge, command_ids: set[str], timeout_s: float = 60) -> None:
    got = await reader.collect(
        lambda o: command_ids <= {r["commandId"] for r in o.results}, timeout_s
    )
    missing = command_ids - {r["commandId"] for r in got.results}
    assert not missing, f"no result for {missing}"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_paused_owner_with_a_command_in_backoff_never_writes_after_losing_it(
    kafka_bootstrap: str, tmp_path: Path, guarantee: str
) -> None:
    """SIGSTOP the owner while its PUT waits on Retry-After, past the session timeout; the other
    member takes over and moves the order on; after SIGCONT the old owner writes nothing."""
    async with (
        simulator() as sim,
        group(kafka_bootstrap, sim, tmp_path, guarantee) as (
            reader,
            start,
        ),
    ):
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        owner, successor = await two_members(start)
        refuse_next_put(sim, retry_after_s=4)
        first = set_state(order, "processing")
        await reader.send(first)
        await poll_until(
            lambda: any(c["status"] == 503 for c in puts_by(sim, order, owner.name)),
            30,
            "the owner's first PUT to be refused with Retry-After",
        )
        os.kill(owner.proc.pid, signal.SIGSTOP)
        await poll_until(lambda: successor.assigned() == [0], 60, "the successor's assignment")
        await poll_until(
            lambda: sim.app.history(order)[-1:] == ["processing"], 30, "the successor's PUT"
        )
        second = set_state(order, "accepted")
        await reader.send(second)
        await poll_until(lambda: sim.app.history(order)[-1:] == ["accepted"], 30, "accepted")
        os.kill(owner.proc.pid, signal.SIGCONT)
        # The owner's retry timer expired while it was frozen: it must abandon the command.
        await poll_until(
            lambda: bool(
                owner.logged("command abandoned before its write: partition no longer ours")
            ),
            60,
            "the resumed owner to abandon its held command",
        )
        await results_for(reader, {first.command_id, second.command_id})
        assert sim.app.history(order) == ["checkout", "processing", "accepted"]
        owner_writes = puts_by(sim, order, owner.name)
        assert [c["status"] for c in owner_writes] == [503], owner_writes
        assert owner.proc.poll() is None, "the resumed owner exited instead of rejoining"
        if guarantee == "exactly_once":
            per_command = reader.outputs.results_by_command()
            assert len(per_command[first.command_id]) == 1
            assert len(per_command[second.command_id]) == 1


async def test_member_with_a_hanging_put_revokes_in_time_and_never_writes_late(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A PUT hangs while a second member joins: the revoke waits for it only up to the revoke
    deadline, the member stays in the group, and no late write moves the order backwards."""
    async with (
        simulator() as sim,
        group(kafka_bootstrap, sim, tmp_path, "at_least_once") as (reader, start),
    ):
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        suffix = uuid.uuid4().hex[:6]
        first_member = start(f"bridge-a-{suffix}")
        await poll_until(
            lambda: first_member.assigned() == [0], 60, "the first member's assignment"
        )
        sim.app.set_faults(
            hang_s=15.0,
            script=[{"method": "PUT", "path_suffix": "/state", "fault": "hang", "count": 1}],
        )
        first = set_state(order, "processing")
        await reader.send(first)
        await poll_until(
            lambda: any(
                c["fault"] == "script:hang" for c in puts_by(sim, order, first_member.name)
            ),
            30,
            "the hanging PUT",
        )
        second_member = start(f"bridge-b-{suffix}")
        await poll_until(
            lambda: bool(first_member.logged("partitions revoked")), 30, "the revoke to finish"
        )
        await poll_until(
            lambda: (
                sorted((first_member.assigned() or []) + (second_member.assigned() or [])) == [0]
                and second_member.assigned() is not None
            ),
            60,
            "the new assignment",
        )
        await results_for(reader, {first.command_id})
        second = set_state(order, "accepted")
        await reader.send(second)
        await results_for(reader, {second.command_id})
        assert sim.app.history(order) == ["checkout", "processing", "accepted"]
        expelled = [
            x
            for x in log_lines(first_member.log)
            if "not recognized" in str(x.get("msg")) or "generation id is not" in str(x.get("msg"))
        ]
        assert not expelled, f"the first member was expelled during its revoke: {expelled}"
        assert first_member.proc.poll() is None


@pytest.mark.parametrize(
    ("guarantee", "transactional"),
    [("at_least_once", True), ("exactly_once", True), ("at_least_once", False)],
)
async def test_lag_and_commits_reach_zero_after_transactional_commands(
    kafka_bootstrap: str, guarantee: str, transactional: bool
) -> None:
    """Commands from a transactional producer end in a control marker the consumer never sees
    as a record: the committed offset and the lag metric still reach the log end."""
    async with (
        simulator() as sim,
        running_bridge(
            kafka_bootstrap, sim, partitions=2, processing_guarantee=guarantee
        ) as bridge,
    ):
        orders = sim.app.seed(6, "norce", "1", status="checkout")
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap,
            enable_idempotence=True,
            transactional_id=f"cmd-producer-{uuid.uuid4().hex[:8]}" if transactional else None,
        )
        await producer.start()
        try:
            commands = [set_state(o, "processing") for o in orders]
            if transactional:
                async with producer.transaction():
                    futs = [
                        await producer.send(
                            bridge.topics.commands,
                            command_to_json(c),
                            key=c.order_id.encode(),
                        )
                        for c in commands
                    ]
                metas = [await f for f in futs]
            else:
                metas = [
                    await producer.send_and_wait(
                        bridge.topics.commands, command_to_json(c), key=c.order_id.encode()
                    )
                    for c in commands
                ]
        finally:
            await producer.stop()
        bridge.sent.extend((m.partition, m.offset) for m in metas)
        await bridge.all_handled(timeout_s=60)
        ends = await bridge.end_offsets()
        deadline = time.monotonic() + 30
        committed: dict[int, int] = {}
        while time.monotonic() < deadline:
            committed = await bridge.committed()
            if all(committed.get(p, 0) == end for p, end in ends.items()):
                break
            await asyncio.sleep(0.2)
        assert committed == {p: end for p, end in ends.items() if end > 0}, (committed, ends)
        service = bridge.service
        assert service is not None

        def lag() -> list[float | None]:
            return [
                service.registry.get_sample_value(
                    "norce_bridge_consumer_lag", {"topic": "commands", "partition": str(p)}
                )
                for p in ends
                if ends[p] > 0
            ]

        await poll_until(lambda: lag() == [0.0] * len(lag()), 30, f"lag 0, still {lag()}")


async def test_sigterm_during_a_revoke_still_drains_and_exits(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A member stuck in a revoke (its PUT hangs) still drains and exits 0 on SIGTERM."""
    async with (
        simulator() as sim,
        group(kafka_bootstrap, sim, tmp_path, "at_least_once") as (
            reader,
            start,
        ),
    ):
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        suffix = uuid.uuid4().hex[:6]
        member = start(f"bridge-a-{suffix}")
        await poll_until(lambda: member.assigned() == [0], 60, "the member's assignment")
        sim.app.set_faults(
            hang_s=30.0,
            script=[{"method": "PUT", "path_suffix": "/state", "fault": "hang", "count": 1}],
        )
        await reader.send(set_state(order, "processing"))
        await poll_until(
            lambda: any(c["fault"] == "script:hang" for c in puts_by(sim, order, member.name)),
            30,
            "the hanging PUT",
        )
        start(f"bridge-b-{suffix}")  # triggers the revoke of the first member
        member.proc.send_signal(signal.SIGTERM)
        code = await wait_exit(member.proc, 40, member.log)
        assert code == 0
        assert member.logged("bridge stopped") or member.logged("draining")


def _metrics_port(member: Member) -> int | None:
    for line in member.logged_prefix("health server listening on port "):
        return int(str(line["msg"]).rsplit(" ", 1)[-1])
    return None


def _lease_age(port: int) -> float | None:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("norce_bridge_lease_age_seconds "):
                return float(line.split()[1])
    return None


async def test_a_pause_shorter_than_the_session_keeps_partitions_and_work(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Paused past the lease limit but not past the session timeout: on resume the held write
    waits for the next heartbeat, the lease is renewed, and the command is applied; the member
    keeps its partition (no rebalance) and abandons nothing."""
    async with (
        simulator() as sim,
        group(kafka_bootstrap, sim, tmp_path, "at_least_once", session_ms="15000") as (
            reader,
            start,
        ),
    ):
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        member = start(f"bridge-a-{uuid.uuid4().hex[:6]}")
        await poll_until(lambda: member.assigned() == [0], 60, "the member's assignment")
        await poll_until(lambda: _metrics_port(member) is not None, 30, "the metrics port")
        port = _metrics_port(member)
        assert port is not None
        refuse_next_put(sim, retry_after_s=6)
        command = set_state(order, "processing")
        await reader.send(command)
        await poll_until(
            lambda: any(c["status"] == 503 for c in puts_by(sim, order, member.name)),
            30,
            "the PUT refused with Retry-After",
        )
        # Stop right after a heartbeat: 12.2 s frozen is past the lease limit (15 s - 20 %
        # = 12 s) but, with the last heartbeat < 1.1 s before, inside the session timeout.
        await poll_until(lambda: (_lease_age(port) or 99.0) < 0.8, 30, "a fresh heartbeat")
        os.kill(member.proc.pid, signal.SIGSTOP)
        await asyncio.sleep(12.2)  # the fault itself: how long the member stays frozen
        os.kill(member.proc.pid, signal.SIGCONT)
        await results_for(reader, {command.command_id})
        assert sim.app.history(order) == ["checkout", "processing"]
        assert member.logged("membership lease expired; holding writes until a heartbeat succeeds")
        assert member.logged("membership lease renewed; writes resume")
        # (aiokafka reports an empty revoke on the first join; none with partitions after it)
        assert not [x for x in member.logged("partitions revoked") if x.get("partitions")]
        assert not member.logged("command abandoned before its write: partition no longer ours")
        assert len(member.logged("partitions assigned")) == 1
