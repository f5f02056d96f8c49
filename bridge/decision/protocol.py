"""The decision core's vocabulary with its driver: actions, answers, and what is known.

Actions (core -> driver) are :class:`Get`, :class:`Put`, :class:`Delete` and :data:`Done` (the
record's :class:`~bridge.outputs.Disposition`). Answers (driver -> core) are :class:`Fetched`,
:class:`Written` and :class:`Refused`. :class:`Known` and :class:`Policy` are the inputs.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

from bridge.deadletter import MAX_DEAD_LETTER_BYTES
from bridge.decision.history import status_of, transition_statuses
from bridge.errors import InvalidCommandError, NorceInvalidRequestError, NorceNotFoundError
from bridge.order_state import OrderState
from bridge.outputs import Disposition

__all__ = [
    "Action",
    "Answer",
    "Delete",
    "Done",
    "Fetched",
    "Get",
    "Known",
    "OrderView",
    "Policy",
    "Put",
    "Refused",
    "Steps",
    "Written",
]


@dataclass(frozen=True, slots=True)
class OrderView:
    """What the bridge last saw of an order: its status and how many transitions it had."""

    status: str | None
    transitions: int

    @classmethod
    def of(cls, order: dict[str, Any]) -> OrderView:
        return cls(status_of(order), len(transition_statuses(order)))


@dataclass(frozen=True, slots=True)
class Get:
    """Read the order."""


@dataclass(frozen=True, slots=True)
class Put:
    """Set the order's state. ``view_before`` is the bridge's view before the PUT: once the PUT
    succeeded the driver keeps it (the memo of PUTs) so a retry of the command only re-fetches."""

    state: str
    view_before: OrderView


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete the order; ``previous`` is its state as last seen (noted durably before the
    DELETE is sent, so a replay can say what it deleted)."""

    previous: str | None


Done: TypeAlias = Disposition
Action: TypeAlias = Get | Put | Delete | Disposition


@dataclass(frozen=True, slots=True)
class Fetched:
    """The order as the API returned it."""

    order: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class Written:
    """The PUT or DELETE succeeded."""

    attempts: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The API answered 404 (:class:`NorceNotFoundError`) or 400/409/422
    (:class:`NorceInvalidRequestError`), or the client refused to send the command's values
    (:class:`InvalidCommandError`): command faults, never retried."""

    error: NorceNotFoundError | NorceInvalidRequestError | InvalidCommandError


Answer: TypeAlias = Fetched | Written | Refused
Steps: TypeAlias = Generator[Get | Put | Delete, Answer, Disposition]
"""One command's steps: yields API calls, is sent their answers, returns the disposition."""


@dataclass(frozen=True, slots=True)
class Policy:
    """The processing settings the core applies (``BRIDGE_PROCESSING__*``)."""

    max_command_age_s: float | None = None
    read_before_write: bool = False  # write_guard=lease+read (README, "Fencing")
    max_dead_letter_bytes: int = MAX_DEAD_LETTER_BYTES


@dataclass(frozen=True, slots=True)
class Known:
    """What is known when a command starts.

    ``cached``: the bridge's view of the order (None: not seen, or forgotten). ``put_done``: this
    command's PUT already succeeded in an earlier attempt whose re-fetch failed (the view before
    it). ``suspect_since``: the record may be a replay; its dispatch window started then.
    ``scope``: the partition assignment the record came from (replay matching is per scope and
    order). ``delete_note``: for a suspect delete, the state its previous execution noted durably
    right before sending the DELETE. ``dispatched_at``: when the runtime dispatched it (the
    read-before-write guard checks the order's history from there). ``published``: what the
    bridge last published for the order (the order state store; a ``RefreshOrder`` compares
    its fresh read with it).
    """

    now: datetime
    cached: OrderView | None = None
    put_done: OrderView | None = None
    suspect_since: datetime | None = None
    scope: Hashable = None
    delete_note: tuple[str | None] | None = None
    dispatched_at: datetime | None = None
    published: OrderState | None = None
