"""The harness's own Kafka clients: creating a run's topics, offsets, a producer of commands."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bridge.config import TopicSettings

JSON_HEADERS = [("content-type", b"application/json")]


def all_partitions(topic: str, partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(partitions)]


def topic_roles(topics: TopicSettings) -> dict[str, str]:
    """Every topic of a run by its role."""
    return {
        "commands": topics.commands,
        "snapshots": topics.snapshots,
        "events": topics.events,
        "results": topics.results,
        "dlq": topics.dlq,
        "order_state": topics.order_state,
        "notifications": topics.notifications,
    }


async def create_topics(
    bootstrap: str,
    topics: TopicSettings,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create the topics of a run (snapshots compacted; ``configs`` adds per-topic configs
    by role: ``{"results": {"message.timestamp.type": "LogAppendTime"}}``), then wait until every
    partition has a leader."""
    configs = configs or {}
    roles = topic_roles(topics)
    new = []
    for role, name in roles.items():
        cfg = dict(configs.get(role, {}))
        if role in ("snapshots", "order_state"):
            cfg.setdefault("cleanup.policy", "compact")
        new.append(NewTopic(name, topics.partitions, 1, topic_configs=cfg))
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(new)
    finally:
        await admin.close()
    tps = [tp for name in roles.values() for tp in all_partitions(name, topics.partitions)]
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await probe.end_offsets(tps)
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await probe.stop()


async def delete_topics(bootstrap: str, topics: TopicSettings) -> None:
    """Delete a run's topics (best effort: a benchmark's broker otherwise piles up thousands of
    partitions over an invocation, and every later run pays for them)."""
    names = list(topic_roles(topics).values())
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(KafkaError):
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def committed_offsets(
    bootstrap: str, group: str, topic: str, *, tolerate_errors: bool = False
) -> dict[int, int]:
    """The group's committed offsets on ``topic`` by partition (``tolerate_errors``: empty when
    the broker cannot answer, e.g. while it restarts)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(group)
    except KafkaError:
        if tolerate_errors:
            return {}
        raise
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


async def end_offsets(
    bootstrap: str, topic: str, partitions: int, **client_options: Any
) -> dict[int, int]:
    """The end offset of every partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, **client_options)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(all_partitions(topic, partitions))
    finally:
        await consumer.stop()
    return {tp.partition: off for tp, off in ends.items()}


def command_producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all) like the services that send commands (not started)."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", **options
    )
