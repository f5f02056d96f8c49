"""The throughput benchmark's workload: N valid commands over M orders, interleaved.

Each order gets checkout -> processing [-> checkout -> processing]* -> accepted -> completed, and
every tenth order a repeated ``completed`` that must come back ``already_applied``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.commands import command_to_json
from bridge_devkit.harness import set_state


@dataclass(frozen=True, slots=True)
class Planned:
    """One command to produce, with what the bridge must answer."""

    command_id: str
    order_id: str
    index: int  # position in its order's sequence
    state: str
    expect: str  # applied | already_applied
    value: bytes


@dataclass(frozen=True, slots=True)
class Sent:
    partition: int
    offset: int
    timestamp_ms: int


@dataclass
class Workload:
    commands: list[Planned]  # in production order
    per_order: dict[str, list[Planned]]  # each order's commands in sequence order
    by_id: dict[str, Planned]

    def history(self, order_id: str, done: int) -> list[str]:
        """The simulator history once the first ``done`` commands of the order are applied."""
        history = ["checkout"]
        for cmd in self.per_order[order_id][:done]:
            if cmd.expect == "applied":
                history.append(cmd.state)
        return history


def build_workload(order_ids: Sequence[str], n: int, rng: random.Random, tag: str) -> Workload:
    """N commands over the orders: valid sequences, each order's spread evenly over the run."""
    m = len(order_ids)
    extra = n - 3 * m
    if m < 1 or extra < 0:
        raise ValueError(f"{n} commands cannot cover {m} orders (at least 3 commands per order)")
    dups = min(extra, m, max(1, m // 10)) if extra else 0
    if (extra - dups) % 2:
        dups += 1 if dups < min(m, extra) else -1
    loops = (extra - dups) // 2
    shuffled = list(order_ids)
    rng.shuffle(shuffled)
    with_dup = set(rng.sample(shuffled, dups))
    sequences: dict[str, list[str]] = {}
    for i, order_id in enumerate(shuffled):
        k = loops // m + (1 if i < loops % m else 0)
        seq = ["processing", *(["checkout", "processing"] * k), "accepted", "completed"]
        if order_id in with_dup:
            seq.append("completed")
        sequences[order_id] = seq
    now = datetime.now(UTC)
    per_order: dict[str, list[Planned]] = {}
    for order_id, seq in sequences.items():
        history = ["checkout"]
        planned: list[Planned] = []
        for index, state in enumerate(seq):
            expect = "already_applied" if state == history[-1] else "applied"
            if expect == "applied":
                history.append(state)
            command_id = f"{tag}-{order_id}-{index:03d}"
            cmd = set_state(order_id, state, command_id=command_id, issued_at=now)
            planned.append(
                Planned(command_id, order_id, index, state, expect, command_to_json(cmd))
            )
        per_order[order_id] = planned
    # Each order's commands spread evenly over the run: command i of an order of k commands at
    # i/k of the way. Round-robin by step instead left only the orders with the longest sequences
    # in the last steps, their commands ~15 apart: at L = 100 each then waited for the one
    # before it (per-order ordering), 77-177 ms, in the last second of a paced run.
    rank = {order_id: i for i, order_id in enumerate(shuffled)}
    commands = sorted(
        (cmd for planned in per_order.values() for cmd in planned),
        key=lambda c: (c.index / len(per_order[c.order_id]), rank[c.order_id]),
    )
    assert len(commands) == n
    return Workload(commands, per_order, {c.command_id: c for c in commands})
