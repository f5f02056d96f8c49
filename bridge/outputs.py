"""What handling one record produces: its source, the records to publish, and the disposition.

Pure data and pure builders (the time is passed in): :class:`SourceRecord` (where a command came
from), :class:`Output` (one record to publish), :class:`Disposition` (the outcome of one record
and its outputs), :class:`Ids` (a command's ids, which every output carries as headers), and the
builders of the snapshot, event and result records of a command. The runtime encodes and
publishes the outputs; nothing here knows Kafka or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bridge.commands import AnyCommand, DeleteOrder, RefreshOrder, SetOrderState
from bridge.errors import UnmappableOrderError
from bridge.events import (
    SOURCE_BRIDGE,
    SnapshotMappingError,
    command_result,
    order_deleted_event,
    state_changed_event,
)
from bridge.order_state import OrderState
from bridge.snapshot import tagged_snapshot_from_order
from bridge.vocabulary import DeadLetterReason, Outcome, OutputKind

__all__ = [
    "Disposition",
    "Headers",
    "Ids",
    "Output",
    "SourceRecord",
    "deleted_outputs",
    "new_order_state",
    "record_key",
    "result_output",
    "snapshot_output",
    "state_event_output",
]

Headers = list[tuple[str, bytes | None]]
Command = AnyCommand


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Where a command came from (for results and dead letters)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int


@dataclass(slots=True)
class Output:
    """One record to publish; ``value`` None is a tombstone, DLQ values are the raw bytes.

    ``state``: on a snapshot or tombstone, the order's state it publishes (written to the order
    state store with it, :mod:`bridge.order_state`)."""

    kind: OutputKind
    key: bytes | None
    schema: str | None
    value: dict[str, Any] | bytes | None
    headers: Headers = field(default_factory=list)
    state: OrderState | None = None


@dataclass(slots=True)
class Disposition:
    """How one record ended: its outcome, what to publish, and why (for logs and metrics)."""

    outcome: Outcome
    command_type: str
    outputs: list[Output]
    reason: str | None = None
    dead_letter_reason: DeadLetterReason | None = None


@dataclass(frozen=True, slots=True)
class Ids:
    """The ids of a command, each valid Unicode (ids that are not are dropped, and named)."""

    command_id: str
    type: str
    order_id: str
    merchant: str
    channel: str
    correlation_id: str | None
    dropped: tuple[str, ...] = ()

    @classmethod
    def of(cls, cmd: Command) -> Ids:
        return cls(
            cmd.command_id, cmd.type, cmd.order_id, cmd.merchant, cmd.channel, cmd.correlation_id
        )

    def headers(self, schema: str | None) -> Headers:
        """The ``norce.*`` headers of an output (and its schema and content type, if Avro)."""
        headers: Headers = []
        if self.command_id:
            headers.append(("norce.command.id", self.command_id.encode()))
        if self.order_id:
            headers.append(("norce.order.id", self.order_id.encode()))
        if self.correlation_id:
            headers.append(("norce.correlation.id", self.correlation_id.encode()))
        if schema is not None:
            headers.append(("norce.schema", f"com.norce.bridge.v1.{schema}".encode()))
            headers.append(("content-type", b"application/avro"))
        return headers


def record_key(order_id: str | None) -> bytes | None:
    """The key of every output of an order: its id (None when there is no id)."""
    return order_id.encode("utf-8", "replace") if order_id else None


def result_output(
    ids: Ids,
    src: SourceRecord,
    outcome: Outcome,
    reason: str | None,
    *,
    now: datetime,
    attempts: int = 0,
    current: str | None = None,
    http_status: int | None = None,
    replayed: bool = False,
) -> Output:
    """The ``CommandResult`` record of a command known by its ids."""
    result = command_result(
        command_id=ids.command_id,
        command_type=ids.type,
        order_id=ids.order_id,
        merchant=ids.merchant,
        channel=ids.channel,
        correlation_id=ids.correlation_id,
        outcome=outcome,
        attempts=attempts,
        processed_at=now,
        source_topic=src.topic,
        source_partition=src.partition,
        source_offset=src.offset,
        reason=reason,
        current_status=current,
        http_status=http_status,
        replayed=replayed,
    )
    return Output(
        OutputKind.RESULT,
        record_key(ids.order_id or None),
        "CommandResult",
        result,
        ids.headers("CommandResult"),
    )


def snapshot_output(cmd: Command, order: dict[str, Any], now: datetime) -> Output:
    """The compacted snapshot of ``order`` as Norce returned it.

    Its value is ready for the codec (union tags built while mapping: read values through
    ``bridge.snapshot.snapshot_from_order`` instead). Raises :class:`UnmappableOrderError` (a
    dead letter) when the order cannot be mapped."""
    try:
        snap = tagged_snapshot_from_order(
            order, fetched_at=now, command_id=cmd.command_id, correlation_id=cmd.correlation_id
        )
    except SnapshotMappingError as exc:
        raise UnmappableOrderError(f"the order Norce returned cannot be mapped: {exc}") from exc
    return Output(
        OutputKind.SNAPSHOT,
        record_key(cmd.order_id),
        "OrderSnapshot",
        snap,
        Ids.of(cmd).headers("OrderSnapshot"),
        OrderState.of_order(order, now=now, command_id=cmd.command_id),
    )


def new_order_state(outcome: Disposition) -> OrderState | None:
    """The order state a disposition publishes (its last snapshot's or tombstone's), if any."""
    found: OrderState | None = None
    for o in outcome.outputs:
        if o.state is not None:
            found = o.state
    return found


def state_event_output(
    cmd: SetOrderState | RefreshOrder,
    previous: str | None,
    new: str,
    transition_at: str | None,
    occurred_at: datetime,
    *,
    source: str = SOURCE_BRIDGE,
    transitions: int | None = None,
) -> Output:
    """The ``OrderStateChanged`` event of a set-state command (``transitions``: a refresh's,
    see :func:`bridge.events.state_changed_event`)."""
    event = state_changed_event(
        command_id=cmd.command_id,
        order_id=cmd.order_id,
        merchant=cmd.merchant,
        channel=cmd.channel,
        previous_status=previous,
        new_status=new,
        transition_at=transition_at,
        correlation_id=cmd.correlation_id,
        occurred_at=occurred_at,
        source=source,
        transitions=transitions,
    )
    return Output(
        OutputKind.EVENT,
        record_key(cmd.order_id),
        "OrderStateChanged",
        event,
        Ids.of(cmd).headers("OrderStateChanged"),
    )


def deleted_outputs(
    cmd: DeleteOrder | RefreshOrder, previous: str | None, *, already: bool, now: datetime
) -> list[Output]:
    """The tombstone and the ``OrderDeleted`` event of a delete (or a refresh that found the
    order gone)."""
    event = order_deleted_event(
        command_id=cmd.command_id,
        order_id=cmd.order_id,
        merchant=cmd.merchant,
        channel=cmd.channel,
        previous_status=previous,
        already_deleted=already,
        correlation_id=cmd.correlation_id,
        occurred_at=now,
    )
    ids = Ids.of(cmd)
    return [
        Output(
            OutputKind.SNAPSHOT,
            record_key(cmd.order_id),
            None,
            None,
            ids.headers(None),
            OrderState.gone(previous, now=now, command_id=cmd.command_id),
        ),
        Output(
            OutputKind.EVENT,
            record_key(cmd.order_id),
            "OrderDeleted",
            event,
            ids.headers("OrderDeleted"),
        ),
    ]
