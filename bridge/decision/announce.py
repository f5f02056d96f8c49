"""Announcing an order's transitions that no event of the bridge has named yet (part of the
decision core).

The order state store says how many of the order's transitions the last published snapshot
covered (``OrderState.transitions``). Transitions after that which the bridge did not make itself
— changes by other adapters — get one ``OrderStateChanged`` each (``source=external``), oldest
first, with the status before each from the order's own history, so the events of an order form
an unbroken chain even when several changes happened before the bridge read the order (a burst of
notifications, or an external change raced by the bridge's own ``SetOrderState``). Event ids name
the transition (``<commandId>:state-changed:<n>``, ``n`` = the transitions up to it), so a replay
rebuilds the same ids. Pure.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.commands import RefreshOrder, SetOrderState
from bridge.decision.history import Transition, transitions
from bridge.events import SOURCE_EXTERNAL
from bridge.outputs import Output, state_event_output

__all__ = ["external_events", "index_of"]


def external_events(
    cmd: SetOrderState | RefreshOrder,
    order: dict[str, Any],
    start: int,
    stop: int,
    now: datetime,
) -> list[Output]:
    """``OrderStateChanged`` (external) for the order's transitions ``start`` .. ``stop - 1``
    (0-based), skipping entries that repeat the status before them (not a change)."""
    history = transitions(order)
    out: list[Output] = []
    for i in range(max(0, start), min(stop, len(history))):
        t = history[i]
        previous = history[i - 1].status if i > 0 else None
        if previous == t.status:
            continue
        out.append(
            state_event_output(
                cmd,
                previous,
                t.status,
                t.text,
                t.at or now,
                source=SOURCE_EXTERNAL,
                transitions=i + 1,
            )
        )
    return out


def index_of(order: dict[str, Any], transition: Transition, start: int) -> int | None:
    """The 0-based index of ``transition`` in the order's history, at or after ``start``."""
    for i, t in enumerate(transitions(order)):
        if i >= start and t == transition:
            return i
    return None
