"""Key scheduling: one item in flight per key, FIFO per key, keys in parallel."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from bridge.scheduler import KeyScheduler


@dataclass
class Item:
    key: str
    seq: int
    partition: int = 0


@given(
    keys=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=200),
    seed=st.integers(min_value=0, max_value=2**32),
    parallel=st.integers(min_value=1, max_value=16),
)
def test_per_key_order_and_single_flight_under_random_completion(
    keys: list[str], seed: int, parallel: int
) -> None:
    """Random completion order never runs two items of a key at once nor reorders a key."""
    rng = random.Random(seed)
    s: KeyScheduler[Item] = KeyScheduler()
    for i, k in enumerate(keys):
        s.add(Item(k, i))
    running: list[Item] = []
    seen: dict[str, list[int]] = {}
    while len(s) or running:
        while len(running) < parallel:
            item = s.pop_ready()
            if item is None:
                break
            assert item.key not in {r.key for r in running}
            running.append(item)
        assert running, "scheduler stalled with queued items"
        done = running.pop(rng.randrange(len(running)))
        seen.setdefault(done.key, []).append(done.seq)
        s.done(done.key)
    for k, seqs in seen.items():
        assert seqs == sorted(seqs)
        assert seqs == [i for i, kk in enumerate(keys) if kk == k]


def test_distinct_keys_run_in_parallel() -> None:
    """Items of different keys are all ready at once."""
    s: KeyScheduler[Item] = KeyScheduler()
    for i, k in enumerate("abc"):
        s.add(Item(k, i))
    s.add(Item("a", 3))
    got = [s.pop_ready(), s.pop_ready(), s.pop_ready(), s.pop_ready()]
    assert [g.key for g in got if g] == ["a", "b", "c"]
    assert got[3] is None
    s.done("a")
    nxt = s.pop_ready()
    assert nxt is not None
    assert nxt.seq == 3


def test_drop_removes_only_matching_items() -> None:
    """Dropping a revoked partition's queued items keeps the others in order."""
    s: KeyScheduler[Item] = KeyScheduler()
    s.add(Item("a", 0, partition=0))
    s.add(Item("a", 1, partition=1))
    s.add(Item("b", 2, partition=1))
    s.add(Item("a", 3, partition=0))
    dropped = s.drop(lambda i: i.partition == 1)
    assert sorted(d.seq for d in dropped) == [1, 2]
    assert len(s) == 2
    first = s.pop_ready()
    assert first is not None
    assert first.seq == 0
    assert s.pop_ready() is None
    s.done("a")
    second = s.pop_ready()
    assert second is not None
    assert second.seq == 3
