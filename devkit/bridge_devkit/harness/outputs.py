"""Reading what the bridge published: whole topics from the beginning, decoded with its codec.

``TopicReader`` is a group-less consumer of whole topics (any isolation level); ``Outputs`` files
the records of a run's output topics (results, snapshots, events, dead letters) by command, by
source record and by order; ``OutputCollector`` keeps ``Outputs`` up to date from a reader, in
the foreground (``collect``) or in the background (``start``/``drain``) through broker restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.codec import AvroCodec
from bridge.config import TopicSettings
from bridge.decision.refresh import CHANGED_REASON, DELETED_REASON

Source = tuple[int, int]  # (partition, offset) of a command record
DLQ_PARTITION = "__connect.errors.partition"
DLQ_OFFSET = "__connect.errors.offset"
DLQ_REASON = "__connect.errors.reason"


@dataclass(frozen=True)
class OutputRecord:
    """One record of an output topic, decoded (``schema`` None: a tombstone or a raw value)."""

    topic: str
    partition: int
    offset: int
    key: str
    schema: str | None
    value: dict[str, Any] | None
    raw: bytes | None
    timestamp_ms: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()  # as read (aiokafka: a null header is None)
    raw_key: bytes | None = None

    def header_map(self) -> dict[str, bytes]:
        """The headers by name, a null value as ``b""``."""
        return {k: v or b"" for k, v in self.headers}


def dead_letter_source(headers: dict[str, bytes]) -> Source:
    """The (partition, offset) of the command record a dead letter carries."""
    return int(headers.get(DLQ_PARTITION, b"-1")), int(headers.get(DLQ_OFFSET, b"-1"))


def result_source(result: dict[str, Any]) -> Source:
    """The (partition, offset) of the command record a ``CommandResult`` answers."""
    return int(result["source"]["partition"]), int(result["source"]["offset"])


MessageHook = Callable[[str, int, Any], None]


class TopicReader:
    """The harness's own consumer of whole topics from the beginning, with a chosen isolation level.

    ``read_uncommitted`` also shows records of open (or aborted) transactions: what a process
    had produced before it was killed. Values of ``raw_topics`` (dead letters) are not decoded.
    ``on_message(topic, partition, message)`` sees every aiokafka message as read.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Iterable[str],
        codec: AvroCodec,
        *,
        partitions: int,
        isolation: str = "read_committed",
        raw_topics: Iterable[str] = (),
        client_options: dict[str, Any] | None = None,
        on_message: MessageHook | None = None,
    ) -> None:
        self.topics = tuple(topics)
        self.partitions = partitions
        self.codec = codec
        self.raw_topics = frozenset(raw_topics)
        self.records: list[OutputRecord] = []
        self._on_message = on_message
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level=isolation,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **(client_options or {}),
        )
        self._assigned = [TopicPartition(t, p) for t in self.topics for p in range(partitions)]

    async def __aenter__(self) -> TopicReader:
        c = self._consumer
        await c.start()
        try:
            c.assign(self._assigned)
            await c.seek_to_beginning(*self._assigned)
        except BaseException:
            await c.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    def _record(self, tp: TopicPartition, m: Any) -> OutputRecord:
        schema: str | None = None
        value: dict[str, Any] | None = None
        if m.value is not None and tp.topic not in self.raw_topics:
            schema, value = self.codec.decode(m.value)
        key = m.key.decode("utf-8", "replace") if m.key is not None else ""
        headers = tuple((k, v) for k, v in (m.headers or ()))
        return OutputRecord(
            tp.topic,
            tp.partition,
            m.offset,
            key,
            schema,
            value,
            m.value,
            m.timestamp,
            headers,
            m.key,
        )

    async def poll(self, timeout_ms: int = 200) -> list[OutputRecord]:
        """Read what arrived since the last poll (also kept in ``records``)."""
        new: list[OutputRecord] = []
        batch = await self._consumer.getmany(*self._assigned, timeout_ms=timeout_ms)
        for tp, msgs in batch.items():
            for m in msgs:
                if self._on_message is not None:
                    self._on_message(tp.topic, tp.partition, m)
                new.append(self._record(tp, m))
        self.records += new
        return new

    async def at_end(self) -> bool:
        """Every partition's position has reached its end offset (the last stable offset for
        ``read_committed``) as of now."""
        ends = await self._consumer.end_offsets(self._assigned)
        for tp in self._assigned:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    async def read_to_end(self, timeout_s: float = 30.0) -> list[OutputRecord]:
        """Read until every partition's position reaches its end offset as of this call (the
        last stable offset for ``read_committed``); all records read so far are returned."""
        ends = await self._consumer.end_offsets(self._assigned)
        deadline = time.monotonic() + timeout_s
        while True:
            behind = [tp for tp in self._assigned if await self._consumer.position(tp) < ends[tp]]
            if not behind:
                return self.records
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {behind} to their end offsets {ends}")
            await self.poll()


async def read_topic(
    bootstrap: str,
    topic: str,
    codec: AvroCodec,
    partitions: int,
    *,
    raw: bool = False,
    timeout_s: float = 120.0,
) -> list[OutputRecord]:
    """Everything in ``topic`` now, in partition-offset order (``raw``: values not decoded)."""
    async with TopicReader(
        bootstrap, [topic], codec, partitions=partitions, raw_topics=[topic] if raw else ()
    ) as reader:
        records = await reader.read_to_end(timeout_s)
    return sorted(records, key=lambda r: (r.partition, r.offset))


@dataclass
class Outputs:
    """Everything the bridge published on a run's output topics, decoded and filed."""

    results: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dlq: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = field(default_factory=list)
    raw: list[tuple[str, bytes | None]] = field(default_factory=list)
    results_at: dict[Source, list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    dlq_at: dict[Source, list[dict[str, bytes]]] = field(default_factory=lambda: defaultdict(list))
    last_snapshot: dict[str, bytes | None] = field(default_factory=dict)  # raw, per order
    # The compacted topic as a version-aware reader sees it (README, "Consuming the snapshot
    # topic"): a snapshot older than one already seen for the order is stale.
    newest_snapshot: dict[str, bytes | None] = field(default_factory=dict)
    stale_snapshots: int = 0
    _versions: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add(self, topics: TopicSettings, rec: OutputRecord) -> None:
        """File one record read from ``topics``' outputs."""
        self.raw.append((rec.topic, rec.raw))
        if rec.topic == topics.results and rec.value is not None:
            self.results.append(rec.value)
            self.results_at[result_source(rec.value)].append(rec.value)
        elif rec.topic == topics.dlq:
            headers = rec.header_map()
            self.dlq.append((rec.raw_key, rec.raw, dict(rec.headers)))
            self.dlq_at[dead_letter_source(headers)].append(headers)
        elif rec.topic == topics.snapshots:
            self.snapshots.append((rec.key, rec.value))
            self.last_snapshot[rec.key] = rec.raw
            self._version(rec)
        elif rec.topic == topics.events and rec.value is not None and rec.schema is not None:
            self.events.append((rec.schema, rec.value))

    def _version(self, rec: OutputRecord) -> None:
        if rec.value is None:
            self.newest_snapshot[rec.key] = None
            return
        version = (
            int(rec.value.get("lastModifiedMillis") or 0),
            len((rec.value.get("state") or {}).get("transitions") or []),
        )
        seen = self._versions.get(rec.key)
        tombstoned = rec.key in self.newest_snapshot and self.newest_snapshot[rec.key] is None
        if seen is not None and (version < seen or (tombstoned and version <= seen)):
            self.stale_snapshots += 1  # published late by a member that lost the partition
            return
        self._versions[rec.key] = version
        self.newest_snapshot[rec.key] = rec.raw

    def results_by_command(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.results:
            out.setdefault(r["commandId"], []).append(r)
        return out

    def answered(self) -> set[Source]:
        """Sources with a result (any outcome) or a dead letter."""
        return set(self.results_at) | set(self.dlq_at)

    def missing_outputs(self) -> set[str]:
        """Command ids with an ``applied`` result whose event (or snapshot) is not read yet."""
        with_event = {e["commandId"] for _, e in self.events}
        with_snapshot = {s["commandId"] for _, s in self.snapshots if s is not None}
        missing = set()
        for r in self.results:
            if r["outcome"] != "applied":
                continue
            cid = r["commandId"]
            if r["commandType"] == "RefreshOrder":
                # An applied refresh publishes the order's snapshot, or its tombstone and
                # OrderDeleted; an event too only when the state moved (its reason says so).
                reason = r["reason"] or ""
                if reason == DELETED_REASON:
                    needs_event, needs_snapshot = True, False
                else:
                    needs_event, needs_snapshot = reason.startswith(CHANGED_REASON), True
            else:
                needs_event, needs_snapshot = True, r["commandType"] == "SetOrderState"
            if (needs_event and cid not in with_event) or (
                needs_snapshot and cid not in with_snapshot
            ):
                missing.add(cid)
        return missing

    def handled_sources(self) -> set[Source]:
        """Sources with all their outputs read: a failed result also needs its dead letter."""
        seen = {result_source(r) for r in self.results if r["outcome"] != "failed"}
        return seen | set(self.dlq_at)


class OutputCollector:
    """``Outputs`` of a run, kept up to date by a ``read_committed`` reader of its output topics."""

    def __init__(
        self,
        bootstrap: str,
        topics: TopicSettings,
        codec: AvroCodec,
        *,
        client_options: dict[str, Any] | None = None,
        on_message: MessageHook | None = None,
    ) -> None:
        self.topics = topics
        self.outputs = Outputs()
        self.reader = TopicReader(
            bootstrap,
            topics.outputs(),
            codec,
            partitions=topics.partitions,
            raw_topics=[topics.dlq],
            client_options=client_options,
            on_message=on_message,
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> OutputCollector:
        await self.reader.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def poll(self, timeout_ms: int = 200) -> None:
        """One read; broker errors (a restart) are waited out."""
        try:
            records = await self.reader.poll(timeout_ms)
        except KafkaError:
            await asyncio.sleep(0.5)
            return
        for rec in records:
            self.outputs.add(self.topics, rec)

    async def collect(
        self,
        until: Callable[[Outputs], bool],
        timeout_s: float = 60.0,
        alive: Callable[[], object] | None = None,
    ) -> Outputs:
        """Read until ``until(outputs)`` holds or the deadline passes (``alive`` is called each
        round: it may raise to surface a crash of the bridge)."""
        deadline = time.monotonic() + timeout_s
        while not until(self.outputs) and time.monotonic() < deadline:
            if alive is not None:
                alive()
            await self.poll()
        return self.outputs

    def start(self) -> None:
        """Keep reading in the background until ``drain`` or ``stop``."""
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while not self._stop.is_set():
            await self.poll()

    async def drain(self, timeout_s: float) -> bool:
        """Stop the background loop and read until every partition's read_committed end."""
        await self._halt()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if await self.reader.at_end():
                    return True
            except KafkaError:
                await asyncio.sleep(0.5)
                continue
            await self.poll()
        return False

    async def _halt(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def stop(self) -> None:
        await self._halt()
        with contextlib.suppress(Exception):
            await self.reader.__aexit__(None, None, None)
