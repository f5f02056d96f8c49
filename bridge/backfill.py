"""``order-bridge refresh``: enqueue ``RefreshOrder`` commands for given orders, or for all of a
merchant/channel (backfill of the compacted snapshots topic).

The command is built here per the wire contract of issue 14 (``RefreshOrder`` JSON, keyed by
order id, headers like every command). With ``--all`` the orders are listed page by page through
``GET /api/v0/checkout/orders`` (newest first, ``order_by=created``); ``--since`` is applied on
the client on each order's ``created`` (neither the v0 reference nor the simulator has a date
filter for this list) and the listing stops at the first page that reaches older orders.

Every command goes through the bridge's idempotent ``acks=all`` producer; the summary is printed
only once every send is acknowledged (or failed). Running it twice enqueues everything twice:
the bridge makes a refresh of an unchanged order a no-op on its event topic.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr, ValidationError

from bridge.commands import RefreshOrder, command_record
from bridge.config import BridgeSettings
from bridge.errors import ConfigError, InvalidCommandError, InvalidOrderIdError
from bridge.kafka_clients import build_producer
from bridge.norce import NorceClient
from bridge.norce_http import http_client_from_settings
from bridge.order_ids import validate_header_value, validate_order_id
from bridge.progress import Progress, format_duration, rate
from bridge.timestamps import parse_rfc3339

__all__ = [
    "MAX_REASON_LENGTH",
    "RefreshRequest",
    "RefreshSummary",
    "check_order_ids",
    "check_reason",
    "check_scope",
    "check_topic",
    "parse_since",
    "refresh_command",
    "refresh_record",
    "run_refresh",
    "select_page",
]

log = logging.getLogger("bridge.backfill")

MAX_REASON_LENGTH = 200
DEFAULT_PAGE_SIZE = 100
"""Orders per list request: the simulator's maximum (the reference documents none)."""
MAX_PENDING_SENDS = 20_000
"""Sends in flight before the listing waits for their acknowledgements (bounds memory)."""
MAX_FAILED_SENDS = 100
"""Failed sends after which the command stops (the broker is not taking them)."""

Headers = list[tuple[str, bytes]]


def check_order_ids(order_ids: Sequence[str]) -> list[str]:
    """The ids if each is a safe order id (``bridge.order_ids``), else a ConfigError naming
    every bad one (shown with ``repr``, cut)."""
    bad = []
    for order_id in order_ids:
        try:
            validate_order_id(order_id)
        except InvalidOrderIdError as exc:
            bad.append(str(exc))
    if bad:
        raise ConfigError("refresh: refused bad order ids:\n" + "\n".join(f"  {b}" for b in bad))
    return list(dict.fromkeys(order_ids))  # once each, in the given order


def check_reason(reason: str) -> str:
    """``reason`` if it is 1..200 characters without control characters, else ConfigError."""
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise ConfigError(f"refresh: --reason must be 1..{MAX_REASON_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in reason):
        raise ConfigError("refresh: --reason must not contain control characters")
    return reason


def check_scope(merchant: str, channel: str) -> tuple[str, str]:
    """Merchant and channel if both can be sent as the API's ``x-merchant``/``x-channel``."""
    try:
        validate_header_value("x-merchant", merchant)
        validate_header_value("x-channel", channel)
    except InvalidCommandError as exc:
        raise ConfigError(f"refresh: {exc.message}") from None
    return merchant, channel


async def check_topic(
    settings: BridgeSettings, options: dict[str, Any], topic: str, variable: str
) -> None:
    """ConfigError unless ``topic`` exists: a producer would wait for its metadata on every
    send (``request_timeout_ms`` each) instead of failing."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-admin",
        request_timeout_ms=settings.kafka.request_timeout_ms,
        **options,
    )
    await admin.start()
    try:
        exists = topic in set(await admin.list_topics())
    finally:
        await admin.close()
    if not exists:
        raise ConfigError(f"topic {topic!r} does not exist ({variable} or --topic)")


def parse_since(text: str, option: str = "refresh: --since") -> datetime:
    """``--since`` (or the ``option`` named in the error, e.g. ``dlq list: --until``): an RFC
    3339 date-time (no offset: UTC) or a date (midnight UTC)."""
    parsed = parse_rfc3339(text if "T" in text.upper() else f"{text}T00:00:00Z")
    if parsed is None:
        raise ConfigError(
            f"{option} {text[:40]!r} is not a date (2026-11-01) or an RFC 3339 date-time"
        )
    return parsed


def refresh_command(
    order_id: str,
    *,
    merchant: str,
    channel: str,
    reason: str,
    issued_at: datetime,
    command_id: str | None = None,
    correlation_id: str | None = None,
) -> RefreshOrder:
    """A ``RefreshOrder`` command (the shared model: the bridge reads exactly this); a value the
    model refuses is a ConfigError naming the field (the same for every order of a run)."""
    try:
        return RefreshOrder(
            command_id=command_id or f"refresh-{uuid.uuid4().hex}",
            order_id=order_id,
            merchant=merchant,
            channel=channel,
            issued_at=issued_at,
            reason=reason,
            correlation_id=correlation_id or None,
        )
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        raise ConfigError(f"refresh: not a valid RefreshOrder ({where})") from None


def refresh_record(command: RefreshOrder) -> tuple[bytes, bytes, Headers]:
    """Key (the order id), JSON value and headers of a command record, as ``send`` writes them."""
    key, value, headers = command_record(command)
    return key, value, list(headers)


def select_page(orders: Sequence[Any], since: datetime | None) -> tuple[list[str], int, bool]:
    """The ids to refresh of one page (newest first), how many were left out, and whether the
    page reached orders created before ``since`` (then later pages hold only older ones).

    An entry without a usable string ``id`` is left out (counted); an order whose ``created``
    cannot be read is kept (a refresh too many is harmless, one too few is not).
    """
    ids: list[str] = []
    left_out = 0
    reached_older = False
    for order in orders:
        order_id = order.get("id") if isinstance(order, dict) else None
        if not isinstance(order_id, str):
            left_out += 1
            continue
        try:
            validate_order_id(order_id)
        except InvalidOrderIdError:
            left_out += 1
            continue
        if since is not None:
            created = order.get("created")
            moment = parse_rfc3339(created) if isinstance(created, str) else None
            if moment is not None and moment < since:
                reached_older = True
                left_out += 1
                continue
        ids.append(order_id)
    return ids, left_out, reached_older


@dataclass(frozen=True)
class RefreshRequest:
    """What ``order-bridge refresh`` was asked to do."""

    merchant: str
    channel: str
    reason: str
    order_ids: tuple[str, ...] = ()
    all_orders: bool = False
    since: datetime | None = None
    dry_run: bool = False
    page_size: int = DEFAULT_PAGE_SIZE
    topic: str | None = None
    correlation_id: str | None = None


@dataclass
class RefreshSummary:
    """The counts printed at the end (and as one JSON line)."""

    topic: str
    listed: int = 0
    enqueued: int = 0
    failed: int = 0
    left_out: int = 0
    pages: int = 0
    duration_s: float = 0.0
    dry_run: bool = False
    list_error: str | None = None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.list_error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "listed": self.listed,
            "enqueued": self.enqueued,
            "failed": self.failed,
            "left_out": self.left_out,
            "pages": self.pages,
            "duration_s": round(self.duration_s, 3),
            "rate_per_s": round(rate(self.enqueued, self.duration_s), 1),
            "dry_run": self.dry_run,
            "list_error": self.list_error,
            "errors": self.errors,
        }

    def text(self) -> str:
        verb = "would enqueue" if self.dry_run else "enqueued"
        line = (
            f"refresh: {self.listed} orders listed, {verb} {self.enqueued} RefreshOrder commands"
            f" on {self.topic}"
        )
        if self.pages:
            line += f", {self.pages} pages"
        if self.left_out:
            line += f", {self.left_out} left out (--since or unusable ids)"
        line += (
            f", {format_duration(self.duration_s)} ({rate(self.enqueued, self.duration_s):.0f}/s)"
        )
        if self.failed:
            line += f"; {self.failed} NOT enqueued ({', '.join(sorted(self.errors))})"
        if self.list_error:
            line += f"; listing stopped early: {self.list_error}"
        return line


class _Enqueuer:
    """Sends commands without waiting for each ack; counts acks and failures."""

    def __init__(
        self, producer: AIOKafkaProducer | None, topic: str, summary: RefreshSummary
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.summary = summary
        self.pending: list[asyncio.Future[Any]] = []

    async def send(self, command: RefreshOrder) -> None:
        if self.producer is None:  # dry run
            self.summary.enqueued += 1
            return
        key, value, headers = refresh_record(command)
        try:
            future = await self.producer.send(self.topic, value, key=key, headers=headers)
        except Exception as exc:  # refused before it was queued (e.g. too large)
            self._failed(exc)
            return
        self.pending.append(future)
        if len(self.pending) >= MAX_PENDING_SENDS:
            await self.settle()

    async def settle(self) -> None:
        """Wait for every pending send's acknowledgement."""
        pending, self.pending = self.pending, []
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(outcome, BaseException):
                self._failed(outcome)
            else:
                self.summary.enqueued += 1

    def _failed(self, exc: BaseException) -> None:
        self.summary.failed += 1
        name = type(exc).__name__
        self.summary.errors[name] = self.summary.errors.get(name, 0) + 1

    @property
    def given_up(self) -> bool:
        return self.summary.failed >= MAX_FAILED_SENDS


async def run_refresh(
    settings: BridgeSettings,
    kafka_options: dict[str, Any],
    request: RefreshRequest,
    *,
    api_key: Callable[[], SecretStr],
    progress_stream: TextIO,
    progress_interval_s: float = 5.0,
) -> RefreshSummary:
    """List (with ``--all``) and enqueue; returns after every send is acknowledged or failed."""
    topic = request.topic or settings.topics.commands
    summary = RefreshSummary(topic=topic, dry_run=request.dry_run)
    progress = Progress(
        "refresh" if not request.dry_run else "refresh (dry run)",
        progress_stream,
        total=len(request.order_ids) or None,
        interval_s=progress_interval_s,
    )
    producer: AIOKafkaProducer | None = None
    if not request.dry_run:
        await check_topic(settings, kafka_options, topic, "BRIDGE_TOPICS__COMMANDS")
        producer = build_producer(settings, kafka_options)
        await producer.start()
    enqueuer = _Enqueuer(producer, topic, summary)
    now = datetime.now(UTC)

    def command(order_id: str) -> RefreshOrder:
        return refresh_command(
            order_id,
            merchant=request.merchant,
            channel=request.channel,
            reason=request.reason,
            issued_at=now,
            correlation_id=request.correlation_id,
        )

    try:
        if request.all_orders:
            await _refresh_all(settings, request, api_key(), summary, enqueuer, command, progress)
        else:
            for order_id in request.order_ids:
                if enqueuer.given_up:
                    break
                summary.listed += 1
                await enqueuer.send(command(order_id))
                progress.update(summary.listed)
        await enqueuer.settle()
    finally:
        if producer is not None:
            await producer.stop()
        summary.duration_s = progress.elapsed_s
        progress.update(summary.listed, force=True)
        progress.finish()
    return summary


async def _refresh_all(
    settings: BridgeSettings,
    request: RefreshRequest,
    key: SecretStr,
    summary: RefreshSummary,
    enqueuer: _Enqueuer,
    command: Callable[[str], RefreshOrder],
    progress: Progress,
) -> None:
    n = settings.norce
    http = http_client_from_settings(n)
    try:
        client = NorceClient(http, api_key=key, adapter_id=n.adapter_id, retry=n.retry)
        offset = 0
        while True:
            try:
                page = await client.list_orders(
                    merchant=request.merchant,
                    channel=request.channel,
                    offset=offset,
                    limit=request.page_size,
                )
            except Exception as exc:  # an API error after retries: report what was done
                summary.list_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("listing orders failed at offset %d: %s", offset, summary.list_error)
                return
            summary.pages += 1
            orders = page.value["data"]
            pagination = page.value.get("pagination")
            total = pagination.get("size") if isinstance(pagination, dict) else None
            ids, left_out, reached_older = select_page(orders, request.since)
            summary.left_out += left_out
            for order_id in ids:
                summary.listed += 1
                await enqueuer.send(command(order_id))
            progress.update(
                summary.listed + summary.left_out,
                total=total if isinstance(total, int) and request.since is None else None,
            )
            offset += len(orders)
            if enqueuer.given_up:
                summary.list_error = f"stopped after {summary.failed} failed sends"
                return
            if reached_older or len(orders) < request.page_size:
                return
            if isinstance(total, int) and offset >= total:
                return
    finally:
        await http.aclose()
