"""Command builders: valid ``SetOrderState``/``DeleteOrder``/``RefreshOrder`` with fresh ids
(tests, demo, bench)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from bridge.commands import DeleteOrder, RefreshOrder, SetOrderState
from bridge.order_model import OrderStatus


def _common(order_id: str, merchant: str, channel: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "command_id": extra.pop("command_id", f"c-{uuid.uuid4().hex[:12]}"),
        "order_id": order_id,
        "merchant": merchant,
        "channel": channel,
        "issued_at": extra.pop("issued_at", datetime.now(UTC)),
        **extra,
    }


def set_state(
    order_id: str, state: str, *, merchant: str = "norce", channel: str = "1", **extra: Any
) -> SetOrderState:
    """A ``SetOrderState`` to ``state`` (``extra``: command_id, issued_at, expected_state, ...)."""
    return SetOrderState(state=OrderStatus(state), **_common(order_id, merchant, channel, extra))


def delete(
    order_id: str, *, merchant: str = "norce", channel: str = "1", **extra: Any
) -> DeleteOrder:
    """A ``DeleteOrder`` (``extra``: command_id, issued_at, expected_state, ...)."""
    return DeleteOrder(**_common(order_id, merchant, channel, extra))


def refresh(
    order_id: str, *, merchant: str = "norce", channel: str = "1", **extra: Any
) -> RefreshOrder:
    """A ``RefreshOrder`` (``extra``: command_id, issued_at, reason, correlation_id, ...)."""
    return RefreshOrder(**_common(order_id, merchant, channel, extra))


def notification_delivery(
    nid: str, order_id: str, *, adapter_id: str = "bridge", **order: Any
) -> bytes:
    """The body Norce's Notification service POSTs for a ``completed`` notification:
    ``{"notification", "order"}`` (``order``: extra or overriding order fields)."""
    doc = {
        "notification": {
            "id": nid,
            "adapterId": adapter_id,
            "reference": "state-changes",
            "scope": "/state/currentStatus",
            "schema": {"const": "completed"},
            "invoke": "https://bridge.example/notifications",
        },
        "order": {
            "id": order_id,
            "merchant": "norce",
            "channel": "1",
            "state": {"currentStatus": "completed"},
            **order,
        },
    }
    return json.dumps(doc).encode()
