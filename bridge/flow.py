"""Pure flow control: which partitions to pause and resume so that buffers stay bounded.

The fetch loop never stops polling; instead partitions whose buffer is full (or all of them, while
the total buffer is full or the API circuit is open) are paused, and resumed once they drained to
half their limit (hysteresis: no pause/resume flapping at the boundary).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class FlowState(Generic[K]):
    """One assigned partition as flow control sees it."""

    key: K
    buffered: int
    paused: bool


@dataclass(frozen=True, slots=True)
class FlowPlan(Generic[K]):
    all_paused: bool
    pause: tuple[K, ...]
    resume: tuple[K, ...]


def plan_flow(
    parts: Iterable[FlowState[K]],
    *,
    total: int,
    circuit_open: bool,
    all_paused: bool,
    max_total: int,
    max_per_partition: int,
) -> FlowPlan[K]:
    """Decide pauses and resumes from the buffers (``total``: all partitions' records buffered),
    the circuit and the current pauses."""
    states = list(parts)
    if circuit_open or total >= max_total:
        all_paused = True
    elif total <= max_total // 2:
        all_paused = False
    pause: list[K] = []
    resume: list[K] = []
    for p in states:
        want = (
            all_paused
            or p.buffered >= max_per_partition
            or (p.paused and p.buffered > max_per_partition // 2)
        )
        if want and not p.paused:
            pause.append(p.key)
        elif not want and p.paused:
            resume.append(p.key)
    return FlowPlan(all_paused, tuple(pause), tuple(resume))
