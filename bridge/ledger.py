"""The partition ledger: pure offset, commit and replay bookkeeping of one assigned partition.

Nothing here does I/O, awaits or reads a clock (times are passed in, in epoch milliseconds). The
runtime asks the ledger, for every fetched offset, whether to *skip*, *dispatch* or dispatch as a
*suspect*; tells it when a record is dispatched and when it is done; and commits what the ledger's
:class:`CommitRequest` says (an offset and a metadata string).

**The replay invariant.** *After any crash or rebalance, a new owner that starts from the last
committed (offset, metadata) re-runs every record that is not certainly done, never dispatches a
record as new that may already have reached the API, never skips a record that is not done, and
never moves an order backwards.* It rests on four rules, all enforced here:

1. *Contiguous commits.* Records complete out of order (different orders run concurrently). The
   committed offset is the lowest offset not yet done ("done" = its outputs were acknowledged by
   Kafka, or sit in the partition's transaction that commits with the offset), i.e. the highest
   contiguous done offset + 1. It only grows. Everything below it is done.
2. *Done above the offset.* The metadata (:class:`CommitMeta`) lists the offsets above the
   committed one that are already done; a new owner *skips* them (their outputs exist; in
   exactly-once mode the metadata commits atomically with them, so the set is exact).
3. *The dispatch reservation.* The ledger never lets a record be dispatched at or beyond the
   committed ``limit``; records fetched past it wait (:meth:`PartitionLedger.admit`) until a
   commit raises the limit (:meth:`PartitionLedger.reservation_target`). So after a crash, records
   in ``[committed, limit)`` that are not listed done may have reached the API without their
   outputs: they are *suspect*. Records at or beyond ``limit`` (or beyond the partition's end
   offset at assignment: nobody ever fetched them) certainly did not: they *dispatch* as new.
4. *Exact history windows.* The metadata also carries when it was computed (``at_ms``) and the
   dispatch time of every record then in flight. A suspect record that was in flight was
   dispatched at its recorded time; any other suspect was dispatched after ``at_ms``. So
   :attr:`Fetched.window_start_ms` is never later than any earlier dispatch of that record. Every
   command of the same order that is done finished before the order's first suspect was
   dispatched (commands of one order run one at a time in offset order), so the order's
   transitions stamped at or after that window are exactly the suspect commands' own (barring
   other writers and clock skew): the processor matches suspects against them and reports a match
   ``already_applied`` instead of applying it again. A ``DeleteOrder`` notes the state it deletes
   from (committed before the DELETE is sent), because a replay cannot read a deleted order back.

While a partition has unresolved suspects (*recovering*) it commits nothing: the inherited metadata,
and with it the exact windows, stays authoritative however often the bridge crashes during
recovery. ``tests/unit/test_ledger_properties.py`` checks the invariant with a simulated crash at
every step of random fetch / dispatch / complete / commit sequences.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")

_META_PREFIX = "nob1:"
MAX_METADATA_CHARS = 3500  # brokers accept 4096 by default (offset.metadata.max.bytes)


@dataclass(frozen=True)
class CommitMeta:
    """What a commit remembers besides the offset (rules 2 to 4 of the module docstring)."""

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


class Fate(StrEnum):
    """What the runtime does with a fetched record."""

    SKIP = "skip"  # done by a previous owner: its outputs exist
    SUSPECT = "suspect"  # may have reached the API: check the order's history first
    DISPATCH = "dispatch"  # certainly never dispatched: execute


@dataclass(frozen=True, slots=True)
class Fetched:
    """The ledger's verdict on one fetched offset."""

    offset: int
    fate: Fate
    window_start_ms: int | None = None  # SUSPECT: check the order's history from here
    delete_note: tuple[str | None] | None = None  # SUSPECT delete: the state it deleted from
    recovered: bool = False  # this offset ended the partition's replay recovery


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """Commit ``offset`` with ``metadata``, then report it: :meth:`PartitionLedger.committed`."""

    offset: int
    metadata: str
    limit: int
    squeezed: bool  # too many in flight to list: all share the oldest dispatch time
    key: tuple[object, ...]


class PartitionLedger(Generic[T]):
    """The bookkeeping of one partition assignment (module docstring); ``T`` is a held record."""

    def __init__(self, committed: tuple[int, str] | None = None, end_offset: int | None = None):
        """Start from the committed ``(offset, metadata)`` (None: nothing committed yet) and the
        partition's end offset at assignment (records at or beyond it were never dispatched)."""
        start = 0
        meta = CommitMeta()
        self._offsets: PartitionOffsets | None = None
        if committed is not None:
            start, text = committed
            meta = CommitMeta.decode(text, start)
            self._offsets = PartitionOffsets(start)
        self._inherited = meta
        self._skip = {o for o in meta.done if o >= start}
        suspect_limit = start
        if meta.limit is not None:
            end = meta.limit if end_offset is None else end_offset
            suspect_limit = max(start, min(meta.limit, end))
        self.suspect_limit = suspect_limit
        self.limit = suspect_limit
        self.recovering = suspect_limit > start
        self.seek_to: int | None = start if committed is not None else None
        self._staged: deque[tuple[int, T]] = deque()
        self._in_flight: dict[int, int] = {}  # offset -> dispatch time (ms)
        self._delete_from: dict[int, str | None] = {}
        self._last_key: tuple[object, ...] | None = None

    # -- fetching and dispatching ---------------------------------------------------------------

    @property
    def next_offset(self) -> int | None:
        """The offset the partition's next fetched record must have for nothing to be missed
        (the one after the last accepted record, or the committed start); None before the first
        record when nothing was committed (the consumer starts at the earliest offset)."""
        return self._offsets.next_offset if self._offsets is not None else None

    def accept(self, offset: int) -> Fetched | None:
        """A record was fetched; None when it is a re-delivery of one already accepted."""
        if self._offsets is None:
            self._offsets = PartitionOffsets(offset)
        if offset < self._offsets.next_offset:
            return None
        self._offsets.add(offset)
        if offset in self._skip:
            self._skip.discard(offset)
            self._offsets.complete(offset)
            return Fetched(offset, Fate.SKIP, recovered=self._check_recovery())
        if self.recovering and offset < self.suspect_limit:
            ms = self._inherited.window_start_ms(offset)
            return Fetched(
                offset, Fate.SUSPECT, 0 if ms is None else ms, self._inherited.delete_note(offset)
            )
        return Fetched(offset, Fate.DISPATCH)

    def admit(self, offset: int, item: T) -> bool:
        """True when an accepted record may be dispatched now; else it waits for a reservation."""
        if offset < self.limit:
            return True
        self._staged.append((offset, item))
        return False

    @property
    def needs_reservation(self) -> bool:
        """Records wait beyond the reservation and no recovery holds commits back."""
        return bool(self._staged) and not self.recovering

    def reservation_target(self, chunk: int) -> int:
        """The limit to commit so that everything fetched so far (and ``chunk`` more) may run."""
        offsets = self._offsets
        nxt = offsets.next_offset if offsets is not None else self.limit
        return max(self.limit, nxt + chunk)

    def release(self) -> list[T]:
        """Held records that the committed reservation now covers, in offset order."""
        out: list[T] = []
        while self._staged and self._staged[0][0] < self.limit:
            out.append(self._staged.popleft()[1])
        return out

    def dispatched(self, offset: int, now_ms: int) -> None:
        self._in_flight[offset] = now_ms

    def dispatched_at_ms(self, offset: int) -> int | None:
        return self._in_flight.get(offset)

    def note_delete(self, offset: int, status: str | None) -> None:
        """A DeleteOrder is about to be sent: the next commit must carry its prior state."""
        self._delete_from[offset] = status

    def complete(self, offset: int) -> bool:
        """A dispatched record is done; True when this ended the replay recovery.

        An unfinished record keeps its dispatch time: commits must say it may have reached the API.
        """
        if self._offsets is None:
            raise ValueError(f"offset {offset} is not pending")
        self._offsets.complete(offset)
        self._in_flight.pop(offset, None)
        self._delete_from.pop(offset, None)
        return self._check_recovery()

    @property
    def idle(self) -> bool:
        """Nothing pending nor held: the consumer's position is exactly what is done."""
        return not self._staged and (self._offsets is None or self._offsets.pending == 0)

    def advance_to(self, position: int) -> bool:
        """An idle partition's consumer position moved past offsets that hold no record
        (transaction markers, compaction or abort gaps); True when this ended the recovery."""
        if self._offsets is None:
            if position > 0:
                self._offsets = PartitionOffsets(position)
            return False
        self._offsets.advance_to(position)
        return self._check_recovery()

    def _check_recovery(self) -> bool:
        if self.recovering and self.position >= self.suspect_limit:
            self.recovering = False
            return True
        return False

    # -- commits --------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """The offset a commit would carry now (0 before the first record)."""
        return self._offsets.committable() if self._offsets is not None else 0

    @property
    def committed_offset(self) -> int | None:
        return self._offsets.committed if self._offsets is not None else None

    def commit_request(self, now_ms: int, new_limit: int | None = None) -> CommitRequest | None:
        """What to commit now; None while nothing may be committed (no record yet, recovering)."""
        offsets = self._offsets
        if offsets is None or self.recovering:
            return None
        committable = offsets.committable()
        limit = max(self.limit, new_limit or 0)
        done = offsets.done_above()
        above = {o for o in self._in_flight if o >= committable} - set(done)
        flights = tuple(sorted((o, self._in_flight[o]) for o in above))
        notes = sorted(self._delete_from.items(), key=lambda kv: kv[0])
        deletes = tuple((o, s) for o, s in notes if o >= committable and o not in set(done))
        key = (committable, done, tuple(sorted(self._in_flight)), limit, tuple(notes))
        meta = CommitMeta(done=done, limit=limit, at_ms=now_ms, in_flight=flights, deletes=deletes)
        text = meta.encode(committable)
        squeezed = len(text) > MAX_METADATA_CHARS and bool(flights)
        if squeezed:
            oldest = min(ms for _, ms in flights)
            text = CommitMeta(done=done, limit=limit, at_ms=oldest, deletes=deletes).encode(
                committable
            )
        return CommitRequest(committable, text, limit, squeezed, key)

    def is_new(self, request: CommitRequest) -> bool:
        """False when ``request`` says exactly what the last successful commit said."""
        return request.key != self._last_key

    def committed(self, request: CommitRequest) -> None:
        """``request`` was committed: the reservation and the committed offset move on."""
        if self._offsets is None:
            raise ValueError("committed() without a commit request")
        self._offsets.mark_committed(request.offset)
        self.limit = max(self.limit, request.limit)
        self._last_key = request.key
