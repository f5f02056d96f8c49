"""The one private aiokafka access (bridge.kafka_compat) still works against the real broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.kafka_compat import fetch_committed_with_metadata, observe_group_liveness
from bridge.lease import lease_clock

pytestmark = pytest.mark.broker


async def _topic(bootstrap: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    return name


async def test_heartbeats_and_the_join_renew_the_liveness_observer(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """SyncGroup and every successful heartbeat report their send time, in order."""
    topic = await _topic(kafka_bootstrap, unique_name("compat"))
    seen: list[float] = []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=unique_name("g"),
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        before = lease_clock()
        observe_group_liveness(consumer, seen.append)
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(seen) < 4 and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
        assert len(seen) >= 4, "no successful heartbeats were observed"
        assert seen == sorted(seen)
        assert seen[0] >= before
        assert lease_clock() - seen[-1] < 5.0
    finally:
        await consumer.stop()


async def test_committed_metadata_round_trips(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """Committed offsets come back with the metadata string the bridge stored."""
    topic = await _topic(kafka_bootstrap, unique_name("compat-meta"))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"v{i}".encode(), partition=0)
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=unique_name("g"), enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        assert await fetch_committed_with_metadata(consumer, [tp]) == {}
        await consumer.commit({tp: (2, "nob1:meta-text")})
        got = await fetch_committed_with_metadata(consumer, [tp])
        assert got == {tp: (2, "nob1:meta-text")}
    finally:
        await asyncio.wait_for(consumer.stop(), 15)
