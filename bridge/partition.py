"""The runtime's in-memory state: work items, assigned partitions and what the loops share.

Nothing here does I/O. A :class:`Partition` is built complete when it is assigned (its ledger
from the committed offset and metadata) and dropped when it is revoked; :class:`RuntimeState` is
the state every loop of one runtime reads and writes (one event loop: no locks needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition

from bridge.commands import AnyCommand
from bridge.errors import InvalidCommandError
from bridge.lease import MembershipLease
from bridge.ledger import PartitionLedger
from bridge.order_state import OrderState
from bridge.processor import SourceRecord
from bridge.scheduler import KeyScheduler
from bridge.vocabulary import Outcome

log = logging.getLogger("bridge.runtime")


@dataclass(slots=True)
class WorkItem:
    """One fetched record on its way through the scheduler to a worker."""

    tp: TopicPartition
    offset: int
    key: Hashable
    src: SourceRecord
    command: AnyCommand | None
    error: InvalidCommandError | None
    epoch: int
    suspect_since: datetime | None
    received: float
    delete_note: tuple[str | None] | None = None  # noted pre-DELETE state from the last owner


@dataclass(eq=False)
class Partition:
    """One assignment of one partition (``epoch`` tells assignments of the same one apart)."""

    tp: TopicPartition
    epoch: int
    ledger: PartitionLedger[WorkItem]
    on_recovered: Callable[[Partition], None]
    buffered: int = 0
    paused: bool = False
    # paused for good: its next batch cannot be decoded by the Kafka client (Fetcher.loop)
    held: bool = False
    revoked: bool = False  # no new dispatches; in-flight work may still finish and commit
    abandoned: bool = False  # no longer ours: late completions are dropped
    reserving: bool = False
    commit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    # offsets whose command has sent a write or started publishing: a revoke lets these finish
    # (bounded); every other task of the partition is cancelled at once.
    committed_to: set[int] = field(default_factory=set)
    # order id -> what the bridge last published for it (restored from the order state store
    # before the partition's first record runs; updated when a command's outputs are acked)
    states: dict[str, OrderState] = field(default_factory=dict)

    def complete(self, offset: int) -> None:
        """``offset`` is done (its outputs are acknowledged or in the partition's transaction)."""
        if self.ledger.complete(offset):
            self.on_recovered(self)

    def recovered_if(self, ended: bool) -> None:
        if ended:
            self.on_recovered(self)


COUNTER_NAMES = (
    "consumed",
    *(o.value for o in Outcome),  # plain str keys (orjson, logs)
    "dead_lettered",
    "skipped_replayed",
    "published",
    "commits",
)


class RuntimeState:
    """What the fetch, dispatch, commit and monitor loops and the rebalance callbacks share."""

    def __init__(self, lease: MembershipLease) -> None:
        self.lease = lease
        self.parts: dict[TopicPartition, Partition] = {}
        self.sched: KeyScheduler[WorkItem] = KeyScheduler()
        self.running: set[asyncio.Task[None]] = set()
        self.running_aux: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self.progress = asyncio.Event()
        self.stopping = asyncio.Event()
        # Called by stop(): end waits that do not watch ``stopping`` (the fetch in a rebalance).
        self.on_stop: list[Callable[[], None]] = []
        self.lease_changed = asyncio.Event()
        self.draining = False
        self.fatal: BaseException | None = None
        self.all_paused = False
        self.broker_ok = False
        self.epoch = 0
        self.heartbeat = time.monotonic()
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    def live(self, item: WorkItem, part: Partition) -> bool:
        """``item`` still belongs to the current assignment of its partition."""
        return not part.abandoned and self.parts.get(item.tp) is part and part.epoch == item.epoch

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        for hook in self.on_stop:
            hook()

    def die(self, exc: BaseException) -> None:
        if self.fatal is None:
            log.error("fatal runtime error; stopping", extra={"error": str(exc)})
            self.fatal = exc
        self.stop()

    def lose(self, part: Partition, why: str) -> None:
        """``part`` is provably someone else's (fenced): stop all of its work, commit nothing."""
        if part.abandoned:
            return
        log.warning(
            "partition lost; abandoning its work",
            extra={"partition": part.tp.partition, "reason": why},
        )
        part.revoked = True
        part.abandoned = True
        self.sched.drop(lambda i: i.tp == part.tp)
        for task in list(part.tasks.values()):
            task.cancel()
        self.lease_changed.set()

    async def wait_idle(self, busy: Callable[[], bool], deadline: float) -> None:
        """Wait (without polling) until ``busy()`` is false or the monotonic deadline passes."""
        while busy() and self.fatal is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.progress.wait(), remaining)
