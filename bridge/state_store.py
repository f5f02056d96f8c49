"""The order state store: restoring a partition's "last published state" map on assignment.

The store is a compacted topic (``BRIDGE_TOPICS__ORDER_STATE``) with as many partitions as the
commands topic; the state record of an order handled by commands partition *p* is written to
partition *p* of the store, with the command's outputs (in the same transaction under
exactly-once, before the offset commit under at-least-once). This is Kafka Streams' changelog
design: the partition's owner is the only writer of its store partition, and a new owner reads
the partition from the beginning to its end (``read_committed``: an aborted transaction of a
fenced zombie is never restored) before it processes any command of it.

The restore consumer is separate from the group's consumer and *assigned* (no group, no
commits). Restoring runs inside the rebalance callback, after exactly-once delivery has fenced
the previous owner (``init_transactions`` aborts its open transaction, so the end offset read
here is final). See :mod:`bridge.order_state` for the record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.config import BridgeSettings
from bridge.errors import ConfigError
from bridge.order_state import OrderState, decode_state

log = logging.getLogger("bridge.runtime")

__all__ = ["Restored", "apply_record", "check_partitions", "restore"]

RESTORE_POLL_MS = 500


@dataclass(frozen=True, slots=True)
class Restored:
    """The restored map of one store partition, and what restoring it cost."""

    partition: int
    states: dict[str, OrderState]
    records: int
    seconds: float


def apply_record(store: dict[str, OrderState], key: bytes, value: bytes | None) -> None:
    """One state record read back: the last record of a key wins; a tombstone or a value this
    version cannot read removes the key."""
    state = decode_state(value)
    if state is None:
        store.pop(key.decode("utf-8", "replace"), None)
    else:
        store[key.decode("utf-8", "replace")] = state


def restore_consumer(settings: BridgeSettings, options: dict[str, Any]) -> AIOKafkaConsumer:
    """An assigned consumer (no group) reading committed records only."""
    k = settings.kafka
    return AIOKafkaConsumer(
        bootstrap_servers=k.bootstrap_servers,
        client_id=f"{k.client_id}-state-restore",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        request_timeout_ms=k.request_timeout_ms,
        max_partition_fetch_bytes=1_048_576,
        **options,
    )


async def restore(
    settings: BridgeSettings,
    options: dict[str, Any],
    partitions: Sequence[int],
    *,
    deadline_s: float = 120.0,
) -> list[Restored]:
    """Read the store's ``partitions`` from the beginning to their end (read_committed).

    The last record of a key wins; a tombstone or a value this version cannot read removes the
    key. Raises TimeoutError when the end is not reached within ``deadline_s``.
    """
    if not partitions:
        return []
    topic = settings.topics.order_state
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = restore_consumer(settings, options)
    started = time.monotonic()
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        states: dict[TopicPartition, dict[str, OrderState]] = {tp: {} for tp in tps}
        counts = dict.fromkeys(tps, 0)
        pending = {tp for tp in tps if ends.get(tp, 0) > 0}
        while pending:
            if time.monotonic() - started > deadline_s:
                raise TimeoutError(f"order state restore of {topic} took over {deadline_s:g}s")
            batch = await consumer.getmany(*pending, timeout_ms=RESTORE_POLL_MS)
            for tp, messages in batch.items():
                store = states[tp]
                for m in messages:
                    counts[tp] += 1
                    if m.key is not None:
                        apply_record(store, m.key, m.value)
            for tp in list(pending):
                # Under read_committed the position can stop short of the end at transaction
                # markers; position() moves past them once fetched.
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        seconds = time.monotonic() - started
        return [Restored(tp.partition, states[tp], counts[tp], seconds) for tp in tps]
    finally:
        await consumer.stop()


def check_partitions(store_partitions: int | None, command_partitions: int | None) -> None:
    """Refuse a store with fewer partitions than the commands topic (one clear line)."""
    if store_partitions is None or command_partitions is None:
        return
    if store_partitions < command_partitions:
        raise ConfigError(
            f"the order state topic has {store_partitions} partitions, fewer than the commands "
            f"topic's {command_partitions}: give it at least {command_partitions} "
            "(BRIDGE_TOPICS__ORDER_STATE; state record i goes to the partition of command "
            "partition i)"
        )
