"""Pure builders of the bridge's Avro event and result records.

Nothing here does I/O. Every function takes plain data and returns plain ``dict`` records that
:class:`bridge.codec.AvroCodec` encodes with the schemas in ``schemas/``. Order snapshots are
built by ``bridge.snapshot`` (re-exported here).

Event ids are deterministic: ``f"{command_id}:{kind}"``. A replayed command (at-least-once
delivery) therefore gives a record with the same id, and consumers can deduplicate on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from bridge.snapshot import (
    SNAPSHOT_SCHEMA_VERSION,
    SnapshotMappingError,
    order_from_snapshot,
    snapshot_from_order,
)
from bridge.timestamps import format_rfc3339, parse_rfc3339
from bridge.vocabulary import Outcome

__all__ = [
    "COMMAND_RESULT_SCHEMA",
    "DELETED_KIND",
    "ORDER_COMMAND_SCHEMA",
    "ORDER_DELETED_SCHEMA",
    "ORDER_SNAPSHOT_SCHEMA",
    "OUTCOMES",
    "SNAPSHOT_SCHEMA_VERSION",
    "SOURCE_BRIDGE",
    "SOURCE_EXTERNAL",
    "STATE_CHANGED_KIND",
    "STATE_CHANGED_SCHEMA",
    "CommandOutcome",
    "SnapshotMappingError",
    "command_result",
    "event_id",
    "format_rfc3339",
    "latest_transition_at",
    "order_deleted_event",
    "order_from_snapshot",
    "parse_rfc3339",
    "snapshot_from_order",
    "state_changed_event",
]

ORDER_SNAPSHOT_SCHEMA: Final = "OrderSnapshot"
STATE_CHANGED_SCHEMA: Final = "OrderStateChanged"
ORDER_DELETED_SCHEMA: Final = "OrderDeleted"
COMMAND_RESULT_SCHEMA: Final = "CommandResult"
ORDER_COMMAND_SCHEMA: Final = "OrderCommand"

STATE_CHANGED_KIND: Final = "state-changed"
SOURCE_BRIDGE: Final = "bridge"
SOURCE_EXTERNAL: Final = "external"
DELETED_KIND: Final = "deleted"


CommandOutcome = Outcome
"""Compatibility name of :class:`bridge.vocabulary.Outcome`."""

OUTCOMES: Final = frozenset(Outcome)
"""The allowed ``CommandResult.outcome`` values."""


# --------------------------------------------------------------------------------------------
# Transitions


def latest_transition_at(order: Mapping[str, Any], status: str) -> str | None:
    """The ``timeStamp`` of the newest transition to ``status`` in the order JSON, or None.

    Status matching is case-insensitive. "Newest" means the latest parsed time, with list
    position breaking ties. If any matching time cannot be parsed, the last match in list
    order wins, because the API appends transitions oldest-first. This never raises on
    malformed input: a missing or odd ``state`` gives None.
    """
    state = order.get("state") if isinstance(order, Mapping) else None
    transitions = state.get("transitions") if isinstance(state, Mapping) else None
    if not isinstance(transitions, list):
        return None
    wanted = status.casefold()
    matches: list[tuple[int, str, datetime | None]] = []
    for index, transition in enumerate(transitions):
        if not isinstance(transition, Mapping):
            continue
        found = transition.get("status")
        stamp = transition.get("timeStamp")
        if isinstance(found, str) and found.casefold() == wanted and isinstance(stamp, str):
            matches.append((index, stamp, parse_rfc3339(stamp)))
    if not matches:
        return None
    if any(parsed is None for _, _, parsed in matches):
        return matches[-1][1]
    return max(matches, key=lambda m: (m[2], m[0]))[1]


# --------------------------------------------------------------------------------------------
# Events and results


def event_id(command_id: str, kind: str) -> str:
    """Deterministic event id ``f"{command_id}:{kind}"``, stable across command replays."""
    return f"{command_id}:{kind}"


def state_changed_event(
    *,
    command_id: str,
    order_id: str,
    merchant: str,
    channel: str,
    previous_status: str | None,
    new_status: str,
    transition_at: str | None,
    correlation_id: str | None,
    occurred_at: datetime,
    source: str | None = SOURCE_BRIDGE,
    transitions: int | None = None,
) -> dict[str, Any]:
    """Build an ``OrderStateChanged`` record with ``eventId = f"{command_id}:state-changed"``,
    or ``f"{command_id}:state-changed:{transitions}"`` when ``transitions`` is given.

    ``transitions`` (a ``RefreshOrder``'s event: the number of transitions of the order it
    read) makes the id name the change, not only the command: one refresh command can run
    again after a later change (a duplicate notification delivered late) and announce *that*
    change, which must not share the first one's id (consumers deduplicate by ``eventId``).
    A replay that reads the same order still rebuilds the same id.

    ``source`` says who changed the state: :data:`SOURCE_BRIDGE` (a ``SetOrderState``) or
    :data:`SOURCE_EXTERNAL` (a change made outside the bridge, seen by a ``RefreshOrder``).

    ``transition_at`` is normally ``latest_transition_at(order, new_status)`` of the
    re-fetched order. ``occurred_at`` should be the transition's own time when known, so that a
    replay rebuilds the same record (same id, same content).
    """
    return {
        "eventId": event_id(command_id, STATE_CHANGED_KIND)
        + (f":{transitions}" if transitions is not None else ""),
        "orderId": order_id,
        "merchant": merchant,
        "channel": channel,
        "previousStatus": previous_status,
        "newStatus": new_status,
        "transitionAt": transition_at,
        "commandId": command_id,
        "correlationId": correlation_id,
        "occurredAt": format_rfc3339(occurred_at),
        "source": source,
    }


def order_deleted_event(
    *,
    command_id: str,
    order_id: str,
    merchant: str,
    channel: str,
    previous_status: str | None,
    already_deleted: bool,
    correlation_id: str | None,
    occurred_at: datetime,
) -> dict[str, Any]:
    """Build an ``OrderDeleted`` record with ``eventId = f"{command_id}:deleted"``.

    ``already_deleted`` is True when the API answered 404 to the DELETE.
    """
    return {
        "eventId": event_id(command_id, DELETED_KIND),
        "orderId": order_id,
        "merchant": merchant,
        "channel": channel,
        "previousStatus": previous_status,
        "alreadyDeleted": already_deleted,
        "commandId": command_id,
        "correlationId": correlation_id,
        "occurredAt": format_rfc3339(occurred_at),
    }


def command_result(
    *,
    command_id: str,
    command_type: str,
    order_id: str,
    merchant: str,
    channel: str,
    correlation_id: str | None,
    outcome: str,
    attempts: int,
    processed_at: datetime,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    reason: str | None = None,
    current_status: str | None = None,
    http_status: int | None = None,
    replayed: bool = False,
) -> dict[str, Any]:
    """Build a ``CommandResult`` record; ``outcome`` must be one of :data:`OUTCOMES`.

    ``replayed`` marks a command found already applied during a replay; ``current_status`` is
    then the state that command produced.

    Raises ValueError for an unknown outcome or a negative ``attempts``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {sorted(OUTCOMES)}")
    if attempts < 0:
        raise ValueError(f"attempts must be >= 0, got {attempts}")
    return {
        "commandId": command_id,
        "commandType": command_type,
        "orderId": order_id,
        "merchant": merchant,
        "channel": channel,
        "correlationId": correlation_id,
        "outcome": outcome,
        "reason": reason,
        "currentStatus": current_status,
        "httpStatus": http_status,
        "attempts": attempts,
        "processedAt": format_rfc3339(processed_at),
        "source": {"topic": source_topic, "partition": source_partition, "offset": source_offset},
        "replayed": replayed,
    }
