"""Test harness: a simulator, fresh topics and an in-process bridge on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from norce_simulator import SimulatorConfig, SimulatorHandle, start_simulator
from pydantic import SecretStr

from bridge.app import Service, build_service, ensure_topics
from bridge.codec import AvroCodec
from bridge.commands import DeleteOrder, SetOrderState, command_to_json
from bridge.config import (
    BridgeSettings,
    HttpSettings,
    KafkaSettings,
    NorceSettings,
    ProcessingSettings,
    RetrySettings,
    TopicSettings,
)
from bridge.order_model import OrderStatus

API_KEY = "test-api-key-0123456789"


def make_settings(
    bootstrap: str, sim_url: str, *, partitions: int = 3, **processing: Any
) -> BridgeSettings:
    suffix = uuid.uuid4().hex[:8]
    defaults: dict[str, Any] = {"commit_interval_s": 0.2, "drain_deadline_s": 10.0}
    defaults.update(processing)
    return BridgeSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=f"g-{suffix}"),
        topics=TopicSettings(
            commands=f"t-{suffix}.commands",
            snapshots=f"t-{suffix}.snapshots",
            events=f"t-{suffix}.events",
            results=f"t-{suffix}.results",
            dlq=f"t-{suffix}.dlq",
            partitions=partitions,
        ),
        norce=NorceSettings(
            base_url=sim_url,
            read_timeout_s=2.0,
            retry=RetrySettings(max_attempts=3, base_delay_s=0.02, max_delay_s=0.2, deadline_s=3.0),
        ),
        processing=ProcessingSettings(**defaults),
        http=HttpSettings(host="127.0.0.1", port=0),
    )


def set_state(
    order_id: str, state: str, *, merchant: str = "norce", channel: str = "1", **extra: Any
) -> SetOrderState:
    return SetOrderState(
        command_id=extra.pop("command_id", f"c-{uuid.uuid4().hex[:12]}"),
        order_id=order_id,
        merchant=merchant,
        channel=channel,
        issued_at=extra.pop("issued_at", datetime.now(UTC)),
        state=OrderStatus(state),
        **extra,
    )


def delete(
    order_id: str, *, merchant: str = "norce", channel: str = "1", **extra: Any
) -> DeleteOrder:
    return DeleteOrder(
        command_id=extra.pop("command_id", f"c-{uuid.uuid4().hex[:12]}"),
        order_id=order_id,
        merchant=merchant,
        channel=channel,
        issued_at=extra.pop("issued_at", datetime.now(UTC)),
        **extra,
    )


@dataclass
class Outputs:
    """Everything the bridge published, decoded (read_committed)."""

    results: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    dlq: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = field(default_factory=list)
    raw: list[tuple[str, bytes | None]] = field(default_factory=list)

    def results_by_command(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.results:
            out.setdefault(r["commandId"], []).append(r)
        return out

    def missing_outputs(self) -> set[str]:
        """Command ids with an ``applied`` result whose event (or snapshot) is not read yet."""
        with_event = {e["commandId"] for _, e in self.events}
        with_snapshot = {s["commandId"] for _, s in self.snapshots if s is not None}
        missing = set()
        for r in self.results:
            if r["outcome"] != "applied":
                continue
            if r["commandId"] not in with_event:
                missing.add(r["commandId"])
            if r["commandType"] == "SetOrderState" and r["commandId"] not in with_snapshot:
                missing.add(r["commandId"])
        return missing

    def handled_sources(self) -> set[tuple[int, int]]:
        """Sources with all their outputs read: a failed result also needs its dead letter."""
        seen = {
            (r["source"]["partition"], r["source"]["offset"])
            for r in self.results
            if r["outcome"] != "failed"
        }
        for _, _, h in self.dlq:
            seen.add((int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"])))
        return seen


class Bridge:
    """A running bridge plus helpers to feed it and read what it published."""

    def __init__(self, bootstrap: str, sim: SimulatorHandle, settings: BridgeSettings) -> None:
        self.bootstrap = bootstrap
        self.sim = sim
        self.settings = settings
        self.topics = settings.topics
        self.codec = AvroCodec.load(settings.schemas_dir)
        self.service: Service | None = None
        self.task: asyncio.Task[None] | None = None
        self.sent: list[tuple[int, int]] = []
        self._producer: AIOKafkaProducer | None = None
        self._out_consumer: AIOKafkaConsumer | None = None
        self.outputs = Outputs()
        self.client_options: dict[str, Any] = {}  # TLS/SASL for the test's own clients

    def on_record(self, topic: str, partition: int, message: Any) -> None:
        """Called for every output record read (subclasses keep raw records)."""

    async def start(self) -> Service:
        self.service = await build_service(self.settings, api_key=SecretStr(API_KEY))
        self.task = asyncio.create_task(self.service.runtime.run())
        return self.service

    async def stop(self) -> None:
        if self.service is not None and self.task is not None:
            self.service.runtime.stop()
            await asyncio.wait_for(self.task, 60)
            await self.service.aclose()
            self.service = None
            self.task = None

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                enable_idempotence=True,
                acks="all",
                **self.client_options,
            )
            await self._producer.start()
        return self._producer

    async def send_raw(
        self,
        value: bytes | None,
        key: bytes | None = b"k",
        headers: list[tuple[str, bytes]] | None = None,
    ) -> tuple[int, int]:
        producer = await self.producer()
        md = await producer.send_and_wait(
            self.topics.commands, value, key=key, headers=headers or []
        )
        self.sent.append((md.partition, md.offset))
        return md.partition, md.offset

    async def send(self, *commands: SetOrderState | DeleteOrder) -> list[tuple[int, int]]:
        return [
            await self.send_raw(
                command_to_json(c),
                key=c.order_id.encode(),
                headers=[("content-type", b"application/json")],
            )
            for c in commands
        ]

    async def collect(self, until: Callable[[Outputs], bool], timeout_s: float = 60.0) -> Outputs:
        """Read outputs (read_committed) until ``until(outputs)`` holds or the deadline passes."""
        if self._out_consumer is None:
            self._out_consumer = AIOKafkaConsumer(
                self.topics.results,
                self.topics.snapshots,
                self.topics.events,
                self.topics.dlq,
                bootstrap_servers=self.bootstrap,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                enable_auto_commit=False,
                **self.client_options,
            )
            await self._out_consumer.start()
        deadline = time.monotonic() + timeout_s
        o = self.outputs
        while not until(o) and time.monotonic() < deadline:
            if self.task is not None and self.task.done():
                self.task.result()  # surface a crash of the bridge
            batch = await self._out_consumer.getmany(timeout_ms=200)
            for tp, msgs in batch.items():
                for m in msgs:
                    self.on_record(tp.topic, tp.partition, m)
                    o.raw.append((tp.topic, m.value))
                    key = m.key.decode() if m.key else ""
                    if tp.topic == self.topics.results:
                        o.results.append(self.codec.decode(m.value)[1])
                    elif tp.topic == self.topics.snapshots:
                        o.snapshots.append(
                            (key, None if m.value is None else self.codec.decode(m.value)[1])
                        )
                    elif tp.topic == self.topics.events:
                        o.events.append(self.codec.decode(m.value))
                    elif tp.topic == self.topics.dlq:
                        o.dlq.append((m.key, m.value, dict(m.headers)))
        return o

    async def all_handled(self, timeout_s: float = 60.0) -> Outputs:
        """Wait until every sent record has a result or a dead letter, and every applied
        command's event and snapshot have been read too (they travel on other topics)."""
        want = set(self.sent)
        o = await self.collect(
            lambda o: want <= o.handled_sources() and not o.missing_outputs(), timeout_s
        )
        missing = want - o.handled_sources()
        assert not missing, f"{len(missing)} records never handled, e.g. {sorted(missing)[:5]}"
        return o

    async def committed(self) -> dict[int, int]:
        """The bridge group's committed offsets on the commands topic."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(self.settings.kafka.group_id)
        finally:
            await admin.close()
        return {
            tp.partition: om.offset
            for tp, om in offsets.items()
            if tp.topic == self.topics.commands
        }

    async def end_offsets(self) -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topics.commands, p) for p in range(self.topics.partitions)]
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return {tp.partition: off for tp, off in ends.items()}

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._out_consumer is not None:
            await self._out_consumer.stop()


@contextlib.asynccontextmanager
async def simulator(orders: int = 0, **cfg: Any) -> AsyncIterator[SimulatorHandle]:
    handle = await start_simulator(
        SimulatorConfig(api_keys=(API_KEY,), seed=11, orders=orders, **cfg),
        host="127.0.0.1",
        port=0,
    )
    try:
        yield handle
    finally:
        await handle.aclose()


@contextlib.asynccontextmanager
async def running_bridge(
    bootstrap: str, sim: SimulatorHandle, *, start: bool = True, **processing: Any
) -> AsyncIterator[Bridge]:
    partitions = processing.pop("partitions", 3)
    settings = make_settings(bootstrap, sim.url, partitions=partitions, **processing)
    bridge = Bridge(bootstrap, sim, settings)
    await ensure_topics(settings, {})
    if start:
        await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.aclose()


def spawn_bridge(env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m bridge run`` with ``env``; its (JSON) logs are appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "run"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """The process's exit code, polling with a deadline (killed and failed past it)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"the bridge process did not exit within {timeout_s}s")
        await asyncio.sleep(0.05)
    return proc.returncode


async def poll_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` with a deadline (no fixed sleeps as synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def statuses(history: Iterable[str]) -> list[str]:
    return list(history)


def process_env(settings: BridgeSettings, sim_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``bridge run`` process on ``settings``' topics and group."""
    s = settings
    env = clean_env()
    env.update(
        {
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers,
            "BRIDGE_KAFKA__GROUP_ID": s.kafka.group_id,
            "BRIDGE_TOPICS__COMMANDS": s.topics.commands,
            "BRIDGE_TOPICS__SNAPSHOTS": s.topics.snapshots,
            "BRIDGE_TOPICS__EVENTS": s.topics.events,
            "BRIDGE_TOPICS__RESULTS": s.topics.results,
            "BRIDGE_TOPICS__DLQ": s.topics.dlq,
            "BRIDGE_TOPICS__CREATE_MISSING": "false",
            "BRIDGE_NORCE__BASE_URL": sim_url,
            "BRIDGE_NORCE__API_KEY": API_KEY,
            "BRIDGE_PROCESSING__COMMIT_INTERVAL_S": "0.2",
            "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "16",
            "BRIDGE_HTTP__HOST": "127.0.0.1",
            "BRIDGE_HTTP__PORT": "0",
            "BRIDGE_LOG_LEVEL": "DEBUG",
        }
    )
    env.update(extra)
    return env


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines a bridge process wrote so far (partial last lines skipped)."""
    import json

    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def assigned_partitions(path: Path) -> list[int] | None:
    """The partitions of the last "partitions assigned" line of a bridge log, None if none yet."""
    lines = [x for x in log_lines(path) if x.get("msg") == "partitions assigned"]
    return None if not lines else list(lines[-1].get("partitions", []))


@dataclass(frozen=True)
class OutputRecord:
    """One record of an output topic, decoded (``schema`` None: a tombstone or a dead letter)."""

    topic: str
    partition: int
    offset: int
    key: str
    schema: str | None
    value: dict[str, Any] | None
    raw: bytes | None


class TopicReader:
    """The test's own consumer of whole topics from the beginning, with a chosen isolation level.

    ``read_uncommitted`` also shows records of open (or aborted) transactions: what a process
    had produced before it was killed. Values of ``raw_topics`` (dead letters) are not decoded.
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
    ) -> None:
        self.topics = tuple(topics)
        self.partitions = partitions
        self.codec = codec
        self.raw_topics = frozenset(raw_topics)
        self.records: list[OutputRecord] = []
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            isolation_level=isolation,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._assigned: list[TopicPartition] = []

    async def __aenter__(self) -> TopicReader:
        c = self._consumer
        await c.start()
        self._assigned = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
        try:
            c.assign(self._assigned)
            await c.seek_to_beginning(*self._assigned)
        except BaseException:
            await c.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 200) -> list[OutputRecord]:
        """Read what arrived since the last poll (also kept in ``records``)."""
        new: list[OutputRecord] = []
        batch = await self._consumer.getmany(*self._assigned, timeout_ms=timeout_ms)
        for tp, msgs in batch.items():
            for m in msgs:
                schema: str | None = None
                value: dict[str, Any] | None = None
                if m.value is not None and tp.topic not in self.raw_topics:
                    schema, value = self.codec.decode(m.value)
                key = m.key.decode("utf-8", "replace") if m.key is not None else ""
                new.append(
                    OutputRecord(tp.topic, tp.partition, m.offset, key, schema, value, m.value)
                )
        self.records += new
        return new

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


ORDER_BRIDGE = Path(sys.executable).with_name("order-bridge")


def order_bridge_script(name: str = "order-bridge") -> str:
    """An installed console script (``order-bridge``, or the devkit's ``order-bridge-dev`` and
    ``norce-simulator``), run exactly as the README documents it."""
    script = ORDER_BRIDGE.with_name(name)
    assert script.is_file(), f"the console script is not installed: {script}"
    return str(script)


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without BRIDGE_* and KAFKA_BOOTSTRAP_SERVERS, plus ``settings``."""
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BRIDGE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(settings)
    return env


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
