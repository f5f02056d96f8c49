"""RefreshOrder on the real broker and the Norce API simulator (issue 14, point 3).

An "external" change is a real API ``PUT`` with another adapter id (a payment adapter moving the
order), exactly what a Norce notification would report. The bridge learns about it only through
``RefreshOrder`` commands.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
from bridge_devkit.harness import (
    API_KEY,
    Outputs,
    refresh,
    running_bridge,
    set_state,
    simulator,
)
from norce_simulator import SimulatorHandle

from bridge.commands import AnyCommand
from bridge.norce import order_path

pytestmark = pytest.mark.broker

MERCHANT, CHANNEL = "norce", "1"


async def external_change(sim: SimulatorHandle, order_id: str, status: str) -> None:
    """Another adapter moves the order (a real API PUT, not the bridge)."""
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as http:
        response = await http.put(
            order_path(order_id, "/state"),
            json={"currentStatus": status},
            headers={
                "Authorization": f"Bearer {API_KEY}",
                "x-merchant": MERCHANT,
                "x-channel": CHANNEL,
                "x-adapterid": "payment-adapter",
            },
        )
    assert response.status_code < 300, response.text
    assert sim.app.history(order_id)[-1] == status


def state_events(out: Outputs, order_id: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for schema, e in out.events
        if schema.endswith("OrderStateChanged") and (order_id is None or e["orderId"] == order_id)
    ]


def results_of(out: Outputs, command_id: str) -> list[dict[str, Any]]:
    return out.results_by_command().get(command_id, [])


def snapshot_transition_counts(out: Outputs) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for key, value in out.snapshots:
        if value is not None:
            counts.setdefault(key, []).append(len(value["state"]["transitions"] or []))
    return counts


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_external_change_is_announced_once_and_own_changes_say_bridge(
    kafka_bootstrap: str, guarantee: str
) -> None:
    async with (
        simulator(latency_ms=2) as sim,
        running_bridge(
            kafka_bootstrap, sim, partitions=2, processing_guarantee=guarantee
        ) as bridge,
    ):
        a, b, c = sim.app.seed(3, MERCHANT, CHANNEL, status="checkout")
        # Baseline: the first refresh of an order publishes its snapshot, no event.
        await bridge.send(*(refresh(o, command_id=f"base-{o}") for o in (a, b, c)))
        out = await bridge.all_handled()
        assert not state_events(out)
        assert {k for k, v in out.snapshots if v is not None} == {a, b, c}

        await external_change(sim, a, "processing")
        # The same notification twice (same command id) and a second one for the same change.
        dup = refresh(a, command_id="ntf-1", reason="notification")
        await bridge.send(dup, dup, refresh(a, command_id="ntf-2", reason="notification"))
        await bridge.send(refresh(b, command_id="unchanged-b"))
        await bridge.send(set_state(c, "processing", command_id="own-c"))
        await bridge.send(refresh(c, command_id="after-own-c"))
        out = await bridge.all_handled()

        [event] = state_events(out, a)
        assert (event["previousStatus"], event["newStatus"]) == ("checkout", "processing")
        assert event["source"] == "external"
        assert event["commandId"] == "ntf-1"
        outcomes = [r["outcome"] for r in results_of(out, "ntf-1") + results_of(out, "ntf-2")]
        assert sorted(outcomes) == ["already_applied", "already_applied", "applied"]
        [unchanged] = results_of(out, "unchanged-b")
        assert (unchanged["outcome"], unchanged["reason"]) == ("already_applied", "unchanged")
        [own] = state_events(out, c)
        assert (own["source"], own["commandId"]) == ("bridge", "own-c")
        [after_own] = results_of(out, "after-own-c")
        assert after_own["outcome"] == "already_applied"
        # The bridge never wrote to Norce for a refresh.
        writes = [x for x in sim.app.calls(a) if x["method"] in ("PUT", "DELETE")]
        assert [w["headers"]["x-adapterid"] for w in writes] == ["payment-adapter"]


async def test_deleted_order_gets_one_tombstone_and_one_order_deleted(
    kafka_bootstrap: str,
) -> None:
    async with (
        simulator(latency_ms=2) as sim,
        running_bridge(kafka_bootstrap, sim, partitions=2) as bridge,
    ):
        [a] = sim.app.seed(1, MERCHANT, CHANNEL, status="checkout")
        await bridge.send(refresh(a, command_id="base"))
        await bridge.all_handled()
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as http:
            gone = await http.delete(
                order_path(a),
                headers={
                    "Authorization": f"Bearer {API_KEY}",
                    "x-merchant": MERCHANT,
                    "x-channel": CHANNEL,
                },
            )
        assert gone.status_code < 300
        await bridge.send(refresh(a, command_id="gone-1"), refresh(a, command_id="gone-2"))
        out = await bridge.all_handled()
        deleted = [e for s, e in out.events if s.endswith("OrderDeleted")]
        assert [(e["commandId"], e["previousStatus"]) for e in deleted] == [("gone-1", "checkout")]
        assert [v for k, v in out.snapshots if k == a][-1] is None
        assert sum(1 for k, v in out.snapshots if k == a and v is None) == 1
        assert [r["outcome"] for r in results_of(out, "gone-2")] == ["already_applied"]


async def test_interleaved_set_state_and_refresh_keep_snapshots_monotonic(
    kafka_bootstrap: str,
) -> None:
    """The bridge's own commands, external changes and refreshes of the same orders: along the
    snapshot topic each order's transition count never decreases, and every external change
    is announced once."""
    async with (
        simulator(latency_ms=3) as sim,
        running_bridge(kafka_bootstrap, sim, partitions=3, max_in_flight=32) as bridge,
    ):
        orders = sim.app.seed(12, MERCHANT, CHANNEL, status="checkout")
        await bridge.send(*(refresh(o) for o in orders))
        await bridge.all_handled()
        for o in orders[:6]:
            await external_change(sim, o, "processing")
        batch: list[AnyCommand] = []
        for i, o in enumerate(orders):
            # processing -> accepted after the external change, checkout -> processing otherwise
            target = "accepted" if i < 6 else "processing"
            batch += [refresh(o), set_state(o, target), refresh(o), refresh(o)]
        await bridge.send(*batch)
        out = await bridge.all_handled()
        for key, counts in snapshot_transition_counts(out).items():
            assert counts == sorted(counts), (key, counts)
        assert out.stale_snapshots == 0
        external = Counter(e["orderId"] for e in state_events(out) if e["source"] == "external")
        assert set(external) <= set(orders[:6])
        assert all(n == 1 for n in external.values()), external
        own = Counter(e["orderId"] for e in state_events(out) if e["source"] == "bridge")
        assert own == Counter(orders)  # one SetOrderState each, each announced once


async def test_state_topic_gets_the_commands_partitions_and_fewer_are_refused(
    kafka_bootstrap: str,
) -> None:
    """Created missing: as many partitions as the existing commands topic. Given with fewer:
    start-up refuses with one line naming both counts."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from bridge_devkit.harness import make_settings

    from bridge.app import ensure_topics
    from bridge.errors import ConfigError

    settings = make_settings(kafka_bootstrap, "http://127.0.0.1:9", partitions=12)
    short = make_settings(kafka_bootstrap, "http://127.0.0.1:9", partitions=12)
    t, s = settings.topics, short.topics
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t.commands, 4, 1), NewTopic(s.commands, 3, 1), NewTopic(s.order_state, 2, 1)]
        )
        await ensure_topics(settings, {})
        counts: list[int] = []

        async def state_partitions() -> bool:
            [described] = await admin.describe_topics([t.order_state])
            counts.append(len(described.get("partitions") or []))
            return counts[-1] > 0

        for _ in range(150):  # metadata propagation: re-ask, 30 s at most
            if await state_partitions():
                break
            await asyncio.sleep(0.2)
        assert counts[-1] == 4
        with pytest.raises(ConfigError, match=r"order state topic has 2 partitions.*3"):
            await ensure_topics(short, {})
    finally:
        await admin.close()
