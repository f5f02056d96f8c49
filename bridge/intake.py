"""The fetch loop: poll, ask the ledger what each record is, parse it, hand it to the scheduler.

Fetching never stops while work is slow: ``getmany`` runs every ≤100 ms; partitions are paused
and resumed by the pure flow-control plan (:mod:`bridge.flow`), so memory stays bounded.

One wait is not bounded by ``getmany``'s timeout: while the group rebalances, aiokafka's
``getmany`` waits for the new assignment, and a rebalance that waits for a member killed with
SIGKILL lasts until that member's session times out (30 s by default). A stop asked for then
(:meth:`Fetcher.interrupt`, on SIGTERM or a fatal error) cancels that wait instead of waiting
it out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.circuit import CircuitBreaker
from bridge.codec import AvroCodec
from bridge.commands import AnyCommand, UnresolvedSchemaError, parse_command
from bridge.commits import Committer
from bridge.config import Ordering, ProcessingSettings
from bridge.errors import InvalidCommandError, RecordHandlingError
from bridge.flow import FlowState, plan_flow
from bridge.ledger import Fate
from bridge.metrics import BridgeMetrics
from bridge.partition import Partition, RuntimeState, WorkItem
from bridge.processor import SourceRecord

log = logging.getLogger("bridge.runtime")


class Fetcher:
    def __init__(
        self,
        state: RuntimeState,
        consumer: AIOKafkaConsumer,
        *,
        processing: ProcessingSettings,
        codec: AvroCodec,
        circuit: CircuitBreaker,
        metrics: BridgeMetrics,
        committer: Committer,
    ) -> None:
        self._state = state
        self._consumer = consumer
        self._p = processing
        self._key_mode = processing.ordering == Ordering.KEY
        self._codec = codec
        self._circuit = circuit
        self._metrics = metrics
        self._committer = committer
        self._fetching: asyncio.Task[Any] | None = None  # the task waiting in getmany, if any
        self._interrupted = False
        state.on_stop.append(self.interrupt)  # SIGTERM and a fatal error alike

    def interrupt(self) -> None:
        """Stop asked for: end a ``getmany`` that is waiting (for a rebalance) now."""
        if self._fetching is not None and not self._interrupted:
            self._interrupted = True
            self._fetching.cancel()

    async def loop(self) -> None:
        state = self._state
        consumer = self._consumer
        while not state.stopping.is_set():
            self.flow_control()
            try:
                # Only ever suspended inside getmany while set: the cancel of interrupt() is
                # raised there (records aiokafka has fetched stay in its buffer).
                self._fetching = asyncio.current_task()
                try:
                    batch = await consumer.getmany(timeout_ms=100, max_records=500)
                finally:
                    self._fetching = None
                state.broker_ok = True
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._interrupted and task is not None and task.uncancel() == 0:
                    break  # our own cancel, not the task's: stop fetching, drain
                raise
            except KafkaError as exc:
                state.broker_ok = False
                log.warning("fetch failed; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(0.5)
                continue
            except Exception as exc:  # a record aiokafka cannot decode: see undecodable()
                await self.undecodable(exc)
                continue
            state.heartbeat = time.monotonic()
            for tp, records in batch.items():
                part = state.parts.get(tp)
                if part is None or part.revoked:
                    # Fetched before our assignment callback finished setting the partition up
                    # (or while it is being revoked): never drop them, fetch them again later.
                    if records and tp in consumer.assignment():
                        consumer.seek(tp, records[0].offset)
                    continue
                for rec in records:
                    self.accept(part, rec)
            if batch:
                state.wake.set()

    async def undecodable(self, exc: Exception) -> None:
        """``getmany`` raised something other than a Kafka error: aiokafka's record parser
        refused what it fetched, e.g. a header name that is not UTF-8 (it decodes names
        strictly, before the bridge sees the record). That call lost what it had collected for
        every partition (their positions had moved past it), and every later call would raise
        again: left alone the bridge crash-loops, and carrying on would skip commands.

        So every live partition goes back to the next offset its ledger expects (nothing is
        skipped), and each is fetched on its own. The one that raises again is *held*: paused
        until it is reassigned, its position back where the ledger expects, nothing committed
        past it, logged with the offset to look at. aiokafka parses whole batches, so the bad
        record cannot be skipped alone; the operator moves the group past it (README,
        Operations). The other partitions go on."""
        state, consumer = self._state, self._consumer
        log.error(
            "the Kafka client could not decode fetched records; finding the partition",
            extra={"error": type(exc).__name__},
        )
        assigned = consumer.assignment()
        live = {
            tp: part
            for tp, part in state.parts.items()
            if tp in assigned and not part.revoked and not part.held
        }
        for tp, part in live.items():
            await self._rewind(tp, part)
        for tp, part in live.items():
            if part.paused:
                continue  # a paused partition is not fetched: it cannot be the one
            try:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=500)
            except KafkaError:
                return  # the fetch loop retries; the partitions are back where they should be
            except Exception as again:  # the same refusal: this partition is the one
                await self._hold(tp, part, again)
                continue
            for rec in batch.get(tp, ()):
                self.accept(part, rec)
        state.wake.set()

    async def _rewind(self, tp: TopicPartition, part: Partition) -> None:
        nxt = part.ledger.next_offset
        if nxt is None:
            await self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek(tp, nxt)

    async def _hold(self, tp: TopicPartition, part: Partition, exc: Exception) -> None:
        part.held = part.paused = True
        self._consumer.pause(tp)
        await self._rewind(tp, part)  # norce_bridge_paused_partitions: the next flow_control
        log.error(
            "partition held: the Kafka client cannot decode a record at or after its next offset",
            extra={
                "topic": tp.topic,
                "partition": tp.partition,
                "offset": part.ledger.next_offset,
                "error": type(exc).__name__,
                "detail": str(exc)[:200],
            },
        )

    def accept(self, part: Partition, rec: Any) -> None:
        offset: int = rec.offset
        fetched = part.ledger.accept(offset)
        if fetched is None:
            return  # re-delivered after a seek; already tracked
        self._state.counters["consumed"] += 1
        if fetched.fate is Fate.SKIP:
            self._state.counters["skipped_replayed"] += 1
            part.recovered_if(fetched.recovered)  # the last suspects may all be done ones
            return
        suspect_since = None
        if fetched.fate is Fate.SUSPECT:
            suspect_since = datetime.fromtimestamp((fetched.window_start_ms or 0) / 1000, UTC)
        item = self._work_item(part, rec, suspect_since)
        item.delete_note = fetched.delete_note
        part.buffered += 1
        if part.ledger.admit(offset, item):
            self._state.sched.add(item)
        else:
            self._committer.ensure_reservation(part)

    def _work_item(self, part: Partition, rec: Any, suspect_since: datetime | None) -> WorkItem:
        offset: int = rec.offset
        # Header values exactly as sent: a null value stays null (dead letters copy them).
        headers = tuple((k, bytes(v) if v is not None else None) for k, v in (rec.headers or ()))
        tp = part.tp
        src = SourceRecord(
            tp.topic, tp.partition, offset, rec.key, rec.value, headers, rec.timestamp
        )
        command: AnyCommand | None = None
        error: InvalidCommandError | None = None
        try:
            command = parse_command(
                rec.value, headers, codec=self._codec, max_bytes=self._p.max_record_bytes
            )
        except InvalidCommandError as exc:
            error = exc
        except Exception as exc:  # a parser bug must not stop the partition: last resort
            log.exception("unexpected error while parsing a record", extra={"offset": offset})
            error = RecordHandlingError(exc)
        key: Hashable
        if not self._key_mode:
            key = tp
        elif command is not None:
            key = command.order_id
        elif isinstance(error, UnresolvedSchemaError) and rec.key:
            # Decoded only once its schema is fetched: ordered by the record key meanwhile, the
            # order id when producers key commands as recommended (README, Schema registry).
            key = bytes(rec.key).decode("utf-8", "replace")
        else:
            key = ("invalid", tp, offset)
        return WorkItem(
            tp, offset, key, src, command, error, part.epoch, suspect_since, time.monotonic()
        )

    def flow_control(self) -> None:
        state = self._state
        assigned = self._consumer.assignment()
        parts = {tp: part for tp, part in state.parts.items() if tp in assigned and not part.held}
        total = sum(p.buffered for p in state.parts.values())
        plan = plan_flow(
            (FlowState(tp, part.buffered, part.paused) for tp, part in parts.items()),
            total=total,
            circuit_open=self._circuit.is_open,
            all_paused=state.all_paused,
            max_total=self._p.max_buffered_total,
            max_per_partition=self._p.max_buffered_per_partition,
        )
        state.all_paused = plan.all_paused
        for tp in plan.pause:
            parts[tp].paused = True
        for tp in plan.resume:
            parts[tp].paused = False
        if plan.pause:
            self._consumer.pause(*plan.pause)
        if plan.resume:
            self._consumer.resume(*plan.resume)
        self._metrics.set_paused_partitions(sum(1 for p in state.parts.values() if p.paused))
        self._metrics.set_buffered(total)
