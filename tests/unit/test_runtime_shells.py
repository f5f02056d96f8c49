"""The runtime's shells without a broker: the committer and one command's worker, driven
through the :class:`bridge.delivery.Delivery` protocol by a recording delivery (our own
interface, not Kafka's; the Kafka-backed strategies are covered by the broker tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from prometheus_client import CollectorRegistry

from bridge.circuit import CircuitBreaker
from bridge.codec import AvroCodec
from bridge.commands import SetOrderState
from bridge.commits import Committer
from bridge.config import ProcessingSettings
from bridge.delivery import FatalRuntimeError
from bridge.errors import InvalidCommandError, NorceApiError
from bridge.intake import Fetcher
from bridge.lease import MembershipLease
from bridge.ledger import CommitMeta, PartitionLedger
from bridge.metrics import BridgeMetrics
from bridge.partition import Partition, RuntimeState, WorkItem
from bridge.processor import Processor, SourceRecord
from bridge.settle import EncodedRecord
from bridge.worker import Worker

TP = TopicPartition("cmds", 0)
TOPICS = {"snapshot": "snaps", "event": "evs", "result": "res", "dlq": "dead"}


class RecordingDelivery:
    """Publishes into a list and commits what the ledger asks, as a broker would store it."""

    def __init__(self, *, fail_commit: BaseException | None = None) -> None:
        self.published: list[tuple[int, list[EncodedRecord]]] = []
        self.commits: list[tuple[int, str]] = []
        self.aborts = 0
        self.fail_commit = fail_commit
        self.batches: list[list[int]] = []  # the partitions of each commit_many call

    async def start(self) -> None:
        return None

    async def open(self, tps: Sequence[TopicPartition]) -> None:
        return None

    async def publish(
        self, part: Partition, offset: int, records: list[EncodedRecord], live: Callable[[], bool]
    ) -> bool:
        self.published.append((offset, records))
        part.complete(offset)
        return True

    async def commit(self, part: Partition, new_limit: int | None, *, force: bool) -> bool:
        if self.fail_commit is not None:
            raise self.fail_commit
        request = part.ledger.commit_request(int(time.time() * 1000), new_limit)
        if request is None:
            return True
        self.commits.append((request.offset, request.metadata))
        part.ledger.committed(request)
        return True

    async def commit_many(self, parts: Sequence[Partition]) -> None:
        self.batches.append(sorted(p.tp.partition for p in parts))
        for part in parts:
            await self.commit(part, None, force=False)

    async def abort(self, part: Partition) -> None:
        self.aborts += 1

    async def close_partition(self, tp: TopicPartition) -> None:
        return None

    async def close_partitions(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _state(*, lease_valid: bool = True) -> RuntimeState:
    lease = MembershipLease(10.0, 2.0, clock=lambda: 100.0)
    if lease_valid:
        lease.renew(99.0)
    return RuntimeState(lease)


def _committer(state: RuntimeState, delivery: RecordingDelivery, position: int = 0) -> Committer:
    async def at(_tp: TopicPartition) -> int:
        return position

    return Committer(state, at, delivery, interval_s=0.01, reserve_chunk=10)


def _part(
    state: RuntimeState, committer: Committer, ledger: PartitionLedger[WorkItem]
) -> Partition:
    part = Partition(TP, 1, ledger, committer.on_recovered)
    state.parts[TP] = part
    return part


def _item(offset: int, value: bytes, command: SetOrderState | None = None) -> WorkItem:
    src = SourceRecord("cmds", 0, offset, b"k", value, (), int(time.time() * 1000))
    error = None if command else InvalidCommandError("invalid_json", "not JSON")
    key = command.order_id if command else ("invalid", TP, offset)
    return WorkItem(TP, offset, key, src, command, error, 1, None, time.monotonic())


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5.0
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_records_past_the_reservation_wait_for_its_commit() -> None:
    """A fresh partition commits a reservation first, then releases its records in order."""
    state = _state()
    delivery = RecordingDelivery()
    committer = _committer(state, delivery)
    part = _part(state, committer, PartitionLedger())
    for offset in (0, 1):
        assert part.ledger.accept(offset) is not None
        assert not part.ledger.admit(offset, _item(offset, b"x"))
    assert state.sched.pop_ready() is None
    committer.ensure_reservation(part)
    committer.ensure_reservation(part)  # one reservation task at a time
    await _until(lambda: not part.reserving, "the reservation")
    assert len(delivery.commits) == 1
    offset, text = delivery.commits[0]
    assert CommitMeta.decode(text, offset).limit == 12
    first = state.sched.pop_ready()
    assert first is not None
    assert first.offset == 0


async def test_commits_wait_for_the_lease_and_for_the_recovery() -> None:
    """No lease: nothing is committed (a final commit aborts); recovering: the same."""
    delivery = RecordingDelivery()
    no_lease = _state(lease_valid=False)
    committer = _committer(no_lease, delivery)
    part = _part(no_lease, committer, PartitionLedger((0, "")))
    assert not await committer.commit(part)
    assert await committer.commit(part, final=True)
    assert delivery.aborts == 1
    state = _state()
    committer = _committer(state, delivery)
    meta = CommitMeta(limit=2, at_ms=1).encode(0)
    recovering = _part(state, committer, PartitionLedger((0, meta)))
    assert await committer.commit(recovering, final=True)
    assert delivery.aborts == 2
    assert delivery.commits == []


async def test_an_idle_partition_commits_past_records_it_never_receives() -> None:
    """The consumer's position past a transaction marker becomes the committed offset."""
    state = _state()
    delivery = RecordingDelivery()
    committer = _committer(state, delivery, position=7)
    part = _part(state, committer, PartitionLedger((5, "")))
    await committer.commit_all()
    assert delivery.commits[-1][0] == 7
    lost = _part(state, committer, PartitionLedger((5, "")))
    lost.abandoned = True
    assert await committer.commit(lost)
    assert part.ledger.committed_offset == 7


async def test_the_periodic_commit_sends_every_due_partition_in_one_batch() -> None:
    """One commit_many call (one OffsetCommit request at least-once) for the partitions that
    may commit; an abandoned or recovering partition is left out of it."""
    state = _state()
    delivery = RecordingDelivery()
    committer = _committer(state, delivery, position=3)
    recovering_meta = CommitMeta(limit=10, at_ms=1).encode(0)  # offsets 0-9 to replay
    ledgers: list[PartitionLedger[WorkItem]] = [
        PartitionLedger((0, "")),
        PartitionLedger((0, "")),
        PartitionLedger((0, "")),
        PartitionLedger((0, recovering_meta)),
    ]
    for number, ledger in enumerate(ledgers):
        tp = TopicPartition("cmds", number)
        state.parts[tp] = Partition(tp, 1, ledger, committer.on_recovered)
    state.parts[TopicPartition("cmds", 2)].abandoned = True
    await committer.commit_all()
    assert delivery.batches == [[0, 1]]
    assert [offset for offset, _ in delivery.commits] == [3, 3]


async def test_a_fatal_commit_stops_the_runtime() -> None:
    """A commit that cannot continue safely ends the runtime with the error."""
    state = _state()
    delivery = RecordingDelivery(fail_commit=FatalRuntimeError("txn"))
    committer = _committer(state, delivery)
    _part(state, committer, PartitionLedger((0, "")))
    await committer.commit_all()
    assert isinstance(state.fatal, FatalRuntimeError)
    assert state.stopping.is_set()


class DownApi:
    """The Norce API answering 503 to everything."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_order_json(self, order_id: str, *, merchant: str, channel: str) -> Any:
        self.calls += 1
        raise NorceApiError("unavailable", status=503, endpoint="get_order")

    async def set_state(self, order_id: str, status: str, *, merchant: str, channel: str) -> Any:
        raise NorceApiError("unavailable", status=503, endpoint="set_state")

    async def delete_order(self, order_id: str, *, merchant: str, channel: str) -> Any:
        raise NorceApiError("unavailable", status=503, endpoint="delete_order")


def _worker(
    state: RuntimeState, delivery: RecordingDelivery, api: DownApi
) -> tuple[Worker, Committer, BridgeMetrics, CircuitBreaker]:
    codec = AvroCodec.load()
    metrics = BridgeMetrics(
        CollectorRegistry(), version="t", processing_guarantee="at_least_once", ordering="key"
    )
    circuit = CircuitBreaker(threshold=100, open_s=1, max_open_s=1)
    committer = _committer(state, delivery)
    worker = Worker(
        state,
        processor=Processor(api, codec=codec),
        circuit=circuit,
        metrics=metrics,
        codec=codec,
        topics=TOPICS,
        delivery=delivery,
        committer=committer,
    )
    return worker, committer, metrics, circuit


async def test_an_invalid_record_is_dead_lettered_published_and_done() -> None:
    """Bad bytes: a dead letter on the DLQ topic, counted once as failed, offset done."""
    state = _state()
    delivery = RecordingDelivery()
    worker, committer, _, _ = _worker(state, delivery, DownApi())
    part = _part(state, committer, PartitionLedger((0, "")))
    assert part.ledger.accept(0) is not None
    part.ledger.dispatched(0, 1)
    part.buffered = 1
    await worker.run(_item(0, b"{not json"), part)
    assert [r[0] for r in delivery.published[0][1]] == ["dead"]
    assert delivery.published[0][1][0][2] == b"{not json"
    assert state.counters["failed"] == 1
    assert state.counters["dead_lettered"] == 1
    assert part.ledger.position == 1
    assert part.buffered == 0


async def test_a_revoked_partition_abandons_its_command_without_output() -> None:
    """The lease check before publishing fails once the partition is revoked: nothing out."""
    state = _state()
    delivery = RecordingDelivery()
    worker, committer, _, _ = _worker(state, delivery, DownApi())
    part = _part(state, committer, PartitionLedger((0, "")))
    assert part.ledger.accept(0) is not None
    part.revoked = True
    await worker.run(_item(0, b"{not json"), part)
    assert delivery.published == []
    assert part.ledger.position == 0


async def test_an_api_outage_holds_the_command_until_its_partition_goes() -> None:
    """Systemic API failures are retried (never dead-lettered); revoking ends the wait."""
    state = _state()
    delivery = RecordingDelivery()
    api = DownApi()
    worker, committer, _, circuit = _worker(state, delivery, api)
    part = _part(state, committer, PartitionLedger((0, "")))
    assert part.ledger.accept(0) is not None
    command = SetOrderState.model_validate(
        {
            "commandId": "c-1",
            "orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
            "merchant": "norce",
            "channel": "1",
            "issuedAt": datetime.now(UTC).isoformat(),
            "state": "accepted",
        }
    )
    task = asyncio.get_running_loop().create_task(worker.run(_item(0, b"{}", command), part))
    await _until(lambda: api.calls >= 2, "the command to be retried")
    assert circuit.state == "closed"  # below the threshold
    part.revoked = True
    await asyncio.wait_for(task, 10)
    assert delivery.published == []
    assert state.counters["failed"] == 0


async def test_an_item_without_command_nor_error_is_dead_lettered_as_internal_error() -> None:
    """A malformed work item is a bug: the last resort dead-letters it, the task survives."""
    item = _item(0, b"x")
    item.error = None
    state = _state()
    delivery = RecordingDelivery()
    worker, committer, _, _ = _worker(state, delivery, DownApi())
    part = _part(state, committer, PartitionLedger((0, "")))
    assert part.ledger.accept(0) is not None
    await worker.run(item, part)
    assert delivery.published[0][1][0][0] == "dead"
    assert state.counters["failed"] == 1


async def test_the_fetcher_turns_ledger_verdicts_into_work() -> None:
    """Done offsets are skipped, suspects carry their window, fresh ones wait or dispatch."""
    state = _state()
    delivery = RecordingDelivery()
    committer = _committer(state, delivery)
    metrics = BridgeMetrics(
        CollectorRegistry(), version="t", processing_guarantee="at_least_once", ordering="key"
    )
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", enable_auto_commit=False)
    try:
        fetcher = Fetcher(
            state,
            consumer,
            processing=ProcessingSettings(),
            codec=AvroCodec.load(),
            circuit=CircuitBreaker(threshold=5, open_s=1, max_open_s=1),
            metrics=metrics,
            committer=committer,
        )
        meta = CommitMeta(done=(1,), limit=3, at_ms=5_000).encode(0)
        part = _part(state, committer, PartitionLedger((0, meta), end_offset=10))
        command = (
            b'{"type": "DeleteOrder", "commandId": "c-1", '
            b'"orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf", "merchant": "norce", "channel": "1", '
            b'"issuedAt": "2026-11-27T10:00:01Z"}'
        )
        for offset in range(4):
            fetcher.accept(
                part, ConsumerRecord("cmds", 0, offset, 0, 0, b"k", command, None, 0, 0, ())
            )
        fetcher.accept(part, ConsumerRecord("cmds", 0, 0, 0, 0, b"k", b"{", None, 0, 0, ()))
        assert state.counters["consumed"] == 4
        assert state.counters["skipped_replayed"] == 1
        first = state.sched.pop_ready()
        assert first is not None
        assert first.offset == 0
        assert first.suspect_since == datetime.fromtimestamp(5, UTC)
        assert first.command is not None
        assert part.buffered == 3  # 0 and 2 (suspects), 3 waits beyond the reservation
        fetcher.flow_control()  # nothing assigned to the unstarted consumer: nothing paused
        assert not state.all_paused
    finally:
        await consumer.stop()
