"""Fencing: who owned which partition when (from the bridges' logs), and whose writes were wrong.

Every bridge incarnation has its own ``x-adapterid``; ``attribute_writes`` compares each PUT/DELETE
in the simulator's call log with the assignment timeline read from the bridges' JSON logs
(``LogTail``) and names every write made by a process after its partition was reassigned.
``FenceStep`` records what one fencing scenario (a pause or an expulsion) did.
"""

from __future__ import annotations

import contextlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge_devkit.harness import LogFollower, parse_ts
from bridge_devkit.harness.bridge_process import HEALTH_PREFIX

ASSIGNED_MSG = "partitions assigned"
REVOKED_MSG = "partitions revoked"
LOST_MSG = "partition lost; abandoning its work"
LEASE_EXPIRED_MSG = "membership lease expired; holding writes until a heartbeat succeeds"
ABANDONED_MSG = "command abandoned before its write: partition no longer ours"
WRITE_ENDPOINTS = ("Norce set_state failed", "Norce delete_order failed")
WRITE_METHODS = ("PUT", "DELETE")


def retry_delay(msg: str) -> float:
    """The backoff of a client retry log line ("... retrying in 1.000s"), 0 if none."""
    found = re.search(r"retrying in ([0-9.]+)s", msg)
    return float(found.group(1)) if found else 0.0


@dataclass(frozen=True)
class OwnershipEvent:
    """One incarnation gained (``assigned``) or gave up (``revoked``/``lost``) partitions."""

    ts: float  # epoch seconds, from the bridge's log line (same host clock as the simulator)
    incarnation: int
    kind: str  # assigned | revoked | lost
    partitions: frozenset[int]


@dataclass(frozen=True)
class WriteCall:
    """A PUT/DELETE that reached the simulator (answered or not), from its call log."""

    ts: float  # epoch seconds: when the simulator received (and applied) it
    method: str
    order_id: str
    adapter: str | None
    status: int | None
    fault: str | None


@dataclass(frozen=True)
class FenceViolation:
    """A write that the fencing should have prevented."""

    kind: str  # reassigned | unowned | unattributed
    call: WriteCall
    writer: int | None
    partition: int | None
    owner: int | None  # incarnation the partition was last assigned to before the write
    owner_since: float | None

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.call.ts, UTC).isoformat(timespec="microseconds")
        text = (
            f"{when} {self.call.method} {self.call.order_id} by {self.call.adapter or '?'} "
            f"(#{self.writer}) -> {self.call.status if self.call.status is not None else '-'}"
            f"{' [' + self.call.fault + ']' if self.call.fault else ''}, partition "
            f"{self.partition}"
        )
        if self.kind == "reassigned" and self.owner_since is not None:
            since = datetime.fromtimestamp(self.owner_since, UTC).isoformat(timespec="milliseconds")
            text += f" assigned to #{self.owner} since {since}"
        elif self.kind == "unowned":
            text += " not assigned to the writer at that moment"
        return f"{self.kind}: {text}"


def attribute_writes(
    calls: Iterable[WriteCall],
    partition_of: dict[str, int],
    events: Iterable[OwnershipEvent],
    incarnation_of: dict[str, int],
) -> list[FenceViolation]:
    """Every write made by a process that did not own the order's partition at that moment.

    * ``reassigned``: the partition's most recent assignment before the write (any incarnation's
      ``partitions assigned`` line) went to another incarnation: the write of a zombie;
    * ``unowned``: the partition was not (or no longer) assigned to the writer by its own log
      (never assigned, or revoked/lost before the write) although nobody else had it yet;
    * ``unattributed``: the call's ``x-adapterid`` names no incarnation, or the order is unknown.

    An event counts for a write only if its timestamp is strictly earlier; log lines carry
    milliseconds (truncated), the call log microseconds.
    """
    per_partition: dict[int, list[OwnershipEvent]] = defaultdict(list)
    for event in events:
        for p in event.partitions:
            per_partition[p].append(event)
    for timeline in per_partition.values():
        timeline.sort(key=lambda e: e.ts)
    out: list[FenceViolation] = []
    for call in calls:
        writer = incarnation_of.get(call.adapter or "")
        partition = partition_of.get(call.order_id)
        if writer is None or partition is None:
            out.append(FenceViolation("unattributed", call, writer, partition, None, None))
            continue
        owner: int | None = None
        owner_since: float | None = None
        writer_holds = False
        for event in per_partition.get(partition, []):
            if event.ts >= call.ts:
                break
            if event.kind == "assigned":
                owner, owner_since = event.incarnation, event.ts
            if event.incarnation == writer:
                writer_holds = event.kind == "assigned"
        if owner is not None and owner != writer:
            out.append(FenceViolation("reassigned", call, writer, partition, owner, owner_since))
        elif not writer_holds:
            out.append(FenceViolation("unowned", call, writer, partition, owner, owner_since))
    return out


class LogTail:
    """Incremental reader of one incarnation's JSON log: the lines the harness acts on."""

    def __init__(self, n: int, path: Path) -> None:
        self.n = n
        self.path = path
        self.events: list[OwnershipEvent] = []
        self.write_retries: list[tuple[float, str, str]] = []  # ts, order, msg
        self.revokes: list[tuple[float, frozenset[int], int]] = []
        self.lease_expired: list[float] = []
        self.abandoned: list[tuple[float, str | None]] = []
        self.port: int | None = None
        self._follower = LogFollower(path)

    def poll(self) -> None:
        for rec in self._follower.poll():
            self._take(rec)

    def _take(self, rec: dict[str, Any]) -> None:
        msg = str(rec.get("msg", ""))
        try:
            ts = parse_ts(str(rec.get("ts")))
        except ValueError:
            return
        if msg in (ASSIGNED_MSG, REVOKED_MSG):
            parts = frozenset(int(p) for p in rec.get("partitions", []))
            kind = "assigned" if msg == ASSIGNED_MSG else "revoked"
            self.events.append(OwnershipEvent(ts, self.n, kind, parts))
            if kind == "revoked":
                self.revokes.append((ts, parts, int(rec.get("cancelled_before_write", 0))))
        elif msg == LOST_MSG and "partition" in rec:
            self.events.append(OwnershipEvent(ts, self.n, "lost", frozenset({rec["partition"]})))
        elif msg.startswith(WRITE_ENDPOINTS) and "retrying in" in msg and rec.get("order_id"):
            self.write_retries.append((ts, str(rec["order_id"]), msg))
        elif msg.startswith(LEASE_EXPIRED_MSG[:30]):
            self.lease_expired.append(ts)
        elif msg == ABANDONED_MSG:
            self.abandoned.append((ts, rec.get("order_id")))
        elif msg.startswith(HEALTH_PREFIX):
            with contextlib.suppress(ValueError):
                self.port = int(msg[len(HEALTH_PREFIX) :])

    def owned(self) -> frozenset[int]:
        """The partitions this incarnation owns by its log so far."""
        owned: set[int] = set()
        for event in self.events:
            if event.kind == "assigned":
                owned = set(event.partitions)
            else:
                owned -= event.partitions
        return frozenset(owned)


@dataclass
class FenceStep:
    """What one fencing step (``pause`` or ``expel``) did, for the report and the checks."""

    kind: str
    t: float
    victim: int | None = None
    partitions: frozenset[int] = frozenset()
    in_backoff: list[str] = field(default_factory=list)  # pause: orders whose write was waiting
    hang_seen_at: float | None = None  # expel: a scripted hang reached the simulator
    join_at: float | None = None
    revoking: bool = False  # expel: stopped after its revoke began
    stopped_at: float | None = None
    continued_at: float | None = None
    stopped_s: float = 0.0
    reassigned: tuple[float, int] | None = None  # (when, to whom) while it was stopped
    notes: list[str] = field(default_factory=list)
