"""The chaos harness: its short run passes every check, and its fencing attribution is right.

The short run (kill -9, API faults, a broker restart, poison, a SIGSTOP of an owner with writes
in retry backoff, an owner expelled during a revoke with a hanging write) is the CI form of
``make chaos``. The attribution of writes to process incarnations, which decides the run's
``fencing`` check, is tested on its own with scripted timelines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bridge_devkit.chaos import fencing as chaos

ROOT = Path(__file__).resolve().parents[2]
CHECKS = (
    "caught-up",
    "history",
    "final-state",
    "snapshot",
    "fencing",
    "scenarios",
    "results",
    "dlq",
    "outcomes",
    "self-exits",
    "shutdown",
)


P = 3  # the partition of order "o_a" in these timelines


def _assigned(ts: float, n: int, *parts: int) -> chaos.OwnershipEvent:
    return chaos.OwnershipEvent(ts, n, "assigned", frozenset(parts))


def _revoked(ts: float, n: int, *parts: int) -> chaos.OwnershipEvent:
    return chaos.OwnershipEvent(ts, n, "revoked", frozenset(parts))


def _put(ts: float, adapter: str | None, order_id: str = "o_a") -> chaos.WriteCall:
    return chaos.WriteCall(ts, "PUT", order_id, adapter, 200, None)


def _violations(
    calls: list[chaos.WriteCall], events: list[chaos.OwnershipEvent]
) -> list[tuple[str, int | None]]:
    found = chaos.attribute_writes(calls, {"o_a": P}, events, {"chaos-eos-1": 1, "chaos-eos-2": 2})
    return [(v.kind, v.writer) for v in found]


def test_a_write_by_the_old_owner_after_the_reassignment_is_a_violation() -> None:
    """A zombie's write after another incarnation was assigned its partition is flagged."""
    events = [_assigned(10.0, 1, P), _assigned(20.0, 2, P, 4)]  # #1 expelled: no revoke line
    assert _violations([_put(20.5, "chaos-eos-1")], events) == [("reassigned", 1)]


def test_writes_of_the_owner_within_its_assignment_are_not_violations() -> None:
    """Writes before the reassignment (even during the revoke) and by the new owner pass."""
    events = [_assigned(10.0, 1, P), _revoked(19.0, 1, P), _assigned(20.0, 2, P)]
    calls = [_put(11.0, "chaos-eos-1"), _put(18.9, "chaos-eos-1"), _put(20.1, "chaos-eos-2")]
    assert _violations(calls, events) == []


def test_an_owner_that_gets_its_partition_back_may_write_again() -> None:
    """Only the most recent assignment before the write decides who owns the partition."""
    events = [_assigned(10.0, 1, P), _assigned(20.0, 2, P), _assigned(30.0, 1, P)]
    assert _violations([_put(31.0, "chaos-eos-1")], events) == []
    assert _violations([_put(25.0, "chaos-eos-1")], events) == [("reassigned", 1)]


def test_a_write_after_the_writer_gave_the_partition_up_is_unowned() -> None:
    """Revoked and not yet assigned to anyone else: still a write without ownership."""
    events = [_assigned(10.0, 1, P), _revoked(15.0, 1, P)]
    assert _violations([_put(16.0, "chaos-eos-1")], events) == [("unowned", 1)]


def test_an_event_at_the_same_instant_as_the_write_does_not_count_yet() -> None:
    """Events count for a write only when strictly earlier (ms log lines, us call log)."""
    events = [_assigned(10.0, 1, P), _assigned(20.0, 2, P)]
    assert _violations([_put(20.0, "chaos-eos-1")], events) == []


def test_writes_that_name_no_incarnation_or_an_unknown_order_are_unattributed() -> None:
    """A call that cannot be attributed fails the check instead of being ignored."""
    events = [_assigned(10.0, 1, P)]
    calls = [_put(11.0, None), _put(11.0, "someone-else"), _put(11.0, "chaos-eos-1", "o_zz")]
    assert _violations(calls, events) == [
        ("unattributed", None),
        ("unattributed", None),
        ("unattributed", 1),
    ]


def test_the_log_tail_follows_assignments_across_partial_lines(tmp_path: Path) -> None:
    """Assignments, revokes, retries and the metrics port are read from the JSON log."""

    def line(msg: str, **extra: object) -> str:
        ts = datetime(2026, 1, 1, tzinfo=UTC).isoformat(timespec="milliseconds")
        return json.dumps({"ts": ts, "level": "INFO", "msg": msg, **extra}) + "\n"

    log = tmp_path / "bridge.log"
    log.write_text(
        line("health server listening on port 8123")
        + line("partitions assigned", partitions=[0, 1, 2])
        + line("Norce set_state failed (5xx) on attempt 1/4; retrying in 1.000s", order_id="o_a")
    )
    tail = chaos.LogTail(1, log)
    tail.poll()
    assert tail.port == 8123
    assert tail.owned() == frozenset({0, 1, 2})
    assert [(o, chaos.retry_delay(m)) for _, o, m in tail.write_retries] == [("o_a", 1.0)]
    revoke = line("partitions revoked", partitions=[0, 1, 2], cancelled_before_write=2)
    with log.open("a") as handle:
        handle.write(revoke[:20])  # a line still being written is not read yet
    tail.poll()
    assert tail.owned() == frozenset({0, 1, 2})
    with log.open("a") as handle:
        handle.write(revoke[20:] + line("partitions assigned", partitions=[2]))
    tail.poll()
    assert tail.owned() == frozenset({2})
    assert [r[2] for r in tail.revokes] == [2]


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chaos_harness_short_form_passes(tmp_path: Path) -> None:
    """``bench/chaos.py --short`` passes every check for both guarantees, fencing included."""
    # The harness starts (and restarts) its own broker, so the session broker is not used.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    proc = subprocess.run(
        [sys.executable, "bench/chaos.py", "--short", "--workdir", str(tmp_path / "chaos")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    out = proc.stdout
    summary = "\n".join(
        line
        for line in out.splitlines()
        if line.lstrip().startswith(("[PASS]", "[FAIL]", "RESULT"))
    )
    tail = (
        f"{summary}\n--- output (tail) ---\n{out[-12000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
    assert proc.returncode == 0, tail
    for check in CHECKS:
        assert out.count(f"[PASS] {check} ") == 2, f"no PASS line per guarantee for {check}\n{tail}"
    assert "[FAIL]" not in out, tail
    assert "writes by a process after its partition was reassigned: 0;" in out, tail
    assert "RESULT: PASS" in out, tail
