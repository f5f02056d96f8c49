"""Offset bookkeeping: contiguous commits under random completion orders, metadata round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ledger import MAX_METADATA_CHARS, CommitMeta, PartitionOffsets


@st.composite
def fetched_and_completion_order(draw: st.DrawFn) -> tuple[int, list[int], list[int]]:
    start = draw(st.integers(min_value=0, max_value=10_000))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=200))
    offsets: list[int] = []
    cur = start
    for g in gaps:
        offsets.append(cur)
        cur += g
    order = draw(st.permutations(offsets))
    return start, offsets, list(order)


@given(fetched_and_completion_order())
@settings(max_examples=300)
def test_committable_is_contiguous_prefix_and_only_grows(
    case: tuple[int, list[int], list[int]],
) -> None:
    """Whatever the completion order, committable = lowest pending offset and never decreases."""
    start, fetched, order = case
    po = PartitionOffsets(start)
    for off in fetched:
        po.add(off)
    done: set[int] = set()
    last = po.committable()
    assert last == fetched[0]
    for off in order:
        po.complete(off)
        done.add(off)
        pending = [o for o in fetched if o not in done]
        expected = pending[0] if pending else fetched[-1] + 1
        assert po.committable() == expected
        assert po.committable() >= last
        last = po.committable()
        assert all(o > po.committable() for o in po.done_above())
        assert set(po.done_above()) == {o for o in done if o > po.committable()}
        po.mark_committed(po.committable())
    assert po.committable() == fetched[-1] + 1
    assert po.pending == 0


def test_commit_going_backwards_is_refused() -> None:
    """Committed offsets only grow."""
    po = PartitionOffsets(5)
    po.mark_committed(7)
    with pytest.raises(ValueError, match="backwards"):
        po.mark_committed(6)


def test_completing_twice_or_out_of_range_is_an_error() -> None:
    """A record can complete once, and only if it was fetched."""
    po = PartitionOffsets(0)
    po.add(0)
    po.add(1)
    po.complete(1)
    with pytest.raises(ValueError, match="not pending"):
        po.complete(1)
    with pytest.raises(ValueError, match="not pending"):
        po.complete(5)
    with pytest.raises(ValueError, match="added after"):
        po.add(1)


@given(
    committed=st.integers(min_value=0, max_value=10**12),
    done=st.lists(st.integers(min_value=1, max_value=5000), unique=True, max_size=300),
    limit=st.one_of(st.none(), st.integers(min_value=0, max_value=5000)),
    at_ms=st.one_of(st.none(), st.integers(min_value=0, max_value=2**41)),
    flights=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=5000), st.integers(min_value=0, max_value=10**6)
        ),
        max_size=50,
    ),
)
def test_metadata_round_trips(
    committed: int,
    done: list[int],
    limit: int | None,
    at_ms: int | None,
    flights: list[tuple[int, int]],
) -> None:
    """CommitMeta survives encode/decode relative to the committed offset."""
    in_flight = tuple(sorted({(committed + o, (at_ms or 0) - d) for o, d in flights}))
    meta = CommitMeta(
        done=tuple(sorted(committed + d for d in done)),
        limit=None if limit is None else committed + limit,
        at_ms=at_ms,
        in_flight=in_flight,
    )
    text = meta.encode(committed)
    back = CommitMeta.decode(text, committed)
    assert back.done == meta.done
    assert back.limit == meta.limit
    assert back.at_ms == meta.at_ms
    assert sorted(back.in_flight) == sorted(meta.in_flight)


def test_metadata_for_a_typical_window_fits_the_broker_limit() -> None:
    """A thousand scattered done offsets and 256 in-flight records stay under the limit."""
    done = tuple(range(1, 3000, 3))
    flights = tuple((o, 1_700_000_000_000 - o) for o in range(2, 514, 2))
    text = CommitMeta(done=done, limit=5000, at_ms=1_700_000_000_500, in_flight=flights).encode(0)
    assert len(text) < MAX_METADATA_CHARS


@pytest.mark.parametrize("garbage", [None, "", "hello", "nob1:!!!", "nob1:" + "A" * 20])
def test_foreign_or_corrupt_metadata_decodes_to_nothing(garbage: str | None) -> None:
    """Metadata written by another tool (or corrupt) is ignored, not trusted."""
    assert CommitMeta.decode(garbage, 10) == CommitMeta()


def test_window_start_prefers_the_recorded_dispatch_time() -> None:
    """An in-flight record's window is its dispatch time; any other suspect's is at_ms."""
    meta = CommitMeta(at_ms=1000, in_flight=((7, 900),))
    assert meta.window_start_ms(7) == 900
    assert meta.window_start_ms(8) == 1000


def test_delete_notes_round_trip_through_the_commit_metadata() -> None:
    """The state a DELETE deleted from survives the commit, also when it was unknown."""
    meta = CommitMeta(done=(12,), limit=40, at_ms=5000, deletes=((11, "processing"), (14, None)))
    back = CommitMeta.decode(meta.encode(10), 10)
    assert back.delete_note(11) == ("processing",)
    assert back.delete_note(14) == (None,)
    assert back.delete_note(13) is None
    assert back.done == (12,)


def test_advance_to_skips_offsets_without_records_only_when_nothing_is_pending() -> None:
    """Transaction markers past the last record become committable once all is done."""
    po = PartitionOffsets(0)
    po.add(0)
    po.add(1)
    po.advance_to(3)
    assert po.committable() == 0  # still pending: never skip past a pending record
    po.complete(0)
    po.complete(1)
    assert po.committable() == 2
    po.advance_to(3)
    assert po.committable() == 3
    po.advance_to(1)
    assert po.committable() == 3
