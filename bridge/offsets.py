"""Pure offset bookkeeping: per partition, what may be committed, and what the commit must remember.

Records of a partition complete out of order (different orders run concurrently). The offset we
commit is the lowest offset not yet *done* ("done" = its outputs were acknowledged by Kafka), i.e.
the highest contiguous done offset + 1. It only grows.

The commit also carries metadata (:class:`CommitMeta`) that makes replays safe:

* ``done``: offsets above the committed one that are already done. After a restart or rebalance
  they are skipped (their outputs exist; in exactly-once mode the metadata commits atomically with
  them, so the set is exact).
* ``limit``: a dispatch *reservation*. The runtime never dispatches an offset at or beyond the
  committed ``limit``; before going further it commits a new limit. So after a crash, records in
  ``[committed, limit)`` that are not in ``done`` may have reached the API without their outputs
  ("suspect"); records at or beyond ``limit`` certainly did not. Only suspect records pay for a
  check against their order's transition history.
* ``at_ms`` and ``in_flight``: when the metadata was computed, and the dispatch time of every
  record that was in flight then. This bounds the history to check exactly, per order: a suspect
  record that was in flight was dispatched at its recorded time; any other suspect record was
  dispatched after ``at_ms``. Every command of the same order that is already done (committed or
  in ``done``) finished before its order's first suspect record was dispatched, because commands
  of one order run one at a time in offset order. So the order's transitions stamped at or after
  that instant are exactly the suspect commands' own (barring other writers and clock skew).

Nothing here does I/O; property tests drive it with random completion orders.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections import deque
from dataclasses import dataclass, field

_META_PREFIX = "nob1:"
MAX_METADATA_CHARS = 3500  # brokers accept 4096 by default (offset.metadata.max.bytes)


@dataclass(frozen=True)
class CommitMeta:
    """What a commit remembers besides the offset (see module docstring)."""

    done: tuple[int, ...] = ()
    limit: int | None = None
    at_ms: int | None = None
    in_flight: tuple[tuple[int, int], ...] = ()  # (offset, dispatch time ms)
    # (offset, status) of DeleteOrder commands about to be sent: the state the order is deleted
    # from, which a replay cannot read back once the order is gone (committed before the DELETE).
    deletes: tuple[tuple[int, str | None], ...] = ()

    def delete_note(self, offset: int) -> tuple[str | None] | None:
        """``(status,)`` when a DELETE of ``offset`` was noted before it was sent, else None."""
        for off, status in self.deletes:
            if off == offset:
                return (status,)
        return None

    def window_start_ms(self, offset: int) -> int | None:
        """When the history of a suspect record's order must be checked from."""
        for off, ms in self.in_flight:
            if off == offset:
                return ms
        return self.at_ms

    def encode(self, committed: int) -> str:
        """Compact text form: done offsets as (gap, run) pairs relative to ``committed``."""
        runs: list[int] = []
        prev = committed
        run_start: int | None = None
        run_len = 0
        for off in self.done:
            if run_start is not None and off == run_start + run_len:
                run_len += 1
                continue
            if run_start is not None:
                runs += [run_start - prev, run_len]
                prev = run_start + run_len
            run_start, run_len = off, 1
        if run_start is not None:
            runs += [run_start - prev, run_len]
        flights: list[int] = []
        for off, ms in sorted(self.in_flight):
            flights += [off - committed, (self.at_ms or 0) - ms]
        body: dict[str, object] = {
            "r": runs,
            "l": None if self.limit is None else self.limit - committed,
            "t": self.at_ms,
            "f": flights,
        }
        if self.deletes:
            body["d"] = [
                [off - committed, status or ""]
                for off, status in sorted(self.deletes, key=lambda d: d[0])
            ]
        raw = json.dumps(body, separators=(",", ":")).encode()
        return _META_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 6)).decode()

    @staticmethod
    def decode(text: str | None, committed: int) -> CommitMeta:
        """Inverse of :meth:`encode`; foreign or corrupt metadata decodes to an empty CommitMeta."""
        if not text or not text.startswith(_META_PREFIX):
            return CommitMeta()
        try:
            body = json.loads(zlib.decompress(base64.urlsafe_b64decode(text[len(_META_PREFIX) :])))
            runs = [int(x) for x in body["r"]]
            done: list[int] = []
            prev = committed
            for gap, length in zip(runs[::2], runs[1::2], strict=True):
                start = prev + gap
                done.extend(range(start, start + length))
                prev = start + length
            limit = None if body.get("l") is None else committed + int(body["l"])
            at_ms = None if body.get("t") is None else int(body["t"])
            fl = [int(x) for x in body.get("f", [])]
            flights = tuple(
                (committed + d_off, (at_ms or 0) - d_ms)
                for d_off, d_ms in zip(fl[::2], fl[1::2], strict=True)
            )
            notes = tuple(
                (committed + int(d_off), str(status) or None) for d_off, status in body.get("d", [])
            )
            return CommitMeta(
                done=tuple(done), limit=limit, at_ms=at_ms, in_flight=flights, deletes=notes
            )
        except (ValueError, KeyError, TypeError, zlib.error):
            return CommitMeta()


@dataclass
class PartitionOffsets:
    """Offsets of one assigned partition, from its starting position on."""

    position: int
    _queue: deque[int] = field(default_factory=deque, repr=False)
    _done: set[int] = field(default_factory=set, repr=False)
    _next: int = field(init=False)
    committed: int = field(init=False)

    def __post_init__(self) -> None:
        self._next = self.position
        self.committed = self.position

    def add(self, offset: int) -> None:
        """A record was fetched (offsets arrive in increasing order; gaps are allowed)."""
        if offset < self._next:
            raise ValueError(f"offset {offset} added after {self._next - 1}")
        self._queue.append(offset)
        self._next = offset + 1

    def complete(self, offset: int) -> None:
        """A fetched record is done; completing twice or an unknown offset is an error."""
        if offset in self._done or offset < self.committable() or offset >= self._next:
            raise ValueError(f"offset {offset} is not pending")
        self._done.add(offset)
        q = self._queue
        while q and q[0] in self._done:
            self._done.discard(q.popleft())

    def committable(self) -> int:
        """Highest contiguous done offset + 1 (the lowest pending offset, or the next to fetch)."""
        return self._queue[0] if self._queue else self._next

    def done_above(self) -> tuple[int, ...]:
        """Done offsets above the committable one, ascending (all of them are)."""
        return tuple(sorted(self._done))

    @property
    def pending(self) -> int:
        """Fetched records not yet retired (pending, or done but behind a pending one)."""
        return len(self._queue) - len(self._done)

    @property
    def next_offset(self) -> int:
        return self._next

    def advance_to(self, position: int) -> None:
        """Nothing is pending and the consumer's position is past offsets that hold no record
        (transaction markers, compaction or abort gaps): they are done by definition."""
        if self._queue or position <= self._next:
            return
        self._next = position

    def mark_committed(self, offset: int) -> None:
        """Record a successful commit; committed offsets only grow."""
        if offset < self.committed:
            raise ValueError(f"commit went backwards: {offset} < {self.committed}")
        self.committed = offset
