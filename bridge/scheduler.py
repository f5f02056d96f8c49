"""Pure per-key scheduling: one item in flight per key, keys in parallel, FIFO within a key.

The ordering unit is the key: in ``key`` mode the order id (parsed from the command, so the bridge
does not rely on producers keying records by it), in ``partition`` mode the partition (one record
in flight per partition: the conventional consumer, kept as the benchmark baseline). Items of one
key are handed out strictly in the order they were added, which is offset order per partition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar


class _Item(Protocol):
    @property
    def key(self) -> Hashable: ...


I = TypeVar("I", bound=_Item)  # noqa: E741 - conventional type-variable name


class KeyScheduler(Generic[I]):
    """Queues items per key and hands out the next item of a key only after the previous is done."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[I]] = {}
        self._busy: set[Hashable] = set()
        self._ready: deque[Hashable] = deque()
        self._queued = 0

    def __len__(self) -> int:
        """Items queued (not yet handed out)."""
        return self._queued

    @property
    def busy(self) -> int:
        """Keys with an item in flight."""
        return len(self._busy)

    def add(self, item: I) -> None:
        key = item.key
        q = self._queues.get(key)
        if q is None:
            q = self._queues[key] = deque()
            if key not in self._busy:
                self._ready.append(key)
        q.append(item)
        self._queued += 1

    def pop_ready(self) -> I | None:
        """The next item whose key is idle, marking the key busy; None if there is none."""
        while self._ready:
            key = self._ready.popleft()
            q = self._queues.get(key)
            if not q:
                self._queues.pop(key, None)
                continue
            item = q.popleft()
            if not q:
                del self._queues[key]
            self._busy.add(key)
            self._queued -= 1
            return item
        return None

    def done(self, key: Hashable) -> None:
        """The in-flight item of ``key`` finished: its next item (if any) becomes ready."""
        self._busy.discard(key)
        if key in self._queues:
            self._ready.append(key)

    def drop(self, predicate: Callable[[I], bool]) -> list[I]:
        """Remove queued items matching ``predicate`` (e.g. of revoked partitions); return them."""
        dropped: list[I] = []
        for key in list(self._queues):
            q = self._queues[key]
            keep = deque(i for i in q if not predicate(i))
            if len(keep) != len(q):
                dropped.extend(i for i in q if predicate(i))
                if keep:
                    self._queues[key] = keep
                else:
                    del self._queues[key]
        self._queued -= len(dropped)
        self._ready = deque(k for k in self._ready if k in self._queues)
        return dropped
