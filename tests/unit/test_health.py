"""Unit tests of bridge.health: real HTTP to a server on a free port."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import trustme
from prometheus_client import CONTENT_TYPE_LATEST, CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_LATEST

from bridge.health import HealthServer, start_health_server
from bridge.metrics import BridgeMetrics
from bridge.startup import KafkaStartupError, wait_for_kafka


@dataclass
class FakeState:
    """A HealthState whose answers the test sets."""

    alive: tuple[bool, str] = (True, "")
    ready: tuple[bool, str] = (True, "")
    raise_on_ready: bool = False

    def is_alive(self) -> tuple[bool, str]:
        """Return the configured liveness."""
        return self.alive

    def is_ready(self) -> tuple[bool, str]:
        """Return the configured readiness (or raise)."""
        if self.raise_on_ready:
            raise RuntimeError("secret-token-from-config")
        return self.ready


@dataclass
class Response:
    """A parsed HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        """Decode the body as JSON."""
        return json.loads(self.body)


async def request(
    server: HealthServer, method: str, path: str, raw: bytes | None = None
) -> Response:
    """Send one HTTP/1.1 request over a real socket and read the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            raw
            if raw is not None
            else f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n".encode()
        )
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Response(status, headers, body)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry with the bridge's metrics on it."""
    reg = CollectorRegistry()
    BridgeMetrics(reg, version="9.9.9", processing_guarantee="at_least_once", ordering="key")
    return reg


@pytest.fixture
def state() -> FakeState:
    """A healthy fake state."""
    return FakeState()


@pytest.fixture
async def server(registry: CollectorRegistry, state: FakeState) -> AsyncIterator[HealthServer]:
    """A health server on a free loopback port."""
    async with await start_health_server(registry, state, host="127.0.0.1", port=0) as srv:
        yield srv


async def test_binds_a_free_port(server: HealthServer) -> None:
    """Port 0 picks a free port and the URL names it."""
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


async def test_metrics_endpoint(server: HealthServer) -> None:
    """Serves the registry in the Prometheus text format."""
    resp = await request(server, "GET", "/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert int(resp.headers["content-length"]) == len(resp.body)
    assert b'norce_bridge_build_info{ordering="key"' in resp.body
    assert b"process_start_time_seconds" in resp.body


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("text/plain;version=1.0.0", CONTENT_TYPE_LATEST + "; escaping=underscores"),
        (
            "application/openmetrics-text;version=1.0.0",
            OPENMETRICS_LATEST + "; escaping=underscores",
        ),
    ],
)
async def test_metrics_negotiates_the_format(
    server: HealthServer, accept: str, content_type: str
) -> None:
    """The format follows the scraper's Accept header (prometheus_client's own negotiation)."""
    raw = f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n".encode()
    resp = await request(server, "", "", raw=raw)
    assert resp.status == 200
    assert resp.headers["content-type"].replace(" ", "") == content_type.replace(" ", "")
    assert b"norce_bridge_build_info" in resp.body
    if "openmetrics" in accept:
        assert resp.body.endswith(b"# EOF\n")


async def test_metrics_ignores_query_string(server: HealthServer) -> None:
    """A query string does not change the path."""
    resp = await request(server, "GET", "/metrics?name[]=x")
    assert resp.status == 200


class BrokenCollector:
    """A collector whose collection fails, with a secret in the error."""

    def collect(self) -> list[Metric]:
        """Raise like a broken custom collector."""
        raise RuntimeError("secret-token-from-collector")


async def test_metrics_collection_failure_is_500_and_survivable(state: FakeState) -> None:
    """A failing collector answers 500 without details; the other endpoints keep working."""
    registry = CollectorRegistry()
    registry.register(BrokenCollector())
    async with await start_health_server(registry, state, host="127.0.0.1", port=0) as srv:
        resp = await request(srv, "GET", "/metrics")
        assert resp.status == 500
        assert b"secret-token" not in resp.body
        assert (await request(srv, "GET", "/healthz")).status == 200


async def test_healthz_ok(server: HealthServer) -> None:
    """Answers 200 with status ok when alive."""
    resp = await request(server, "GET", "/healthz")
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"status": "ok"}


async def test_healthz_unavailable(server: HealthServer, state: FakeState) -> None:
    """Answers 503 with the runtime's reason when the loop is wedged."""
    state.alive = (False, "heartbeat is 42s old")
    resp = await request(server, "GET", "/healthz")
    assert resp.status == 503
    assert resp.json() == {"status": "unavailable", "reason": "heartbeat is 42s old"}


async def test_readyz_follows_state(server: HealthServer, state: FakeState) -> None:
    """Answers 200 when ready and 503 with a reason when not."""
    assert (await request(server, "GET", "/readyz")).status == 200
    state.ready = (False, "draining")
    resp = await request(server, "GET", "/readyz")
    assert resp.status == 503
    assert resp.json() == {"status": "unavailable", "reason": "draining"}


async def test_probe_exception_is_503_without_details(
    server: HealthServer, state: FakeState
) -> None:
    """A raising probe gives 503 and does not leak the exception text."""
    state.raise_on_ready = True
    resp = await request(server, "GET", "/readyz")
    assert resp.status == 503
    assert b"secret-token" not in resp.body
    # the server survives it
    assert (await request(server, "GET", "/healthz")).status == 200


async def test_unknown_path_is_404(server: HealthServer) -> None:
    """Other paths answer 404."""
    assert (await request(server, "GET", "/")).status == 404
    assert (await request(server, "GET", "/env")).status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_non_get_is_405(server: HealthServer, method: str) -> None:
    """Methods other than GET (and HEAD) answer 405 with an Allow header."""
    resp = await request(server, method, "/healthz")
    assert resp.status == 405
    assert resp.headers["allow"] == "GET, HEAD"


async def test_head_has_no_body(server: HealthServer) -> None:
    """HEAD answers the status and headers without a body."""
    resp = await request(server, "HEAD", "/healthz")
    assert resp.status == 200
    assert resp.body == b""
    assert int(resp.headers["content-length"]) > 0


async def test_malformed_request_is_400(server: HealthServer) -> None:
    """A garbage request line answers 400 and the server keeps serving."""
    resp = await request(server, "", "", raw=b"hello\r\n\r\n")
    assert resp.status == 400
    assert (await request(server, "GET", "/healthz")).status == 200


async def test_malformed_requests_are_not_logged_as_errors(
    server: HealthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage from a scanner is no error of the bridge's, and its bytes are not logged."""
    caplog.set_level(logging.DEBUG)
    await request(server, "", "", raw=b"hello secret-garbage\r\n\r\n")
    raw = b"GET /healthz HTTP/1.1\r\nX-Big: secret-" + b"a" * 40_000 + b"\r\n\r\n"
    await request(server, "", "", raw=raw)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "secret-" not in caplog.text


async def test_oversized_headers_are_rejected(server: HealthServer) -> None:
    """A header beyond the limit is a bad request (aiohttp's 400) and the server keeps serving."""
    raw = b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    resp = await request(server, "", "", raw=raw)
    assert resp.status == 400
    assert (await request(server, "GET", "/healthz")).status == 200


async def test_concurrent_requests(server: HealthServer) -> None:
    """Serves many concurrent connections."""
    results = await asyncio.gather(*(request(server, "GET", "/metrics") for _ in range(20)))
    assert all(r.status == 200 for r in results)


async def test_aclose_is_idempotent_and_stops_listening(
    registry: CollectorRegistry, state: FakeState
) -> None:
    """After aclose the port refuses connections; a second aclose does nothing."""
    srv = await start_health_server(registry, state, host="127.0.0.1", port=0)
    assert (await request(srv, "GET", "/healthz")).status == 200
    await srv.aclose()
    await srv.aclose()
    assert srv.closed
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", srv.port)


async def test_aclose_ends_idle_connections(registry: CollectorRegistry, state: FakeState) -> None:
    """A client that connected but sent nothing does not block aclose."""
    srv = await start_health_server(registry, state, host="127.0.0.1", port=0)
    _reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.aclose(), 2)
    writer.close()


async def test_no_configuration_is_exposed(
    server: HealthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None of the endpoints echo environment or configuration values."""
    monkeypatch.setenv("BRIDGE_NORCE__BASE_URL", "https://norce-canary-host.invalid")
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "kafka-canary:9092")
    for path in ("/metrics", "/healthz", "/readyz", "/env", "/config"):
        body = (await request(server, "GET", path)).body.lower()
        for word in (b"canary", b"bootstrap", b"api_key", b"password", b"base_url"):
            assert word not in body


# --------------------------------------------------------------------------- start-up wait


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_startup_wait_reports_why_and_gives_up_at_the_deadline() -> None:
    """Nothing listens: the wait reports a configuration-free reason, then fails (not refused)."""
    reasons: list[str] = []
    with pytest.raises(KafkaStartupError) as info:
        await wait_for_kafka(
            f"127.0.0.1:{_closed_port()}",
            {"security_protocol": "PLAINTEXT"},
            deadline_s=0.6,
            attempt_timeout_s=0.5,
            on_waiting=reasons.append,
        )
    assert info.value.refused is False
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in str(info.value)
    assert "Connection refused" in str(info.value)
    assert reasons
    assert all(r.startswith("waiting for Kafka: broker unreachable") for r in reasons)
    assert not any("127.0.0.1" in r for r in reasons)


async def test_startup_wait_fails_at_once_on_an_untrusted_certificate() -> None:
    """A TLS listener whose certificate the configured CA did not sign: refused, no waiting."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context()
    client_ca.configure_trust(client_ctx)
    try:
        with pytest.raises(KafkaStartupError) as info:
            await asyncio.wait_for(
                wait_for_kafka(
                    f"127.0.0.1:{port}",
                    {"security_protocol": "SSL", "ssl_context": client_ctx},
                    deadline_s=300,
                    attempt_timeout_s=5,
                ),
                60,
            )
    finally:
        server.close()
        await server.wait_closed()
    assert info.value.refused is True
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert "BRIDGE_KAFKA__SSL_CAFILE" in str(info.value)
