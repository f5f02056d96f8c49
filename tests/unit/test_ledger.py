"""Examples of the partition ledger: verdicts, the reservation, recovery, commit requests."""

from __future__ import annotations

import pytest

from bridge.ledger import MAX_METADATA_CHARS, CommitMeta, Fate, PartitionLedger


def _commit(ledger: PartitionLedger[str], now_ms: int, new_limit: int | None = None) -> str:
    request = ledger.commit_request(now_ms, new_limit)
    assert request is not None
    ledger.committed(request)
    return request.metadata


def test_a_fresh_partition_holds_records_until_a_reservation_is_committed() -> None:
    """Nothing committed: the first records wait for a reservation, then run in offset order."""
    ledger: PartitionLedger[str] = PartitionLedger()
    assert ledger.seek_to is None
    assert ledger.position == 0
    assert ledger.committed_offset is None
    assert ledger.commit_request(1) is None  # nothing fetched: nothing to commit
    for offset in (5, 6):
        fetched = ledger.accept(offset)
        assert fetched is not None
        assert fetched.fate is Fate.DISPATCH
        assert not ledger.admit(offset, f"r{offset}")
    assert ledger.needs_reservation
    assert not ledger.idle
    target = ledger.reservation_target(10)
    assert target == 17
    assert ledger.release() == []  # not before the commit
    meta = _commit(ledger, 100, target)
    assert CommitMeta.decode(meta, 5).limit == 17
    assert ledger.release() == ["r5", "r6"]
    assert not ledger.needs_reservation
    assert ledger.admit(7, "r7")  # inside the reservation now
    assert ledger.committed_offset == 5


def test_redelivered_offsets_are_ignored() -> None:
    """A seek back re-delivers records already accepted: they are not tracked twice."""
    ledger: PartitionLedger[str] = PartitionLedger((3, ""))
    assert ledger.seek_to == 3
    assert ledger.accept(3) is not None
    assert ledger.accept(3) is None
    assert ledger.accept(2) is None


def test_replay_skips_done_offsets_and_flags_suspects_with_their_windows() -> None:
    """Done above the commit: skipped; inside the reservation: suspect, window per record."""
    meta = CommitMeta(
        done=(11,),
        limit=15,
        at_ms=5_000,
        in_flight=((12, 4_000),),
        deletes=((13, "processing"),),
    ).encode(10)
    ledger: PartitionLedger[str] = PartitionLedger((10, meta), end_offset=20)
    assert ledger.recovering
    assert ledger.suspect_limit == 15
    assert ledger.limit == 15
    first = ledger.accept(10)
    assert first is not None
    assert first.fate is Fate.SUSPECT
    assert first.window_start_ms == 5_000
    skipped = ledger.accept(11)
    assert skipped is not None
    assert skipped.fate is Fate.SKIP
    assert not skipped.recovered
    in_flight = ledger.accept(12)
    assert in_flight is not None
    assert in_flight.window_start_ms == 4_000
    deleted = ledger.accept(13)
    assert deleted is not None
    assert deleted.delete_note == ("processing",)
    assert ledger.commit_request(6_000) is None  # recovering: nothing is committed
    for offset in (10, 12, 13):
        assert ledger.admit(offset, str(offset))
        ledger.dispatched(offset, 6_000)
        assert ledger.dispatched_at_ms(offset) == 6_000
        assert not ledger.complete(offset)
    last = ledger.accept(14)
    assert last is not None
    assert last.fate is Fate.SUSPECT
    assert ledger.complete(14)  # the last suspect ends the recovery
    assert not ledger.recovering
    fresh = ledger.accept(15)
    assert fresh is not None
    assert fresh.fate is Fate.DISPATCH
    assert not ledger.admit(15, "15")  # at the limit: a new reservation first


def test_a_skipped_last_suspect_ends_the_recovery() -> None:
    """When the last records of the suspect range were done already, skipping them recovers."""
    meta = CommitMeta(done=(1,), limit=2, at_ms=1).encode(0)
    ledger: PartitionLedger[str] = PartitionLedger((0, meta))
    suspect = ledger.accept(0)
    assert suspect is not None
    assert suspect.fate is Fate.SUSPECT
    assert not ledger.complete(0)
    skipped = ledger.accept(1)
    assert skipped is not None
    assert skipped.fate is Fate.SKIP
    assert skipped.recovered


def test_recovery_ends_only_once_the_last_suspect_is_done() -> None:
    """Commits stay off while any suspect is unfinished, even the last one."""
    meta = CommitMeta(limit=3, at_ms=1).encode(0)
    ledger: PartitionLedger[str] = PartitionLedger((0, meta))
    for offset in range(3):
        assert ledger.accept(offset) is not None
    assert not ledger.complete(0)
    assert not ledger.complete(1)
    assert ledger.recovering
    assert ledger.commit_request(9) is None
    assert ledger.complete(2)
    assert ledger.commit_request(9) is not None


def test_the_end_offset_bounds_the_suspect_range() -> None:
    """Records at or beyond the end offset at assignment were never fetched: not suspect."""
    meta = CommitMeta(limit=100, at_ms=1).encode(10)
    ledger: PartitionLedger[str] = PartitionLedger((10, meta), end_offset=12)
    assert ledger.suspect_limit == 12
    empty: PartitionLedger[str] = PartitionLedger((10, meta), end_offset=10)
    assert not empty.recovering
    assert empty.limit == 10


def test_unknown_window_falls_back_to_the_epoch() -> None:
    """Metadata without a time (written by an older version) checks the whole history."""
    meta = CommitMeta(limit=2).encode(0)
    ledger: PartitionLedger[str] = PartitionLedger((0, meta))
    fetched = ledger.accept(0)
    assert fetched is not None
    assert fetched.window_start_ms == 0


def test_idle_partitions_advance_past_markers_and_end_a_recovery() -> None:
    """An idle partition's position moves over transaction markers; a recovery may end there."""
    fresh: PartitionLedger[str] = PartitionLedger()
    assert fresh.idle
    assert not fresh.advance_to(0)
    assert fresh.position == 0
    assert not fresh.advance_to(4)
    assert fresh.position == 4
    meta = CommitMeta(limit=3, at_ms=1).encode(0)
    ledger: PartitionLedger[str] = PartitionLedger((0, meta))
    assert ledger.accept(0) is not None
    assert not ledger.complete(0)
    assert ledger.idle
    assert ledger.advance_to(3)  # offsets 1 and 2 were a marker and an aborted record
    assert ledger.position == 3


def test_commit_requests_carry_done_in_flight_and_delete_notes() -> None:
    """The metadata lists done offsets, in-flight dispatch times and pending delete notes."""
    ledger: PartitionLedger[str] = PartitionLedger((0, ""))
    for offset in range(4):
        assert ledger.accept(offset) is not None
    for offset in range(4):
        ledger.dispatched(offset, 100 + offset)
    ledger.note_delete(2, "accepted")
    ledger.complete(1)
    request = ledger.commit_request(200, 50)
    assert request is not None
    assert request.offset == 0
    assert request.limit == 50
    meta = CommitMeta.decode(request.metadata, 0)
    assert meta.done == (1,)
    assert meta.in_flight == ((0, 100), (2, 102), (3, 103))
    assert meta.deletes == ((2, "accepted"),)
    assert meta.at_ms == 200
    assert not request.squeezed
    assert ledger.is_new(request)
    ledger.committed(request)
    again = ledger.commit_request(300)
    assert again is not None
    assert not ledger.is_new(again)
    ledger.complete(2)  # its delete note goes with it
    after = ledger.commit_request(400)
    assert after is not None
    assert ledger.is_new(after)
    assert CommitMeta.decode(after.metadata, 0).deletes == ()


def test_oversized_metadata_squeezes_in_flight_times_to_the_oldest() -> None:
    """Too many in flight to list: the oldest dispatch time becomes everyone's window."""
    ledger: PartitionLedger[str] = PartitionLedger((0, ""))
    n = 2_000
    for offset in range(n):
        assert ledger.accept(offset) is not None
        ledger.dispatched(offset, 1_000_000 + 7919 * offset % 100_003)
    request = ledger.commit_request(5_000_000, n)
    assert request is not None
    assert request.squeezed
    assert len(request.metadata) <= MAX_METADATA_CHARS
    meta = CommitMeta.decode(request.metadata, 0)
    assert meta.in_flight == ()
    assert meta.at_ms == 1_000_000  # offset 0's time, the oldest
    assert meta.window_start_ms(5) == 1_000_000


def test_misuse_is_refused() -> None:
    """Completing before any record, or confirming a commit that was never requested, fails."""
    ledger: PartitionLedger[str] = PartitionLedger()
    with pytest.raises(ValueError, match="not pending"):
        ledger.complete(0)
    other: PartitionLedger[str] = PartitionLedger((0, ""))
    assert other.accept(0) is not None
    request = other.commit_request(1)
    assert request is not None
    with pytest.raises(ValueError, match="without a commit request"):
        ledger.committed(request)
