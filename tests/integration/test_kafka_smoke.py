"""Smoke test of the real local broker: topics, idempotent producer, groups, transactions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.broker


async def _drain(consumer: AIOKafkaConsumer, want: int, deadline_s: float = 20.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=500)
        for msgs in batch.values():
            got.extend(m.value for m in msgs if m.value is not None)
    return got


async def test_idempotent_produce_group_commit_and_transaction(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Topics, idempotent writes, group commits and read_committed transactions all work."""
    topic, group = unique_name("smoke"), unique_name("g")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"plain-{i}".encode(), key=b"k")
    finally:
        await producer.stop()

    tx = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("tx"))
    await tx.start()
    try:
        async with tx.transaction():
            await tx.send(topic, b"committed-in-tx", key=b"k")
        await tx.begin_transaction()
        await tx.send(topic, b"aborted-in-tx", key=b"k")
        await tx.abort_transaction()
    finally:
        await tx.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        values = await _drain(consumer, 6)
        # Give the aborted record (and its markers) a chance to show up if isolation were broken.
        values += await _drain(consumer, 1, deadline_s=1.0)
        assert values == [f"plain-{i}".encode() for i in range(5)] + [b"committed-in-tx"]
        tp = TopicPartition(topic, 0)
        position = await consumer.position(tp)
        await consumer.commit({tp: position})
        assert await consumer.committed(tp) == position
    finally:
        await asyncio.wait_for(consumer.stop(), 10)
