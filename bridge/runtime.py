"""The consuming engine: its loops (fetch, dispatch, commit, monitor), rebalances and drain.

Shape (one event loop, nothing blocking it)::

    fetch loop ──► ledger verdict, parse ──► KeyScheduler (one in flight per order id)
        ▲  pause/resume (bounded buffers, circuit open)          │ dispatch loop (≤ max_in_flight)
        │                                                         ▼
    commit loop ◄── PartitionLedger (offset + metadata) ◄── worker: Processor + Norce, publish

Where each concern lives: the fetch loop and flow control in :mod:`bridge.intake` (decisions in
:mod:`bridge.flow`), offsets, the reservation and replay verdicts in :mod:`bridge.ledger` (which
states the replay invariant), one command's task in :mod:`bridge.worker`, publishing and
committing per processing guarantee in :mod:`bridge.delivery`, when to commit in
:mod:`bridge.commits`, rebalances in :mod:`bridge.rebalance`, the Kafka clients in
:mod:`bridge.kafka_clients`. Everything that needs the consumer is built once it exists
(:class:`_Session`): no object is completed later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

from aiokafka import AIOKafkaConsumer

from bridge.circuit import CircuitBreaker
from bridge.codec import AvroCodec
from bridge.commits import Committer
from bridge.config import BridgeSettings
from bridge.delivery import Delivery, FatalRuntimeError, make_delivery
from bridge.intake import Fetcher
from bridge.kafka_clients import build_consumer
from bridge.kafka_compat import observe_group_liveness
from bridge.lease import MembershipLease, lease_margin_s
from bridge.metrics import BridgeMetrics
from bridge.partition import Partition, RuntimeState, WorkItem
from bridge.processor import Processor
from bridge.rebalance import RebalanceListener, Rebalancer, RestoreStates
from bridge.settle import ORDER_STATE_TOPIC
from bridge.state_store import restore
from bridge.tracing import NO_TRACING, Tracing
from bridge.vocabulary import COMMANDS_ROLE, TOPIC_ROLES
from bridge.worker import Worker

__all__ = ["COMMANDS_ROLE", "TOPIC_ROLES", "FatalRuntimeError", "Runtime"]

log = logging.getLogger("bridge.runtime")

# The final commits get at least this long, even when the drain used up its deadline.
_MIN_FINAL_COMMIT_S = 5.0
# Closing the consumer waits for a pending JoinGroup (and a rebalance may wait for a member
# killed with SIGKILL): it gets this long, well inside the chart's termination grace period.
_CONSUMER_CLOSE_S = 15.0


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
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._s = settings
        self._tracing = tracing
        self._codec = codec
        self._processor = processor
        self._metrics = metrics
        self._kafka_options = kafka_options
        self._circuit = circuit
        k = settings.kafka
        self._rebalance_timeout_ms = k.effective_rebalance_timeout_ms(
            settings.processing.revoke_deadline_s
        )
        lease_timeout = min(k.session_timeout_ms, self._rebalance_timeout_ms) / 1000
        self.lease = MembershipLease(lease_timeout, lease_margin_s(lease_timeout))
        self._state = RuntimeState(self.lease)

    # -- public, read-only views --------------------------------------------------------------

    def stop(self) -> None:
        """Ask the runtime to stop fetching and drain (at once, even in a rebalance)."""
        self._state.stop()

    @property
    def ready(self) -> bool:
        """Member of the group and able to reach the broker; partitions are not required.

        An idle member (more replicas than partitions, a surge pod in a rolling update) is
        ready: requiring partitions would stall rollouts. A wedged process is caught by
        ``/healthz`` (the loop heartbeat), a stuck partition by the lag and no-progress alerts.
        """
        state = self._state
        return state.broker_ok and not state.draining and self.lease.renewed_at is not None

    @property
    def draining(self) -> bool:
        return self._state.draining

    @property
    def broker_ok(self) -> bool:
        return self._state.broker_ok

    @property
    def heartbeat(self) -> float:
        """Monotonic time the event loop last proved alive."""
        return self._state.heartbeat

    @property
    def counters(self) -> dict[str, int]:
        return self._state.counters

    @property
    def assigned(self) -> bool:
        return bool(self._state.parts)

    @property
    def assigned_partitions(self) -> frozenset[int]:
        return frozenset(tp.partition for tp in self._state.parts)

    @property
    def in_flight(self) -> int:
        return len(self._state.running)

    @property
    def buffered(self) -> int:
        return sum(part.buffered for part in self._state.parts.values())

    @property
    def all_paused(self) -> bool:
        """Every partition is paused (the total buffer is full or the API circuit is open)."""
        return self._state.all_paused

    @property
    def circuit_state(self) -> str:
        """The API circuit breaker's state: ``closed``, ``open`` or ``half_open``."""
        return self._circuit.state

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until stopped; drain, commit and close on the way out."""
        s = self._s
        consumer = build_consumer(s, self._kafka_options, self._rebalance_timeout_ms)
        delivery = make_delivery(s, self._kafka_options, self._state, self._metrics, consumer)
        await delivery.start()
        try:
            await consumer.start()
            observe_group_liveness(consumer, self._on_alive)
            session = _Session(
                self._state,
                consumer,
                delivery,
                settings=s,
                processor=self._processor,
                circuit=self._circuit,
                metrics=self._metrics,
                codec=self._codec,
                is_ready=lambda: self.ready,
                restore_states=functools.partial(restore, s, self._kafka_options),
                tracing=self._tracing,
            )
            consumer.subscribe([s.topics.commands], listener=RebalanceListener(session.rebalancer))
            self._state.broker_ok = True
            await session.run()
        finally:
            await delivery.close_partitions()
            await _close_consumer(consumer)
            await delivery.close()
        if self._state.fatal is not None:
            raise FatalRuntimeError(
                f"runtime stopped on a fatal error: {self._state.fatal}"
            ) from self._state.fatal

    def _on_alive(self, sent_at: float) -> None:
        """A Heartbeat/SyncGroup sent at ``sent_at`` succeeded: the lease is renewed."""
        self.lease.renew(sent_at)
        self._state.lease_changed.set()


async def _close_consumer(consumer: AIOKafkaConsumer) -> None:
    """Leave the group and close, at most ``_CONSUMER_CLOSE_S`` (it waits for a pending join)."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(consumer.stop(), _CONSUMER_CLOSE_S)
    except TimeoutError:
        log.warning(
            "consumer did not close in time; if it had not left the group yet, the group "
            "waits for our session to time out",
            extra={"seconds": _CONSUMER_CLOSE_S},
        )
    except Exception as exc:
        log.warning("consumer close failed", extra={"error": type(exc).__name__})
    else:
        seconds = time.monotonic() - started
        if seconds > 1.0:
            log.info("consumer closed", extra={"seconds": round(seconds, 1)})


class _Session:
    """One run of the runtime: every part that needs the started consumer, and the loops."""

    def __init__(
        self,
        state: RuntimeState,
        consumer: AIOKafkaConsumer,
        delivery: Delivery,
        *,
        settings: BridgeSettings,
        processor: Processor,
        circuit: CircuitBreaker,
        metrics: BridgeMetrics,
        codec: AvroCodec,
        is_ready: Callable[[], bool],
        restore_states: RestoreStates | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        p = settings.processing
        self._state = state
        self._consumer = consumer
        self._p = p
        self._metrics = metrics
        self._is_ready = is_ready
        self.committer = Committer(
            state,
            consumer.position,
            delivery,
            interval_s=p.commit_interval_s,
            reserve_chunk=p.reserve_chunk,
        )
        topics = settings.topics
        self.worker = Worker(
            state,
            processor=processor,
            circuit=circuit,
            metrics=metrics,
            codec=codec,
            topics={
                "snapshot": topics.snapshots,
                "event": topics.events,
                "result": topics.results,
                "dlq": topics.dlq,
                ORDER_STATE_TOPIC: topics.order_state,
            },
            delivery=delivery,
            committer=self.committer,
            tracing=tracing,
        )
        self.fetcher = Fetcher(
            state,
            consumer,
            processing=p,
            codec=codec,
            circuit=circuit,
            metrics=metrics,
            committer=self.committer,
        )
        self.rebalancer = Rebalancer(
            state,
            consumer,
            delivery=delivery,
            committer=self.committer,
            processor=processor,
            metrics=metrics,
            revoke_deadline_s=p.revoke_deadline_s,
            restore_states=restore_states,
        )

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            loops = [
                tg.create_task(self._dispatch_loop(tg), name="dispatch"),
                tg.create_task(self.committer.loop(), name="commit"),
                tg.create_task(self._monitor_loop(), name="monitor"),
            ]
            await self.fetcher.loop()
            await self._drain()
            for t in loops:
                t.cancel()

    # -- dispatching ----------------------------------------------------------------------------

    async def _dispatch_loop(self, tg: asyncio.TaskGroup) -> None:
        state = self._state
        max_in_flight = self._p.max_in_flight
        metrics = self._metrics
        while True:
            await state.wake.wait()
            state.wake.clear()
            while len(state.running) < max_in_flight and not state.draining:
                item = state.sched.pop_ready()
                if item is None:
                    break
                part = state.parts.get(item.tp)
                if part is None or part.epoch != item.epoch or part.revoked:
                    state.sched.done(item.key)
                    continue
                self._start(tg, item, part)
            metrics.set_in_flight(len(state.running))

    def _start(self, tg: asyncio.TaskGroup, item: WorkItem, part: Partition) -> None:
        state = self._state
        part.ledger.dispatched(item.offset, int(time.time() * 1000))
        task = tg.create_task(self.worker.run(item, part))
        state.running.add(task)
        part.tasks[item.offset] = task
        # One done callback (one loop callback per command, not two). It runs also when the
        # task is cancelled before it ever ran (its finally never runs): a key left busy would
        # stall every later command of that order.
        task.add_done_callback(functools.partial(self._task_done, item.key))

    def _task_done(self, key: Hashable, task: asyncio.Task[None]) -> None:
        # Wake the dispatcher only once the task has left ``running``: waking it from the
        # worker's ``finally`` would let it see a full ``running`` and go back to sleep.
        state = self._state
        state.sched.done(key)
        state.running.discard(task)
        self._metrics.set_in_flight(len(state.running))
        state.wake.set()
        state.progress.set()

    # -- monitoring -----------------------------------------------------------------------------

    async def _monitor_loop(self) -> None:
        state = self._state
        metrics = self._metrics
        lease = state.lease
        interval = 0.25
        last_lag = 0.0
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(interval)
            metrics.event_loop_lag(max(0.0, time.monotonic() - t0 - interval))
            metrics.set_ready(self._is_ready())
            metrics.set_lease(lease.age(), lease.lost_count)
            state.heartbeat = time.monotonic()
            if state.heartbeat - last_lag >= 2.0:
                last_lag = state.heartbeat
                self._update_lag()

    def _update_lag(self) -> None:
        for tp, part in self._state.parts.items():
            try:
                hw = self._consumer.highwater(tp)
            except Exception:  # noqa: S112 - the partition was just revoked: nothing to report
                continue
            if hw is None:
                continue
            lag = max(0, hw - part.ledger.position)
            self._metrics.set_lag(COMMANDS_ROLE, tp.partition, lag)

    # -- shutdown -------------------------------------------------------------------------------

    async def _drain(self) -> None:
        state = self._state
        state.draining = True
        deadline = time.monotonic() + self._p.drain_deadline_s
        log.info(
            "draining",
            extra={"in_flight": len(state.running), "deadline_s": self._p.drain_deadline_s},
        )
        await state.wait_idle(lambda: bool(state.running), deadline)
        cancelled = len(state.running)
        for t in list(state.running):
            t.cancel()
        if state.running:
            await asyncio.gather(*state.running, return_exceptions=True)
        if state.fatal is None:
            # Bounded like the rest of the drain: a commit to a coordinator that does not answer
            # (aiokafka retries it without end) must not keep the process from exiting. What is
            # not committed is replayed by the next owner, which the ledger makes safe.
            budget = max(_MIN_FINAL_COMMIT_S, deadline - time.monotonic())
            try:
                async with asyncio.timeout(budget):
                    await self.committer.commit_all([*state.parts.values()])
                    for part in list(state.parts.values()):
                        with contextlib.suppress(FatalRuntimeError):
                            await self.committer.commit(part, final=True)
            except TimeoutError:
                log.warning(
                    "final commits did not finish within the drain deadline; the next owner "
                    "replays what was not committed",
                    extra={"seconds": round(budget, 1)},
                )
        state.counters["cancelled_at_drain"] = cancelled
