"""Replay matching against the order's history, with the simulator on loopback (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bridge_devkit.harness import API_KEY, set_state, simulator
from pydantic import SecretStr

from bridge.config import RetrySettings
from bridge.errors import NorceApiError
from bridge.norce import NorceClient, build_http_client
from bridge.processor import Processor, SourceRecord

SRC = SourceRecord("commands", 0, 0, None, None, (), 0)


async def test_a_replayed_command_whose_put_succeeded_before_still_claims_its_transition() -> None:
    """A command whose PUT went through but whose re-fetch failed (held, then the partition was
    reassigned to the same process) is replayed through the history match like every suspect,
    so the next command is matched from the right position and is not wrongly skipped."""
    async with simulator() as sim:
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        http = build_http_client(sim.url)
        client = NorceClient(
            http,
            api_key=SecretStr(API_KEY),
            retry=RetrySettings(max_attempts=1, base_delay_s=0.0),
        )
        try:
            p = Processor(client)
            window = datetime.now(UTC) - timedelta(seconds=1)
            x1 = set_state(order, "processing")
            x2 = set_state(order, "checkout")
            x3 = set_state(order, "processing")
            x4 = set_state(order, "checkout")
            assert (await p.handle(x1, SRC, scope="first")).outcome == "applied"
            assert (await p.handle(x2, SRC, scope="first")).outcome == "applied"
            # x3: the PUT succeeds, the re-fetch fails: the command is held.
            sim.app.set_faults(script=[{"method": "GET", "status": 503, "count": 1}])
            with pytest.raises(NorceApiError):
                await p.handle(x3, SRC, scope="first")
            assert sim.app.history(order) == ["checkout", "processing", "checkout", "processing"]
            # The partition comes back to this process: all four are suspects of one window.
            replayed = [
                await p.handle(c, SRC, suspect_since=window, scope="second")
                for c in (x1, x2, x3, x4)
            ]
            assert [r.outcome for r in replayed] == [
                "already_applied",
                "already_applied",
                "already_applied",
                "applied",
            ]
            assert sim.app.history(order) == [
                "checkout",
                "processing",
                "checkout",
                "processing",
                "checkout",
            ]
        finally:
            await http.aclose()
