"""A small async client of the simulator's notification admin routes, for tests and the demo.

Usage::

    async with SimulatorAdmin(sim.url) as admin:
        await admin.set_adapter("bridge", "http://127.0.0.1:8081", {"X-Norce-Webhook-Secret": s})
        await admin.register_channel("norce", "1", [notification])
        await admin.change_state(order_id, "accepted", adapter_id="payment-x")
        await admin.wait_drained(timeout_s=30)

Every method raises ``SimulatorAdminError`` on an unexpected answer. The routes are documented
in README.md, "The Norce API simulator: order notifications".
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

import httpx


class SimulatorAdminError(RuntimeError):
    """The simulator answered an admin call with an unexpected status."""


class SimulatorAdmin:
    """Admin calls over HTTP to a running simulator (``base_url`` like ``http://127.0.0.1:8089``)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, trust_env=False)

    async def __aenter__(self) -> SimulatorAdmin:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        """``method /__admin{path}``; the decoded JSON answer (``None`` for 204)."""
        response = await self._client.request(
            method, f"/__admin{path}", json=body, params=params or {}
        )
        if response.status_code not in (200, 204):
            raise SimulatorAdminError(
                f"{method} /__admin{path}: {response.status_code} {response.text[:300]}"
            )
        return response.json() if response.content else None

    async def set_adapter(
        self, adapter_id: str, internal_url: str, headers: dict[str, str] | None = None
    ) -> None:
        """Configure ``{configuration.adapter.internalUrl}`` and the outgoing headers."""
        body = {"internalUrl": internal_url, "headers": headers or {}}
        await self.call("PUT", f"/adapters/{adapter_id}", body)

    async def register_channel(
        self, merchant: str, channel: str, notifications: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace the channel's notifications; return them as stored (with ids)."""
        body = {"merchant": merchant, "channel": channel, "notifications": notifications}
        stored: list[dict[str, Any]] = (await self.call("PUT", "/notifications", body))[
            "notifications"
        ]
        return stored

    async def change_state(
        self, order_id: str, state: str, adapter_id: str = "other-adapter"
    ) -> dict[str, Any]:
        """Change an order's state as another adapter: ``{"changed", "events", "order"}``."""
        body = {"state": state, "adapterId": adapter_id}
        answer: dict[str, Any] = await self.call("POST", f"/orders/{order_id}/state", body)
        return answer

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Partially update the delivery faults; return all of them."""
        answer: dict[str, Any] = await self.call("PUT", "/notification-faults", faults)
        return answer

    async def set_delivery(self, **settings: Any) -> dict[str, Any]:
        """Partially update the delivery settings (attempts, backoff, timeout, concurrency)."""
        answer: dict[str, Any] = await self.call("PUT", "/notification-settings", settings)
        return answer

    async def attempts(self, **filters: str) -> list[dict[str, Any]]:
        """The attempt log, filtered by ``order_id``, ``notification_id`` or ``event_id``."""
        rows: list[dict[str, Any]] = (
            await self.call("GET", "/notifications/attempts", params=filters)
        )["attempts"]
        return rows

    async def events(self, **filters: str) -> list[dict[str, Any]]:
        """Events, filtered by ``order_id``, ``notification_id`` or ``status``."""
        rows: list[dict[str, Any]] = (
            await self.call("GET", "/notifications/events", params=filters)
        )["events"]
        return rows

    async def pending(self) -> int:
        """How many deliveries are not finished yet."""
        count: int = (await self.call("GET", "/notifications/pending"))["count"]
        return count

    async def wait_drained(self, timeout_s: float = 30.0, poll_s: float = 0.02) -> None:
        """Poll until no delivery is pending; ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while await self.pending():
            if time.monotonic() > deadline:
                raise TimeoutError(f"notifications still pending after {timeout_s} s")
            await asyncio.sleep(poll_s)

    async def reset(self) -> None:
        """Forget registrations, adapters, settings, faults, events and the attempt log."""
        await self.call("POST", "/notifications/reset")
