"""When offsets are committed: periodically, for a reservation, before a DELETE, on revoke and
on shutdown. What a commit carries is the ledger's (:mod:`bridge.ledger`); how it reaches Kafka
is the delivery strategy's (:mod:`bridge.delivery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import TopicPartition

from bridge.delivery import Delivery, FatalRuntimeError
from bridge.partition import Partition, RuntimeState

log = logging.getLogger("bridge.runtime")


class Committer:
    def __init__(
        self,
        state: RuntimeState,
        position: Callable[[TopicPartition], Awaitable[int]],
        delivery: Delivery,
        *,
        interval_s: float,
        reserve_chunk: int,
    ) -> None:
        self._state = state
        self._position = position  # the consumer's next fetch position of a partition
        self._delivery = delivery
        self._interval_s = interval_s
        self._reserve_chunk = reserve_chunk

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.commit_all()

    async def commit_all(self, parts: Iterable[Partition] | None = None) -> None:
        """The periodic commit: every partition that may commit now, in one request where the
        delivery strategy can (at-least-once: one OffsetCommit for all of them)."""
        due = [
            part
            for part in list(parts if parts is not None else self._state.parts.values())
            if await self._due(part)
        ]
        if not due:
            return
        try:
            await self._delivery.commit_many(due)
        except FatalRuntimeError as exc:
            self._state.die(exc)

    async def _due(self, part: Partition) -> bool:
        """Whether an ordinary (not final) commit of ``part`` may go out now: ours, not
        abandoned, not recovering (an idle partition's position is advanced first)."""
        if part.abandoned or not self._state.lease.valid():
            return False
        await self._advance_idle(part)
        return part.ledger.committed_offset is not None and not part.ledger.recovering

    async def commit(
        self,
        part: Partition,
        *,
        new_limit: int | None = None,
        final: bool = False,
        force: bool = False,
    ) -> bool:
        """Commit ``part``; returns False when the commit failed and should be retried.

        While ``part`` has unresolved suspects nothing is committed: the inherited metadata stays
        authoritative. A final commit that may not happen (recovering, no lease) aborts an open
        transaction instead, so the next owner redoes the work from the same state.
        """
        if part.abandoned:
            return True
        if not self._state.lease.valid():
            # Not provably ours: a commit would fail (or, worse, succeed for a zombie).
            if final:
                await self._delivery.abort(part)
            return final
        await self._advance_idle(part)
        if part.ledger.committed_offset is None:
            return True
        if part.ledger.recovering:
            if final:
                await self._delivery.abort(part)
            return True
        return await self._delivery.commit(part, new_limit, force=force)

    async def _advance_idle(self, part: Partition) -> None:
        """Move an idle partition's commit position past records it can never receive.

        Transactional producers leave a control marker after their records, and compaction or
        aborted transactions leave gaps: the consumer's position moves past them without a record.
        With nothing pending, the position is exactly what is done, so lag and commits reach 0.
        """
        if not part.ledger.idle:
            return
        try:
            position = await asyncio.wait_for(self._position(part.tp), 1.0)
        except Exception:  # KafkaError, TimeoutError, IllegalStateError (unassigned meanwhile)
            return
        part.recovered_if(part.ledger.advance_to(position))

    # -- the dispatch reservation ----------------------------------------------------------------

    def on_recovered(self, part: Partition) -> None:
        log.info("replay recovery finished for partition", extra={"partition": part.tp.partition})
        self.ensure_reservation(part)

    def ensure_reservation(self, part: Partition) -> None:
        if part.reserving or not part.ledger.needs_reservation:
            return
        part.reserving = True
        task = asyncio.get_running_loop().create_task(
            self._reserve(part), name=f"reserve-{part.tp.partition}"
        )
        self._state.running_aux.add(task)
        task.add_done_callback(self._state.running_aux.discard)

    async def _reserve(self, part: Partition) -> None:
        state = self._state
        try:
            while part.ledger.needs_reservation and not part.revoked:
                target = part.ledger.reservation_target(self._reserve_chunk)
                before = part.ledger.limit
                if not await self.commit(part, new_limit=target) or part.ledger.limit == before:
                    await asyncio.sleep(0.5)  # failed, or not ours to commit: try again later
                    continue
                for item in part.ledger.release():
                    state.sched.add(item)
                state.wake.set()
        except FatalRuntimeError as exc:
            state.die(exc)
        finally:
            part.reserving = False
