"""The consuming engine: fetch, order per key, run concurrently, publish, commit.

Shape (one event loop, nothing blocking it)::

    fetch loop ──► parse ──► KeyScheduler (one in flight per order id) ──► workers (≤ max_in_flight)
        ▲  pause/resume (bounded buffers, circuit open)                      │ Processor + Norce
        │                                                                      ▼
    commit loop ◄── PartitionOffsets (contiguous done + 1, CommitMeta) ◄── publish (acks / txn)

* Fetching never stops while work is slow: ``getmany`` runs every ≤100 ms; partitions whose
  buffer is full (or all of them, while the total buffer is full or the API circuit is open) are
  ``pause()``d and ``resume()``d when they drain. Memory is bounded by the buffer limits.
* A record is *done* when its outputs are acknowledged (at-least-once) or sit in the partition's
  open transaction (exactly-once). Offsets commit per partition as contiguous-done + 1 with
  :class:`~bridge.offsets.CommitMeta`, periodically, on revoke and on shutdown.
* Exactly-once: one transactional producer per input partition, ``transactional_id`` =
  ``<prefix>.<group>.<topic>.<partition>``: stable, so a restarted or rebalanced owner fences the
  zombie (``init_transactions`` aborts its open transaction) before reading the committed
  offsets. Outputs and offsets+metadata commit in one transaction. A failed transaction commit is
  fatal: the process exits and its replacement recovers from the last committed state.
* Replays: records in the inherited reservation ``[committed, limit)`` that are not in ``done`` are
  *suspect* and handled with the order-history check of :mod:`bridge.processor`. While a partition
  has unresolved suspects it commits nothing, so the inherited metadata (and with it the exact
  per-order history windows) stays valid however often the bridge crashes during recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from bridge.circuit import CircuitBreaker
from bridge.codec import AvroCodec
from bridge.commands import DeleteOrder, SetOrderState, parse_command
from bridge.config import BridgeSettings, Ordering, ProcessingGuarantee
from bridge.errors import BridgeError, InvalidCommandError, NorceApiError, RecordHandlingError
from bridge.kafka_compat import fetch_committed_with_metadata, observe_group_liveness
from bridge.lease import LeaseLost, MembershipLease, lease_margin_s, write_gate
from bridge.logs import command_id_var, correlation_id_var, order_id_var
from bridge.metrics import BridgeMetrics
from bridge.offsets import MAX_METADATA_CHARS, CommitMeta, PartitionOffsets
from bridge.processor import Outcome, Processor, SourceRecord
from bridge.scheduler import KeyScheduler
from bridge.vocabulary import TOPIC_ROLES
from bridge.vocabulary import Outcome as OutcomeName

log = logging.getLogger("bridge.runtime")

EncodedRecord = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]]]
COMMANDS_ROLE = "commands"
UNEXPECTED_FAILURE_LIMIT = 5


class FatalRuntimeError(BridgeError):
    """The runtime cannot continue safely (e.g. a transaction could not commit)."""


@dataclass(slots=True)
class WorkItem:
    tp: TopicPartition
    offset: int
    key: Hashable
    src: SourceRecord
    command: SetOrderState | DeleteOrder | None
    error: InvalidCommandError | None
    epoch: int
    suspect_since: datetime | None
    received: float
    delete_note: tuple[str | None] | None = None  # noted pre-DELETE state from the last owner


@dataclass
class _Txn:
    producer: AIOKafkaProducer
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    open: bool = False
    pending: dict[int, list[asyncio.Future[Any]]] = field(default_factory=dict)


@dataclass
class PartState:
    tp: TopicPartition
    epoch: int
    offsets: PartitionOffsets | None
    inherited: CommitMeta
    skip: set[int]
    suspect_limit: int
    limit: int
    recovering: bool
    staged: deque[WorkItem] = field(default_factory=deque)
    in_flight: dict[int, int] = field(default_factory=dict)  # offset -> dispatch ms
    buffered: int = 0
    paused: bool = False
    revoked: bool = False  # no new dispatches; in-flight work may still finish and commit
    abandoned: bool = False  # no longer ours: late completions are dropped
    reserving: bool = False
    last_commit_key: tuple[Any, ...] | None = None
    commit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    txn: _Txn | None = None
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    # offsets whose command has sent a write or started publishing: a revoke lets these finish
    # (bounded); every other task of the partition is cancelled at once.
    committed_to: set[int] = field(default_factory=set)
    # offset -> the state a DeleteOrder is about to delete the order from (CommitMeta.deletes)
    delete_from: dict[int, str | None] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Runtime:
    """Runs until ``stop()``; then drains within the deadline, commits and returns."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        codec: AvroCodec,
        processor: Processor,
        metrics: BridgeMetrics,
        kafka_options: dict[str, Any],
        circuit: CircuitBreaker,
    ) -> None:
        self._s = settings
        self._p = settings.processing
        self._codec = codec
        self._processor = processor
        self._metrics = metrics
        self._kafka_options = kafka_options
        self._circuit = circuit
        self._eos = self._p.processing_guarantee == ProcessingGuarantee.EXACTLY_ONCE
        self._key_mode = self._p.ordering == Ordering.KEY
        self._topics = {
            "snapshot": settings.topics.snapshots,
            "event": settings.topics.events,
            "result": settings.topics.results,
            "dlq": settings.topics.dlq,
        }
        self._sched: KeyScheduler[WorkItem] = KeyScheduler()
        self._parts: dict[TopicPartition, PartState] = {}
        self._epoch = 0
        self._running: set[asyncio.Task[None]] = set()
        self._running_aux: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._stopping = asyncio.Event()
        self._draining = False
        self._fatal: BaseException | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._all_paused = False
        self._reserve_chunk = self._p.reserve_chunk
        self._rng = random.Random()
        k = settings.kafka
        self._rebalance_timeout_ms = k.effective_rebalance_timeout_ms(self._p.revoke_deadline_s)
        lease_timeout = min(k.session_timeout_ms, self._rebalance_timeout_ms) / 1000
        self.lease = MembershipLease(lease_timeout, lease_margin_s(lease_timeout))
        self._lease_changed = asyncio.Event()
        self.heartbeat = time.monotonic()
        self.assigned = False
        self.broker_ok = False
        self.counters: dict[str, int] = {
            "consumed": 0,
            **{o.value: 0 for o in OutcomeName},  # plain str keys (orjson, logs)
            "dead_lettered": 0,
            "skipped_replayed": 0,
            "published": 0,
            "commits": 0,
        }

    # -- public -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the runtime to stop fetching and drain."""
        self._stopping.set()
        self._wake.set()

    @property
    def ready(self) -> bool:
        """Member of the group and able to reach the broker; partitions are not required.

        An idle member (more replicas than partitions, a surge pod in a rolling update) is
        ready: requiring partitions would stall rollouts. A wedged process is caught by
        ``/healthz`` (the loop heartbeat), a stuck partition by the lag and no-progress alerts.
        """
        return self.broker_ok and not self._draining and self.lease.renewed_at is not None

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def buffered(self) -> int:
        return sum(ps.buffered for ps in self._parts.values())

    async def run(self) -> None:
        """Consume until stopped; drain, commit and close on the way out."""
        opts = self._kafka_options
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._s.kafka.bootstrap_servers,
            group_id=self._s.kafka.group_id,
            client_id=self._s.kafka.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_interval_ms=self._s.kafka.max_poll_interval_ms,
            session_timeout_ms=self._s.kafka.session_timeout_ms,
            rebalance_timeout_ms=self._rebalance_timeout_ms,
            heartbeat_interval_ms=min(3000, self._s.kafka.session_timeout_ms // 3),
            request_timeout_ms=max(
                self._s.kafka.request_timeout_ms, self._s.kafka.session_timeout_ms + 5000
            ),
            max_partition_fetch_bytes=max(1_048_576, self._p.max_record_bytes * 4),
            **opts,
        )
        if not self._eos:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self._s.kafka.bootstrap_servers,
                client_id=f"{self._s.kafka.client_id}-producer",
                enable_idempotence=True,
                acks="all",
                linger_ms=self._s.kafka.linger_ms,
                request_timeout_ms=self._s.kafka.request_timeout_ms,
                **opts,
            )
            await self._producer.start()
        try:
            await self._consumer.start()
            observe_group_liveness(self._consumer, self._on_alive)
            self._consumer.subscribe([self._s.topics.commands], listener=_Listener(self))
            self.broker_ok = True
            async with asyncio.TaskGroup() as tg:
                dispatcher = tg.create_task(self._dispatch_loop(tg), name="dispatch")
                committer = tg.create_task(self._commit_loop(), name="commit")
                monitor = tg.create_task(self._monitor_loop(), name="monitor")
                await self._fetch_loop()
                await self._drain()
                for t in (dispatcher, committer, monitor):
                    t.cancel()
        finally:
            await self._shutdown_kafka()
        if self._fatal is not None:
            raise FatalRuntimeError(
                f"runtime stopped on a fatal error: {self._fatal}"
            ) from self._fatal

    # -- fetching -------------------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping.is_set():
            self._flow_control()
            try:
                batch = await consumer.getmany(timeout_ms=100, max_records=500)
                self.broker_ok = True
            except KafkaError as exc:
                self.broker_ok = False
                log.warning("fetch failed; retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(0.5)
                continue
            self.heartbeat = time.monotonic()
            for tp, records in batch.items():
                ps = self._parts.get(tp)
                if ps is None or ps.revoked:
                    # Fetched before our assignment callback finished setting the partition up
                    # (or while it is being revoked): never drop them, fetch them again later.
                    if records and tp in consumer.assignment():
                        consumer.seek(tp, records[0].offset)
                    continue
                for rec in records:
                    self._accept(ps, rec)
            if batch:
                self._wake.set()

    def _accept(self, ps: PartState, rec: Any) -> None:
        offset: int = rec.offset
        if ps.offsets is None:
            ps.offsets = PartitionOffsets(offset)
        if offset < ps.offsets.next_offset:
            return  # re-delivered after a seek; already tracked
        ps.offsets.add(offset)
        self.counters["consumed"] += 1
        if offset in ps.skip:
            ps.skip.discard(offset)
            ps.offsets.complete(offset)
            self.counters["skipped_replayed"] += 1
            self._check_recovery(ps)  # the last suspects may all be done ones
            return
        # Header values exactly as sent: a null value stays null (dead letters copy them).
        headers = tuple((k, bytes(v) if v is not None else None) for k, v in (rec.headers or ()))
        src = SourceRecord(
            ps.tp.topic, ps.tp.partition, offset, rec.key, rec.value, headers, rec.timestamp
        )
        command: SetOrderState | DeleteOrder | None = None
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
            key = ps.tp
        elif command is not None:
            key = command.order_id
        else:
            key = ("invalid", ps.tp, offset)
        suspect_since = None
        if ps.recovering and offset < ps.suspect_limit:
            ms = ps.inherited.window_start_ms(offset)
            suspect_since = (
                datetime.fromtimestamp(ms / 1000, UTC)
                if ms is not None
                else datetime.fromtimestamp(0, UTC)
            )
        item = WorkItem(
            ps.tp, offset, key, src, command, error, ps.epoch, suspect_since, time.monotonic()
        )
        if suspect_since is not None:
            item.delete_note = ps.inherited.delete_note(offset)
        ps.buffered += 1
        if offset >= ps.limit:
            ps.staged.append(item)
            self._ensure_reservation(ps)
        else:
            self._sched.add(item)

    def _flow_control(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        total = self.buffered
        pause_all = self._circuit.is_open or total >= self._p.max_buffered_total
        resume_all = not self._circuit.is_open and total <= self._p.max_buffered_total // 2
        if pause_all:
            self._all_paused = True
        elif resume_all:
            self._all_paused = False
        limit = self._p.max_buffered_per_partition
        assigned = consumer.assignment()
        to_pause, to_resume = [], []
        for tp, ps in self._parts.items():
            if tp not in assigned:
                continue
            want = (
                self._all_paused or ps.buffered >= limit or (ps.paused and ps.buffered > limit // 2)
            )
            if want and not ps.paused:
                to_pause.append(tp)
                ps.paused = True
            elif not want and ps.paused:
                to_resume.append(tp)
                ps.paused = False
        if to_pause:
            consumer.pause(*to_pause)
        if to_resume:
            consumer.resume(*to_resume)
        self._metrics.set_paused_partitions(sum(1 for ps in self._parts.values() if ps.paused))
        self._metrics.set_buffered(total)

    # -- reservations -----------------------------------------------------------------------

    def _ensure_reservation(self, ps: PartState) -> None:
        if ps.reserving or ps.recovering or not ps.staged:
            return
        ps.reserving = True
        task = asyncio.get_running_loop().create_task(
            self._reserve(ps), name=f"reserve-{ps.tp.partition}"
        )
        self._running_aux.add(task)
        task.add_done_callback(self._running_aux.discard)

    async def _reserve(self, ps: PartState) -> None:
        try:
            while ps.staged and not ps.revoked and not ps.recovering:
                assert ps.offsets is not None
                new_limit = max(ps.limit, ps.offsets.next_offset + self._reserve_chunk)
                ok = await self._commit_partition(ps, new_limit=new_limit)
                if not ok:
                    await asyncio.sleep(0.5)
                    continue
                while ps.staged and ps.staged[0].offset < ps.limit:
                    self._sched.add(ps.staged.popleft())
                self._wake.set()
        except FatalRuntimeError as exc:
            self._die(exc)
        finally:
            ps.reserving = False

    # -- dispatching and work --------------------------------------------------------------

    async def _dispatch_loop(self, tg: asyncio.TaskGroup) -> None:
        max_in_flight = self._p.max_in_flight
        while True:
            await self._wake.wait()
            self._wake.clear()
            while len(self._running) < max_in_flight and not self._draining:
                item = self._sched.pop_ready()
                if item is None:
                    break
                ps = self._parts.get(item.tp)
                if ps is None or ps.epoch != item.epoch or ps.revoked:
                    self._sched.done(item.key)
                    continue
                ps.in_flight[item.offset] = _now_ms()
                task = tg.create_task(self._work(item, ps))
                self._running.add(task)
                ps.tasks[item.offset] = task
                task.add_done_callback(self._task_done)
                # Also when the task is cancelled before it ever ran (its finally never runs):
                # a key left busy would stall every later command of that order.
                task.add_done_callback(functools.partial(self._release_key, item.key))
            self._metrics.set_in_flight(len(self._running))

    def _release_key(self, key: Hashable, _task: asyncio.Task[None]) -> None:
        self._sched.done(key)
        self._wake.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Wake the dispatcher only once the task has left ``_running``: waking it from the
        # worker's ``finally`` would let it see a full ``_running`` and go back to sleep.
        self._running.discard(task)
        self._metrics.set_in_flight(len(self._running))
        self._wake.set()
        self._progress.set()

    def _live(self, item: WorkItem, ps: PartState) -> bool:
        return not ps.abandoned and self._parts.get(item.tp) is ps and ps.epoch == item.epoch

    async def _work(self, item: WorkItem, ps: PartState) -> None:
        cmd = item.command
        tokens = (
            command_id_var.set(cmd.command_id if cmd else None),
            order_id_var.set(cmd.order_id if cmd else None),
            correlation_id_var.set(cmd.correlation_id if cmd else None),
        )
        gate_token = write_gate.set(_ItemGate(self, item, ps))
        started = time.monotonic()
        completed = False
        try:
            outcome = await self._execute(item, ps)
            if outcome is None or not self._live(item, ps):
                return
            try:
                records = self._encode(outcome)
            except Exception as exc:  # e.g. a value the schema cannot carry: last resort
                outcome, records = self._last_resort(item, exc)
            published = await self._publish(item, ps, records)
            if not published:
                return
            if not self._eos:
                assert ps.offsets is not None
                ps.offsets.complete(item.offset)
            completed = True
            self._account(outcome, item, started, len(records))
        except FatalRuntimeError as exc:
            self._die(exc)
        finally:
            for var, token in zip(
                (command_id_var, order_id_var, correlation_id_var), tokens, strict=True
            ):
                var.reset(token)
            write_gate.reset(gate_token)
            ps.tasks.pop(item.offset, None)
            ps.committed_to.discard(item.offset)
            if self._live(item, ps):
                # An unfinished record keeps its dispatch time: the next commit's metadata must
                # say it may have reached the API (it is replayed as a suspect).
                if completed:
                    ps.in_flight.pop(item.offset, None)
                    ps.delete_from.pop(item.offset, None)
                ps.buffered -= 1
                self._check_recovery(ps)
            self._wake.set()
            self._progress.set()

    def _last_resort(
        self, item: WorkItem, exc: BaseException
    ) -> tuple[Outcome, list[EncodedRecord]]:
        """Dead-letter the raw record (``internal_error``), with a result if that encodes."""
        log.error(
            "record handling failed; dead-lettering it as internal_error",
            exc_info=exc,
            extra={"offset": item.offset, "partition": item.tp.partition},
        )
        outcome = self._processor.internal_error(item.src, exc, codec=self._codec)
        try:
            return outcome, self._encode(outcome)
        except Exception:  # the dead letter alone is raw bytes: it always encodes
            outcome = self._processor.internal_error(
                item.src, exc, with_result=False, codec=self._codec
            )
            return outcome, self._encode(outcome)

    async def _execute(self, item: WorkItem, ps: PartState) -> Outcome | None:
        try:
            return await self._execute_once(item, ps)
        except (asyncio.CancelledError, FatalRuntimeError):
            raise
        except Exception as exc:  # last resort: never let a record stop us
            return self._last_resort(item, exc)[0]

    async def _execute_once(self, item: WorkItem, ps: PartState) -> Outcome | None:
        if item.error is not None or item.command is None:
            assert item.error is not None
            return self._processor.invalid(item.src, item.error, codec=self._codec)
        unexpected = 0
        systemic = 0
        while True:
            if not self._live(item, ps):
                return None
            await self._circuit.acquire()
            if not self._live(item, ps):
                self._circuit.abandon()
                return None
            try:
                outcome = await self._processor.handle(
                    item.command,
                    item.src,
                    suspect_since=item.suspect_since,
                    scope=(item.tp, item.epoch),
                    delete_note=item.delete_note,
                    dispatched_at=datetime.fromtimestamp(
                        ps.in_flight.get(item.offset, _now_ms()) / 1000, UTC
                    ),
                )
            except asyncio.CancelledError:
                self._circuit.abandon()
                raise
            except LeaseLost as exc:
                self._circuit.abandon()
                self._metrics.command_abandoned()
                log.warning(
                    "command abandoned before its write: partition no longer ours",
                    extra={
                        "partition": item.tp.partition,
                        "offset": item.offset,
                        "error": str(exc),
                    },
                )
                return None
            except NorceApiError as exc:
                # command faults are turned into outcomes by the processor; what arrives here is
                # systemic (Norce down, throttling beyond the call deadline, bad credentials).
                self._circuit.failure()
                systemic += 1
                log.warning(
                    "Norce API unavailable; holding the command",
                    extra={
                        "error": type(exc).__name__,
                        "status": exc.status,
                        "attempts": exc.attempts,
                        "circuit": self._circuit.state,
                    },
                )
                await asyncio.sleep(min(5.0, 0.05 * 2 ** min(systemic, 7)) * self._rng.random())
                if ps.revoked:
                    return None
                continue
            except Exception as exc:
                unexpected += 1
                log.exception(
                    "unexpected error while processing a command", extra={"attempt": unexpected}
                )
                if unexpected >= UNEXPECTED_FAILURE_LIMIT:
                    return self._processor.internal_failure(item.command, item.src, exc)
                await asyncio.sleep(0.2 * unexpected)
                continue
            self._circuit.success()
            return outcome

    def _encode(self, outcome: Outcome) -> list[EncodedRecord]:
        out: list[EncodedRecord] = []
        for o in outcome.outputs:
            topic = self._topics[o.kind]
            if o.kind == "dlq" or o.value is None or isinstance(o.value, bytes):
                value = o.value if isinstance(o.value, bytes) or o.value is None else None
            else:
                assert o.schema is not None
                value = self._codec.encode(o.schema, o.value)
            out.append((topic, o.key, value, o.headers))
        return out

    async def _publish(self, item: WorkItem, ps: PartState, records: list[EncodedRecord]) -> bool:
        try:
            await self._hold_lease(item, ps)
        except LeaseLost:
            self._metrics.command_abandoned()
            return False
        ps.committed_to.add(item.offset)
        if self._eos:
            return await self._publish_txn(item, ps, records)
        producer = self._producer
        assert producer is not None
        delay = 0.1
        while True:
            try:
                futs = [await producer.send(t, value=v, key=k, headers=h) for t, k, v, h in records]
                await asyncio.gather(*futs)
                return True
            except KafkaError as exc:
                log.warning(
                    "publishing outputs failed; retrying", extra={"error": type(exc).__name__}
                )
                if not self._live(item, ps) or ps.revoked:
                    return False
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _publish_txn(
        self, item: WorkItem, ps: PartState, records: list[EncodedRecord]
    ) -> bool:
        txn = ps.txn
        assert txn is not None
        async with txn.lock:
            if not self._live(item, ps):
                return False
            try:
                if not txn.open:
                    await txn.producer.begin_transaction()
                    txn.open = True
                futs = [
                    await txn.producer.send(t, value=v, key=k, headers=h) for t, k, v, h in records
                ]
            except Exception as exc:
                self._transaction_failed(ps, exc, "transactional send")
                return False
            txn.pending[item.offset] = futs
        try:
            await asyncio.gather(*futs)
        except Exception as exc:
            self._transaction_failed(ps, exc, "transactional send")
            return False
        if txn.pending.pop(item.offset, None) is not None and self._live(item, ps):
            assert ps.offsets is not None
            ps.offsets.complete(item.offset)
        return True

    def _account(self, outcome: Outcome, item: WorkItem, started: float, n_records: int) -> None:
        m = self._metrics
        now = time.monotonic()
        m.command_finished(outcome.command_type, outcome.outcome, now - started)
        self.counters[outcome.outcome] = self.counters.get(outcome.outcome, 0) + 1
        self.counters["published"] += n_records
        if outcome.dead_letter_reason is not None:
            # Counted once above under its outcome (failed); dead letters by reason only here.
            m.dead_lettered(outcome.dead_letter_reason)
            self.counters["dead_lettered"] += 1
        for o in outcome.outputs:
            m.published(TOPIC_ROLES[o.kind])
        if item.src.timestamp_ms > 0:
            m.e2e_latency(max(0.0, time.time() - item.src.timestamp_ms / 1000))
        if outcome.outcome.succeeded:
            m.command_succeeded_now()
        log.debug(
            "command handled",
            extra={
                "outcome": outcome.outcome,
                "offset": item.offset,
                "partition": item.tp.partition,
            },
        )
        if outcome.outcome == OutcomeName.FAILED:
            log.info(
                "command failed",
                extra={
                    "outcome": outcome.outcome,
                    "reason": outcome.reason,
                    "dead_letter_reason": outcome.dead_letter_reason,
                    "offset": item.offset,
                    "partition": item.tp.partition,
                },
            )

    def _die(self, exc: BaseException) -> None:
        if self._fatal is None:
            log.error("fatal runtime error; stopping", extra={"error": str(exc)})
            self._fatal = exc
        self.stop()

    # -- write fencing (bridge.lease) ------------------------------------------------------------

    def _on_alive(self, sent_at: float) -> None:
        """A Heartbeat/SyncGroup sent at ``sent_at`` succeeded: the lease is renewed."""
        self.lease.renew(sent_at)
        self._lease_changed.set()

    async def _hold_lease(self, item: WorkItem, ps: PartState) -> None:
        """Return while this instance provably owns ``item``'s partition (module docstring).

        An expired lease on a partition still assigned waits for the next heartbeat (a short
        pause keeps its partitions and its work); a revoked or lost partition raises LeaseLost.
        """
        waited = False
        while True:
            if ps.revoked or not self._live(item, ps):
                raise LeaseLost(f"partition {ps.tp.partition} is no longer assigned here")
            if self.lease.valid():
                if waited:
                    log.info(
                        "membership lease renewed; writes resume",
                        extra={"partition": ps.tp.partition},
                    )
                return
            if not waited:
                waited = True
                age = self.lease.age()
                log.warning(
                    "membership lease expired; holding writes until a heartbeat succeeds",
                    extra={
                        "partition": ps.tp.partition,
                        "lease_age_s": None if age is None else round(age, 3),
                        "lease_limit_s": round(self.lease.limit_s, 3),
                    },
                )
            self._lease_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lease_changed.wait(), 0.25)

    def _transaction_failed(self, ps: PartState, exc: Exception, what: str) -> None:
        """A transactional call of ``ps`` failed: the partition is lost, or the runtime is.

        Fenced (``ProducerFenced``), or failing while the partition is not provably ours (a
        resumed zombie's producer raises KafkaError, AssertionError or IllegalOperation, which
        is no KafkaError): abandon the partition. Otherwise raise FatalRuntimeError.
        """
        if isinstance(exc, ProducerFenced):
            self._lose(ps, "transactional producer fenced by a newer owner")
        elif ps.revoked or ps.abandoned or not self.lease.valid():
            self._lose(ps, f"{what} failed without a lease: {exc!r}")
        else:
            raise FatalRuntimeError(f"{what} failed: {type(exc).__name__}") from exc

    def _lose(self, ps: PartState, why: str) -> None:
        """``ps`` is provably someone else's (fenced): stop everything of it, commit nothing."""
        if ps.abandoned:
            return
        log.warning(
            "partition lost; abandoning its work",
            extra={"partition": ps.tp.partition, "reason": why},
        )
        ps.revoked = True
        ps.abandoned = True
        self._sched.drop(lambda i: i.tp == ps.tp)
        for task in list(ps.tasks.values()):
            task.cancel()
        if ps.txn is not None:
            ps.txn.open = False
            _forget_futures(ps.txn.pending)
        self._lease_changed.set()

    # -- commits ----------------------------------------------------------------------------

    def _check_recovery(self, ps: PartState) -> None:
        """End the replay recovery once every record of the suspect range is done."""
        if (
            ps.recovering
            and ps.offsets is not None
            and ps.offsets.committable() >= ps.suspect_limit
        ):
            self._end_recovery(ps)

    def _end_recovery(self, ps: PartState) -> None:
        ps.recovering = False
        log.info("replay recovery finished for partition", extra={"partition": ps.tp.partition})
        self._ensure_reservation(ps)

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self._p.commit_interval_s)
            await self._commit_all()

    async def _commit_all(self, parts: Iterable[PartState] | None = None) -> None:
        for ps in list(parts if parts is not None else self._parts.values()):
            try:
                await self._commit_partition(ps)
            except FatalRuntimeError as exc:
                self._die(exc)
                return

    def _metadata(self, ps: PartState, committable: int, limit: int) -> str:
        assert ps.offsets is not None
        done = ps.offsets.done_above()
        done_set = set(done)
        at_ms = _now_ms()
        flights = tuple(
            sorted(
                (o, ms) for o, ms in ps.in_flight.items() if o >= committable and o not in done_set
            )
        )
        deletes = tuple(
            sorted(
                (o, st)
                for o, st in ps.delete_from.items()
                if o >= committable and o not in done_set
            )
        )
        meta = CommitMeta(done=done, limit=limit, at_ms=at_ms, in_flight=flights, deletes=deletes)
        text = meta.encode(committable)
        if len(text) > MAX_METADATA_CHARS and flights:
            # Too many in flight to list: fall back to the oldest dispatch time for all of them.
            oldest = min(ms for _, ms in flights)
            text = CommitMeta(done=done, limit=limit, at_ms=oldest, deletes=deletes).encode(
                committable
            )
            log.warning("commit metadata too large; using the oldest dispatch time as window")
        return text

    async def _commit_partition(
        self,
        ps: PartState,
        *,
        new_limit: int | None = None,
        final: bool = False,
        force: bool = False,
    ) -> bool:
        """Commit ``ps``; returns False when the commit failed and should be retried.

        While ``ps`` has unresolved suspects nothing is committed: the inherited metadata stays
        authoritative. In exactly-once mode a final commit during recovery aborts the open
        transaction instead, so the next owner redoes the recovery from the same state.
        """
        if ps.abandoned:
            return True
        if not self.lease.valid():
            # Not provably ours: a commit would fail (or, worse, succeed for a zombie). In
            # exactly-once a final commit aborts the open transaction instead.
            if final and self._eos:
                await self._abort_txn(ps)
            return final
        await self._advance_idle(ps)
        if ps.offsets is None:
            return True
        if ps.recovering:
            if final and self._eos:
                await self._abort_txn(ps)
            return True
        async with ps.commit_lock:
            if self._eos:
                return await self._commit_txn(ps, new_limit, force=force)
            committable = ps.offsets.committable()
            limit = max(ps.limit, new_limit or 0)
            key = (
                committable,
                ps.offsets.done_above(),
                tuple(sorted(ps.in_flight)),
                limit,
                tuple(sorted(ps.delete_from.items(), key=lambda kv: kv[0])),
            )
            if key == ps.last_commit_key:
                return True
            text = self._metadata(ps, committable, limit)
            consumer = self._consumer
            assert consumer is not None
            try:
                await consumer.commit({ps.tp: (committable, text)})
            except Exception as exc:  # KafkaError, IllegalStateError (unassigned meanwhile), ...
                log.warning(
                    "offset commit failed",
                    extra={"partition": ps.tp.partition, "error": type(exc).__name__},
                )
                return False
            self._committed(ps, committable, limit)
            ps.last_commit_key = key
            return True

    async def _advance_idle(self, ps: PartState) -> None:
        """Move an idle partition's commit position past records it can never receive.

        Transactional producers leave a control marker after their records, and compaction or
        aborted transactions leave gaps: the consumer's position moves past them without a record.
        With nothing pending, the position is exactly what is done, so lag and commits reach 0.
        """
        if self._consumer is None or (ps.offsets is not None and ps.offsets.pending) or ps.staged:
            return
        try:
            position = await asyncio.wait_for(self._consumer.position(ps.tp), 1.0)
        except Exception:  # KafkaError, TimeoutError, IllegalStateError (unassigned meanwhile)
            return
        if ps.offsets is None:
            if position > 0:
                ps.offsets = PartitionOffsets(position)
        else:
            ps.offsets.advance_to(position)
            self._check_recovery(ps)  # a suspect range may end in a transaction marker

    def _committed(self, ps: PartState, committable: int, limit: int) -> None:
        assert ps.offsets is not None
        ps.offsets.mark_committed(committable)
        ps.limit = limit
        self.counters["commits"] += 1
        self._metrics.set_committed(COMMANDS_ROLE, ps.tp.partition, committable)

    async def _commit_txn(
        self, ps: PartState, new_limit: int | None, *, force: bool = False
    ) -> bool:
        txn = ps.txn
        assert txn is not None
        assert ps.offsets is not None
        async with txn.lock:
            if (
                not txn.open
                and new_limit is None
                and not force
                and ps.offsets.committable() <= ps.offsets.committed
            ):
                return True
            try:
                if txn.pending:
                    await asyncio.gather(*(f for futs in txn.pending.values() for f in futs))
                for offset in txn.pending:
                    ps.offsets.complete(offset)
                txn.pending.clear()
                if not txn.open:
                    await txn.producer.begin_transaction()
                    txn.open = True
                committable = ps.offsets.committable()
                limit = max(ps.limit, new_limit or 0)
                text = self._metadata(ps, committable, limit)
                await txn.producer.send_offsets_to_transaction(
                    {ps.tp: (committable, text)}, self._s.kafka.group_id
                )
                await txn.producer.commit_transaction()
                txn.open = False
            except Exception as exc:
                self._transaction_failed(ps, exc, "transaction commit")
                return True
            self._committed(ps, committable, limit)
            return True

    async def _abort_txn(self, ps: PartState) -> None:
        txn = ps.txn
        if txn is None:
            return
        async with txn.lock:
            if txn.open:
                # A fenced producer is in a fatal state and refuses even to abort (aiokafka
                # raises AssertionError): the new owner's init_transactions aborts it anyway.
                with contextlib.suppress(Exception):
                    await txn.producer.abort_transaction()
                txn.open = False
            _forget_futures(txn.pending)

    async def _wait_idle(self, busy: Callable[[], bool], deadline: float) -> None:
        """Wait (without polling) until ``busy()`` is false or the monotonic deadline passes."""
        while busy() and self._fatal is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    # -- rebalances ---------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Give partitions back without leaving a zombie behind.

        Commands that have not yet sent their write are cancelled at once (also those waiting
        on a retry backoff, the circuit or the lease): the new owner runs them. Only commands
        whose write is on the wire or done, or that are publishing, may finish, within
        ``revoke_deadline_s`` (which start-up keeps below the session and rebalance timeouts).
        """
        self._metrics.rebalance()
        parts = [ps for tp, ps in self._parts.items() if tp in revoked]
        for ps in parts:
            ps.revoked = True
        self._lease_changed.set()  # writers waiting for the lease give up now
        self._sched.drop(lambda i: i.tp in revoked)
        cancelled = 0
        for ps in parts:
            for offset, task in list(ps.tasks.items()):
                if offset not in ps.committed_to:
                    task.cancel()
                    cancelled += 1
        deadline = time.monotonic() + self._p.revoke_deadline_s
        await self._wait_idle(lambda: any(ps.tasks for ps in parts), deadline)
        for ps in parts:
            for task in list(ps.tasks.values()):
                task.cancel()
        for ps in parts:
            try:
                remaining = max(1.0, deadline + 2.0 - time.monotonic())
                await asyncio.wait_for(self._commit_partition(ps, final=True), remaining)
            except FatalRuntimeError as exc:
                self._die(exc)
            except TimeoutError:
                log.warning(
                    "final commit on revoke timed out", extra={"partition": ps.tp.partition}
                )
            ps.abandoned = True
            self._processor.forget_recovery((ps.tp, ps.epoch))
        for ps in parts:
            self._parts.pop(ps.tp, None)
            self._metrics.forget_partition(COMMANDS_ROLE, ps.tp.partition)
            if ps.txn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ps.txn.producer.stop(), 10)
        self.assigned = bool(self._parts)
        log.info(
            "partitions revoked",
            extra={
                "partitions": sorted(ps.tp.partition for ps in parts),
                "cancelled_before_write": cancelled,
            },
        )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        new = sorted(tp for tp in assigned if tp not in self._parts)
        txns: dict[TopicPartition, _Txn] = {}
        if self._eos:
            for tp in new:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._s.kafka.bootstrap_servers,
                    client_id=f"{self._s.kafka.client_id}-tx-{tp.partition}",
                    transactional_id=f"norce-order-bridge.{self._s.kafka.group_id}.{tp.topic}.{tp.partition}",
                    enable_idempotence=True,
                    acks="all",
                    linger_ms=self._s.kafka.linger_ms,
                    transaction_timeout_ms=self._s.kafka.transaction_timeout_ms,
                    request_timeout_ms=self._s.kafka.request_timeout_ms,
                    **self._kafka_options,
                )
                await producer.start()  # init_transactions: fences a zombie owner first
                txns[tp] = _Txn(producer)
        committed = await fetch_committed_with_metadata(consumer, new)
        # Records at or beyond today's end offset were never dispatched by anyone: not suspect.
        ends = await consumer.end_offsets(new) if new else {}
        for tp in new:
            self._epoch += 1
            found = committed.get(tp)
            if found is not None:
                start, text = found
                meta = CommitMeta.decode(text, start)
                offsets: PartitionOffsets | None = PartitionOffsets(start)
                consumer.seek(tp, start)
            else:
                meta = CommitMeta()
                offsets = None
                start = 0
            suspect_limit = start
            if meta.limit is not None:
                suspect_limit = max(start, min(meta.limit, ends.get(tp, meta.limit)))
            recovering = suspect_limit > start
            ps = PartState(
                tp=tp,
                epoch=self._epoch,
                offsets=offsets,
                inherited=meta,
                skip={o for o in meta.done if o >= start},
                suspect_limit=suspect_limit,
                limit=max(start, suspect_limit),
                recovering=recovering,
                txn=txns.get(tp),
            )
            self._parts[tp] = ps
            if recovering:
                log.info(
                    "partition assigned with records to check for replays",
                    extra={
                        "partition": tp.partition,
                        "committed": start,
                        "suspect_until": suspect_limit,
                        "done_above": len(meta.done),
                    },
                )
        self.assigned = bool(self._parts)
        log.info(
            "partitions assigned", extra={"partitions": sorted(tp.partition for tp in assigned)}
        )

    # -- monitoring -------------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        interval = 0.25
        last_lag = 0.0
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(interval)
            lag = max(0.0, time.monotonic() - t0 - interval)
            self._metrics.event_loop_lag(lag)
            self._metrics.set_ready(self.ready)
            self._metrics.set_lease(self.lease.age(), self.lease.lost_count)
            self.heartbeat = time.monotonic()
            if self.heartbeat - last_lag >= 2.0:
                last_lag = self.heartbeat
                self._update_lag()

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp, ps in self._parts.items():
            try:
                hw = consumer.highwater(tp)
            except Exception:  # noqa: S112 - the partition was just revoked: nothing to report
                continue
            if hw is None:
                continue
            position = ps.offsets.committable() if ps.offsets is not None else 0
            self._metrics.set_lag(COMMANDS_ROLE, tp.partition, max(0, hw - position))

    # -- shutdown ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        self._draining = True
        deadline = time.monotonic() + self._p.drain_deadline_s
        log.info(
            "draining",
            extra={"in_flight": len(self._running), "deadline_s": self._p.drain_deadline_s},
        )
        await self._wait_idle(lambda: bool(self._running), deadline)
        cancelled = len(self._running)
        for t in list(self._running):
            t.cancel()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        if self._fatal is None:
            await self._commit_all([*self._parts.values()])
            for ps in list(self._parts.values()):
                with contextlib.suppress(FatalRuntimeError):
                    await self._commit_partition(ps, final=True)
        self.counters["cancelled_at_drain"] = cancelled

    async def _shutdown_kafka(self) -> None:
        for ps in list(self._parts.values()):
            if ps.txn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ps.txn.producer.stop(), 10)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 15)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 15)


def _forget_futures(pending: dict[int, list[asyncio.Future[Any]]]) -> None:
    """Drop pending send futures, retrieving their exceptions (no 'never retrieved' noise)."""
    for futs in pending.values():
        for fut in futs:
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    pending.clear()


class _ItemGate:
    """The write gate (:class:`bridge.lease.WriteGate`) of one command's task."""

    __slots__ = ("_item", "_ps", "_rt")

    def __init__(self, runtime: Runtime, item: WorkItem, ps: PartState) -> None:
        self._rt = runtime
        self._item = item
        self._ps = ps

    async def acquire(self) -> None:
        await self._rt._hold_lease(self._item, self._ps)
        self._ps.committed_to.add(self._item.offset)

    async def before_delete(self, previous_status: str | None) -> None:
        # Commit (offsets + metadata, or the open transaction) noting the state the order is
        # deleted from: once it is gone a replay cannot read it back (bridge.processor._gone).
        self._ps.delete_from[self._item.offset] = previous_status
        await self._rt._commit_partition(self._ps, force=True)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._rt.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._rt.on_assigned(set(assigned))


def kafka_client_options(
    settings: BridgeSettings, password: Callable[[], str | None]
) -> dict[str, Any]:
    """Security options for aiokafka clients (TLS, SASL) from the settings.

    TLS files that cannot be loaded raise :class:`~bridge.errors.ConfigError` naming the
    variable and the file (never its content). An encrypted client key is refused instead of
    letting OpenSSL prompt for its passphrase on a terminal.
    """
    import ssl

    from aiokafka.helpers import create_ssl_context

    from bridge.errors import ConfigError

    def why(exc: Exception) -> str:
        if isinstance(exc, ssl.SSLError):
            return exc.reason or exc.strerror or type(exc).__name__
        if isinstance(exc, OSError):
            return exc.strerror or type(exc).__name__
        return type(exc).__name__

    k = settings.kafka
    opts: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.security_protocol in ("SSL", "SASL_SSL"):
        try:
            context = create_ssl_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"BRIDGE_KAFKA__SSL_CAFILE: cannot load CA certificates from "
                f"{str(k.ssl_cafile)!r}: {why(exc)}"
            ) from None
        if k.ssl_keyfile is not None and k.ssl_certfile is None:
            raise ConfigError("BRIDGE_KAFKA__SSL_KEYFILE is set without BRIDGE_KAFKA__SSL_CERTFILE")
        if k.ssl_certfile is not None:

            def no_passphrase() -> bytes:
                raise ConfigError(
                    "BRIDGE_KAFKA__SSL_KEYFILE: the client key is encrypted; "
                    "provide an unencrypted key (a mounted Secret)"
                )

            try:
                context.load_cert_chain(
                    str(k.ssl_certfile),
                    str(k.ssl_keyfile) if k.ssl_keyfile else None,
                    password=no_passphrase,
                )
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"BRIDGE_KAFKA__SSL_CERTFILE/SSL_KEYFILE: cannot load the client certificate "
                    f"{str(k.ssl_certfile)!r} and key: {why(exc)}"
                ) from None
        if not k.ssl_check_hostname:
            context.check_hostname = False
        opts["ssl_context"] = context
    if k.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        opts["sasl_plain_password"] = password()
    return opts
