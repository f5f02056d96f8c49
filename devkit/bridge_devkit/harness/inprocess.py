"""The bridge as an in-process service on fresh topics, with helpers to feed it and read it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from norce_simulator import SimulatorHandle
from pydantic import SecretStr

from bridge.app import Service, build_service, ensure_topics
from bridge.codec import AvroCodec
from bridge.commands import AnyCommand, command_to_json
from bridge.config import BridgeSettings, SchemaRegistrySettings
from bridge_devkit.harness.kafka import (
    JSON_HEADERS,
    command_producer,
    committed_offsets,
    end_offsets,
)
from bridge_devkit.harness.outputs import OutputCollector, Outputs
from bridge_devkit.harness.topics import API_KEY, make_settings


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
        self.client_options: dict[str, Any] = {}  # TLS/SASL for the harness's own clients
        self._producer: AIOKafkaProducer | None = None
        self._collector: OutputCollector | None = None

    def on_record(self, topic: str, partition: int, message: Any) -> None:
        """Called for every output record read (subclasses keep raw records)."""

    @property
    def outputs(self) -> Outputs:
        """Everything read so far (read_committed)."""
        return self._collector.outputs if self._collector is not None else Outputs()

    async def start(self) -> Service:
        self.service = await build_service(self.settings, api_key=SecretStr(API_KEY))
        if self.service.codec is not None:  # Confluent ids are known once it registered
            self.codec = self.service.codec
        self.task = asyncio.create_task(self.service.runtime.run())
        return self.service

    async def stop(self) -> None:
        if self.service is not None and self.task is not None:
            service, task = self.service, self.task
            self.service = None
            self.task = None
            service.runtime.stop()
            try:
                await asyncio.wait_for(task, 60)
            finally:  # also when the run failed or hung: never leave its clients to the GC
                await service.aclose()

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = command_producer(self.bootstrap, **self.client_options)
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

    async def send(self, *commands: AnyCommand) -> list[tuple[int, int]]:
        return [
            await self.send_raw(command_to_json(c), key=c.order_id.encode(), headers=JSON_HEADERS)
            for c in commands
        ]

    async def _outputs_reader(self) -> OutputCollector:
        if self._collector is None:
            collector = OutputCollector(
                self.bootstrap,
                self.topics,
                self.codec,
                client_options=self.client_options,
                on_message=self.on_record,
            )
            await collector.__aenter__()
            self._collector = collector
        return self._collector

    def _surface_crash(self) -> None:
        if self.task is not None and self.task.done():
            self.task.result()  # surface a crash of the bridge

    async def collect(self, until: Callable[[Outputs], bool], timeout_s: float = 60.0) -> Outputs:
        """Read outputs (read_committed) until ``until(outputs)`` holds or the deadline passes."""
        collector = await self._outputs_reader()
        return await collector.collect(until, timeout_s, alive=self._surface_crash)

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
        return await committed_offsets(
            self.bootstrap, self.settings.kafka.group_id, self.topics.commands
        )

    async def end_offsets(self) -> dict[int, int]:
        return await end_offsets(self.bootstrap, self.topics.commands, self.topics.partitions)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._collector is not None:
            await self._collector.stop()


@contextlib.asynccontextmanager
async def running_bridge(
    bootstrap: str,
    sim: SimulatorHandle,
    *,
    start: bool = True,
    schema_registry: SchemaRegistrySettings | None = None,
    **processing: Any,
) -> AsyncIterator[Bridge]:
    """An in-process bridge on fresh topics (created) and group; stopped at the end.

    ``schema_registry``: write the Confluent wire format with that registry (issue 15)."""
    partitions = processing.pop("partitions", 3)
    settings = make_settings(bootstrap, sim.url, partitions=partitions, **processing)
    if schema_registry is not None:
        settings = settings.model_copy(update={"schema_registry": schema_registry})
    await ensure_topics(settings, {})
    async with contextlib.AsyncExitStack() as stack:
        bridge = Bridge(bootstrap, sim, settings)
        stack.push_async_callback(bridge.aclose)
        if start:
            await bridge.start()
        yield bridge
