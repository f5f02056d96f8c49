"""The notification ingress and relay on the real broker (issue 14, point 2).

Each test starts the ingress through the same composition the bridge uses
(:func:`bridge.notify_relay.start_notifications`, topics from :func:`bridge.app.ensure_topics`)
and talks HTTP to it, as Norce would, or with raw sockets (slow clients). What reached Kafka is
read back with ``read_committed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bridge_devkit.harness import (
    BridgeProcess,
    create_topics,
    free_port,
    make_settings,
    notification_delivery,
    poll_until,
    process_env,
    read_topic,
    simulator,
)
from bridge_devkit.harness.outputs import OutputRecord
from prometheus_client import CollectorRegistry

from bridge import __version__
from bridge.app import ensure_topics
from bridge.codec import AvroCodec
from bridge.config import BridgeSettings, IngressSettings
from bridge.metrics import BridgeMetrics
from bridge.notify_relay import NotificationService, start_notifications

pytestmark = pytest.mark.broker

SECRET = "s3cret-webhook-value-0123"
TOKEN = "tok_0123456789abcdefXYZ"
HEADER = "X-Norce-Webhook-Secret"
CODEC = AvroCodec.load(None)


def delivery(nid: str, order_id: str = "o_yClTSySjyAuuBjmiBlHCjuEcTf", **order: Any) -> bytes:
    return notification_delivery(nid, order_id, **order)


@dataclass
class Ingress:
    settings: BridgeSettings
    service: NotificationService
    registry: CollectorRegistry
    bootstrap: str

    @property
    def url(self) -> str:
        assert self.service.server is not None
        return f"http://127.0.0.1:{self.service.server.port}"

    @property
    def port(self) -> int:
        assert self.service.server is not None
        return self.service.server.port

    def path(self) -> str:
        token = self.settings.ingress.path_token
        return "/notifications" + (f"/{token.get_secret_value()}" if token else "")

    def count(self, outcome: str) -> float:
        value = self.registry.get_sample_value(
            "norce_bridge_notifications_received_total", {"outcome": outcome}
        )
        return value or 0.0

    def counts(self) -> dict[str, float]:
        outcomes = ("accepted", "unauthorized", "too_large", "malformed", "invalid", "timeout")
        return {o: self.count(o) for o in (*outcomes, "kafka_unavailable")}

    async def topic(self, name: str | None = None) -> list[OutputRecord]:
        t = self.settings.topics
        return await read_topic(
            self.bootstrap, name or t.notifications, CODEC, t.partitions, raw=True, timeout_s=60
        )


@contextlib.asynccontextmanager
async def running_ingress(bootstrap: str, **ingress: Any) -> AsyncIterator[Ingress]:
    base = make_settings(bootstrap, "http://127.0.0.1:9")
    topics = base.topics.model_copy(update={"notifications": base.topics.commands + "-ntf"})
    cfg: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": 0,
        "secret": SECRET,
        "relay": False,
    }
    cfg.update(ingress)
    settings = base.model_copy(update={"topics": topics, "ingress": IngressSettings(**cfg)})
    await ensure_topics(settings, {})
    registry = CollectorRegistry()
    metrics = BridgeMetrics(
        registry, version=__version__, processing_guarantee="at_least_once", ordering="key"
    )
    service = await start_notifications(settings, {}, metrics)
    assert service is not None
    try:
        yield Ingress(settings, service, registry, bootstrap)
    finally:
        await service.aclose()


def _secret(value: str = SECRET) -> dict[str, str]:
    return {HEADER: value, "Content-Type": "application/json"}


# -- accepted ------------------------------------------------------------------------------------


async def test_an_accepted_delivery_is_in_the_topic_before_the_answer(kafka_bootstrap: str) -> None:
    async with (
        running_ingress(kafka_bootstrap) as ing,
        httpx.AsyncClient(base_url=ing.url) as http,
    ):
        body = delivery("n-accepted-1")
        before = time.time_ns() // 1_000_000
        response = await http.post("/notifications", content=body, headers=_secret())
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "accepted"}
        assert response.headers["Cache-Control"] == "no-store"
        # Read right after the answer (read_committed): it is already there.
        records = await ing.topic()
        assert len(records) == 1
        rec = records[0]
        assert rec.raw_key == b"o_yClTSySjyAuuBjmiBlHCjuEcTf"
        assert rec.raw == body  # the body as received, byte for byte
        headers = rec.header_map()
        assert headers["content-type"] == b"application/json"
        assert headers["norce.order.id"] == b"o_yClTSySjyAuuBjmiBlHCjuEcTf"
        assert headers["norce.notification.id"] == b"n-accepted-1"
        received = int(headers["norce.notification.received-at"])
        assert before <= received <= time.time_ns() // 1_000_000
        assert ing.count("accepted") == 1
        assert ing.registry.get_sample_value("norce_bridge_notification_ingress_seconds_count") == 1


# -- rejected ------------------------------------------------------------------------------------


def _chunked_post(port: int, total: int) -> bytes:
    """A chunked POST (no Content-Length) of ``total`` bytes over a raw socket; the answer."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"POST /notifications HTTP/1.1\r\nHost: x\r\n{HEADER}: {SECRET}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        with contextlib.suppress(OSError):
            for _ in range(total // 1024):
                sock.sendall(b"400\r\n" + b" " * 1024 + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        return _recv_all(sock, 10)[0]


async def test_every_rejection_is_answered_counted_and_writes_nothing(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        running_ingress(kafka_bootstrap, max_body_bytes=8192) as ing,
        httpx.AsyncClient(base_url=ing.url) as http,
    ):
        ok = delivery("n-1")

        async def post(
            body: bytes, headers: dict[str, Any], path: str = "/notifications"
        ) -> httpx.Response:
            return await http.post(path, content=body, headers=headers)

        missing = await post(ok, {"Content-Type": "application/json"})
        wrong = await post(ok, _secret("s3cret-webhook-value-0124"))
        wrong_length = await post(ok, _secret(SECRET + "x"))
        non_ascii = await post(ok, {HEADER: "s3cret-webhook-välue".encode()})
        for r in (missing, wrong, wrong_length, non_ascii):
            assert (r.status_code, r.content) == (401, missing.content)
        assert missing.json() == {"error": "unauthorized"}

        unknown = await http.get("/nope")
        assert unknown.status_code == 404
        for method in ("GET", "PUT", "DELETE"):
            r = await http.request(method, "/notifications", headers=_secret())
            assert r.status_code == 405
            assert r.headers["Allow"] == "POST"
        for path in ("/", "/notifications/", "/notifications/x", "/metrics", "/healthz"):
            r = await post(ok, _secret(), path)
            assert (r.status_code, r.content) == (404, unknown.content), path

        r = await post(b"{" + b" " * 9000 + b"}", _secret())
        assert (r.status_code, r.json()) == (413, {"error": "too_large"})
        answer = await asyncio.to_thread(_chunked_post, ing.port, 16384)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:80]

        r = await post(b'{"notification": ', _secret())
        assert (r.status_code, r.json()) == (400, {"error": "malformed", "reason": "invalid_json"})
        r = await post(b"\xff\xfe", _secret())
        assert (r.status_code, r.json()["reason"]) == (400, "invalid_utf8")
        r = await post(ok, {HEADER: SECRET, "Content-Type": "text/plain"})
        assert (r.status_code, r.json()["reason"]) == (415, "unsupported_content_type")

        r = await post(b"[]", _secret())
        assert (r.status_code, r.json()) == (422, {"error": "invalid", "reason": "not_an_object"})
        r = await post(b'{"order": {}}', _secret())
        assert r.json() == {"error": "invalid", "reason": "missing_field", "field": "notification"}
        r = await post(delivery("n-2", merchant="a\r\nb"), _secret())
        assert (r.status_code, r.json()["field"]) == (422, "order.merchant")

        hostile = ["../x", "..", "a/b", "a%2F..", "a\r\nX-Injected: 1", "x" * 4000, "a\u200bb"]
        for order_id in hostile:
            r = await post(delivery("n-3", order_id=order_id), _secret())
            assert r.status_code == 422, order_id[:20]
            assert r.json() == {"error": "invalid", "reason": "bad_order_id", "field": "order.id"}
            assert order_id not in r.text
        r = await post(b'{"order": {"id": "\\ud800"}, "notification": {}}', _secret())
        assert (r.status_code, r.json()["reason"]) == (400, "invalid_json")

        assert ing.counts() == {
            "accepted": 0,
            "unauthorized": 4,
            "too_large": 2,
            "malformed": 4,
            "invalid": 3 + len(hostile),
            "timeout": 0,
            "kafka_unavailable": 0,
        }
        assert await ing.topic() == []
        # Still healthy: the next good delivery is stored.
        r = await post(ok, _secret())
        assert r.status_code == 200
        assert len(await ing.topic()) == 1
        # Logged as structured lines with the outcome; never a secret, never a hostile id.
        rejected = [r for r in caplog.records if r.getMessage() == "notification rejected"]
        assert len(rejected) == 4 + 2 + 4 + 3 + len(hostile)
        assert {getattr(r, "outcome", None) for r in rejected} == {
            "unauthorized",
            "too_large",
            "malformed",
            "invalid",
        }
        assert SECRET not in caplog.text
        assert "s3cret-webhook-value-0124" not in caplog.text
        assert "X-Injected" not in caplog.text


async def test_a_wrong_path_token_looks_like_a_missing_path(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        running_ingress(kafka_bootstrap, secret=None, path_token=TOKEN) as ing,
        httpx.AsyncClient(base_url=ing.url) as http,
    ):
        body = delivery("n-token")
        unknown = await http.post("/elsewhere", content=body)
        for path in (
            "/notifications",
            "/notifications/",
            f"/notifications/{TOKEN[:-1]}",
            f"/notifications/{TOKEN}x",
            f"/notifications/{TOKEN}/",
            f"/notifications/{TOKEN.upper()}",
        ):
            r = await http.post(path, content=body)
            assert (r.status_code, r.content, r.headers.get("Allow")) == (
                404,
                unknown.content,
                None,
            ), path
        assert ing.count("unauthorized") == 6
        r = await http.get(ing.path())
        assert r.status_code == 405  # only the right token reveals the endpoint
        r = await http.post(ing.path(), content=body, params={"any": "query"})
        assert r.status_code == 200
        assert [rec.raw for rec in await ing.topic()] == [body]

        # A malformed request line carrying the token: answered 400 by aiohttp, not logged.
        def bad_request() -> bytes:
            with socket.create_connection(("127.0.0.1", ing.port)) as sock:
                sock.sendall(f"POST /notifications/{TOKEN} HTTP/1.1\r\nno colon\r\n\r\n".encode())
                return _recv_all(sock, 10)[0]

        answer = await asyncio.to_thread(bad_request)
        assert answer.split(b" ")[1] == b"400", answer[:80]
        server_side = [r for r in caplog.records if r.name.startswith(("bridge", "aiohttp"))]
        assert server_side
        for record in server_side:  # (the test's own HTTP client logs its URLs: not checked)
            assert TOKEN not in record.getMessage()
            assert TOKEN not in (record.exc_text or "")
            assert TOKEN not in str(record.__dict__)


# -- slow clients ----------------------------------------------------------------------------------


def _recv_all(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or ``deadline_s``), and when it closed."""
    started = time.monotonic()
    sock.settimeout(deadline_s)
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


async def test_slow_bodies_and_slow_headers_are_cut_off(kafka_bootstrap: str) -> None:
    timeout = 1.5
    async with running_ingress(kafka_bootstrap, body_timeout_s=timeout) as ing:
        body = delivery("n-slow")

        def slow_body() -> tuple[bytes, float]:
            with socket.create_connection(("127.0.0.1", ing.port)) as sock:
                head = (
                    f"POST /notifications HTTP/1.1\r\nHost: x\r\n{HEADER}: {SECRET}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                )
                sock.sendall(head.encode() + body[:10])  # ... and the rest never comes
                return _recv_all(sock, timeout * 5)

        def slow_headers() -> tuple[bytes, float]:
            with socket.create_connection(("127.0.0.1", ing.port)) as sock:
                sock.sendall(b"POST /notifications HTTP/1.1\r\nHost: x\r\n")
                return _recv_all(sock, timeout * 5)

        answer, took = await asyncio.to_thread(slow_body)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert timeout <= took < timeout + 3.0  # + at most 1 s lingering close
        assert ing.count("timeout") == 1

        answer, took = await asyncio.to_thread(slow_headers)
        assert took < timeout + 3.0  # closed by the server (keep-alive timer from the start)

        async with httpx.AsyncClient(base_url=ing.url) as http:
            r = await http.post("/notifications", content=body, headers=_secret())
            assert r.status_code == 200
        assert len(await ing.topic()) == 1


async def test_connections_over_the_cap_are_closed_at_once(kafka_bootstrap: str) -> None:
    async with running_ingress(kafka_bootstrap, max_connections=2, body_timeout_s=30) as ing:
        idle = [socket.create_connection(("127.0.0.1", ing.port)) for _ in range(2)]
        try:
            await poll_until(
                lambda: ing.service.server is not None and ing.service.server.open_connections == 2,
                10,
                "two idle connections",
            )

            def third() -> tuple[bytes, float]:
                with socket.create_connection(("127.0.0.1", ing.port)) as sock:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"POST /notifications HTTP/1.1\r\nHost: x\r\n\r\n")
                    return _recv_all(sock, 10)

            answer, took = await asyncio.to_thread(third)
            assert answer == b""
            assert took < 5
            assert ing.service.server is not None
            assert ing.service.server.refused_connections >= 1
        finally:
            for sock in idle:
                sock.close()
        async with httpx.AsyncClient(base_url=ing.url) as http:

            async def stored() -> bool:
                r = await http.post("/notifications", content=delivery("n-cap"), headers=_secret())
                return r.status_code == 200

            deadline = time.monotonic() + 10
            while not await stored():
                assert time.monotonic() < deadline, "the ingress did not take connections again"
                await asyncio.sleep(0.1)


# -- Kafka unavailable -----------------------------------------------------------------------------


async def test_broker_down_is_503_then_2xx_once_back(tmp_path: Path) -> None:
    """Own broker (stopping the session's would stall every other test), restarted on the same
    port and data directory: the ingress survives it and answers 503 meanwhile."""
    from bridge_devkit.localkafka import LocalKafka

    broker = LocalKafka(data_dir=tmp_path / "kafka")
    await asyncio.to_thread(broker.start)
    try:
        async with (
            running_ingress(
                broker.bootstrap_servers, ack_timeout_s=2.0, retry_after_s=7, relay=True
            ) as ing,
            httpx.AsyncClient(base_url=ing.url, timeout=30) as http,
        ):
            first = delivery("n-before")
            r = await http.post("/notifications", content=first, headers=_secret())
            assert r.status_code == 200
            await asyncio.to_thread(broker.stop)

            down = delivery("n-down")
            started = time.monotonic()
            r = await http.post("/notifications", content=down, headers=_secret())
            assert (r.status_code, r.headers["Retry-After"]) == (503, "7")
            assert r.json() == {"error": "unavailable"}
            assert time.monotonic() - started < 2.0 + 2.0  # bounded by ack_timeout_s
            assert ing.count("kafka_unavailable") >= 1

            await asyncio.to_thread(broker.start)
            deadline = time.monotonic() + 120
            while True:  # as Norce would: retry until 2xx
                r = await http.post("/notifications", content=down, headers=_secret())
                if r.status_code == 200:
                    break
                assert r.status_code == 503
                assert time.monotonic() < deadline, "no 2xx after the broker came back"
                await asyncio.sleep(0.5)
            values = [rec.raw for rec in await ing.topic()]
            assert first in values
            assert down in values
            # The relay lived through the restart too: both became commands.
            deadline = time.monotonic() + 120
            while True:
                commands = await ing.topic(ing.settings.topics.commands)
                ids = {json.loads(c.raw or b"")["commandId"].split("-")[2] for c in commands}
                if {"before", "down"} <= ids:
                    break
                assert time.monotonic() < deadline, f"relayed after the restart: {ids}"
                await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(broker.cleanup)


# -- the relay ------------------------------------------------------------------------------------


async def test_relay_turns_deliveries_into_refresh_commands_and_dead_letters_the_rest(
    kafka_bootstrap: str,
) -> None:
    async with (
        running_ingress(kafka_bootstrap, relay=True) as ing,
        httpx.AsyncClient(base_url=ing.url) as http,
    ):
        bodies = [delivery(f"n-relay-{i}", order_id=f"o_relay{i % 3}") for i in range(6)]
        for body in bodies:
            r = await http.post("/notifications", content=body, headers=_secret())
            assert r.status_code == 200
        # Records the ingress would never write, from another producer: dead-lettered.
        producer = ing.service.producer
        await producer.send_and_wait(ing.settings.topics.notifications, b"{not json", key=b"k")
        await producer.send_and_wait(
            ing.settings.topics.notifications, delivery("n-bad", order_id="../etc")
        )
        t = ing.settings.topics

        async def until(topic: str, n: int) -> list[OutputRecord]:
            deadline = time.monotonic() + 60
            while len(records := await ing.topic(topic)) < n:
                assert time.monotonic() < deadline, f"{topic}: {len(records)} of {n}"
                await asyncio.sleep(0.2)
            return records

        commands = await until(t.commands, 6)
        dead = await until(t.dlq, 2)
        by_id = {json.loads(c.raw or b"")["commandId"]: c for c in commands}
        assert len(by_id) == 6
        stored = {rec.header_map().get("norce.notification.id"): rec for rec in await ing.topic()}
        for i in range(len(bodies)):
            rec = stored[f"n-relay-{i}".encode()]
            matching = [
                c
                for c in commands
                if json.loads(c.raw or b"")["commandId"].startswith(f"ntf-n-relay-{i}-")
            ]
            assert len(matching) == 1
            cmd = matching[0]
            value = json.loads(cmd.raw or b"")
            assert value["type"] == "RefreshOrder"
            assert value["orderId"] == f"o_relay{i % 3}"
            assert cmd.raw_key == value["orderId"].encode()
            assert (value["merchant"], value["channel"], value["reason"]) == (
                "norce",
                "1",
                "notification",
            )
            headers = cmd.header_map()
            assert headers["norce.command.id"] == value["commandId"].encode()
            assert headers["norce.order.id"] == cmd.raw_key
            assert (
                headers["norce.notification.received-at"]
                == rec.header_map()["norce.notification.received-at"]
            )
        # One order, one partition (the default partitioner, like the bridge's own commands).
        for order in ("o_relay0", "o_relay1", "o_relay2"):
            assert len({c.partition for c in commands if c.raw_key == order.encode()}) == 1
        reasons = sorted(d.header_map()["__connect.errors.reason"] for d in dead)
        assert reasons == [b"bad_order_id", b"invalid_json"]
        assert {d.header_map()["__connect.errors.topic"] for d in dead} == {
            t.notifications.encode()
        }

        def relayed(outcome: str) -> float:
            value = ing.registry.get_sample_value(
                "norce_bridge_notifications_relayed_total", {"outcome": outcome}
            )
            return value or 0.0

        await poll_until(lambda: relayed("relayed") == 6 and relayed("invalid") == 2, 30, "counts")
        # Committed past everything (only after the produced records were acknowledged).
        from bridge_devkit.harness import committed_offsets, end_offsets

        group = ing.settings.ingress.relay_group(ing.settings.kafka.group_id)
        ends = await end_offsets(kafka_bootstrap, t.notifications, t.partitions)
        ends = {p: end for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + 30
        while await committed_offsets(kafka_bootstrap, group, t.notifications) != ends:
            assert time.monotonic() < deadline, "relay offsets not committed"
            await asyncio.sleep(0.2)


# -- kill -9 during a burst ------------------------------------------------------------------------


async def test_kill_9_during_a_burst_loses_no_acknowledged_delivery(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A retrying client (every non-2xx or connection error is retried, like Norce) sends a burst
    to a ``bridge run`` process; the process is killed with SIGKILL mid-burst and restarted on
    the same port. Every delivery the client saw acknowledged is in the topic, and after the
    retries every delivery is (duplicates allowed: the answer of an acked write can be lost)."""
    total, concurrency, kill_after = 240, 12, 60
    port = free_port()
    async with simulator() as sim:
        settings = make_settings(kafka_bootstrap, sim.url)
        t = settings.topics
        notifications = t.commands + "-ntf"
        await create_topics(kafka_bootstrap, t)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(notifications, t.partitions, 1)])
        finally:
            await admin.close()
        env = process_env(
            settings,
            sim.url,
            BRIDGE_INGRESS__ENABLED="true",
            BRIDGE_INGRESS__HOST="127.0.0.1",
            BRIDGE_INGRESS__PORT=str(port),
            BRIDGE_INGRESS__SECRET=SECRET,
            BRIDGE_INGRESS__RELAY="false",
            BRIDGE_TOPICS__NOTIFICATIONS=notifications,
            BRIDGE_LOG_LEVEL="INFO",
        )
        proc = BridgeProcess(env, tmp_path / "bridge-1.log")
        restarted: BridgeProcess | None = None
        try:
            await proc.wait_for_log("notifications started", 60)
            bodies = {
                f"n-burst-{i}": delivery(f"n-burst-{i}", order_id=f"o_b{i}") for i in range(total)
            }
            acked: set[str] = set()
            acked_at_kill: set[str] = set()
            attempts = 0
            queue: asyncio.Queue[str] = asyncio.Queue()
            for nid in bodies:
                queue.put_nowait(nid)

            async def client() -> None:
                nonlocal attempts
                async with httpx.AsyncClient(timeout=15) as http:
                    while True:
                        try:
                            nid = queue.get_nowait()
                        except asyncio.QueueEmpty:
                            return
                        deadline = time.monotonic() + 120
                        while True:
                            attempts += 1
                            try:
                                r = await http.post(
                                    f"http://127.0.0.1:{port}/notifications",
                                    content=bodies[nid],
                                    headers=_secret(),
                                )
                                if r.status_code == 200:
                                    acked.add(nid)
                                    break
                            except httpx.HTTPError:
                                pass
                            assert time.monotonic() < deadline, f"{nid} never acknowledged"
                            await asyncio.sleep(0.05)  # the sender's retry interval

            clients = [asyncio.create_task(client()) for _ in range(concurrency)]
            await poll_until(lambda: len(acked) >= kill_after, 60, "deliveries before the kill")
            proc.kill()
            acked_at_kill = set(acked)
            restarted = BridgeProcess(env, tmp_path / "bridge-2.log")
            await asyncio.wait_for(asyncio.gather(*clients), 180)
            assert acked == set(bodies)
        finally:
            proc.kill() if not proc.exited else None
            if restarted is not None:
                # SIGTERM: the drain closes the ingress and its producer too; a clean exit.
                assert await restarted.stop(30) == 0, restarted.log_tail()
        records = await read_topic(
            kafka_bootstrap, notifications, CODEC, t.partitions, raw=True, timeout_s=60
        )
        stored = [rec.header_map()["norce.notification.id"].decode() for rec in records]
        assert acked_at_kill <= set(stored), "an acknowledged delivery is missing"
        assert set(stored) == set(bodies)
        for rec in records:
            nid = rec.header_map()["norce.notification.id"].decode()
            assert rec.raw == bodies[nid]
        duplicates = len(stored) - len(set(stored))
        print(
            f"\nkill -9 burst: {total} deliveries, {len(acked_at_kill)} acked before the kill, "
            f"{attempts} attempts, {len(stored)} records, {duplicates} duplicates"
        )
