"""The last state the bridge published for an order: the record of the order state store.

Every command that publishes an order's snapshot (or its tombstone) also writes the order's new
:class:`OrderState` to the compacted state topic (``BRIDGE_TOPICS__ORDER_STATE``), to the same
partition number as the command's source partition, in the same transaction (exactly-once) or
with the outputs, before the offset commit (at-least-once). On assignment the partition's state
records are read back (:mod:`bridge.state_store`) before any command of it runs, so a
``RefreshOrder`` compares a fresh ``GET`` with what *was published*, across restarts and
rebalances: a duplicate notification publishes nothing new, an older read is never published
after a newer one (README, "Refresh and the order state store").

Pure: the value is small JSON (it is internal; no schema registry, no Avro fingerprint needed),
the digest is the SHA-256 of the order JSON in canonical form (sorted keys). Nothing here does
I/O; the time is passed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from bridge.timestamps import format_rfc3339

__all__ = ["STATE_VERSION", "OrderState", "decode_state", "order_digest"]

STATE_VERSION: Final = 1
DIGEST_LENGTH: Final = 32  # hex characters (128 bits): identity of content, not a security MAC


def _status_and_count(order: Mapping[str, Any]) -> tuple[str | None, int]:
    """``state.currentStatus`` and the number of transitions with a string status: the same
    reading as :mod:`bridge.decision.history` (not imported: the core imports this module)."""
    state = order.get("state")
    if not isinstance(state, Mapping):
        return None, 0
    status = state.get("currentStatus")
    raw = state.get("transitions")
    count = sum(
        1
        for t in (raw if isinstance(raw, list) else [])
        if isinstance(t, Mapping) and isinstance(t.get("status"), str)
    )
    return (status if isinstance(status, str) else None), count


def order_digest(order: Mapping[str, Any]) -> str:
    """The digest of an order as Norce returned it (canonical JSON: sorted keys)."""
    try:
        text = orjson.dumps(order, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON-serialisable: never happens for a parsed response
        text = repr(sorted(order.items(), key=lambda kv: str(kv[0]))).encode()
    return hashlib.sha256(text).hexdigest()[:DIGEST_LENGTH]


@dataclass(frozen=True, slots=True)
class OrderState:
    """What the bridge last published for one order.

    ``status`` and ``transitions`` (how many transitions the order had) as published;
    ``deleted``: the last publication was a tombstone; ``digest``: of the order JSON published
    (None for a tombstone); ``at``: when (RFC 3339); ``command_id``: the command that published.
    """

    status: str | None
    transitions: int
    deleted: bool
    digest: str | None
    at: str
    command_id: str

    @classmethod
    def of_order(cls, order: Mapping[str, Any], *, now: datetime, command_id: str) -> OrderState:
        status, count = _status_and_count(order)
        return cls(
            status=status,
            transitions=count,
            deleted=False,
            digest=order_digest(order),
            at=format_rfc3339(now),
            command_id=command_id,
        )

    @classmethod
    def gone(cls, previous: str | None, *, now: datetime, command_id: str) -> OrderState:
        """The state after a tombstone (``previous``: the status it was deleted from)."""
        return cls(
            status=previous,
            transitions=0,
            deleted=True,
            digest=None,
            at=format_rfc3339(now),
            command_id=command_id,
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "status": self.status,
                "transitions": self.transitions,
                "deleted": self.deleted,
                "digest": self.digest,
                "at": self.at,
                "commandId": self.command_id,
            }
        )


def decode_state(value: bytes | None) -> OrderState | None:
    """A state record's value, or None for a tombstone or a value this version cannot read
    (a record it cannot read only costs a re-publication, never a wrong skip)."""
    if not value:
        return None
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict) or raw.get("v") != STATE_VERSION:
        return None
    status, count, deleted = raw.get("status"), raw.get("transitions"), raw.get("deleted")
    digest, at, command_id = raw.get("digest"), raw.get("at"), raw.get("commandId")
    if (
        not (status is None or isinstance(status, str))
        or not isinstance(count, int)
        or isinstance(count, bool)
        or count < 0
        or not isinstance(deleted, bool)
        or not (digest is None or isinstance(digest, str))
        or not isinstance(at, str)
        or not isinstance(command_id, str)
    ):
        return None
    return OrderState(status, count, deleted, digest, at, command_id)
