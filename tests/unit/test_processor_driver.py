"""The processor driver (bridge.processor) against an in-memory fake of the Norce Order API.

The API is a third-party HTTP service, so a fake of it is fine here: it keeps orders with their
transition history and records every call. What is checked is the driver's own job: which calls
it makes, the order-view cache, the memo of PUTs across a systemic failure, the write gate before
a DELETE, the replay state per scope, and the injected clock in every record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from bridge.commands import DeleteOrder, SetOrderState
from bridge.errors import (
    InvalidCommandError,
    NorceUnavailableError,
)
from bridge.lease import WriteGate, write_gate
from bridge.lru import Lru
from bridge.processor import Disposition, Processor, SourceRecord
from bridge.vocabulary import DeadLetterReason, Outcome, OutputKind

from .norce_fake import T0, FakeApi, Result

SRC = SourceRecord("commands", 0, 5, b"k", b'{"commandId": "c-9", "type": "DeleteOrder"}', (), 0)


@dataclass
class NotingGate:
    """A write gate that records what a DELETE noted durably."""

    notes: list[str | None] = field(default_factory=list)

    async def acquire(self) -> None:
        return None

    async def before_delete(self, previous_status: str | None) -> None:
        self.notes.append(previous_status)


@contextmanager
def gate(g: WriteGate) -> Iterator[None]:
    token = write_gate.set(g)
    try:
        yield
    finally:
        write_gate.reset(token)


def cmd(state: str | None, order_id: str = "o_1", cid: str = "c-1") -> SetOrderState | DeleteOrder:
    raw: dict[str, Any] = {
        "commandId": cid,
        "orderId": order_id,
        "merchant": "norce",
        "channel": "1",
        "issuedAt": "2026-11-27T09:59:00Z",
    }
    if state is None:
        return DeleteOrder.model_validate({**raw, "type": "DeleteOrder"})
    return SetOrderState.model_validate({**raw, "type": "SetOrderState", "state": state})


def api_with(*order_ids: str) -> FakeApi:
    return FakeApi(orders={o: [("checkout", T0 - timedelta(hours=1))] for o in order_ids})


def processor(api: FakeApi, **kwargs: Any) -> Processor:
    return Processor(api, clock=lambda: T0, **kwargs)


def event(d: Disposition) -> dict[str, Any]:
    [e] = [o.value for o in d.outputs if o.kind == OutputKind.EVENT]
    assert isinstance(e, dict)
    return e


def result(d: Disposition) -> dict[str, Any]:
    [r] = [o.value for o in d.outputs if o.kind == OutputKind.RESULT]
    assert isinstance(r, dict)
    return r


async def test_the_view_cache_saves_the_read_before_the_next_put() -> None:
    api = api_with("o_1")
    p = processor(api)
    assert (await p.handle(cmd("processing"), SRC)).outcome is Outcome.APPLIED
    assert (await p.handle(cmd("accepted", cid="c-2"), SRC)).outcome is Outcome.APPLIED
    assert api.calls == [
        ("GET", "o_1"),
        ("PUT", "o_1"),
        ("GET", "o_1"),
        ("PUT", "o_1"),
        ("GET", "o_1"),
    ]


async def test_the_view_cache_is_bounded() -> None:
    api = api_with("o_1", "o_2")
    p = processor(api, status_cache_size=1)
    await p.handle(cmd("processing", "o_1"), SRC)
    await p.handle(cmd("processing", "o_2"), SRC)  # evicts o_1's view
    api.calls.clear()
    await p.handle(cmd("accepted", "o_1", cid="c-3"), SRC)
    assert api.calls[0] == ("GET", "o_1")


async def test_a_put_that_succeeded_before_a_systemic_failure_is_not_sent_again() -> None:
    """PUT ok, re-fetch 503: the error propagates (the runtime holds the command); the retry
    only re-fetches and reports the transition the first attempt made."""
    api = api_with("o_1")
    p = processor(api)
    first = cmd("processing")
    await p.handle(cmd("checkout", cid="c-warm"), SRC)  # the order is seen: no read before PUT
    api.fail["GET"] = [NorceUnavailableError("down", status=503)]
    api.calls.clear()
    with pytest.raises(NorceUnavailableError):
        await p.handle(first, SRC)
    assert api.calls == [("PUT", "o_1"), ("GET", "o_1")]
    api.calls.clear()
    retried = await p.handle(first, SRC)
    assert api.calls == [("GET", "o_1")]
    assert retried.outcome is Outcome.APPLIED
    assert (event(retried)["previousStatus"], event(retried)["newStatus"]) == (
        "checkout",
        "processing",
    )
    # The memo is gone once the command is done: a third run decides afresh (no PUT: same state).
    api.calls.clear()
    again = await p.handle(first, SRC)
    assert again.outcome is Outcome.ALREADY_APPLIED


async def test_a_suspect_does_not_use_the_memo_of_puts() -> None:
    api = api_with("o_1")
    p = processor(api)
    await p.handle(cmd("checkout", cid="c-warm"), SRC)
    api.fail["GET"] = [NorceUnavailableError("down", status=503)]
    with pytest.raises(NorceUnavailableError):
        await p.handle(cmd("processing"), SRC)
    api.calls.clear()
    replayed = await p.handle(
        cmd("processing"), SRC, suspect_since=T0 - timedelta(minutes=1), scope="s2"
    )
    assert api.calls == [("GET", "o_1")]
    assert replayed.outcome is Outcome.ALREADY_APPLIED
    assert result(replayed)["replayed"] is True


async def test_a_delete_notes_the_previous_state_through_the_write_gate() -> None:
    api = api_with("o_1")
    p = processor(api)
    noting = NotingGate()
    with gate(noting):
        done = await p.handle(cmd(None), SRC)
    assert done.outcome is Outcome.APPLIED
    assert noting.notes == ["checkout"]
    assert api.calls == [("GET", "o_1"), ("DELETE", "o_1")]


async def test_a_deleted_order_is_forgotten_so_the_next_command_reads_it() -> None:
    api = api_with("o_1")
    p = processor(api)
    await p.handle(cmd("processing"), SRC)
    await p.handle(cmd(None, cid="d-1"), SRC)
    api.calls.clear()
    done = await p.handle(cmd("accepted", cid="c-2"), SRC)
    assert api.calls == [("GET", "o_1")]  # read (not cached), 404: no PUT
    assert done.dead_letter_reason is DeadLetterReason.ORDER_NOT_FOUND


async def test_a_404_forgets_the_view() -> None:
    api = api_with("o_1")
    p = processor(api)
    await p.handle(cmd("processing"), SRC)
    del api.orders["o_1"]  # deleted behind the bridge's back
    assert (await p.handle(cmd("accepted", cid="c-2"), SRC)).outcome is Outcome.FAILED
    api.orders["o_1"] = [("accepted", T0)]
    api.calls.clear()
    await p.handle(cmd("accepted", cid="c-3"), SRC)
    assert api.calls == [("GET", "o_1")]


async def test_forget_recovery_restarts_the_matching_of_that_scope() -> None:
    """x1 matched; after the scope is forgotten the same suspect is matched from the window
    again (its event is published again), without it the position already moved past it."""
    api = api_with("o_1")
    p = processor(api)
    await p.handle(cmd("processing"), SRC)
    window = T0 - timedelta(minutes=1)
    first = await p.handle(cmd("processing"), SRC, suspect_since=window, scope="s")
    assert [o.kind for o in first.outputs] == ["snapshot", "event", "result"]
    again = await p.handle(cmd("processing"), SRC, suspect_since=window, scope="s")
    assert [o.kind for o in again.outputs] == ["snapshot", "result"]  # position already there
    p.forget_recovery("s")
    fresh = await p.handle(cmd("processing"), SRC, suspect_since=window, scope="s")
    assert [o.kind for o in fresh.outputs] == ["snapshot", "event", "result"]


async def test_a_client_refusal_is_a_dead_letter_without_retry() -> None:
    class Refusing(FakeApi):
        async def get_order_json(self, order_id: str, *, merchant: str, channel: str) -> Result:
            raise InvalidCommandError("bad_header_value", "x-merchant is not printable ASCII")

    p = processor(Refusing())
    done = await p.handle(cmd("accepted"), SRC)
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.BAD_HEADER_VALUE


async def test_read_guard_reads_before_each_write() -> None:
    api = api_with("o_1")
    p = processor(api, read_before_write=True)
    await p.handle(cmd("processing"), SRC)
    api.calls.clear()
    await p.handle(cmd("accepted", cid="c-2"), SRC, dispatched_at=T0)
    assert api.calls == [("GET", "o_1"), ("PUT", "o_1"), ("GET", "o_1")]


def test_records_without_an_api_answer_carry_the_injected_clock() -> None:
    """invalid, internal_error, internal_failure and dead_letter stamp the processor's time."""
    p = processor(FakeApi())
    stamp = b"2026-11-27T10:00:00.000000Z"
    invalid = p.invalid(SRC, InvalidCommandError("invalid_json", "nope"))
    internal = p.internal_error(SRC, RuntimeError("bug"))
    failure = p.internal_failure(cmd("accepted"), SRC, RuntimeError("bug"))
    single = p.dead_letter(SRC, "oversize", ValueError("x"), stage="S")
    for out in (invalid.outputs[0], internal.outputs[0], failure.outputs[0], single):
        assert dict(out.headers)["__connect.errors.timestamp"] == stamp
    assert invalid.dead_letter_reason is DeadLetterReason.INVALID_JSON
    assert [o.kind for o in invalid.outputs] == ["dlq", "result"]  # the command id was readable
    assert failure.dead_letter_reason is DeadLetterReason.PROCESSING_ERROR
    assert failure.reason == "processing_error: RuntimeError"
    assert result(internal)["processedAt"].startswith("2026-11-27T10:00:00")


def test_lru_evicts_the_least_recently_used() -> None:
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert "b" not in lru
    assert ("a" in lru, "c" in lru, len(lru)) == (True, True, 2)
    assert lru.pop("a") == 1
    assert lru.pop("a") is None
    with pytest.raises(ValueError, match="capacity"):
        Lru[str, int](0)
