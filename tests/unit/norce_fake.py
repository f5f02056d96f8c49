"""An in-memory fake of the Norce Order API for unit tests of the processor (no HTTP).

The API is a third-party service: it keeps orders with their transition history, records every
call, and raises the client's errors (404, or whatever ``fail`` queues) like the real client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.errors import NorceNotFoundError

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Result:
    value: Any
    status: int = 200
    attempts: int = 1


@dataclass
class FakeApi:
    """Orders by id with their transitions; ``fail`` makes the next calls of a method raise."""

    orders: dict[str, list[tuple[str, datetime]]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, list[Exception]] = field(default_factory=dict)
    clock: datetime = T0
    unmappable: bool = False  # serve orders the bridge cannot map to a snapshot

    def _maybe_fail(self, method: str) -> None:
        if self.fail.get(method):
            raise self.fail[method].pop(0)

    def _json(self, order_id: str) -> dict[str, Any]:
        history = self.orders[order_id]
        extra = {"total": {"includingVat": "a lot"}} if self.unmappable else {}
        return {
            **extra,
            "id": order_id,
            "merchant": "norce",
            "channel": "1",
            "state": {
                "currentStatus": history[-1][0],
                "transitions": [
                    {"status": s, "timeStamp": at.isoformat().replace("+00:00", "Z")}
                    for s, at in history
                ],
            },
        }

    async def get_order_json(self, order_id: str, *, merchant: str, channel: str) -> Result:
        self.calls.append(("GET", order_id))
        self._maybe_fail("GET")
        if order_id not in self.orders:
            raise NorceNotFoundError("no such order", status=404)
        return Result(self._json(order_id))

    async def set_state(self, order_id: str, status: str, *, merchant: str, channel: str) -> Result:
        self.calls.append(("PUT", order_id))
        self._maybe_fail("PUT")
        if order_id not in self.orders:
            raise NorceNotFoundError("no such order", status=404)
        self.clock += timedelta(seconds=1)
        if self.orders[order_id][-1][0] != status:
            self.orders[order_id].append((status, self.clock))
        return Result(None)

    async def delete_order(self, order_id: str, *, merchant: str, channel: str) -> Result:
        self.calls.append(("DELETE", order_id))
        self._maybe_fail("DELETE")
        if self.orders.pop(order_id, None) is None:
            raise NorceNotFoundError("no such order", status=404)
        return Result(None)
