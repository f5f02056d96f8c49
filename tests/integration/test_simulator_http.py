"""The simulator over real HTTP: keep-alive, latency, every fault kind, admin endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from norce_simulator import FaultConfig, SimulatorConfig, SimulatorHandle, start_simulator

BASE = "/api/v0/checkout/orders"
HEADERS = {"Authorization": "Bearer sim-api-key", "x-merchant": "norce", "x-channel": "1"}


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    handle = await start_simulator(SimulatorConfig(seed=5, orders=20))
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture
async def client(sim: SimulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, headers=HEADERS, timeout=5.0) as c:
        yield c


def status_of(sim: SimulatorHandle, oid: str) -> str:
    order = sim.app.get_order(oid)
    assert order is not None
    value: str = order["state"]["currentStatus"]
    return value


async def raw_exchange(sim: SimulatorHandle, payload: bytes, until_eof: bool = True) -> bytes:
    """Send raw bytes and read until the server closes (or a deadline passes)."""
    reader, writer = await asyncio.open_connection(sim.host, sim.port)
    try:
        writer.write(payload)
        await writer.drain()
        chunks = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 0.5 if not until_eof else 5)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_basic_endpoints_over_http(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    """GET, PUT state, DELETE and POST behave over HTTP as documented."""
    oid = sim.app.seeded_ids[0]
    order = await client.get(f"{BASE}/{oid}")
    assert order.status_code == 200
    assert order.headers["content-type"] == "application/json; charset=utf-8"
    assert order.json() == sim.app.get_order(oid)
    put = await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"})
    assert (put.status_code, put.content) == (200, b"")
    deleted = await client.delete(f"{BASE}/{oid}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert "content-length" not in deleted.headers
    assert (await client.get(f"{BASE}/{oid}")).status_code == 404
    created = await client.post(BASE, json={})
    assert created.status_code == 201
    assert (await client.get(f"/checkout/order{BASE}/{created.json()}")).status_code == 200
    assert (await client.get(f"{BASE}/{oid}", headers={"Authorization": ""})).status_code == 401


async def test_keep_alive_reuses_one_connection(sim: SimulatorHandle) -> None:
    """Hundreds of sequential requests travel over a single keep-alive connection."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=sim.url, headers=HEADERS, limits=limits) as c:
        for index in range(300):
            oid = sim.app.seeded_ids[index % 20]
            if index % 3:
                response = await c.get(f"{BASE}/{oid}")
            else:
                status = "processing" if status_of(sim, oid) == "checkout" else "checkout"
                response = await c.put(f"{BASE}/{oid}/state", json={"currentStatus": status})
            assert response.status_code == 200
    assert sim.connections_accepted == 1


async def test_connection_close_is_honoured(sim: SimulatorHandle) -> None:
    """A request with Connection: close gets that header back and the socket is closed."""
    oid = sim.app.seeded_ids[0]
    request = (
        f"GET {BASE}/{oid} HTTP/1.1\r\nhost: x\r\nauthorization: sim-api-key\r\n"
        "x-merchant: norce\r\nx-channel: 1\r\nconnection: close\r\n\r\n"
    ).encode()
    answer = await raw_exchange(sim, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in head.lower()
    assert body.startswith(b'{"id":"' + oid.encode())


async def test_http10_without_keep_alive_is_closed(sim: SimulatorHandle) -> None:
    """An HTTP/1.0 request without keep-alive is answered and the connection closed."""
    answer = await raw_exchange(sim, b"GET /__admin/health HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert answer.endswith(b"}")


async def test_pipelined_requests_are_answered_in_order(sim: SimulatorHandle) -> None:
    """Two requests sent back to back on one connection get two answers in order."""
    payload = (
        b"GET /__admin/health HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET /__admin/nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    answer = await raw_exchange(sim, payload)
    assert answer.index(b"HTTP/1.1 200 OK") < answer.index(b"HTTP/1.1 404 Not Found")


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nbad header line\r\n\r\n", b"400"),
        (b"PUT /x HTTP/1.1\r\ncontent-length: abc\r\n\r\n", b"400"),
        (b"PUT /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"PUT /x HTTP/1.1\r\ncontent-length: 999999999999\r\n\r\n", b"413"),
        (b"GET / HTTP/1.1\r\nx-big: " + b"a" * 70000, b"431"),
    ],
)
async def test_malformed_requests(sim: SimulatorHandle, payload: bytes, status: bytes) -> None:
    """Malformed HTTP gets an error status and a closed connection, and the server lives on."""
    answer = await raw_exchange(sim, payload)
    assert answer.startswith(b"HTTP/1.1 " + status)
    async with httpx.AsyncClient(base_url=sim.url) as c:
        assert (await c.get("/__admin/health")).status_code == 200


async def test_latency_is_measurable_and_concurrent(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    """Injected latency delays each answer without serialising concurrent requests."""
    sim.app.set_faults(latency_ms=300.0, jitter_ms=50.0)
    oid = sim.app.seeded_ids[0]
    started = time.monotonic()
    assert (await client.get(f"{BASE}/{oid}")).status_code == 200
    single = time.monotonic() - started
    assert single >= 0.29  # the latency was applied
    started = time.monotonic()
    responses = await asyncio.gather(
        *(client.get(f"{BASE}/{sim.app.seeded_ids[i]}") for i in range(10))
    )
    assert all(r.status_code == 200 for r in responses)
    # Not serialised: ten answers take less than the 10 x 0.3 s a serial server needs.
    assert time.monotonic() - started < 10 * 0.29


async def test_error_fault(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    """error_rate=1 makes every API request a 500 or 503 BaseError."""
    sim.app.set_faults(error_rate=1.0)
    statuses = set()
    for _ in range(30):
        response = await client.get(f"{BASE}/{sim.app.seeded_ids[0]}")
        statuses.add(response.status_code)
        assert response.json()["code"] in ("internal-server-error", "service-unavailable")
    assert statuses == {500, 503}


async def test_rate_limit_fault(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    """rate_limit_rate=1 answers 429 with Retry-After."""
    sim.app.set_faults(rate_limit_rate=1.0, retry_after_s=3)
    response = await client.get(f"{BASE}/{sim.app.seeded_ids[0]}")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"


async def test_hang_fault_times_out_the_client(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    """A hanging answer outlasts a 0.5 s client timeout and the PUT is not applied."""
    sim.app.set_faults(hang_rate=1.0, hang_s=10.0)
    oid = sim.app.seeded_ids[0]
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"}, timeout=0.5)
    assert time.monotonic() - started >= 0.45  # the client's timeout, not an early close
    assert status_of(sim, oid) == "checkout"
    sim.app.set_faults(hang_rate=0.0)
    assert (await client.get(f"{BASE}/{oid}")).status_code == 200


async def test_short_hang_closes_without_answer(sim: SimulatorHandle) -> None:
    """A hang shorter than the client timeout ends with the server closing the connection."""
    sim.app.set_faults(hang_rate=1.0, hang_s=0.2)
    async with httpx.AsyncClient(base_url=sim.url, headers=HEADERS, timeout=5) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(f"{BASE}/{sim.app.seeded_ids[0]}")


async def test_reset_fault(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    """reset_rate=1 drops the connection without an answer; the PUT is not applied."""
    sim.app.set_faults(reset_rate=1.0)
    oid = sim.app.seeded_ids[0]
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"})
    assert status_of(sim, oid) == "checkout"
    sim.app.set_faults(reset_rate=0.0)
    assert (await client.get(f"{BASE}/{oid}")).status_code == 200


async def test_faulted_put_does_not_change_state(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    """Injected 500/503/429 answers to PUT leave the order and its history untouched."""
    oid = sim.app.seeded_ids[0]
    before = sim.app.get_order(oid)
    for changes in ({"error_rate": 1.0}, {"rate_limit_rate": 1.0}, {"down": True}):
        sim.app.set_faults(**{"error_rate": 0.0, "rate_limit_rate": 0.0, "down": False, **changes})
        response = await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"})
        assert response.status_code in (429, 500, 503)
    assert sim.app.get_order(oid) == before
    assert sim.app.history(oid) == ["checkout"]
    assert [c["fault"] for c in sim.app.calls(oid)] == ["error", "rate_limit", "down"]


async def test_down_mode_for_a_while(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    """While down every API call is 503; once back up the same call succeeds."""
    oid = sim.app.seeded_ids[0]
    admin = await client.put("/__admin/faults", json={"down": True})
    assert admin.status_code == 200
    for _ in range(5):
        assert (await client.get(f"{BASE}/{oid}")).status_code == 503
    assert (await client.get("/__admin/health")).status_code == 200
    await client.put("/__admin/faults", json={"down": False})
    assert (await client.get(f"{BASE}/{oid}")).status_code == 200


async def test_admin_endpoints_over_http(sim: SimulatorHandle) -> None:
    """Admin endpoints need no key and expose faults, seeding, calls, history and stats."""
    async with (
        httpx.AsyncClient(base_url=sim.url) as admin,
        httpx.AsyncClient(base_url=sim.url, headers=HEADERS) as api,
    ):
        faults = await admin.put("/__admin/faults", json={"rate_limit_rate": 0.0, "latency_ms": 1})
        assert faults.json()["latency_ms"] == 1
        assert (await admin.get("/__admin/faults")).json()["latency_ms"] == 1
        bad = await admin.put("/__admin/faults", json={"error_rate": 7})
        assert bad.status_code == 400
        ids = (await admin.post("/__admin/seed", json={"count": 2})).json()["ids"]
        oid = ids[0]
        await api.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"})
        await api.put(f"{BASE}/{oid}/state", json={"currentStatus": "accepted"})
        await api.delete(f"{BASE}/{oid}")
        calls = (await admin.get("/__admin/calls", params={"order_id": oid})).json()["calls"]
        assert [(c["method"], c["status"]) for c in calls] == [
            ("PUT", 200),
            ("PUT", 200),
            ("DELETE", 204),
        ]
        assert calls[0]["headers"] == {"x-merchant": "norce", "x-channel": "1", "x-adapterid": None}
        history = (await admin.get("/__admin/history", params={"order_id": oid})).json()
        assert history["history"] == ["checkout", "processing", "accepted", "deleted"]
        stats = (await admin.get("/__admin/stats")).json()
        assert stats["by_status"] == {"200": 2, "204": 1}
        assert (await admin.post("/__admin/reset-log")).status_code == 204
        assert (await admin.get("/__admin/stats")).json()["requests"] == 0
        order = await admin.get(f"/__admin/orders/{ids[1]}")
        assert order.json()["id"] == ids[1]


async def test_many_concurrent_connections(sim: SimulatorHandle) -> None:
    """Dozens of concurrent connections are all served correctly."""

    async def worker(index: int) -> list[int]:
        async with httpx.AsyncClient(base_url=sim.url, headers=HEADERS) as c:
            return [
                (await c.get(f"{BASE}/{sim.app.seeded_ids[index % 20]}")).status_code
                for _ in range(10)
            ]

    results: list[Any] = await asyncio.gather(*(worker(i) for i in range(40)))
    assert all(status == 200 for statuses in results for status in statuses)
    assert sim.connections_accepted >= 40


async def test_aclose_is_idempotent_and_drops_open_connections() -> None:
    """aclose() closes idle keep-alive connections and can be called twice."""
    handle = await start_simulator(SimulatorConfig(orders=1, faults=FaultConfig()))
    async with httpx.AsyncClient(base_url=handle.url) as c:
        assert (await c.get("/__admin/health")).status_code == 200
        assert handle.open_connections == 1
        await handle.aclose()
        await handle.aclose()
        with pytest.raises(httpx.TransportError):
            await c.get("/__admin/health")


async def test_async_context_manager() -> None:
    """The handle works as an async context manager and reports its URL."""
    async with await start_simulator(SimulatorConfig(orders=2)) as handle:
        assert handle.url == f"http://127.0.0.1:{handle.port}"
        async with httpx.AsyncClient(base_url=handle.url) as c:
            assert (await c.get("/__admin/health")).json()["orders"] == 2
