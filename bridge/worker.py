"""One command's task: hold the lease, execute (circuit, retries), encode, publish, account.

A command that cannot be handled ends in a dead letter (``internal_error`` as the last resort),
never in the task group failing. A systemic API failure holds the command (with backoff, behind
the circuit) instead of dead-lettering it. Every write (and publishing) first checks the
membership lease (:mod:`bridge.lease`): an expired lease on a partition still assigned waits, a
revoked partition abandons the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from bridge.circuit import CircuitBreaker
from bridge.codec import AvroCodec
from bridge.commands import RefreshOrder, UnresolvedSchemaError, parse_command, received_at_ms
from bridge.commits import Committer
from bridge.delivery import Delivery, FatalRuntimeError
from bridge.errors import AvroError, InvalidCommandError, NorceApiError
from bridge.lease import LeaseLost, write_gate
from bridge.logs import command_id_var, correlation_id_var, order_id_var
from bridge.metrics import BridgeMetrics
from bridge.outputs import new_order_state
from bridge.partition import Partition, RuntimeState, WorkItem
from bridge.processor import Outcome, Processor
from bridge.schema_registry import RegistryError, RegistryUnavailableError
from bridge.settle import EncodedRecord, account_outcome, encode_outputs
from bridge.tracing import NO_TRACING, CommandTrace, Tracing

log = logging.getLogger("bridge.runtime")

UNEXPECTED_FAILURE_LIMIT = 5


class Worker:
    def __init__(
        self,
        state: RuntimeState,
        *,
        processor: Processor,
        circuit: CircuitBreaker,
        metrics: BridgeMetrics,
        codec: AvroCodec,
        topics: Mapping[str, str],
        delivery: Delivery,
        committer: Committer,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._state = state
        self._processor = processor
        self._circuit = circuit
        self._metrics = metrics
        self._codec = codec
        self._topics = topics
        self._delivery = delivery
        self.committer = committer
        self._rng = random.Random()
        self._tracing = tracing
        self._roles = {topic: role for role, topic in topics.items()}  # for the producer spans

    async def run(self, item: WorkItem, part: Partition) -> None:
        """The task of one dispatched record."""
        state = self._state
        cmd = item.command
        tokens = (
            command_id_var.set(cmd.command_id if cmd else None),
            order_id_var.set(cmd.order_id if cmd else None),
            correlation_id_var.set(cmd.correlation_id if cmd else None),
        )
        gate_token = write_gate.set(ItemGate(self, item, part))
        started = time.monotonic()
        # The consumer span (no-op unless tracing is on): current while the command runs.
        trace = self._tracing.consume(item.src, cmd)
        try:
            outcome = await self._execute(item, part)
            if outcome is None or not state.live(item, part):
                return
            try:
                records = encode_outputs(
                    outcome, self._topics, self._codec, state_partition=item.tp.partition
                )
            except Exception as exc:  # e.g. a value the schema cannot carry: last resort
                outcome, records = self._last_resort(item, exc)
            trace.outcome(outcome)
            if not await self._publish(item, part, trace.produce(records, self._roles), trace):
                return
            self._published_state(item, part, outcome)
            ts = item.src.timestamp_ms
            account_outcome(
                self._metrics,
                state.counters,
                outcome,
                n_records=len(records),
                seconds=time.monotonic() - started,
                age_s=time.time() - ts / 1000 if ts > 0 else None,
                where={"offset": item.offset, "partition": item.tp.partition},
            )
        except FatalRuntimeError as exc:
            state.die(exc)
        finally:
            trace.end()
            for var, token in zip(
                (command_id_var, order_id_var, correlation_id_var), tokens, strict=True
            ):
                var.reset(token)
            write_gate.reset(gate_token)
            part.tasks.pop(item.offset, None)
            part.committed_to.discard(item.offset)
            if state.live(item, part):
                part.buffered -= 1
            state.wake.set()
            state.progress.set()

    def _published_state(self, item: WorkItem, part: Partition, outcome: Outcome) -> None:
        """The order's outputs are acknowledged: remember what was published (the order state
        store's record went with them), and time a notification's way to its snapshot."""
        cmd = item.command
        state = new_order_state(outcome)
        if cmd is None or state is None:
            return
        part.states[cmd.order_id] = state
        if isinstance(cmd, RefreshOrder):
            received = received_at_ms(item.src.headers)
            if received is not None:
                self._metrics.refresh.notification_to_snapshot(time.time() - received / 1000)

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
            return outcome, encode_outputs(outcome, self._topics, self._codec)
        except Exception:  # the dead letter alone is raw bytes: it always encodes
            outcome = self._processor.internal_error(
                item.src, exc, with_result=False, codec=self._codec
            )
            return outcome, encode_outputs(outcome, self._topics, self._codec)

    async def _execute(self, item: WorkItem, part: Partition) -> Outcome | None:
        try:
            return await self._execute_once(item, part)
        except (asyncio.CancelledError, FatalRuntimeError):
            raise
        except Exception as exc:  # last resort: never let a record stop us
            return self._last_resort(item, exc)[0]

    async def _resolve_schema(self, item: WorkItem, part: Partition) -> bool:
        """Fetch the writer schema of a Confluent-framed command (once per id, then cached)
        and parse the record again. The registry down holds the command like Norce down
        (backoff, never a dead letter); an id it does not know leaves the dead letter. False
        when the partition went away meanwhile."""
        error = item.error
        assert isinstance(error, UnresolvedSchemaError)
        waits = 0
        while True:
            if not self._state.live(item, part):
                return False
            try:
                await self._codec.resolve(error.schema_id)
                break
            except RegistryUnavailableError as exc:
                waits += 1
                log.warning(
                    "schema registry unavailable; holding the command",
                    extra={"error": str(exc), "schema_id": error.schema_id},
                )
                await asyncio.sleep(min(5.0, 0.05 * 2 ** min(waits, 7)) * self._rng.random())
            except (RegistryError, AvroError) as exc:
                log.info(
                    "a command's schema id cannot be resolved",
                    extra={"error": str(exc), "schema_id": error.schema_id},
                )
                return True  # dead-lettered as invalid_avro
        value = item.src.value
        try:
            command = parse_command(
                value, item.src.headers, codec=self._codec, max_bytes=len(value or b"")
            )
            item.command, item.error = command, None
            # The log context run() set while the command was still unknown (reset by run()).
            command_id_var.set(command.command_id)
            order_id_var.set(command.order_id)
            correlation_id_var.set(command.correlation_id)
        except InvalidCommandError as exc:
            item.error = exc
        return True

    async def _execute_once(self, item: WorkItem, part: Partition) -> Outcome | None:
        if (
            item.command is None
            and isinstance(item.error, UnresolvedSchemaError)
            and self._codec.can_resolve
            and not await self._resolve_schema(item, part)
        ):
            return None
        if item.command is None:
            if item.error is None:
                raise ValueError("a work item without a command nor an error")
            return self._processor.invalid(item.src, item.error, codec=self._codec)
        state = self._state
        unexpected = 0
        systemic = 0
        while True:
            if not state.live(item, part):
                return None
            if self._circuit.is_open:  # closed: acquire() would return at once
                await self._circuit.acquire()
            if not state.live(item, part):
                self._circuit.abandon()
                return None
            dispatched = part.ledger.dispatched_at_ms(item.offset) or int(time.time() * 1000)
            try:
                outcome = await self._processor.handle(
                    item.command,
                    item.src,
                    suspect_since=item.suspect_since,
                    scope=(item.tp, item.epoch),
                    delete_note=item.delete_note,
                    dispatched_at=datetime.fromtimestamp(dispatched / 1000, UTC),
                    published=part.states.get(item.command.order_id),
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
                if part.revoked:
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

    async def _publish(
        self, item: WorkItem, part: Partition, records: list[EncodedRecord], trace: CommandTrace
    ) -> bool:
        try:
            await self.hold_lease(item, part)
        except LeaseLost:
            self._metrics.command_abandoned()
            return False
        part.committed_to.add(item.offset)
        ok = await self._delivery.publish(
            part, item.offset, records, lambda: self._state.live(item, part)
        )
        trace.published(ok)
        return ok

    async def hold_lease(self, item: WorkItem, part: Partition) -> None:
        """Return while this instance provably owns ``item``'s partition (:mod:`bridge.lease`).

        An expired lease on a partition still assigned waits for the next heartbeat (a short
        pause keeps its partitions and its work); a revoked or lost partition raises LeaseLost.
        """
        state = self._state
        lease = state.lease
        waited = False
        while True:
            if part.revoked or not state.live(item, part):
                raise LeaseLost(f"partition {part.tp.partition} is no longer assigned here")
            if lease.valid():
                if waited:
                    log.info(
                        "membership lease renewed; writes resume",
                        extra={"partition": part.tp.partition},
                    )
                return
            if not waited:
                waited = True
                age = lease.age()
                log.warning(
                    "membership lease expired; holding writes until a heartbeat succeeds",
                    extra={
                        "partition": part.tp.partition,
                        "lease_age_s": None if age is None else round(age, 3),
                        "lease_limit_s": round(lease.limit_s, 3),
                    },
                )
            state.lease_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.lease_changed.wait(), 0.25)


class ItemGate:
    """The write gate (:class:`bridge.lease.WriteGate`) of one command's task."""

    __slots__ = ("_item", "_part", "_worker")

    def __init__(self, worker: Worker, item: WorkItem, part: Partition) -> None:
        self._worker = worker
        self._item = item
        self._part = part

    async def acquire(self) -> None:
        await self._worker.hold_lease(self._item, self._part)
        self._part.committed_to.add(self._item.offset)

    async def before_delete(self, previous_status: str | None) -> None:
        # Commit (offsets + metadata, or the open transaction) noting the state the order is
        # deleted from: once it is gone a replay cannot read it back (bridge.processor._gone).
        self._part.ledger.note_delete(self._item.offset, previous_status)
        await self._worker.committer.commit(self._part, force=True)
