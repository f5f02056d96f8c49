"""The read-before-write guard (write_guard=lease+read) against the simulator on loopback.

A stale owner (a paused member, or any instance whose view of an order is old) re-reads the
order right before writing; when the order changed behind its back it checks the transitions
since its command was dispatched, like a replay, instead of writing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from bridge_devkit.harness import API_KEY, set_state, simulator
from norce_simulator import SimulatorHandle
from pydantic import SecretStr

from bridge.norce import NorceClient, build_http_client
from bridge.processor import Processor, SourceRecord

SRC = SourceRecord("commands", 0, 0, None, None, (), 0)


@asynccontextmanager
async def processors(
    sim: SimulatorHandle,
) -> AsyncIterator[Callable[[str, bool], Processor]]:
    opened = []

    def make(adapter: str, guard: bool) -> Processor:
        http = build_http_client(sim.url)
        opened.append(http)
        client = NorceClient(http, api_key=SecretStr(API_KEY), adapter_id=adapter)
        return Processor(client, read_before_write=guard)

    try:
        yield make
    finally:
        for http in opened:
            await http.aclose()


def writes_by(sim: SimulatorHandle, order_id: str, adapter: str) -> list[str]:
    return [
        str(c["body"])
        for c in sim.app.calls(order_id)
        if c["method"] == "PUT" and c["headers"]["x-adapterid"] == adapter
    ]


async def stale_owner_scenario(guard: bool) -> tuple[list[str], list[str], str]:
    """A stale owner caches an order, a new owner moves it on, the stale owner then runs the
    command the new owner already applied. Returns (history, the stale owner's PUTs, outcome)."""
    async with simulator() as sim, processors(sim) as make:
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        stale = make("stale-owner", guard)
        new = make("new-owner", guard)
        # The stale owner has seen the order (its cache says checkout).
        seen = await stale.handle(set_state(order, "checkout"), SRC)
        assert seen.outcome == "already_applied"
        dispatched = datetime.now(UTC) - timedelta(milliseconds=5)
        first = set_state(order, "processing")
        # The partition moved: the new owner applies the command and the next one.
        assert (await new.handle(first, SRC)).outcome == "applied"
        assert (await new.handle(set_state(order, "accepted"), SRC)).outcome == "applied"
        late = await stale.handle(first, SRC, dispatched_at=dispatched)
        return sim.app.history(order), writes_by(sim, order, "stale-owner"), late.outcome


async def test_stale_owner_with_the_read_guard_does_not_move_the_order_back() -> None:
    """With lease+read the stale owner sees its command in the history and does not write."""
    history, puts, outcome = await stale_owner_scenario(guard=True)
    assert history == ["checkout", "processing", "accepted"]
    assert puts == []
    assert outcome == "already_applied"


async def test_without_the_read_guard_a_stale_view_writes_blindly() -> None:
    """The contrast: lease alone trusts the cached view (the lease prevents this case for a
    fenced member; the read guard also covers other writers and stale caches): the stale PUT
    goes out, Norce refuses the backwards transition, a valid command is dead-lettered."""
    history, puts, outcome = await stale_owner_scenario(guard=False)
    assert len(puts) == 1
    assert outcome == "failed"
    assert history == ["checkout", "processing", "accepted"]


async def test_read_guard_still_applies_fresh_commands() -> None:
    """An order nobody else touched is written as usual, after one extra read."""
    async with simulator() as sim, processors(sim) as make:
        [order] = sim.app.seed(1, "norce", "1", status="checkout")
        p = make("owner", True)
        assert (await p.handle(set_state(order, "processing"), SRC)).outcome == "applied"
        now = datetime.now(UTC)
        second = await p.handle(set_state(order, "accepted"), SRC, dispatched_at=now)
        assert second.outcome == "applied"
        assert sim.app.history(order) == ["checkout", "processing", "accepted"]
        gets = [c for c in sim.app.calls(order) if c["method"] == "GET"]
        assert len(gets) == 4  # first command: read + re-fetch; second: guard read + re-fetch
