"""Rebalances: set partitions up from their committed state, give them back without zombies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from bridge.commits import Committer
from bridge.delivery import Delivery, FatalRuntimeError
from bridge.kafka_compat import fetch_committed_with_metadata
from bridge.ledger import PartitionLedger
from bridge.metrics import BridgeMetrics
from bridge.order_state import OrderState
from bridge.partition import Partition, RuntimeState, WorkItem
from bridge.processor import Processor
from bridge.state_store import Restored
from bridge.vocabulary import COMMANDS_ROLE

log = logging.getLogger("bridge.runtime")

RestoreStates = Callable[[Sequence[int]], Awaitable[list[Restored]]]
"""Restores the order state store's partitions (:func:`bridge.state_store.restore`)."""


class Rebalancer:
    def __init__(
        self,
        state: RuntimeState,
        consumer: AIOKafkaConsumer,
        *,
        delivery: Delivery,
        committer: Committer,
        processor: Processor,
        metrics: BridgeMetrics,
        revoke_deadline_s: float,
        restore_states: RestoreStates | None = None,
    ) -> None:
        self._restore_states = restore_states
        self._state = state
        self._consumer = consumer
        self._delivery = delivery
        self._committer = committer
        self._processor = processor
        self._metrics = metrics
        self._revoke_deadline_s = revoke_deadline_s

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        state = self._state
        consumer = self._consumer
        new = sorted(tp for tp in assigned if tp not in state.parts)
        await self._delivery.open(new)  # exactly-once: fences a zombie owner first
        # The order state store, read before any record of the partitions runs (after the
        # fencing above: a zombie's open transaction is aborted, its end offset final).
        restored: dict[int, dict[str, OrderState]] = {}
        if self._restore_states is not None and new:
            try:
                started = time.monotonic()
                done = await self._restore_states([tp.partition for tp in new])
            except Exception as exc:
                log.error("order state restore failed", extra={"error": repr(exc)})
                self._state.die(FatalRuntimeError(f"order state restore failed: {exc!r}"))
                return
            restored = {r.partition: r.states for r in done}
            self._metrics.refresh.restored(
                time.monotonic() - started,
                {r.partition: (r.records, len(r.states)) for r in done},
            )
            log.info(
                "order state restored",
                extra={
                    "partitions": sorted(restored),
                    "orders": sum(len(m) for m in restored.values()),
                    "records": sum(r.records for r in done),
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        committed = await fetch_committed_with_metadata(consumer, new)
        # Records at or beyond today's end offset were never dispatched by anyone: not suspect.
        ends = await consumer.end_offsets(new) if new else {}
        for tp in new:
            state.epoch += 1
            found = committed.get(tp)
            ledger: PartitionLedger[WorkItem] = PartitionLedger(found, ends.get(tp))
            if ledger.seek_to is not None:
                consumer.seek(tp, ledger.seek_to)
            part = Partition(tp, state.epoch, ledger, self._committer.on_recovered)
            part.states = restored.get(tp.partition, {})
            state.parts[tp] = part
            if ledger.recovering:
                log.info(
                    "partition assigned with records to check for replays",
                    extra={
                        "partition": tp.partition,
                        "committed": ledger.committed_offset,
                        "suspect_until": ledger.suspect_limit,
                    },
                )
        log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Give partitions back without leaving a zombie behind.

        Commands that have not yet sent their write are cancelled at once (also those waiting
        on a retry backoff, the circuit or the lease): the new owner runs them. Only commands
        whose write is on the wire or done, or that are publishing, may finish, within
        ``revoke_deadline_s`` (which start-up keeps below the session and rebalance timeouts).
        """
        state = self._state
        self._metrics.rebalance()
        parts = [part for tp, part in state.parts.items() if tp in revoked]
        for part in parts:
            part.revoked = True
        state.lease_changed.set()  # writers waiting for the lease give up now
        state.sched.drop(lambda i: i.tp in revoked)
        cancelled = 0
        for part in parts:
            for offset, task in list(part.tasks.items()):
                if offset not in part.committed_to:
                    task.cancel()
                    cancelled += 1
        deadline = time.monotonic() + self._revoke_deadline_s
        await state.wait_idle(lambda: any(part.tasks for part in parts), deadline)
        for part in parts:
            for task in list(part.tasks.values()):
                task.cancel()
        for part in parts:
            try:
                remaining = max(1.0, deadline + 2.0 - time.monotonic())
                await asyncio.wait_for(self._committer.commit(part, final=True), remaining)
            except FatalRuntimeError as exc:
                state.die(exc)
            except TimeoutError:
                log.warning(
                    "final commit on revoke timed out", extra={"partition": part.tp.partition}
                )
            part.abandoned = True
            self._processor.forget_recovery((part.tp, part.epoch))
        for part in parts:
            state.parts.pop(part.tp, None)
            self._metrics.forget_partition(COMMANDS_ROLE, part.tp.partition)
            self._metrics.refresh.forget(part.tp.partition)
            await self._delivery.close_partition(part.tp)
        log.info(
            "partitions revoked",
            extra={
                "partitions": sorted(part.tp.partition for part in parts),
                "cancelled_before_write": cancelled,
            },
        )


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, rebalancer: Rebalancer) -> None:
        self._rebalancer = rebalancer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._rebalancer.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._rebalancer.on_assigned(set(assigned))
