"""Matching suspect commands against an order's transition history (part of the decision core).

After a crash or rebalance, the commands of one order that may already have reached Norce
(*suspects*, see the partition ledger) are matched, in offset order, against the order's
transitions stamped at or after the dispatch window's start: exactly the transitions those
commands could have made, because earlier commands of the same order finished before the window
opened. A command whose target is the next transition (or the position already reached) was
applied before; the first one that does not match ends the matching for that order, and it and
the rest are executed. Pure: the order JSON and the window start are passed in.

The state of one order's matching lives in a :class:`ReplayBook`, per (scope, merchant,
channel, order id), where the scope is the partition assignment (topic-partition, epoch), so a
partition assigned again starts afresh.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final, Literal, TypeAlias

from bridge.events import parse_rfc3339

__all__ = [
    "EXECUTED",
    "Claim",
    "Recovery",
    "ReplayBook",
    "ReplayKey",
    "ReplayState",
    "Transition",
    "status_of",
    "transition_statuses",
    "transitions",
]


def status_of(order: dict[str, Any]) -> str | None:
    """The order's ``state.currentStatus`` (None when absent or not a string)."""
    state = order.get("state")
    if isinstance(state, dict):
        status = state.get("currentStatus")
        return status if isinstance(status, str) else None
    return None


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of ``state.transitions``."""

    status: str
    at: datetime | None
    text: str | None  # the timeStamp exactly as the API wrote it


def _raw_transitions(order: dict[str, Any]) -> list[Any]:
    state = order.get("state")
    raw = state.get("transitions") if isinstance(state, dict) else None
    return raw if isinstance(raw, list) else []


def transition_statuses(order: dict[str, Any]) -> list[str]:
    """The statuses of the order's transitions, oldest first, as :func:`transitions` counts them,
    without parsing their timestamps (the per-command path needs only these)."""
    return [
        t["status"]
        for t in _raw_transitions(order)
        if isinstance(t, dict) and isinstance(t.get("status"), str)
    ]


def transitions(order: dict[str, Any]) -> list[Transition]:
    """The order's transitions, oldest first (entries without a string status are skipped)."""
    out: list[Transition] = []
    for t in _raw_transitions(order):
        if isinstance(t, dict) and isinstance(t.get("status"), str):
            ts = t.get("timeStamp")
            text = ts if isinstance(ts, str) else None
            out.append(Transition(t["status"], parse_rfc3339(text) if text else None, text))
    return out


@dataclass(frozen=True, slots=True)
class Claim:
    """A suspect command matched against the order's history."""

    applied: bool
    previous: str | None = None
    transition: Transition | None = None
    newest: bool = False  # its transition is the order's latest (its snapshot is current)


@dataclass
class Recovery:
    """Per-order matching of suspect commands against the transitions since the window opened.

    ``deleted`` is set once a suspect DeleteOrder of this replay has claimed the order's
    deletion, so a second delete in the same replay reports ``alreadyDeleted=true``.
    """

    position_status: str | None
    since: list[Transition]
    index: int = 0
    deleted: bool = False

    @classmethod
    def from_order(cls, order: dict[str, Any], window_start: datetime) -> Recovery:
        """Start matching at ``window_start``: the position is the state the order had then."""
        history = transitions(order)
        before = [t for t in history if t.at is not None and t.at < window_start]
        since = [t for t in history if t.at is None or t.at >= window_start]
        position: str | None
        if before:
            position = before[-1].status
        elif since:  # created inside the window: its first transition is the creation state
            position, since = since[0].status, since[1:]
        else:
            position = status_of(order)
        return cls(position_status=position, since=since)

    @classmethod
    def gone(cls) -> Recovery:
        """The order was already deleted when the replay first read it: no history is left."""
        return cls(position_status=None, since=[])

    @property
    def is_blank(self) -> bool:
        """Nothing is known of the history yet (the order was gone when first read)."""
        return not self.since and self.position_status is None

    def claim(self, target: str) -> Claim:
        """Whether the next command (to ``target``) is in the history, and what it did there."""
        if target == self.position_status:
            return Claim(True, target, None, newest=self.index >= len(self.since))
        if self.index < len(self.since) and self.since[self.index].status == target:
            previous = self.position_status
            transition = self.since[self.index]
            self.index += 1
            self.position_status = target
            return Claim(True, previous, transition, newest=self.index >= len(self.since))
        return Claim(False)


class _Executed(Enum):
    EXECUTED = "executed"


EXECUTED: Final = _Executed.EXECUTED
"""A suspect of the order was executed: the order's matching is over for this scope."""

ReplayState: TypeAlias = Recovery | Literal[_Executed.EXECUTED]
ReplayKey: TypeAlias = tuple[Hashable, str, str, str]  # (scope, merchant, channel, order id)


class ReplayBook:
    """The replay state of every order being matched, per (scope, merchant, channel, order)."""

    def __init__(self) -> None:
        self._states: dict[ReplayKey, ReplayState] = {}

    def get(self, key: ReplayKey) -> ReplayState | None:
        return self._states.get(key)

    def set(self, key: ReplayKey, state: ReplayState) -> None:
        self._states[key] = state

    def discard(self, key: ReplayKey) -> None:
        self._states.pop(key, None)

    def forget(self, scope: Hashable) -> None:
        """Drop the replay state of one partition assignment (it was revoked)."""
        for key in [k for k in self._states if k[0] == scope]:
            del self._states[key]

    def __len__(self) -> int:
        return len(self._states)
