"""The ingress's HTTP behaviour over loopback with an in-memory store (no broker).

The store is the server's documented boundary (:class:`bridge.ingress.NotificationStore`); the
same behaviour against the real Kafka write is tested in ``tests/integration/test_ingress.py``.
Here: routing, auth, limits, validation answers, the answers to a store that fails, metrics.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client import CollectorRegistry

from bridge.config import IngressSettings
from bridge.errors import ConfigError
from bridge.ingress import (
    IngressServer,
    StoreTooLargeError,
    StoreUnavailableError,
    start_ingress_server,
)
from bridge.metrics import BridgeMetrics
from bridge.notification import IngressAuth, StoredNotification

SECRET = b"s3cret-webhook-value-0123"
TOKEN = b"tok_0123456789abcdefXYZ"
OK = json.dumps(
    {
        "notification": {"id": "n-1", "reference": "r", "scope": "/state", "invoke": "u"},
        "order": {"id": "o_1", "merchant": "norce", "channel": "1"},
    }
).encode()


@dataclass
class MemoryStore:
    stored: list[tuple[StoredNotification, bytes, int]] = field(default_factory=list)
    fail: Exception | None = None
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def store(self, n: StoredNotification, body: bytes, received_ms: int) -> tuple[int, int]:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.stored.append((n, body, received_ms))
        return 0, len(self.stored) - 1


@dataclass
class Running:
    server: IngressServer
    store: MemoryStore
    registry: CollectorRegistry
    http: httpx.AsyncClient

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "norce_bridge_notifications_received_total", {"outcome": outcome}
        )
        return value or 0.0


@pytest.fixture
async def ingress(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    options = getattr(request, "param", {})
    token = options.pop("token", None)
    secret = options.pop("secret", SECRET)
    settings = IngressSettings(host="127.0.0.1", port=0, **options)
    registry = CollectorRegistry()
    metrics = BridgeMetrics(
        registry, version="t", processing_guarantee="at_least_once", ordering="key"
    )
    store = MemoryStore()
    server = await start_ingress_server(settings, IngressAuth(secret, token), store, metrics)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            yield Running(server, store, registry, http)
    finally:
        await server.aclose()
        await server.aclose()  # idempotent


def headers(secret: bytes = SECRET) -> dict[bytes, bytes]:
    return {b"X-Norce-Webhook-Secret": secret, b"Content-Type": b"application/json"}


async def test_accepted_after_the_store_answered(ingress: Running) -> None:
    r = await ingress.http.post("/notifications", content=OK, headers=headers())
    assert (r.status_code, r.json()) == (200, {"status": "accepted"})
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Connection"] == "close"
    assert r.headers["Server"] == "norce-order-bridge"
    [(n, body, received)] = ingress.store.stored
    assert (n.notification_id, n.order_id, body) == ("n-1", "o_1", OK)
    assert received > 1_700_000_000_000
    assert ingress.count("accepted") == 1


async def test_no_answer_before_the_store_answers(ingress: Running) -> None:
    ingress.store.gate = asyncio.Event()
    post = asyncio.create_task(ingress.http.post("/notifications", content=OK, headers=headers()))
    await asyncio.wait_for(ingress.store.entered.wait(), 10)  # the write is under way ...
    await asyncio.sleep(0)
    assert not post.done()  # ... and blocked: no answer yet
    ingress.store.gate.set()
    assert (await post).status_code == 200


async def test_store_failures_are_503_or_413(ingress: Running) -> None:
    ingress.store.fail = StoreUnavailableError("KafkaTimeoutError")
    r = await ingress.http.post("/notifications", content=OK, headers=headers())
    assert (r.status_code, r.headers["Retry-After"], r.json()) == (
        503,
        "5",
        {"error": "unavailable"},
    )
    ingress.store.fail = StoreTooLargeError("RecordTooLargeError")
    r = await ingress.http.post("/notifications", content=OK, headers=headers())
    assert (r.status_code, r.json()) == (413, {"error": "too_large"})
    assert (ingress.count("kafka_unavailable"), ingress.count("too_large")) == (1, 1)
    ingress.store.fail = RuntimeError("a bug")
    r = await ingress.http.post("/notifications", content=OK, headers=headers())
    assert (r.status_code, r.json()) == (500, {"error": "internal"})
    assert ingress.count("accepted") == 0


async def test_auth_and_routes(ingress: Running) -> None:
    http = ingress.http
    missing = await http.post("/notifications", content=OK)
    wrong = await http.post("/notifications", content=OK, headers=headers(b"x" * 24))
    assert missing.status_code == wrong.status_code == 401
    assert missing.content == wrong.content
    r = await http.get("/notifications")
    assert (r.status_code, r.headers["Allow"]) == (405, "POST")
    r = await http.post("/other", content=OK, headers=headers())
    assert (r.status_code, r.json()) == (404, {"error": "not_found"})
    assert ingress.count("unauthorized") == 2
    assert ingress.store.stored == []


@pytest.mark.parametrize(
    "ingress", [{"token": TOKEN, "secret": None}], indirect=True, ids=["token"]
)
async def test_path_token(ingress: Running) -> None:
    http = ingress.http
    r = await http.post("/notifications/" + "x" * len(TOKEN), content=OK)
    assert r.status_code == 404
    r = await http.get("/notifications/" + "x" * len(TOKEN))
    assert r.status_code == 404
    assert ingress.count("unauthorized") == 1  # only POSTs count
    r = await http.post("/notifications/" + TOKEN.decode(), content=OK)
    assert r.status_code == 200


@pytest.mark.parametrize("ingress", [{"max_body_bytes": 2048}], indirect=True, ids=["small"])
async def test_sizes_types_and_payloads(ingress: Running) -> None:
    http = ingress.http
    r = await http.post("/notifications", content=b" " * 4096, headers=headers())
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * 1024

    try:
        r = await http.post("/notifications", content=chunks(), headers=headers())
        assert r.status_code == 413
    except httpx.HTTPError:  # the server may close while the client still sends
        pass
    r = await http.post(
        "/notifications",
        content=OK,
        headers={**headers(), b"Content-Type": b"application/json; charset=latin-1"},
    )
    assert r.status_code == 415
    r = await http.post("/notifications", content=b"{", headers=headers())
    assert (r.status_code, r.json()["reason"]) == (400, "invalid_json")
    r = await http.post("/notifications", content=b'{"order": 1}', headers=headers())
    assert r.status_code == 422
    r = await http.post("/notifications", content=OK, headers={b"X-Norce-Webhook-Secret": SECRET})
    assert r.status_code == 200  # no Content-Type at all is accepted
    assert ingress.count("too_large") >= 1
    assert ingress.count("malformed") == 2
    assert ingress.count("invalid") == 1


@pytest.mark.parametrize("ingress", [{"body_timeout_s": 0.5}], indirect=True, ids=["fast"])
async def test_a_slow_body_is_408(ingress: Running) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.server.port)
    writer.write(
        b"POST /notifications HTTP/1.1\r\nHost: x\r\nX-Norce-Webhook-Secret: "
        + SECRET
        + b"\r\nContent-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert ingress.count("timeout") == 1


async def test_a_port_in_use_is_a_config_error(ingress: Running) -> None:
    settings = IngressSettings(host="127.0.0.1", port=ingress.server.port)
    metrics = BridgeMetrics(
        CollectorRegistry(), version="t", processing_guarantee="at_least_once", ordering="key"
    )
    with pytest.raises(ConfigError, match="BRIDGE_INGRESS__HOST/BRIDGE_INGRESS__PORT"):
        await start_ingress_server(settings, IngressAuth(SECRET, None), MemoryStore(), metrics)


async def test_closing_stops_accepting_but_answers_running_deliveries(ingress: Running) -> None:
    ingress.store.gate = asyncio.Event()
    post = asyncio.create_task(ingress.http.post("/notifications", content=OK, headers=headers()))
    await asyncio.wait_for(ingress.store.entered.wait(), 10)
    closing = asyncio.create_task(ingress.server.aclose())
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the listening socket goes away first
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", ingress.server.port)
        except OSError:
            break
        writer.close()
        assert asyncio.get_running_loop().time() < deadline, "still accepting connections"
        await asyncio.sleep(0.02)
    assert not post.done()
    ingress.store.gate.set()
    assert (await post).status_code == 200
    await asyncio.wait_for(closing, 10)
    assert len(ingress.store.stored) == 1
