"""The write gate is checked again by the HTTP transport, immediately before a write is sent."""

from __future__ import annotations

from typing import Literal

import pytest
from bridge_devkit.harness import API_KEY, simulator
from pydantic import SecretStr

from bridge.config import RetrySettings
from bridge.errors import NorceApiError
from bridge.lease import LeaseLost, write_gate
from bridge.norce import NorceClient, build_http_client


class CountingGate:
    """Grants the first ``grants`` acquisitions, then reports the partition lost."""

    def __init__(self, grants: int) -> None:
        self.grants = grants
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1
        if self.acquired > self.grants:
            raise LeaseLost("partition 0 is no longer assigned here")

    async def before_delete(self, previous_status: str | None) -> None:
        return None


@pytest.mark.parametrize("backend", ["aiohttp", "httpx"])
async def test_each_write_passes_the_gate_before_its_bytes_leave(
    backend: Literal["aiohttp", "httpx"],
) -> None:
    """The gate is acquired by the client before each attempt and, with the aiohttp transport,
    once more when the connection is in hand; reads never touch it."""
    async with simulator() as sim:
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        http = build_http_client(sim.url, http_backend=backend)
        client = NorceClient(http, api_key=SecretStr(API_KEY), retry=RetrySettings(max_attempts=1))
        gate = CountingGate(grants=10)
        token = write_gate.set(gate)
        try:
            await client.get_order_json(order, merchant="norce", channel="1")
            assert gate.acquired == 0
            await client.set_state(order, "processing", merchant="norce", channel="1")
            # aiohttp: before the attempt, with the connection in hand, and in its body writer
            assert gate.acquired == (3 if backend == "aiohttp" else 1)
        finally:
            write_gate.reset(token)
            await http.aclose()


@pytest.mark.parametrize("grants", [1, 2])
async def test_a_lease_lost_after_the_clients_check_stops_the_write(grants: int) -> None:
    """The client's own check passed, but the lease is gone once a connection is ready (1) or
    when aiohttp's body writer runs (2): the request is never written (no PUT at the API)."""
    async with simulator() as sim:
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        http = build_http_client(sim.url, http_backend="aiohttp")
        client = NorceClient(http, api_key=SecretStr(API_KEY), retry=RetrySettings(max_attempts=1))
        gate = CountingGate(grants=grants)
        token = write_gate.set(gate)
        try:
            with pytest.raises((LeaseLost, NorceApiError)):
                await client.set_state(order, "processing", merchant="norce", channel="1")
        finally:
            write_gate.reset(token)
            await http.aclose()
        assert [c for c in sim.app.calls(order) if c["method"] == "PUT"] == []
        assert sim.app.history(order) == ["checkout"]


async def test_a_closed_transport_never_opens_a_new_session() -> None:
    """A request after the http client was closed fails, even when the client had not sent
    anything yet (its aiohttp session not created): it must not create a session that nobody
    closes (a leak, and a request sent by a client already shut down)."""
    async with simulator() as sim:
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        http = build_http_client(sim.url, http_backend="aiohttp")
        await http.aclose()
        client = NorceClient(http, api_key=SecretStr(API_KEY), retry=RetrySettings(max_attempts=1))
        with pytest.raises(RuntimeError, match="closed"):
            await client.get_order_json(order, merchant="norce", channel="1")
        assert sim.app.calls(order) == []
