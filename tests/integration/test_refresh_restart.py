"""RefreshOrder across kill -9 and reassignment: the "last published state" is durable.

``bridge run`` processes on the real broker and the simulator. The first process publishes a
baseline and one external change per order, and is killed with SIGKILL with its offsets
(practically) uncommitted (``commit_interval_s`` = 1 h), so its successor replays every refresh.
Then the same notification comes again (same command ids) and a later one for the same change
comes *before* it (reordered). The successor restores the order state store of the partitions it
takes over before running any of them, and announces nothing again.

At-least-once: what can duplicate is a record whose outputs were acknowledged while the state
record that went with them was not (the process dies between the two acknowledgements of one
send batch): its replay re-publishes the same event, with the same ``eventId`` and content. The
test allows exactly that (copies of one ``eventId``, identical); exactly-once allows one copy.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bridge_devkit.harness import (
    Bridge,
    Outputs,
    log_lines,
    make_settings,
    poll_until,
    process_env,
    refresh,
    simulator,
    spawn_bridge,
    wait_exit,
)
from norce_simulator import SimulatorHandle

from bridge.app import ensure_topics
from tests.integration.test_refresh import CHANNEL, MERCHANT, external_change, state_events

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 2
ORDERS = 6


def env(io: Bridge, sim: SimulatorHandle, guarantee: str, **extra: str) -> dict[str, str]:
    return process_env(
        io.settings,
        sim.url,
        BRIDGE_PROCESSING__PROCESSING_GUARANTEE=guarantee,
        BRIDGE_KAFKA__SESSION_TIMEOUT_MS="6000",
        BRIDGE_PROCESSING__REVOKE_DEADLINE_S="3",
        BRIDGE_PROCESSING__DRAIN_DEADLINE_S="5",
        BRIDGE_LOG_LEVEL="INFO",
        **extra,
    )


@contextlib.asynccontextmanager
async def processes() -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(AssertionError):
                await wait_exit(proc, 30)


async def until_results(io: Bridge, ids: set[str], timeout_s: float = 90) -> Outputs:
    out = await io.collect(lambda o: ids <= set(o.results_by_command()), timeout_s)
    assert ids <= set(out.results_by_command()), ids - set(out.results_by_command())
    return out


def restored(path: Path) -> list[dict[str, Any]]:
    return [x for x in log_lines(path) if x.get("msg") == "order state restored"]


def assigned(path: Path) -> bool:
    return any(
        x.get("msg") == "partitions assigned" and x.get("partitions") for x in log_lines(path)
    )


def check_one_announcement(out: Outputs, orders: list[str], guarantee: str) -> None:
    for o in orders:
        events = state_events(out, o)
        assert {e["eventId"] for e in events} == {f"ntf1-{o}:state-changed:2"}, events
        assert all(e == events[0] for e in events), "copies of one event differ"
        if guarantee == "exactly_once":
            assert len(events) == 1, events
        assert events[0]["source"] == "external"
        assert (events[0]["previousStatus"], events[0]["newStatus"]) == ("checkout", "processing")


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_duplicates_and_reordering_after_kill_9_announce_nothing_new(
    kafka_bootstrap: str, tmp_path: Path, guarantee: str
) -> None:
    async with simulator(latency_ms=2) as sim, processes() as procs:
        settings = make_settings(kafka_bootstrap, sim.url, partitions=PARTITIONS)
        await ensure_topics(settings, {})
        io = Bridge(kafka_bootstrap, sim, settings)
        try:
            orders = sim.app.seed(ORDERS, MERCHANT, CHANNEL, status="checkout")
            eos = guarantee == "exactly_once"
            first_log = tmp_path / "first.log"
            # At-least-once: nothing is committed before the kill (every refresh replays).
            # Exactly-once: the baseline commits; the notifications' transaction is left open.
            interval = "0.2" if eos else "3600"
            procs.append(
                spawn_bridge(
                    env(io, sim, guarantee, BRIDGE_PROCESSING__COMMIT_INTERVAL_S=interval),
                    first_log,
                )
            )
            await poll_until(lambda: assigned(first_log), 60, "first process assigned")
            await io.send(*(refresh(o, command_id=f"base-{o}") for o in orders))
            await until_results(io, {f"base-{o}" for o in orders})
            if eos:
                procs[0].send_signal(signal.SIGKILL)
                await wait_exit(procs[0], 10)
                first_log = tmp_path / "first-b.log"
                procs.insert(
                    0,
                    spawn_bridge(
                        env(io, sim, guarantee, BRIDGE_PROCESSING__COMMIT_INTERVAL_S="3600"),
                        first_log,
                    ),
                )
                await poll_until(lambda: assigned(first_log), 60, "first process reassigned")
            for o in orders:
                await external_change(sim, o, "processing")
            await io.send(*(refresh(o, command_id=f"ntf1-{o}") for o in orders))
            if eos:
                # Read by the API (two GETs per order), published in a transaction never committed.
                await poll_until(
                    lambda: all(
                        sum(c["method"] == "GET" for c in sim.app.calls(o)) >= 2 for o in orders
                    ),
                    60,
                    "the notifications' GETs",
                )
            else:
                out = await until_results(io, {f"ntf1-{o}" for o in orders})
                check_one_announcement(out, orders, guarantee)

            procs[0].send_signal(signal.SIGKILL)
            await wait_exit(procs[0], 10)
            # Reordered: a later notification of the same change first, then the first again.
            await io.send(*(refresh(o, command_id=f"ntf2-{o}") for o in orders))
            await io.send(*(refresh(o, command_id=f"ntf1-{o}") for o in orders))

            second_log = tmp_path / "second.log"
            procs.append(spawn_bridge(env(io, sim, guarantee), second_log))
            await poll_until(lambda: bool(restored(second_log)), 90, "state restored")
            [info] = restored(second_log)[:1]
            assert info["orders"] == ORDERS, info
            await until_results(io, {f"ntf2-{o}" for o in orders})
            await io.collect(
                lambda o: all(
                    len(o.results_by_command().get(f"ntf1-{x}", [])) >= 2 for x in orders
                ),
                90,
            )
            out = io.outputs
            check_one_announcement(out, orders, guarantee)
            if not eos:  # the successor did replay the baseline (nothing was committed)
                await io.collect(
                    lambda o: all(len(o.results_by_command()[f"base-{x}"]) > 1 for x in orders),
                    60,
                )
                out = io.outputs
                for o in orders:
                    replayed = out.results_by_command()[f"base-{o}"][1:]
                    assert {r["reason"] for r in replayed} == {"unchanged"}, replayed
                check_one_announcement(out, orders, guarantee)
            for o in orders:
                [ntf2] = out.results_by_command()[f"ntf2-{o}"][-1:]
                assert ntf2["outcome"] == "already_applied", ntf2
                assert ntf2["reason"] == "unchanged"
            assert out.stale_snapshots == 0
            assert not out.dlq
        finally:
            await io.aclose()


async def test_a_second_instance_takes_partitions_over_without_re_announcing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with simulator(latency_ms=2) as sim, processes() as procs:
        settings = make_settings(kafka_bootstrap, sim.url, partitions=PARTITIONS)
        await ensure_topics(settings, {})
        io = Bridge(kafka_bootstrap, sim, settings)
        try:
            orders = sim.app.seed(ORDERS, MERCHANT, CHANNEL, status="checkout")
            a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
            procs.append(spawn_bridge(env(io, sim, "at_least_once"), a_log))
            await poll_until(lambda: assigned(a_log), 60, "first process assigned")
            for o in orders:
                await external_change(sim, o, "processing")
            await io.send(*(refresh(o, command_id=f"base-{o}") for o in orders))
            await until_results(io, {f"base-{o}" for o in orders})
            for o in orders:
                await external_change(sim, o, "accepted")
            await io.send(*(refresh(o, command_id=f"ntf1-{o}") for o in orders))
            await until_results(io, {f"ntf1-{o}" for o in orders})

            procs.append(spawn_bridge(env(io, sim, "at_least_once"), b_log))
            await poll_until(
                lambda: any(x.get("orders", 0) > 0 for x in restored(b_log)), 90, "B restored"
            )
            await io.send(*(refresh(o, command_id=f"again-{o}") for o in orders))
            out = await until_results(io, {f"again-{o}" for o in orders})
            for o in orders:
                [again] = out.results_by_command()[f"again-{o}"]
                assert (again["outcome"], again["reason"]) == ("already_applied", "unchanged")
                events = state_events(out, o)
                assert [(e["commandId"], e["newStatus"]) for e in events] == [
                    (f"ntf1-{o}", "accepted")
                ]
        finally:
            await io.aclose()
