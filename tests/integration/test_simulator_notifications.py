"""Simulator notifications (issue 14, point 1) over real loopback HTTP.

The simulator runs in-process (``start_simulator``) and delivers to a small ``aiohttp.web``
receiver started by the test. Reference: ``docs/norce-order-api.md`` §5.12 (Notification) and §7.2
(payload ``{"notification", "order"}``, asynchronous POST after the write, attempts logged).
Waiting is always polling with a deadline (``/__admin/notifications/pending`` until drained).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from bridge_devkit.harness import free_port
from norce_simulator import SimulatorConfig, SimulatorHandle, start_simulator
from norce_simulator.admin_client import SimulatorAdmin, SimulatorAdminError

from .test_simulator_cli import launch as launch_simulator

BASE = "/api/v0/checkout/orders"
HEADERS = {"Authorization": "Bearer sim-api-key", "x-merchant": "norce", "x-channel": "1"}
SECRET = "s3cret-webhook"
ADAPTER = "bridge-adapter"
INVOKE = "{configuration.adapter.internalUrl}/notifications/{order.id}"


@dataclass
class Delivered:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An aiohttp.web receiver that records deliveries; ``statuses`` answers them in turn."""

    port: int = field(default_factory=free_port)
    statuses: list[int] = field(default_factory=list)
    received: list[Delivered] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(Delivered(request.path, dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    handle = await start_simulator(SimulatorConfig(seed=14, orders=6))
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture
async def client(sim: SimulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, headers=HEADERS, timeout=5.0) as c:
        yield c


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    try:
        yield rec
    finally:
        await rec.stop()


async def admin(client: httpx.AsyncClient, method: str, path: str, body: Any = None) -> Any:
    response = await client.request(method, f"/__admin{path}", json=body)
    assert response.status_code in (200, 204), response.text
    return response.json() if response.content else None


async def poll(check: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def drained(client: httpx.AsyncClient) -> None:
    async def empty() -> bool:
        return bool((await admin(client, "GET", "/notifications/pending"))["count"] == 0)

    await poll(empty, "pending notifications to drain")


async def configure(
    client: httpx.AsyncClient, receiver_url: str, *, faults: Any = None, settings: Any = None
) -> None:
    await admin(
        client,
        "PUT",
        f"/adapters/{ADAPTER}",
        {"internalUrl": receiver_url, "headers": {"X-Norce-Webhook-Secret": SECRET}},
    )
    await admin(
        client,
        "PUT",
        "/notification-settings",
        {"backoff_s": 0.02, "backoff_max_s": 0.1, **(settings or {})},
    )
    if faults is not None:
        await admin(client, "PUT", "/notification-faults", faults)


def notification(schema: Any, reference: str = "state-changed") -> dict[str, Any]:
    return {
        "adapterId": ADAPTER,
        "reference": reference,
        "description": "order state changed",
        "scope": "/state/currentStatus",
        "schema": schema,
        "invoke": INVOKE,
        "version": "v0",
    }


async def register_channel(client: httpx.AsyncClient, schema: Any) -> dict[str, Any]:
    stored: dict[str, Any] = await admin(
        client,
        "PUT",
        "/notifications",
        {"merchant": "norce", "channel": "1", "notifications": [notification(schema)]},
    )
    first: dict[str, Any] = stored["notifications"][0]
    return first


async def other_adapter(client: httpx.AsyncClient, order_id: str, state: str) -> dict[str, Any]:
    answer: dict[str, Any] = await admin(
        client, "POST", f"/orders/{order_id}/state", {"state": state, "adapterId": "payment-x"}
    )
    return answer


async def test_per_order_registration_and_api_write_deliver_the_documented_payload(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """POST …/notifications stores it with an ``oc…`` id; a PUT state that matches delivers
    ``{"notification": <as on the order>, "order": <order at that time>}`` with the adapter's
    outgoing header, asynchronously, and the attempt is logged."""
    await configure(client, receiver.url)
    oid = sim.app.seeded_ids[0]
    created = await client.post(
        f"{BASE}/{oid}/notifications", json=notification({"enum": ["processing", "accepted"]})
    )
    assert created.status_code == 200
    stored = created.json()
    assert stored["id"].startswith("oc")
    assert len(stored["id"]) == 28
    order = (await client.get(f"{BASE}/{oid}")).json()
    assert stored in order["notifications"]

    assert (
        await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"})
    ).status_code == 200
    at_write = sim.app.get_order(oid)
    await drained(client)

    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert got.path == f"/notifications/{oid}"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Norce-Webhook-Secret"] == SECRET
    payload = got.json()
    assert set(payload) == {"notification", "order"}
    assert payload["notification"] == stored
    assert payload["order"] == at_write
    assert payload["order"]["state"]["currentStatus"] == "processing"

    attempts = (await admin(client, "GET", f"/notifications/attempts?order_id={oid}"))["attempts"]
    assert len(attempts) == 1
    first = attempts[0]
    assert first["notification_id"] == stored["id"]
    assert first["event_id"].startswith("ev_")
    assert (first["attempt"], first["status"], first["error"], first["duplicate"]) == (
        1,
        200,
        None,
        False,
    )
    assert first["url"] == f"{receiver.url}/notifications/{oid}"
    assert first["duration_ms"] >= 0
    assert first["ts"].endswith("Z")
    stats = (await admin(client, "GET", "/stats"))["notifications"]
    assert (stats["events"], stats["delivered"], stats["deliveries"], stats["pending"]) == (
        1,
        1,
        1,
        0,
    )

    # Deleting it stops it; the second DELETE is 404.
    path = f"{BASE}/{oid}/notifications/{stored['id']}"
    assert (await client.delete(path)).status_code == 200
    assert (await client.delete(path)).status_code == 404
    assert (
        await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "accepted"})
    ).status_code == 200
    await drained(client)
    assert len(receiver.received) == 1


async def test_no_event_when_scope_unchanged_or_value_does_not_validate(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await configure(client, receiver.url)
    oid = sim.app.seeded_ids[1]
    response = await client.post(
        f"{BASE}/{oid}/notifications", json=notification({"const": "accepted"})
    )
    assert response.status_code == 200
    put = {"currentStatus": "processing"}
    assert (await client.put(f"{BASE}/{oid}/state", json=put)).status_code == 200  # not valid
    assert (await client.put(f"{BASE}/{oid}/state", json=put)).status_code == 200  # no change
    stats = (await admin(client, "GET", "/stats"))["notifications"]
    assert stats["events"] == 0
    assert (
        await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "accepted"})
    ).status_code == 200
    assert (await other_adapter(client, oid, "accepted"))["events"] == []  # same state: no change
    await drained(client)
    assert [d.json()["order"]["state"]["currentStatus"] for d in receiver.received] == ["accepted"]


async def test_registration_rejects_an_invalid_schema_or_scope(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    oid = sim.app.seeded_ids[0]
    bad_schema = await client.post(f"{BASE}/{oid}/notifications", json=notification({"type": 5}))
    assert bad_schema.status_code == 400
    bad_scope = await client.post(
        f"{BASE}/{oid}/notifications", json={**notification({}), "scope": "state"}
    )
    assert bad_scope.status_code == 400
    missing = await client.post(f"{BASE}/o_missing/notifications", json=notification({}))
    assert missing.status_code == 404


async def test_channel_registration_and_other_adapter_changes_notify_existing_and_new_orders(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await configure(client, receiver.url)
    stored = await register_channel(client, {"enum": ["processing", "declined"]})
    assert stored["id"].startswith("oc")
    existing = sim.app.seeded_ids[2]
    created = await client.post(BASE, json={"reference": "ntf-new"})
    assert created.status_code == 201
    new = created.json()

    answer = await other_adapter(client, existing, "processing")
    assert answer["changed"] is True
    assert len(answer["events"]) == 1
    assert answer["order"]["state"]["transitions"][-1]["status"] == "processing"
    assert len((await other_adapter(client, new, "processing"))["events"]) == 1
    # The API's transition rules apply to other adapters too: completed is not reachable now.
    refused = await client.post(
        f"/__admin/orders/{new}/state", json={"state": "completed", "adapterId": "payment-x"}
    )
    assert refused.status_code == 400
    await drained(client)

    orders = sorted(d.json()["order"]["id"] for d in receiver.received)
    assert orders == sorted([existing, new])
    assert all(d.json()["notification"] == stored for d in receiver.received)
    events = (await admin(client, "GET", "/notifications/events"))["events"]
    assert {e["source"] for e in events} == {"payment-x"}
    assert {e["status"] for e in events} == {"delivered"}
    # An empty list removes the channel's notifications.
    await admin(
        client, "PUT", "/notifications", {"merchant": "norce", "channel": "1", "notifications": []}
    )
    assert (await other_adapter(client, existing, "declined"))["events"] == []


async def test_retries_until_the_receiver_comes_up(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    """Connection refused is retried with backoff (same event id) until the receiver listens."""
    receiver = Receiver()
    await configure(client, receiver.url, settings={"max_attempts": 200})
    await register_channel(client, {"const": "processing"})
    oid = sim.app.seeded_ids[3]
    event_id = (await other_adapter(client, oid, "processing"))["events"][0]

    async def failed_twice() -> bool:
        rows = (await admin(client, "GET", f"/notifications/attempts?event_id={event_id}"))[
            "attempts"
        ]
        return len(rows) >= 2

    await poll(failed_twice, "two failed attempts")
    await receiver.start()
    try:
        await drained(client)
    finally:
        await receiver.stop()
    attempts = (await admin(client, "GET", f"/notifications/attempts?event_id={event_id}"))[
        "attempts"
    ]
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert all(a["status"] is None and a["error"] for a in attempts[:-1])
    assert attempts[-1]["status"] == 200
    assert len(receiver.received) == 1
    assert (await admin(client, "GET", "/stats"))["notifications"]["retries"] == len(attempts) - 1


async def test_non_2xx_and_injected_receiver_down_are_retried(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await configure(client, receiver.url, faults={"receiver_down": True})
    await register_channel(client, {"const": "processing"})
    oid = sim.app.seeded_ids[4]
    event_id = (await other_adapter(client, oid, "processing"))["events"][0]

    async def refused_once() -> bool:
        rows = (await admin(client, "GET", f"/notifications/attempts?event_id={event_id}"))[
            "attempts"
        ]
        return len(rows) >= 1

    await poll(refused_once, "an injected failure")
    receiver.statuses = [503, 500]
    await admin(client, "PUT", "/notification-faults", {"receiver_down": False})
    await drained(client)
    attempts = (await admin(client, "GET", f"/notifications/attempts?event_id={event_id}"))[
        "attempts"
    ]
    down = [a for a in attempts if a["error"] == "receiver down (injected)"]
    assert down
    assert [a["status"] for a in attempts[len(down) :]] == [503, 500, 200]
    assert len(receiver.received) == 3


async def test_gives_up_after_max_attempts(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await configure(client, receiver.url, settings={"max_attempts": 3})
    receiver.statuses = [500, 500, 500, 500]
    await register_channel(client, {"const": "processing"})
    event_id = (await other_adapter(client, sim.app.seeded_ids[0], "processing"))["events"][0]
    await drained(client)
    attempts = (await admin(client, "GET", f"/notifications/attempts?event_id={event_id}"))[
        "attempts"
    ]
    assert [a["status"] for a in attempts] == [500, 500, 500]
    events = (await admin(client, "GET", "/notifications/events?status=failed"))["events"]
    assert [e["event_id"] for e in events] == [event_id]


async def test_duplicates_are_observable(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await configure(client, receiver.url, faults={"duplicate_rate": 1.0})
    await register_channel(client, {"const": "processing"})
    for oid in sim.app.seeded_ids[:3]:
        await other_adapter(client, oid, "processing")
    await drained(client)
    bodies = [d.body for d in receiver.received]
    assert len(bodies) == 6
    assert len(set(bodies)) == 3
    assert all(bodies.count(body) == 2 for body in bodies)
    attempts = (await admin(client, "GET", "/notifications/attempts"))["attempts"]
    assert sorted(a["duplicate"] for a in attempts) == [False] * 3 + [True] * 3
    by_event: dict[str, int] = {}
    for a in attempts:
        by_event[a["event_id"]] = by_event.get(a["event_id"], 0) + 1
    assert sorted(by_event.values()) == [2, 2, 2]
    stats = (await admin(client, "GET", "/stats"))["notifications"]
    assert (stats["events"], stats["deliveries"], stats["duplicates_delivered"]) == (3, 6, 3)


async def test_reordering_delivers_later_events_first(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """With a reorder window of 3 (one delivery at a time) three events arrive newest first,
    also two events of the same order: the later state arrives before the earlier one."""
    await configure(
        client,
        receiver.url,
        faults={"reorder_window": 3, "reorder_hold_s": 5},
        settings={"concurrency": 1},
    )
    await register_channel(client, {"enum": ["processing", "accepted"]})
    first, second = sim.app.seeded_ids[:2]
    created = [
        (await other_adapter(client, first, "processing"))["events"][0],
        (await other_adapter(client, second, "processing"))["events"][0],
        (await other_adapter(client, second, "accepted"))["events"][0],
    ]
    await drained(client)
    arrived = [
        (d.json()["order"]["id"], d.json()["order"]["state"]["currentStatus"])
        for d in receiver.received
    ]
    assert arrived == [(second, "accepted"), (second, "processing"), (first, "processing")]
    attempts = (await admin(client, "GET", "/notifications/attempts"))["attempts"]
    assert [a["event_id"] for a in attempts] == created[::-1]


async def test_delay_keeps_events_pending_until_delivered(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await configure(client, receiver.url, faults={"delay_s": 1.0})
    await register_channel(client, {"const": "processing"})
    oid = sim.app.seeded_ids[5]
    started = time.monotonic()
    await other_adapter(client, oid, "processing")
    pending = await admin(client, "GET", "/notifications/pending")
    assert pending["count"] == 1
    assert pending["pending"][0]["order_id"] == oid
    await drained(client)
    assert time.monotonic() - started >= 1.0
    assert len(receiver.received) == 1


async def test_unresolvable_invoke_is_logged_and_never_pending(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    """The seeded orders' own notification (adapter ``norce_adapter``, no configuration set)
    fires on ``completed`` but cannot be resolved: one logged attempt, nothing pending."""
    oid = sim.app.seeded_ids[0]
    for state in ("processing", "accepted", "completed"):
        await other_adapter(client, oid, state)
    events = (await admin(client, "GET", f"/notifications/events?order_id={oid}"))["events"]
    assert [e["status"] for e in events] == ["undeliverable"]
    assert "configuration.adapter.internalUrl" in events[0]["error"]
    assert (await admin(client, "GET", "/notifications/pending"))["count"] == 0
    attempts = (await admin(client, "GET", f"/notifications/attempts?order_id={oid}"))["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(0, None)]


async def test_create_with_notifications_fires_and_reset_log_clears_attempts(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """``Order.notifications`` at create are kept (ids generated); the create itself is a change
    of the scope from absent to ``checkout``. ``/__admin/reset-log`` clears the attempt log."""
    await configure(client, receiver.url)
    created = await client.post(BASE, json={"notifications": [notification({"const": "checkout"})]})
    assert created.status_code == 201
    oid = created.json()
    order = (await client.get(f"{BASE}/{oid}")).json()
    assert order["notifications"][0]["id"].startswith("oc")
    await drained(client)
    assert [d.json()["order"]["id"] for d in receiver.received] == [oid]
    assert (await admin(client, "GET", "/notifications/attempts"))["attempts"]
    await admin(client, "POST", "/reset-log")
    assert (await admin(client, "GET", "/notifications/attempts"))["attempts"] == []
    assert (await admin(client, "GET", "/stats"))["notifications"]["deliveries"] == 0


async def test_delivers_under_uvloop_driven_by_the_admin_client(receiver: Receiver) -> None:
    """The CLI simulator on uvloop delivers notifications too; ``SimulatorAdmin`` drives it."""
    process = await launch_simulator(
        "--port", str(free_port()), "--orders", "2", "--event-loop", "uvloop"
    )
    try:
        assert process.stdout is not None
        started = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        assert started["event_loop"] == "uvloop"
        oid = started["seeded_ids_sample"][0]
        async with SimulatorAdmin(started["url"]) as sim_admin:
            await sim_admin.set_adapter(ADAPTER, receiver.url, {"X-Norce-Webhook-Secret": SECRET})
            await sim_admin.set_delivery(backoff_s=0.02)
            stored = await sim_admin.register_channel(
                "norce", "1", [notification({"const": "processing"})]
            )
            answer = await sim_admin.change_state(oid, "processing", adapter_id="payment-x")
            await sim_admin.wait_drained(timeout_s=10)
            assert [e["status"] for e in await sim_admin.events(order_id=oid)] == ["delivered"]
            attempts = await sim_admin.attempts(event_id=answer["events"][0])
            assert [a["status"] for a in attempts] == [200]
            assert attempts[0]["notification_id"] == stored[0]["id"]
            await sim_admin.reset()
            assert await sim_admin.events() == []
            with pytest.raises(SimulatorAdminError, match="400"):
                await sim_admin.change_state(oid, "checkout-ish")
        assert len(receiver.received) == 1
        assert receiver.received[0].headers["X-Norce-Webhook-Secret"] == SECRET
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
