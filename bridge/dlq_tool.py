"""``order-bridge dlq list|show|replay``: read, inspect and re-drive the dead letters.

Dead letters are read as :mod:`bridge.deadletter` writes them: the original record's headers
first, then the ``__connect.errors.*`` diagnosis (reason, source topic/partition/offset, time,
exception), the command's ``norce.*`` ids and, for a cut original, ``__bridge.dlq.*``. So the
original headers are exactly those before the first ``__connect.errors.`` header.

Reading assigns every partition of the DLQ topic (no consumer group, nothing committed),
``read_committed``, from the beginning up to the end offsets taken at the start: it terminates
even while the bridge keeps writing. ``replay`` republishes the original key, value and headers
to the commands topic, with ``norce.redrive.*`` headers naming the dead letter (stale ones from
an earlier re-drive are dropped). Header values whose names look like credentials are redacted
in everything printed (never in what is replayed).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bridge.config import BridgeSettings
from bridge.errors import ConfigError
from bridge.kafka_clients import build_producer, consumer_config
from bridge.timestamps import format_rfc3339, parse_rfc3339

__all__ = [
    "REDACTED",
    "DeadLetter",
    "DlqFilter",
    "ReplayPlan",
    "format_table",
    "is_secret_header",
    "parse_coordinates",
    "parse_dead_letter",
    "plan_replay",
    "read_dead_letters",
    "redrive_headers",
    "replay",
]

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(
    r"auth|secret|passw|pwd|token|api[-_.]?key|credential|cookie|signature|session", re.I
)
_ERRORS = "__connect.errors."
REDRIVE_PREFIX = "norce.redrive."

Headers = list[tuple[str, bytes | None]]


def is_secret_header(name: str) -> bool:
    """Whether a header's value must not be printed (its name looks like a credential)."""
    return _SECRET_NAME.search(name) is not None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _int(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: where it is, why it is there, and the original record."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    original_headers: Headers
    diagnosis: Headers

    def _get(self, name: str) -> bytes | None:
        for n, v in self.diagnosis:
            if n == name:
                return v
        return None

    @property
    def reason(self) -> str:
        return _text(self._get(_ERRORS + "reason")) or "unknown"

    @property
    def source_topic(self) -> str | None:
        return _text(self._get(_ERRORS + "topic"))

    @property
    def source_partition(self) -> int | None:
        return _int(self._get(_ERRORS + "partition"))

    @property
    def source_offset(self) -> int | None:
        return _int(self._get(_ERRORS + "offset"))

    @property
    def message(self) -> str:
        return _text(self._get(_ERRORS + "exception.message")) or ""

    @property
    def error_class(self) -> str | None:
        return _text(self._get(_ERRORS + "class.name"))

    @property
    def http_status(self) -> int | None:
        return _int(self._get(_ERRORS + "http.status"))

    @property
    def at(self) -> datetime:
        """When the bridge dead-lettered it (its error timestamp, else the record's time)."""
        raw = _text(self._get(_ERRORS + "timestamp"))
        parsed = parse_rfc3339(raw) if raw else None
        if parsed is not None:
            return parsed
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def command_id(self) -> str | None:
        return _text(self._get("norce.command.id"))

    @property
    def order_id(self) -> str | None:
        """The command's order id as the bridge read it, else the original key."""
        found = _text(self._get("norce.order.id"))
        if found:
            return found
        return _text(self.key) if self.key else None

    @property
    def truncated(self) -> bool:
        return self._get("__bridge.dlq.truncated") == b"true"

    @property
    def headers_dropped(self) -> bool:
        return self._get("__bridge.dlq.original.headers.dropped") == b"true"

    def replay_blocker(self) -> str | None:
        """Why this dead letter cannot be replayed as it was received (None: it can)."""
        if not self.value:
            return "no_value"
        if self.headers_dropped:
            return "headers_dropped"
        if self.truncated or self._get("__bridge.dlq.original.key.size") is not None:
            return "truncated"
        return None

    def summary(self) -> dict[str, Any]:
        """The list view (no value, no original headers)."""
        return {
            "dlq": f"{self.partition}:{self.offset}",
            "at": format_rfc3339(self.at),
            "reason": self.reason,
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "orderId": self.order_id,
            "commandId": self.command_id,
            "httpStatus": self.http_status,
            "message": self.message,
            "replayable": self.replay_blocker() is None,
        }

    def details(self) -> dict[str, Any]:
        """Everything (``show``): the value as text when it is UTF-8, else base64."""
        out = self.summary()
        out["errorClass"] = self.error_class
        out["key"] = _bytes_view(self.key)
        out["value"] = _bytes_view(self.value)
        out["originalHeaders"] = printable_headers(self.original_headers)
        out["diagnosisHeaders"] = printable_headers(self.diagnosis)
        out["truncated"] = self.truncated
        out["replayBlocker"] = self.replay_blocker()
        return out


def _bytes_view(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        return {"encoding": "utf-8", "text": data.decode("utf-8"), "size": len(data)}
    except UnicodeDecodeError:
        return {
            "encoding": "base64",
            "text": base64.b64encode(data).decode("ascii"),
            "size": len(data),
        }


def printable_headers(headers: Headers) -> list[list[str | None]]:
    """Headers as ``[name, value]`` text pairs, credentials redacted, binary as base64."""
    shown: list[list[str | None]] = []
    for name, value in headers:
        if value is None:
            shown.append([name, None])
        elif is_secret_header(name):
            shown.append([name, REDACTED])
        else:
            try:
                shown.append([name, value.decode("utf-8")])
            except UnicodeDecodeError:
                shown.append([name, "base64:" + base64.b64encode(value).decode("ascii")])
    return shown


def parse_dead_letter(
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> DeadLetter:
    """Split a dead letter's headers into the original ones and the bridge's diagnosis."""
    split = next((i for i, (n, _) in enumerate(headers) if n.startswith(_ERRORS)), len(headers))
    return DeadLetter(
        partition,
        offset,
        timestamp_ms,
        key,
        value,
        list(headers[:split]),
        list(headers[split:]),
    )


def parse_coordinates(text: str) -> tuple[int, int]:
    """``PARTITION:OFFSET`` of a dead letter (``show``)."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"dlq show: {text[:40]!r} is not PARTITION:OFFSET (e.g. 0:42)")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class DlqFilter:
    """The filters of ``list`` and ``replay`` (all given ones must match; ranges inclusive)."""

    reasons: frozenset[str] = frozenset()
    since: datetime | None = None
    until: datetime | None = None
    source_partitions: frozenset[int] = frozenset()
    offset_from: int | None = None
    offset_to: int | None = None
    order_ids: frozenset[str] = frozenset()
    limit: int | None = None

    def matches(self, dl: DeadLetter) -> bool:
        if self.reasons and dl.reason not in self.reasons:
            return False
        if self.since is not None and dl.at < self.since:
            return False
        if self.until is not None and dl.at > self.until:
            return False
        if self.source_partitions and dl.source_partition not in self.source_partitions:
            return False
        if self.offset_from is not None or self.offset_to is not None:
            src = dl.source_offset
            if src is None:
                return False
            if self.offset_from is not None and src < self.offset_from:
                return False
            if self.offset_to is not None and src > self.offset_to:
                return False
        return not (self.order_ids and dl.order_id not in self.order_ids)

    def select(self, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        chosen: list[DeadLetter] = []
        for dl in letters:
            if self.limit is not None and len(chosen) >= self.limit:
                break
            if self.matches(dl):
                chosen.append(dl)
        return chosen


def _dlq_consumer(settings: BridgeSettings, options: dict[str, Any]) -> AIOKafkaConsumer:
    """The bridge's consumer settings, without a group: nothing joins, nothing is committed."""
    config = consumer_config(settings, settings.kafka.session_timeout_ms)
    config.update(
        group_id=None,
        client_id=f"{settings.kafka.client_id}-dlq-tool",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    return AIOKafkaConsumer(**config, **options)


async def read_dead_letters(
    settings: BridgeSettings,
    options: dict[str, Any],
    *,
    topic: str | None = None,
    partitions: Sequence[int] | None = None,
    timeout_s: float = 60.0,
) -> list[DeadLetter]:
    """Every dead letter up to the end offsets at the start, in (partition, offset) order.

    ``partitions`` restricts the DLQ partitions read (``show``). Raises ``TimeoutError`` if the
    end is not reached within ``timeout_s`` (a broker that stops answering).
    """
    topic = topic or settings.topics.dlq
    consumer = _dlq_consumer(settings, options)
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise ConfigError(f"dlq: topic {topic!r} does not exist (BRIDGE_TOPICS__DLQ, --topic)")
        # Without a group a subscription is assigned every partition once the topic's
        # metadata is known: the public way to learn them.
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError(f"dlq: no metadata for {topic!r} within {timeout_s}s")
            await asyncio.sleep(0.05)
        found = {tp.partition for tp in consumer.assignment()}
        wanted = sorted(found if partitions is None else found & set(partitions))
        tps = [TopicPartition(topic, p) for p in wanted]
        if not tps:
            return []
        consumer.unsubscribe()
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        letters: list[DeadLetter] = []
        while remaining:
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if not remaining:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"dlq: reading {topic!r} did not reach its end in {timeout_s}s")
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset >= ends[tp]:
                        continue
                    letters.append(
                        parse_dead_letter(
                            tp.partition, m.offset, m.timestamp, m.key, m.value, list(m.headers)
                        )
                    )
        letters.sort(key=lambda d: (d.partition, d.offset))
        return letters
    finally:
        await consumer.stop()


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def terminal_safe(text: str) -> str:
    """``text`` with every control, format and line/paragraph separator character escaped
    (``\\x1b``, ``\\u202e``): dead letters carry whatever a producer wrote, and printed raw an
    order id could move the cursor, recolour or forge rows on the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if unicodedata.category(ch) not in _UNSAFE_CATEGORIES else ascii(ch)[1:-1] for ch in text
    )


def format_table(letters: Sequence[DeadLetter], width: int = 60) -> str:
    """The ``list --output table`` text: one row per dead letter, every cell terminal-safe."""
    rows = [("DLQ", "AT", "REASON", "SOURCE", "ORDER", "COMMAND", "MESSAGE")]
    for dl in letters:
        src = f"{dl.source_partition}:{dl.source_offset}" if dl.source_offset is not None else "-"
        message = terminal_safe(dl.message.replace("\n", " "))
        if len(message) > width:
            message = message[: width - 1] + "…"
        rows.append(
            (
                f"{dl.partition}:{dl.offset}",
                format_rfc3339(dl.at)[:23] + "Z",
                terminal_safe(dl.reason),
                src,
                terminal_safe((dl.order_id or "-")[:40]),
                terminal_safe((dl.command_id or "-")[:40]),
                message,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def redrive_headers(dl: DeadLetter, dlq_topic: str, now: datetime) -> Headers:
    """The original headers without stale ``norce.redrive.*``, plus this re-drive's."""
    kept = [(n, v) for n, v in dl.original_headers if not n.startswith(REDRIVE_PREFIX)]
    return [
        *kept,
        ("norce.redrive.dlq-topic", dlq_topic.encode()),
        ("norce.redrive.dlq-partition", str(dl.partition).encode()),
        ("norce.redrive.dlq-offset", str(dl.offset).encode()),
        ("norce.redrive.reason", dl.reason.encode("utf-8", "replace")),
        ("norce.redrive.at", format_rfc3339(now).encode()),
    ]


@dataclass
class ReplayPlan:
    """What ``replay`` does with the matched dead letters, and then what it did."""

    matched: list[DeadLetter]
    replayable: list[DeadLetter]
    skipped: dict[str, list[DeadLetter]] = field(default_factory=dict)
    replayed: int = 0
    failed: int = 0

    def counts(self) -> dict[str, Any]:
        return {
            "matched": len(self.matched),
            "replayed": self.replayed,
            "skipped": sum(len(v) for v in self.skipped.values()),
            "skipped_by_reason": {k: len(v) for k, v in sorted(self.skipped.items())},
            "failed": self.failed,
        }


def plan_replay(matched: Sequence[DeadLetter]) -> ReplayPlan:
    plan = ReplayPlan(list(matched), [])
    for dl in matched:
        blocker = dl.replay_blocker()
        if blocker is None:
            plan.replayable.append(dl)
        else:
            plan.skipped.setdefault(blocker, []).append(dl)
    return plan


async def replay(
    settings: BridgeSettings,
    options: dict[str, Any],
    plan: ReplayPlan,
    *,
    dlq_topic: str,
    topic: str,
) -> ReplayPlan:
    """Republish each replayable dead letter (in DLQ order) and wait for every ack."""
    producer: AIOKafkaProducer = build_producer(settings, options)
    await producer.start()
    try:
        now = datetime.now(UTC)
        futures = [
            await producer.send(
                topic, dl.value, key=dl.key, headers=redrive_headers(dl, dlq_topic, now)
            )
            for dl in plan.replayable
        ]
        for outcome in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(outcome, BaseException):
                plan.failed += 1
            else:
                plan.replayed += 1
    finally:
        await producer.stop()
    return plan
