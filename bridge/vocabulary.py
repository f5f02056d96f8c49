"""The bridge's closed vocabularies, defined once: outcomes, output kinds, dead-letter reasons and
circuit states.

Each is a ``StrEnum``, so a member *is* its string: it compares equal to the literal, hashes like
it, and goes into Avro records, metric labels and JSON log lines unchanged. The decision core,
the processor, the metrics, the logs and the tests all use these members; the dashboard and the
alert rules use the same strings (``tests/unit/test_vocabulary.py`` checks that the metrics
pre-create exactly the values the code can emit).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = [
    "COMMANDS_ROLE",
    "TOPIC_ROLES",
    "CircuitState",
    "DeadLetterReason",
    "Outcome",
    "OutputKind",
]


class Outcome(StrEnum):
    """How a command ended: ``CommandResult.outcome`` and the ``outcome`` metric label.

    Every handled record has exactly one (a dead-lettered record is ``failed``)."""

    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"

    @property
    def succeeded(self) -> bool:
        """The order is in the state the command asked for (``norce_bridge_last_success``)."""
        return self in (Outcome.APPLIED, Outcome.ALREADY_APPLIED)


class OutputKind(StrEnum):
    """What one output record is; each kind goes to its own topic."""

    SNAPSHOT = "snapshot"
    EVENT = "event"
    RESULT = "result"
    DLQ = "dlq"

    @property
    def role(self) -> str:
        """The topic's role: the ``topic`` label of the metrics (never its configured name)."""
        return TOPIC_ROLES[self]


TOPIC_ROLES: Final[dict[OutputKind, str]] = {
    OutputKind.SNAPSHOT: "snapshots",
    OutputKind.EVENT: "events",
    OutputKind.RESULT: "results",
    OutputKind.DLQ: "dlq",
}
"""Output kind -> the ``topic`` label of ``norce_bridge_records_published_total``."""

COMMANDS_ROLE: Final = "commands"
"""The commands topic's role: the ``topic`` label of ``norce_bridge_consumer_lag``."""


class DeadLetterReason(StrEnum):
    """Why a record was dead-lettered: the one vocabulary of ``__connect.errors.reason``, the
    ``reason`` label of ``norce_bridge_dead_letters_total`` and the prefix of a failed result's
    reason."""

    # parsing the record (bridge.commands, bridge.jsonstrict)
    EMPTY_VALUE = "empty_value"
    OVERSIZE = "oversize"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_AVRO = "invalid_avro"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    INVALID_FIELD = "invalid_field"
    UNKNOWN_FIELD = "unknown_field"
    BAD_ORDER_ID = "bad_order_id"
    UNKNOWN_STATE = "unknown_state"
    BAD_TIMESTAMP = "bad_timestamp"
    # executing the command (bridge.decision, bridge.norce)
    BAD_HEADER_VALUE = "bad_header_value"
    """The Norce client refused a merchant/channel it cannot send as an HTTP header."""
    API_REJECTED = "api_rejected"
    ORDER_NOT_FOUND = "order_not_found"
    UNMAPPABLE_ORDER = "unmappable_order"
    """Norce returned an order the bridge cannot map to a snapshot (deterministic)."""
    PROCESSING_ERROR = "processing_error"
    """An unexpected error kept recurring for a valid command (retried first)."""
    INTERNAL_ERROR = "internal_error"
    """Last resort: handling the record failed in a way no other reason covers."""


class CircuitState(StrEnum):
    """The Norce API circuit breaker's state: the ``state`` label of
    ``norce_bridge_circuit_state``."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
