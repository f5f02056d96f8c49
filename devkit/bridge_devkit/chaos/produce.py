"""Producing a chaos run's plan: paced over ``produce_s``, gated while the broker restarts.

Every record carries a ``chaos.id`` header (its plan id); one record per key per batch, and a
failed send is retried (a duplicate stays adjacent to its original).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from bridge_devkit.chaos.plan import Plan, Spec
from bridge_devkit.chaos.timeline import Timeline
from bridge_devkit.harness import JSON_HEADERS, command_producer

CHAOS_HEADER = "chaos.id"


@dataclass
class Producer:
    """Sends the plan's queues at a steady rate; ``gate`` cleared pauses production."""

    bootstrap: str
    topic: str
    plan: Plan
    produce_s: float
    correlation: str
    rng: random.Random
    clock: Timeline
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    queues: dict[str, list[Spec]] = field(init=False)
    produced_at: dict[str, tuple[int, int]] = field(default_factory=dict)  # cid -> (p, offset)
    produced: int = 0
    send_retries: int = 0
    done_t: float | None = None

    def __post_init__(self) -> None:
        self.gate.set()
        self.queues = {k: list(v) for k, v in self.plan.queues.items()}

    async def run(self) -> None:
        producer = command_producer(self.bootstrap, request_timeout_ms=15000)
        await producer.start()
        queues = self.queues
        rate = self.plan.total / self.produce_s
        active = 0.0
        last = time.monotonic()
        try:
            while any(queues.values()):
                await asyncio.sleep(0.1)
                if not self.gate.is_set():
                    await self.gate.wait()
                    last = time.monotonic()
                    continue
                now = time.monotonic()
                active += now - last
                last = now
                due = int(rate * active) - self.produced
                if due <= 0:
                    continue
                keys = [k for k, q in queues.items() if q]
                # weighted by what is left, so that long sequences keep pace with short ones
                keys.sort(key=lambda k: -len(queues[k]) * self.rng.random())
                batch = [queues[k].pop(0) for k in keys[:due]]
                await self._send_batch(producer, batch)
                self.produced += len(batch)
        finally:
            await producer.stop()
        self.done_t = self.clock.t()

    async def _send_batch(self, producer: AIOKafkaProducer, batch: list[Spec]) -> None:
        """One record per key per batch; a failed send is retried (a duplicate stays adjacent)."""
        pending = list(batch)
        while pending:
            futures = []
            for spec in pending:
                headers = [*JSON_HEADERS, (CHAOS_HEADER, spec.cid.encode())]
                try:
                    fut = await producer.send(
                        self.topic, spec.build(self.correlation), key=spec.key, headers=headers
                    )
                except KafkaError:
                    fut = None
                futures.append(fut)
            failed = []
            for spec, fut in zip(pending, futures, strict=True):
                if fut is None:
                    failed.append(spec)
                    continue
                try:
                    md = await fut
                except KafkaError:
                    failed.append(spec)
                    continue
                if spec.kind != "poison":
                    self.produced_at[spec.cid] = (md.partition, md.offset)
            if failed:
                self.send_retries += len(failed)
                await self.gate.wait()
                await asyncio.sleep(0.5)
            pending = failed
