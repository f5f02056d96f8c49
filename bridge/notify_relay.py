"""The notification relay: stored deliveries (notifications topic) -> ``RefreshOrder`` commands.

Consumer group ``<BRIDGE_KAFKA__GROUP_ID>.notifications`` (or ``BRIDGE_INGRESS__RELAY_GROUP_ID``)
on the notifications topic, so every replica running the relay shares its partitions. Per
record: the same validation as the ingress (:func:`bridge.ingress.parse_notification`), then one
``RefreshOrder`` command on the commands topic, keyed by order id (the default murmur2
partitioner, like ``order-bridge send``): all commands of one order go through one partition and
the bridge's per-order scheduler. Offsets are committed only after every produced record of a
batch is acknowledged (at least once; a duplicate ``RefreshOrder`` is harmless: it re-reads
the order). A record that does not validate is dead-lettered (:mod:`bridge.deadletter`) and
skipped. While Kafka fails, the batch is re-read from its first offset after a backoff.

:class:`NotificationService` composes the ingress server, the relay and their one idempotent
producer for :mod:`bridge.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from bridge.commands import RefreshOrder, command_record
from bridge.commands import received_at_ms as command_received_at_ms
from bridge.config import BridgeSettings
from bridge.deadletter import STAGE_PARSE, dead_letter
from bridge.decision.refresh import NOTIFICATION_REASON
from bridge.ingress import (
    IngressServer,
    NotificationWriter,
    notifications_producer_config,
    start_ingress_server,
)
from bridge.metrics import BridgeMetrics
from bridge.notification import (
    H_RECEIVED_AT,
    IngressAuth,
    NotificationError,
    StoredNotification,
    load_ingress_auth,
    parse_notification,
)
from bridge.outputs import SourceRecord
from bridge.vocabulary import DeadLetterReason

__all__ = [
    "NotificationRelay",
    "NotificationService",
    "command_id",
    "refresh_command",
    "start_notifications",
]

log = logging.getLogger("bridge.notify_relay")

REASON: Final = NOTIFICATION_REASON
_BATCH: Final = 200
_MAX_BACKOFF_S: Final = 10.0


def command_id(notification_id: str, body: bytes) -> str:
    """``ntf-<notification id>-<sha256(body)[:12]>``: the same delivery, the same command id."""
    return f"ntf-{notification_id}-{hashlib.sha256(body).hexdigest()[:12]}"


def received_at_ms(headers: Any, fallback_ms: int) -> int:
    """The ingress's ``norce.notification.received-at`` (ms), else ``fallback_ms``."""
    stamped = command_received_at_ms(headers)
    return fallback_ms if stamped is None else stamped


def refresh_command(
    n: StoredNotification, body: bytes, received_ms: int
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of the ``RefreshOrder`` command of one stored notification.

    ``issuedAt`` is when the ingress received the delivery (a re-relayed duplicate carries the
    same command, byte for byte).
    """
    try:
        issued_at = datetime.fromtimestamp(received_ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        # Only the ingress writes the header, within range; a record written past it can carry
        # any 16 digits (year > 9999): dead-lettered, never a relay that re-reads forever.
        raise NotificationError(
            "invalid",
            DeadLetterReason.BAD_TIMESTAMP,
            f"{H_RECEIVED_AT} is not a representable time",
            H_RECEIVED_AT,
        ) from None
    try:
        command = RefreshOrder(
            command_id=command_id(n.notification_id, body),
            order_id=n.order_id,
            merchant=n.merchant,
            channel=n.channel,
            issued_at=issued_at,
            reason=REASON,
        )
    except ValidationError as exc:  # a value the command model refuses: dead-lettered
        field = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None
        raise NotificationError(
            "invalid", DeadLetterReason.INVALID_FIELD, "not a valid RefreshOrder value", field
        ) from None
    return command_record(command, (H_RECEIVED_AT, str(received_ms).encode()))


def _as_notification_error(exc: Exception, partition: int, offset: int) -> NotificationError:
    """What a record's parse raised, as the error it is dead-lettered with: an unexpected one
    (a bug) is logged with its traceback and dead-lettered as internal_error, not retried."""
    if isinstance(exc, NotificationError):
        return exc
    log.exception(
        "unexpected error while reading a notification record",
        extra={"partition": partition, "offset": offset},
    )
    return NotificationError(
        "invalid",
        DeadLetterReason.INTERNAL_ERROR,
        f"unexpected {type(exc).__name__} while reading the notification",
    )


class NotificationRelay:
    """Consumes the notifications topic and produces commands until :meth:`stop`."""

    def __init__(
        self,
        settings: BridgeSettings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        metrics: BridgeMetrics,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._s = settings
        self._consumer = consumer
        self._producer = producer
        self._metrics = metrics
        self._now = now
        self._stopping = asyncio.Event()
        self.relayed = 0
        self.invalid = 0

    def stop(self) -> None:
        """Finish the current batch (its acks and commit), then return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            batch: dict[TopicPartition, list[Any]] = {}
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=_BATCH)
                if not batch:
                    continue
                await self._relay(batch)
                backoff = 0.5
            except Exception as exc:  # never dies: Kafka comes back, the batch is re-read
                log.warning(
                    "notification relay: Kafka failed, re-reading the batch",
                    extra={"error": type(exc).__name__, "retry_in_s": backoff},
                )
                for tp, records in batch.items():
                    with contextlib.suppress(Exception):
                        self._consumer.seek(tp, records[0].offset)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _relay(self, batch: dict[TopicPartition, list[Any]]) -> None:
        topics = self._s.topics
        pending: list[asyncio.Future[Any]] = []
        outcomes: list[tuple[str, str | None]] = []
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            for m in records:
                offsets[tp] = m.offset + 1
                body = m.value or b""
                try:
                    n = parse_notification(body)
                    key, value, headers = refresh_command(
                        n, body, received_at_ms(m.headers, m.timestamp)
                    )
                except Exception as raised:  # one bad record never stalls the relay
                    exc = _as_notification_error(raised, m.partition, m.offset)
                    src = SourceRecord(
                        m.topic,
                        m.partition,
                        m.offset,
                        m.key,
                        m.value,
                        tuple(m.headers or ()),
                        m.timestamp,
                    )
                    out = dead_letter(src, exc.reason, exc, stage=STAGE_PARSE, now=self._now())
                    letter = out.value if isinstance(out.value, bytes) else None
                    pending.append(
                        await self._producer.send(
                            topics.dlq, value=letter, key=out.key, headers=out.headers
                        )
                    )
                    outcomes.append(("invalid", exc.reason))
                    log.warning(
                        "notification record invalid: dead-lettered",
                        extra={
                            "outcome": "invalid",
                            "reason": exc.reason,
                            "partition": m.partition,
                            "offset": m.offset,
                        },
                    )
                    continue
                pending.append(
                    await self._producer.send(
                        topics.commands, value=value, key=key, headers=headers
                    )
                )
                outcomes.append(("relayed", None))
                log.info(
                    "notification relayed",
                    extra={
                        "outcome": "relayed",
                        "order_id": n.order_id,
                        "notification_id": n.notification_id,
                    },
                )
        await asyncio.gather(*pending)
        for outcome, reason in outcomes:
            self._metrics.notification_relayed(outcome)
            if reason is not None:
                self._metrics.dead_lettered(reason)
            if outcome == "relayed":
                self.relayed += 1
            else:
                self.invalid += 1
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance: the new owner relays them again (harmless)
            log.warning("notification relay: commit failed", extra={"error": type(exc).__name__})


def relay_consumer(settings: BridgeSettings, options: dict[str, Any]) -> AIOKafkaConsumer:
    k = settings.kafka
    return AIOKafkaConsumer(
        settings.topics.notifications,
        bootstrap_servers=k.bootstrap_servers,
        group_id=settings.ingress.relay_group(k.group_id),
        client_id=f"{k.client_id}-relay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=min(3000, k.session_timeout_ms // 3),
        request_timeout_ms=max(k.request_timeout_ms, k.session_timeout_ms + 5000),
        max_partition_fetch_bytes=max(1_048_576, settings.ingress.max_body_bytes + 64 * 1024),
        **options,
    )


class NotificationService:
    """The ingress server and/or the relay of one process, sharing one idempotent producer."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.server: IngressServer | None = None
        self.relay: NotificationRelay | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._closed = False

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Stop listening (running requests finish), stop the relay after its batch, close."""
        if self._closed:
            return
        self._closed = True
        if self.server is not None:
            await self.server.aclose()
        if self.relay is not None and self._relay_task is not None:
            self.relay.stop()
            try:
                await asyncio.wait_for(asyncio.shield(self._relay_task), timeout_s)
            except (TimeoutError, Exception):
                self._relay_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._relay_task
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        with contextlib.suppress(Exception):
            await self.producer.stop()

    def _relay_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("notification relay stopped on an error", exc_info=task.exception())


async def start_notifications(
    settings: BridgeSettings,
    options: dict[str, Any],
    metrics: BridgeMetrics,
    *,
    auth: IngressAuth | None = None,
) -> NotificationService | None:
    """Start what ``BRIDGE_INGRESS__*`` enables (None: neither the ingress nor the relay).

    ``auth``: the secrets already read (the bridge reads them before connecting to Kafka, so a
    bad secret fails start-up at once); read here when not given.
    """
    s = settings.ingress
    if not s.enabled and not s.relay_enabled():
        return None
    if s.enabled and auth is None:
        auth = load_ingress_auth(s)
    if not s.enabled:
        auth = None
    producer = AIOKafkaProducer(**notifications_producer_config(settings), **options)
    await producer.start()
    service = NotificationService(producer)
    try:
        if s.relay_enabled():
            consumer = relay_consumer(settings, options)
            await consumer.start()
            service._consumer = consumer
            service.relay = NotificationRelay(settings, consumer, producer, metrics)
            task = asyncio.create_task(service.relay.run(), name="notification-relay")
            task.add_done_callback(service._relay_done)
            service._relay_task = task
        if auth is not None:
            writer = NotificationWriter(producer, settings.topics.notifications, s.ack_timeout_s)
            service.server = await start_ingress_server(s, auth, writer, metrics)
    except BaseException:
        await service.aclose()
        raise
    log.info(
        "notifications started",
        extra={
            "ingress_port": service.server.port if service.server else None,
            "relay": service.relay is not None,
        },
    )
    return service
