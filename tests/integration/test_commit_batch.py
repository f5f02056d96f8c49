"""The periodic at-least-once commit against the real broker: every partition in one
OffsetCommit request, and a partition that is no longer assigned holds none of the others back.

One request per partition cost the broker about ten times the CPU of one request for all twelve
(``bridge.delivery.AtLeastOnce.commit_many``). But one request fails as a whole: a partition the
consumer no longer owns (revoked, expelled) would then keep every other partition's offsets from
being committed, round after round. These tests drive the delivery strategy the runtime uses
with a real consumer and read the group's offsets back from the broker.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from bridge_devkit.harness import committed_offsets, create_topics, fresh_topics, unique
from prometheus_client import CollectorRegistry

from bridge.commits import Committer
from bridge.delivery import AtLeastOnce
from bridge.lease import MembershipLease
from bridge.ledger import PartitionLedger
from bridge.metrics import BridgeMetrics
from bridge.partition import Partition, RuntimeState, WorkItem

pytestmark = pytest.mark.broker


def _state() -> RuntimeState:
    lease = MembershipLease(30.0, 5.0, clock=time.monotonic)
    lease.renew(time.monotonic())
    return RuntimeState(lease)


def _part(state: RuntimeState, tp: TopicPartition, done: int) -> Partition:
    """A partition of ``state`` whose first ``done`` records are done (commit offset ``done``)."""
    ledger: PartitionLedger[WorkItem] = PartitionLedger((0, ""))
    for offset in range(done):
        assert ledger.accept(offset) is not None
        ledger.complete(offset)
    part = Partition(tp, 1, ledger, lambda _p: None)
    state.parts[tp] = part
    return part


@asynccontextmanager
async def _delivery(
    bootstrap: str, owned: list[TopicPartition], state: RuntimeState
) -> AsyncIterator[tuple[AtLeastOnce, Committer, str]]:
    group = unique("commit-batch")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    consumer.assign(owned)
    metrics = BridgeMetrics(
        CollectorRegistry(), version="t", processing_guarantee="at_least_once", ordering="key"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    delivery = AtLeastOnce(state, metrics, consumer, producer)

    async def position(tp: TopicPartition) -> int:
        return int(await consumer.position(tp))

    committer = Committer(state, position, delivery, interval_s=60.0, reserve_chunk=10)
    await delivery.start()
    try:
        yield delivery, committer, group
    finally:
        await delivery.close()
        await consumer.stop()


async def test_every_partition_is_committed_by_the_periodic_commit(kafka_bootstrap: str) -> None:
    topics = fresh_topics("commit-batch", 3)
    await create_topics(kafka_bootstrap, topics)
    tps = [TopicPartition(topics.commands, p) for p in range(3)]
    state = _state()
    parts = [_part(state, tp, done) for tp, done in zip(tps, (4, 7, 2), strict=True)]
    async with _delivery(kafka_bootstrap, tps, state) as (_, committer, group):
        await committer.commit_all()
        assert await committed_offsets(kafka_bootstrap, group, topics.commands) == {
            0: 4,
            1: 7,
            2: 2,
        }
        assert state.counters["commits"] == 3
        assert [p.ledger.committed_offset for p in parts] == [4, 7, 2]
        await committer.commit_all()  # nothing new: no second commit
        assert state.counters["commits"] == 3


async def test_a_partition_no_longer_assigned_holds_none_of_the_others_back(
    kafka_bootstrap: str,
) -> None:
    topics = fresh_topics("commit-batch", 3)
    await create_topics(kafka_bootstrap, topics)
    tps = [TopicPartition(topics.commands, p) for p in range(3)]
    state = _state()
    parts = [_part(state, tp, done) for tp, done in zip(tps, (5, 6, 9), strict=True)]
    # The consumer owns partitions 0 and 1 only (2 was revoked, its release not yet processed).
    async with _delivery(kafka_bootstrap, tps[:2], state) as (delivery, _, group):
        await delivery.commit_many(parts)
        assert await committed_offsets(kafka_bootstrap, group, topics.commands) == {0: 5, 1: 6}
        assert [p.ledger.committed_offset for p in parts] == [5, 6, 0]
