"""The throughput benchmark's workload spreads each order's commands over the whole run.

Key-mode ordering makes a command wait for the one before it of the same order. If two
commands of an order are produced close together, the second waits out the first's API calls,
and a paced run measures the workload instead of the pipeline. Round-robin by step did this in
its last steps, where only the orders with the longest sequences were left: at L = 100 their
commands waited 77-177 ms in the last second of every paced run.
"""

from __future__ import annotations

import random

import pytest
from bridge_devkit.throughput.workload import build_workload


@pytest.mark.parametrize(("n", "m"), [(3_080, 308), (600, 60), (10_400, 1_040)])
def test_each_orders_commands_are_far_apart_and_in_sequence_order(n: int, m: int) -> None:
    workload = build_workload([f"o{i}" for i in range(m)], n, random.Random(4), "t")

    assert len(workload.commands) == n
    # every order's first command (the one with the extra GET) comes before any second one
    assert {c.order_id for c in workload.commands[:m]} == set(workload.per_order)
    last: dict[str, int] = {}
    gaps: list[int] = []
    for position, cmd in enumerate(workload.commands):
        assert cmd is workload.per_order[cmd.order_id][cmd.index]
        if cmd.order_id in last:
            assert cmd.index == workload.commands[last[cmd.order_id]].index + 1
            gaps.append(position - last[cmd.order_id])
        last[cmd.order_id] = position
    assert min(gaps) >= m // 3, f"two commands of an order only {min(gaps)} apart"
