"""The Norce notification ingress: an ``aiohttp.web`` server on its own port (issue 14).

Norce's Notification service POSTs ``{"notification": ..., "order": ...}`` to a configured URL
after an order change, at least once. This server answers each delivery only after it is
**durably stored**: one record on the notifications topic (key: order id, value: the body as
received, acknowledged by all in-sync replicas through an idempotent producer). Never 2xx
without that acknowledgement; 503 with ``Retry-After`` while Kafka is unavailable, so the sender
retries. :mod:`bridge.notify_relay` turns the stored deliveries into ``RefreshOrder`` commands.

One request, in order (each step answers and counts one ``outcome`` when it fails):

1. the path: ``POST /notifications`` or, with a path token, ``POST /notifications/{token}``.
   Every other path answers the same 404; a wrong token answers that same 404 too (counted
   ``unauthorized``): the token is a capability URL, and a scanner cannot tell it from a path
   that does not exist. Other methods on the right path: 405.
2. the shared secret header (when configured): missing or wrong, the same 401. Secrets and
   tokens are compared with :func:`hmac.compare_digest` on bytes and never logged.
3. the size: a ``Content-Length`` over ``max_body_bytes`` is 413 before reading; a chunked body
   is read up to the limit, then 413. The whole body must arrive within ``body_timeout_s``
   (else 408, connection closed); slow *headers* are bounded by the same time (aiohttp's
   keep-alive timeout runs from the connection's start until a request is complete) and by
   ``max_connections`` (more connections are closed at once).
4. the payload (:func:`bridge.notification.parse_notification`): strict JSON (400
   ``malformed``), the documented shape with a safe order id (422 ``invalid``), both with a
   short reason code, never the input.
5. the Kafka write, bounded by ``ack_timeout_s``: 200 once acknowledged, else 503.

Every response closes its connection and carries ``no-store``/``nosniff``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from bridge.config import BridgeSettings, IngressSettings
from bridge.errors import ConfigError
from bridge.health import QuietProtocolErrors
from bridge.metrics import BridgeMetrics
from bridge.notification import (
    IngressAuth,
    NotificationError,
    StoredNotification,
    notification_headers,
    parse_notification,
)
from bridge.vocabulary import DeadLetterReason

__all__ = [
    "IngressServer",
    "NotificationStore",
    "NotificationWriter",
    "StoreTooLargeError",
    "StoreUnavailableError",
    "notifications_producer_config",
    "start_ingress_server",
]

log = logging.getLogger("bridge.ingress")

NOTIFICATIONS_PATH: Final = "/notifications"
_READ_CHUNK: Final = 64 * 1024
_SHUTDOWN_TIMEOUT_S: Final = 2.0
_LINGER_S: Final = 1.0


# -- the durable write -----------------------------------------------------------------------------


class StoreUnavailableError(Exception):
    """Kafka did not acknowledge the record in time (or refused it for a transient reason)."""


class StoreTooLargeError(Exception):
    """Kafka refused the record as too large (the topic's or the broker's limit)."""


def notifications_producer_config(settings: BridgeSettings) -> dict[str, Any]:
    """The idempotent producer of the ingress and the relay (acks from all in-sync replicas).

    Its own producer: the bridge's main producer may be transactional. Its request size fits a
    body of ``max_body_bytes`` with headers.
    """
    k = settings.kafka
    return {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": f"{k.client_id}-notifications",
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": settings.ingress.linger_ms,
        "request_timeout_ms": k.request_timeout_ms,
        "max_request_size": max(1_048_576, settings.ingress.max_body_bytes + 64 * 1024),
    }


class NotificationStore(Protocol):
    """Where accepted deliveries go (:class:`NotificationWriter`: the notifications topic)."""

    async def store(self, n: StoredNotification, body: bytes, received_ms: int) -> tuple[int, int]:
        """(partition, offset) once durable; else StoreUnavailableError/StoreTooLargeError."""
        ...


class NotificationWriter:
    """Writes one delivery to the notifications topic and waits for the acknowledgement."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, ack_timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._ack_timeout_s = ack_timeout_s

    async def store(self, n: StoredNotification, body: bytes, received_ms: int) -> tuple[int, int]:
        """(partition, offset) once acknowledged; else StoreUnavailable/StoreTooLarge."""
        deadline = time.monotonic() + self._ack_timeout_s
        try:
            async with asyncio.timeout(self._ack_timeout_s):
                delivery = await self._producer.send(
                    self._topic,
                    value=body,
                    key=n.order_id.encode(),
                    headers=notification_headers(n, received_ms),
                )
            # Shielded: a timed-out wait must not cancel the batch's future inside aiokafka
            # (the record may still be written: the sender's retry is then a duplicate).
            remaining = max(0.0, deadline - time.monotonic())
            async with asyncio.timeout(remaining):
                meta = await asyncio.shield(delivery)
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            raise StoreTooLargeError(type(exc).__name__) from None
        except (TimeoutError, KafkaError) as exc:
            raise StoreUnavailableError(type(exc).__name__) from None
        return int(meta.partition), int(meta.offset)


# -- the HTTP server -------------------------------------------------------------------------------


class _Reject(Exception):
    def __init__(self, status: int, outcome: str | None, body: dict[str, str]) -> None:
        super().__init__(outcome or str(status))
        self.status = status
        self.outcome = outcome
        self.body = body


_NOT_FOUND = {"error": "not_found"}
_UNAUTHORIZED = {"error": "unauthorized"}


def _json(payload: dict[str, str], status: int) -> web.Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, content_type="application/json")


class _RefuseProtocol(asyncio.Protocol):
    """Closes a connection over the cap at once (no bytes read, nothing written)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()  # type: ignore[attr-defined]


class IngressServer:
    """The running ingress: ``port`` (bound), ``aclose()`` stops listening and ends requests."""

    def __init__(
        self,
        settings: IngressSettings,
        auth: IngressAuth,
        writer: NotificationStore,
        metrics: BridgeMetrics,
        *,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self._s = settings
        self._auth = auth
        self._writer = writer
        self._metrics = metrics
        self._clock_ms = clock_ms
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self.port = 0
        self.refused_connections = 0
        prefix = NOTIFICATIONS_PATH
        self._token_prefix = prefix + "/" if auth.path_token is not None else None

    @property
    def open_connections(self) -> int:
        """Connections open now (at most ``max_connections``)."""
        runner = self._runner
        return 0 if runner is None or runner.server is None else len(runner.server.connections)

    async def start(self) -> IngressServer:
        s = self._s
        app = web.Application(
            middlewares=[self._hardened],
            client_max_size=s.max_body_bytes,
            handler_args={
                "max_field_size": 8 * 1024,
                "max_line_size": 8 * 1024,
                # From the connection's start until a request's headers are complete (aiohttp
                # >= 3.10 runs it for a fresh connection): bounds slow headers.
                "keepalive_timeout": s.body_timeout_s,
                # After an answer to an unread body (413, 408): discard what still arrives
                # for at most this long, so the client can read the answer, then close.
                "lingering_time": _LINGER_S,
            },
        )
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # On close, running deliveries get the time to be stored and answered.
        # No access log (the path carries the token); malformed requests logged at DEBUG
        # without their bytes (the health server's protocol logger).
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=s.ack_timeout_s + _SHUTDOWN_TIMEOUT_S,
            logger=QuietProtocolErrors(log, {}),
        )
        await runner.setup()
        server = runner.server
        assert server is not None
        cap = s.max_connections

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= cap:
                self.refused_connections += 1
                return _RefuseProtocol()
            return server()

        try:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                factory, s.host, s.port, reuse_address=True, backlog=128
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("notification ingress listening on port %d", self.port)
        return self

    async def aclose(self) -> None:
        """Stop accepting connections, give running requests a moment, close the rest."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    # -- request handling ---------------------------------------------------------------------

    @web.middleware
    async def _hardened(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except Exception:
            log.exception("notification ingress failed on a request")
            response = _json({"error": "internal"}, 500)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Server"] = "norce-order-bridge"  # not aiohttp's version
        response.force_close()
        return response

    def _route(self, request: web.Request) -> None:
        """404/405 unless this is ``POST`` to the notifications path (with the right token)."""
        path = request.rel_url.raw_path
        if self._token_prefix is None:
            if path != NOTIFICATIONS_PATH:
                raise _Reject(404, None, _NOT_FOUND)
        else:
            if path != NOTIFICATIONS_PATH and not path.startswith(self._token_prefix):
                raise _Reject(404, None, _NOT_FOUND)
            # /notifications without a token is counted too (a sender configured without it).
            given = path[len(self._token_prefix) :].encode("utf-8", "surrogateescape")
            assert self._auth.path_token is not None
            if not hmac.compare_digest(given, self._auth.path_token):
                raise _Reject(404, "unauthorized" if request.method == "POST" else None, _NOT_FOUND)
        if request.method != "POST":
            raise _Reject(405, None, {"error": "method_not_allowed"})

    def _authenticate(self, request: web.Request) -> None:
        expected = self._auth.secret
        if expected is None:
            return
        given = request.headers.get(self._s.secret_header)
        raw = given.encode("utf-8", "surrogateescape") if given is not None else b""
        # Both compared even when the header is missing: the same work, the same answer.
        if not hmac.compare_digest(raw, expected) or given is None:
            raise _Reject(401, "unauthorized", _UNAUTHORIZED)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self._s.max_body_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _Reject(413, "too_large", {"error": "too_large"})
        ctype = request.headers.get("Content-Type")
        if ctype is not None and (
            request.content_type != "application/json"
            or (request.charset or "utf-8").lower() not in ("utf-8", "utf8")
        ):
            raise _Reject(
                415,
                "malformed",
                {"error": "malformed", "reason": DeadLetterReason.UNSUPPORTED_CONTENT_TYPE.value},
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._s.body_timeout_s):
                while True:
                    chunk = await request.content.read(_READ_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise _Reject(413, "too_large", {"error": "too_large"})
                    chunks.append(chunk)
        except TimeoutError:
            raise _Reject(408, "timeout", {"error": "timeout"}) from None
        return b"".join(chunks)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        received_ms = self._clock_ms()
        try:
            self._route(request)
            self._authenticate(request)
            body = await self._read_body(request)
            try:
                n = parse_notification(body)
            except NotificationError as exc:
                status = 400 if exc.outcome == "malformed" else 422
                payload = {"error": exc.outcome, "reason": exc.reason}
                if exc.field is not None:
                    payload["field"] = exc.field
                raise _Reject(status, exc.outcome, payload) from None
            try:
                partition, offset = await self._writer.store(n, body, received_ms)
            except StoreTooLargeError:
                raise _Reject(413, "too_large", {"error": "too_large"}) from None
            except StoreUnavailableError as exc:
                log.warning(
                    "notification not stored: Kafka unavailable",
                    extra={
                        "outcome": "kafka_unavailable",
                        "order_id": n.order_id,
                        "notification_id": n.notification_id,
                        "error": str(exc),
                    },
                )
                response = _json({"error": "unavailable"}, 503)
                response.headers["Retry-After"] = str(self._s.retry_after_s)
                self._metrics.notification_received("kafka_unavailable")
                return response
        except _Reject as reject:
            if reject.outcome is not None:
                self._metrics.notification_received(reject.outcome)
                log.info(
                    "notification rejected",
                    extra={
                        "outcome": reject.outcome,
                        "status": reject.status,
                        "reason": reject.body.get("reason"),
                        "remote": request.remote,
                    },
                )
            response = _json(reject.body, reject.status)
            if reject.status == 405:
                response.headers["Allow"] = "POST"
            return response
        seconds = time.monotonic() - started
        self._metrics.notification_received("accepted")
        self._metrics.notification_stored(seconds)
        log.info(
            "notification accepted",
            extra={
                "outcome": "accepted",
                "order_id": n.order_id,
                "notification_id": n.notification_id,
                "partition": partition,
                "offset": offset,
                "duration_ms": round(seconds * 1000, 1),
            },
        )
        return _json({"status": "accepted"}, 200)


async def start_ingress_server(
    settings: IngressSettings,
    auth: IngressAuth,
    writer: NotificationStore,
    metrics: BridgeMetrics,
) -> IngressServer:
    """Start listening on ``settings.host:port``; a port in use is a ConfigError."""
    server = IngressServer(settings, auth, writer, metrics)
    try:
        return await server.start()
    except OSError as exc:
        raise ConfigError(
            f"BRIDGE_INGRESS__HOST/BRIDGE_INGRESS__PORT: cannot listen on "
            f"{settings.host}:{settings.port} ({exc.strerror or type(exc).__name__}); "
            "choose a free port"
        ) from None
