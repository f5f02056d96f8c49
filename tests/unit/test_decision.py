"""The pure decision core (bridge.decision): every row of the README's "Processing" table and
every case of "Replays never move an order backwards", each one deterministic test.

A test builds a :class:`Decision`, answers each action it asks for from a script, and checks the
actions asked for and the disposition. No event loop, no clock, no API.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.commands import AnyCommand, DeleteOrder, SetOrderState
from bridge.decision import (
    REPLAYED_REASON,
    Answer,
    Decision,
    Delete,
    Fetched,
    Get,
    Known,
    OrderView,
    Policy,
    Put,
    Refused,
    ReplayBook,
    Written,
)
from bridge.errors import InvalidCommandError, NorceInvalidRequestError, NorceNotFoundError
from bridge.outputs import Disposition, Output, SourceRecord
from bridge.vocabulary import DeadLetterReason, Outcome, OutputKind

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(seconds=2)
WINDOW = NOW - timedelta(minutes=5)  # a replay's dispatch window opened then
SRC = SourceRecord("commands", 3, 41, b"o_1", b'{"x":1}', (("trace", b"t-1"),), 0)
ORDER_ID = "o_yClTSySjyAuuBjmiBlHCjuEcTf"
SCOPE: Hashable = ("commands", 3, 2)  # (topic, partition, epoch) as the runtime passes it

Call = Get | Put | Delete


def stamp(offset_s: float) -> str:
    return (NOW + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")


def order(*history: tuple[str, float]) -> dict[str, Any]:
    """An order whose transitions are (status, seconds from NOW); it is in the last status."""
    return {
        "id": ORDER_ID,
        "merchant": "norce",
        "channel": "1",
        "state": {
            "currentStatus": history[-1][0],
            "transitions": [{"status": s, "timeStamp": stamp(t)} for s, t in history],
        },
    }


def set_state(
    state: str, *, cid: str = "c-1", expected: str | None = None, **extra: str
) -> SetOrderState:
    raw = {
        "type": "SetOrderState",
        "commandId": cid,
        "orderId": ORDER_ID,
        "merchant": "norce",
        "channel": "1",
        "issuedAt": stamp(-1),
        "state": state,
        "correlationId": "corr-7",
        **({"expectedState": expected} if expected else {}),
        **extra,
    }
    return SetOrderState.model_validate(raw)


def delete(*, cid: str = "d-1", expected: str | None = None, **extra: str) -> DeleteOrder:
    raw = {
        "type": "DeleteOrder",
        "commandId": cid,
        "orderId": ORDER_ID,
        "merchant": "norce",
        "channel": "1",
        "issuedAt": stamp(-1),
        **({"expectedState": expected} if expected else {}),
        **extra,
    }
    return DeleteOrder.model_validate(raw)


def not_found(attempts: int = 1) -> Refused:
    return Refused(NorceNotFoundError("not found", status=404, attempts=attempts))


def bad_request() -> Refused:
    return Refused(
        NorceInvalidRequestError(
            "rejected", status=400, code="InvalidTransition", api_message="no", attempts=1
        )
    )


def run(
    command: AnyCommand,
    answers: Sequence[Answer],
    *,
    known: Known | None = None,
    replays: ReplayBook | None = None,
    policy: Policy | None = None,
) -> tuple[list[Call], Disposition]:
    """Drive one decision with scripted answers; every answer must be asked for."""
    decision = Decision(
        command,
        SRC,
        known or Known(now=NOW),
        replays if replays is not None else ReplayBook(),
        policy or Policy(),
    )
    calls: list[Call] = []
    script = list(answers)
    action = decision.start()
    while not isinstance(action, Disposition):
        calls.append(action)
        assert script, f"the decision asked for {action} after the scripted answers"
        action = decision.feed(script.pop(0), LATER)
    assert not script, f"answers left unasked for: {script}"
    return calls, action


def suspect(**fields: Any) -> Known:
    return Known(now=NOW, suspect_since=WINDOW, scope=SCOPE, **fields)


def kinds(done: Disposition) -> list[OutputKind]:
    return [o.kind for o in done.outputs]


def one(done: Disposition, kind: OutputKind) -> dict[str, Any]:
    [out] = [o for o in done.outputs if o.kind == kind]
    assert isinstance(out.value, dict)
    return out.value


def result(done: Disposition) -> dict[str, Any]:
    return one(done, OutputKind.RESULT)


def header(out: Output, name: str) -> bytes | None:
    return dict(out.headers)[name]


# -- Processing: SetOrderState ----------------------------------------------------------------


def test_set_state_on_an_unseen_order_reads_puts_and_refetches() -> None:
    """GET (not seen yet) -> PUT -> GET; snapshot + OrderStateChanged; applied."""
    before = order(("checkout", -60))
    after = order(("checkout", -60), ("accepted", 1))
    calls, done = run(
        set_state("accepted"),
        [Fetched(before, 1), Written(2), Fetched(after, 1)],
    )
    assert calls == [Get(), Put("accepted", OrderView("checkout", 1)), Get()]
    assert done.outcome is Outcome.APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.EVENT, OutputKind.RESULT]
    event = one(done, OutputKind.EVENT)
    assert (event["previousStatus"], event["newStatus"]) == ("checkout", "accepted")
    assert event["transitionAt"] == stamp(1)
    assert event["eventId"] == "c-1:state-changed"
    res = result(done)
    assert (res["outcome"], res["currentStatus"], res["attempts"]) == ("applied", "accepted", 4)
    assert res["processedAt"].startswith("2026-11-27T10:00:02")  # the time fed with the answer
    assert one(done, OutputKind.SNAPSHOT)["fetchedAt"].startswith("2026-11-27T10:00:00")


def test_set_state_on_a_seen_order_puts_without_reading_first() -> None:
    """The bridge's view is enough: PUT -> GET, two calls."""
    after = order(("checkout", -60), ("accepted", 1))
    calls, done = run(
        set_state("accepted"),
        [Written(1), Fetched(after, 1)],
        known=Known(now=NOW, cached=OrderView("checkout", 1)),
    )
    assert calls == [Put("accepted", OrderView("checkout", 1)), Get()]
    assert done.outcome is Outcome.APPLIED
    assert one(done, OutputKind.EVENT)["previousStatus"] == "checkout"


def test_set_state_previous_status_comes_from_the_orders_history() -> None:
    """Another writer moved the order behind the bridge's back: the event's previous state is
    the order's own second-to-last transition, not the bridge's stale memory."""
    after = order(("checkout", -60), ("processing", -30), ("accepted", 1))
    _, done = run(
        set_state("accepted"),
        [Written(1), Fetched(after, 1)],
        known=Known(now=NOW, cached=OrderView("checkout", 1)),
    )
    assert one(done, OutputKind.EVENT)["previousStatus"] == "processing"


def test_same_state_as_now_reads_and_reports_already_applied() -> None:
    """Same state as now: GET only; snapshot; already_applied (no PUT)."""
    calls, done = run(set_state("accepted"), [Fetched(order(("accepted", -60)), 1)])
    assert calls == [Get()]
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.RESULT]
    assert result(done)["reason"] == "order is already accepted"


def test_same_state_with_a_current_view_is_a_no_op_put_reported_already_applied() -> None:
    """The view said 'accepted' and the PUT added no transition: already_applied, no event."""
    same = order(("accepted", -60))
    calls, done = run(
        set_state("accepted"),
        [Written(1), Fetched(same, 1)],
        known=Known(now=NOW, cached=OrderView("accepted", 1)),
    )
    assert calls == [Put("accepted", OrderView("accepted", 1)), Get()]
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.RESULT]


def test_expected_state_not_met_is_rejected_with_the_current_state() -> None:
    calls, done = run(
        set_state("accepted", expected="processing"), [Fetched(order(("checkout", -60)), 1)]
    )
    assert calls == [Get()]
    assert done.outcome is Outcome.REJECTED
    assert kinds(done) == [OutputKind.RESULT]
    assert result(done)["currentStatus"] == "checkout"
    assert result(done)["reason"] == "expected state processing, order is checkout"


def test_expected_state_met_is_applied() -> None:
    before = order(("processing", -60))
    after = order(("processing", -60), ("accepted", 1))
    calls, done = run(
        set_state("accepted", expected="processing"),
        [Fetched(before, 1), Written(1), Fetched(after, 1)],
        known=Known(now=NOW, cached=OrderView("processing", 1)),  # read anyway: a precondition
    )
    assert [type(c) for c in calls] == [Get, Put, Get]
    assert done.outcome is Outcome.APPLIED


def test_expires_at_passed_is_expired_with_the_current_state() -> None:
    cmd = set_state("accepted", expiresAt=stamp(-0.5))
    calls, done = run(cmd, [Fetched(order(("checkout", -60)), 1)])
    assert calls == [Get()]
    assert done.outcome is Outcome.EXPIRED
    assert result(done)["currentStatus"] == "checkout"
    assert result(done)["reason"].startswith("expired at ")


def test_older_than_max_command_age_is_expired() -> None:
    calls, done = run(
        set_state("accepted"),
        [Fetched(order(("checkout", -60)), 1)],
        policy=Policy(max_command_age_s=0.5),
    )
    assert calls == [Get()]
    assert done.outcome is Outcome.EXPIRED
    assert "maximum command age" in (done.reason or "")


def test_an_expired_command_of_a_deleted_order_is_expired_not_failed() -> None:
    _, done = run(set_state("accepted", expiresAt=stamp(-0.5)), [not_found()])
    assert done.outcome is Outcome.EXPIRED
    assert done.dead_letter_reason is None


def test_api_400_on_put_is_a_dead_letter_and_failed_with_status_and_code() -> None:
    calls, done = run(
        set_state("accepted"),
        [bad_request()],
        known=Known(now=NOW, cached=OrderView("checkout", 1)),
    )
    assert [type(c) for c in calls] == [Put]
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.API_REJECTED
    assert kinds(done) == [OutputKind.DLQ, OutputKind.RESULT]
    dlq = done.outputs[0]
    assert dlq.value == SRC.value
    assert dlq.key == SRC.key
    assert header(dlq, "__connect.errors.reason") == b"api_rejected"
    assert header(dlq, "__connect.errors.http.status") == b"400"
    assert header(dlq, "__connect.errors.stage") == b"TASK_PUT"
    assert header(dlq, "__connect.errors.timestamp") == b"2026-11-27T10:00:02.000000Z"
    assert header(dlq, "trace") == b"t-1"
    res = result(done)
    assert (res["httpStatus"], res["currentStatus"]) == (400, "checkout")
    assert res["reason"] == "api_rejected: HTTP 400 InvalidTransition no"


def test_api_404_on_put_is_a_dead_letter_order_not_found() -> None:
    _, done = run(
        set_state("accepted"),
        [not_found(attempts=2)],
        known=Known(now=NOW, cached=OrderView("checkout", 1)),
    )
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.ORDER_NOT_FOUND
    assert result(done)["attempts"] == 2
    assert header(done.outputs[0], "__connect.errors.attempts") == b"2"


def test_api_404_on_the_first_read_is_a_dead_letter_order_not_found() -> None:
    calls, done = run(set_state("accepted"), [not_found()])
    assert calls == [Get()]
    assert done.dead_letter_reason is DeadLetterReason.ORDER_NOT_FOUND
    assert result(done)["reason"] == "order_not_found: HTTP 404"


def test_api_400_on_a_read_is_a_dead_letter_api_rejected() -> None:
    _, done = run(set_state("accepted"), [bad_request()])
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.API_REJECTED


def test_a_refetch_404_after_the_put_is_applied_without_outputs() -> None:
    """Deleted between the PUT and the re-fetch: the PUT happened, so applied."""
    _, done = run(
        set_state("accepted"),
        [Written(1), not_found()],
        known=Known(now=NOW, cached=OrderView("checkout", 1)),
    )
    assert done.outcome is Outcome.APPLIED
    assert kinds(done) == [OutputKind.RESULT]
    assert result(done)["reason"] == "order was deleted before it could be re-fetched"


def test_a_refetch_400_after_the_put_is_a_dead_letter() -> None:
    _, done = run(
        set_state("accepted"),
        [Written(1), bad_request()],
        known=Known(now=NOW, cached=OrderView("checkout", 1)),
    )
    assert done.dead_letter_reason is DeadLetterReason.API_REJECTED


def test_a_put_that_already_succeeded_only_refetches() -> None:
    """The memo of PUTs: an earlier attempt's PUT went through, its re-fetch failed."""
    after = order(("checkout", -60), ("accepted", 1))
    calls, done = run(
        set_state("accepted"),
        [Fetched(after, 1)],
        known=Known(now=NOW, put_done=OrderView("checkout", 1)),
    )
    assert calls == [Get()]
    assert done.outcome is Outcome.APPLIED
    assert one(done, OutputKind.EVENT)["previousStatus"] == "checkout"


def test_a_value_the_client_refuses_is_a_dead_letter_at_the_parse_stage() -> None:
    """The client cannot send a header value (bad_header_value): dead letter, no retry."""
    refusal = Refused(InvalidCommandError("bad_header_value", "x-merchant is not ASCII"))
    _, done = run(set_state("accepted"), [refusal])
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.BAD_HEADER_VALUE
    assert header(done.outputs[0], "__connect.errors.stage") == b"VALUE_CONVERTER"
    assert result(done)["attempts"] == 0


def test_an_order_norce_returns_that_cannot_be_mapped_is_a_dead_letter() -> None:
    broken = order(("accepted", -60))
    broken["total"] = {"includingVat": "a lot"}
    _, done = run(set_state("accepted"), [Fetched(broken, 1)])
    assert done.dead_letter_reason is DeadLetterReason.UNMAPPABLE_ORDER
    assert header(done.outputs[0], "__connect.errors.stage") == b"TASK_PUT"
    assert "total.includingVat" in (done.reason or "")


# -- Processing: DeleteOrder ------------------------------------------------------------------


def test_delete_of_an_unseen_order_reads_then_deletes() -> None:
    """(GET) -> DELETE: tombstone + OrderDeleted; applied."""
    calls, done = run(delete(), [Fetched(order(("accepted", -60)), 1), Written(1)])
    assert calls == [Get(), Delete("accepted")]
    assert done.outcome is Outcome.APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.EVENT, OutputKind.RESULT]
    tombstone = done.outputs[0]
    assert tombstone.value is None
    assert tombstone.key == ORDER_ID.encode()
    event = one(done, OutputKind.EVENT)
    assert (event["previousStatus"], event["alreadyDeleted"]) == ("accepted", False)
    assert event["eventId"] == "d-1:deleted"
    assert result(done)["attempts"] == 2


def test_delete_of_a_seen_order_deletes_at_once() -> None:
    calls, done = run(
        delete(), [Written(1)], known=Known(now=NOW, cached=OrderView("completed", 3))
    )
    assert calls == [Delete("completed")]
    assert done.outcome is Outcome.APPLIED


def test_delete_404_is_already_applied_order_already_deleted() -> None:
    calls, done = run(
        delete(), [not_found()], known=Known(now=NOW, cached=OrderView("completed", 3))
    )
    assert calls == [Delete("completed")]
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert result(done)["reason"] == "order already deleted"
    assert one(done, OutputKind.EVENT)["alreadyDeleted"] is True


def test_delete_of_an_order_already_gone_at_the_read_is_already_applied() -> None:
    calls, done = run(delete(), [not_found()])
    assert calls == [Get()]
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert one(done, OutputKind.EVENT)["previousStatus"] is None


def test_delete_with_expected_state_not_met_is_rejected() -> None:
    _, done = run(delete(expected="completed"), [Fetched(order(("accepted", -60)), 1)])
    assert done.outcome is Outcome.REJECTED
    assert result(done)["reason"] == "expected state completed, order is accepted"


def test_delete_with_expected_state_of_a_deleted_order_is_expired_when_expired() -> None:
    _, done = run(delete(expiresAt=stamp(-0.5)), [not_found()])
    assert done.outcome is Outcome.EXPIRED
    assert result(done)["currentStatus"] is None


def test_delete_expired_reports_the_current_state() -> None:
    _, done = run(delete(expiresAt=stamp(-0.5)), [Fetched(order(("accepted", -60)), 1)])
    assert done.outcome is Outcome.EXPIRED
    assert result(done)["currentStatus"] == "accepted"


def test_delete_400_is_a_dead_letter_api_rejected() -> None:
    _, done = run(delete(), [bad_request()], known=Known(now=NOW, cached=OrderView("x", 1)))
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.API_REJECTED


def test_delete_read_400_is_a_dead_letter_api_rejected() -> None:
    _, done = run(delete(), [bad_request()])
    assert done.dead_letter_reason is DeadLetterReason.API_REJECTED


def test_the_read_guard_reads_before_every_delete() -> None:
    calls, _ = run(
        delete(),
        [Fetched(order(("accepted", -60)), 1), Written(1)],
        known=Known(now=NOW, cached=OrderView("accepted", 1)),
        policy=Policy(read_before_write=True),
    )
    assert calls == [Get(), Delete("accepted")]


# -- Fencing: the read-before-write guard -----------------------------------------------------


def test_read_guard_finds_the_command_in_the_history_since_dispatch() -> None:
    """The order changed behind the bridge's back, and this command's transition is there:
    already_applied (replayed) instead of a second write."""
    changed = order(("checkout", -60), ("accepted", 1))
    calls, done = run(
        set_state("accepted"),
        [Fetched(changed, 1)],
        known=Known(now=NOW, cached=OrderView("checkout", 1), dispatched_at=NOW),
        policy=Policy(read_before_write=True),
    )
    assert calls == [Get()]
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert result(done)["replayed"] is True


def test_read_guard_writes_when_the_command_is_not_in_the_history() -> None:
    changed = order(("checkout", -60), ("processing", 1))
    after = order(("checkout", -60), ("processing", 1), ("accepted", 2))
    calls, done = run(
        set_state("accepted"),
        [Fetched(changed, 1), Written(1), Fetched(after, 1)],
        known=Known(now=NOW, cached=OrderView("checkout", 1), dispatched_at=NOW),
        policy=Policy(read_before_write=True),
    )
    assert [type(c) for c in calls] == [Get, Put, Get]
    assert done.outcome is Outcome.APPLIED


# -- Replays never move an order backwards ----------------------------------------------------


def test_a_matched_suspect_is_already_applied_and_republishes_its_first_outputs() -> None:
    """Its transition is in the history since the window: no PUT; the event with the previous
    and new state and the transition time from the history, the same eventId, the snapshot (it
    is still the newest) and a result carrying the state it produced."""
    history = order(("checkout", -3600), ("accepted", -60))
    calls, done = run(set_state("accepted"), [Fetched(history, 1)], known=suspect())
    assert calls == [Get()]
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.EVENT, OutputKind.RESULT]
    event = one(done, OutputKind.EVENT)
    assert (event["previousStatus"], event["newStatus"]) == ("checkout", "accepted")
    assert event["transitionAt"] == stamp(-60)
    assert event["occurredAt"].startswith("2026-11-27T09:59:00")
    assert event["eventId"] == "c-1:state-changed"
    res = result(done)
    assert (res["replayed"], res["currentStatus"], res["reason"]) == (
        True,
        "accepted",
        REPLAYED_REASON,
    )


def test_an_unmatched_suspect_is_executed_and_ends_the_orders_matching() -> None:
    """Not in the history: executed (PUT); the order's later suspects are executed too."""
    replays = ReplayBook()
    history = order(("checkout", -3600))
    after = order(("checkout", -3600), ("accepted", 1))
    calls, done = run(
        set_state("accepted"),
        [Fetched(history, 1), Written(1), Fetched(after, 1)],
        known=suspect(),
        replays=replays,
    )
    assert [type(c) for c in calls] == [Get, Put, Get]
    assert done.outcome is Outcome.APPLIED
    assert result(done)["replayed"] is False
    # A later suspect of the same order, whose target *is* in the history, is executed anyway.
    later = order(("checkout", -3600), ("accepted", 1), ("completed", 2))
    calls, done = run(
        set_state("checkout", cid="c-2"),
        [Written(1), Fetched(later, 1)],
        known=suspect(cached=OrderView("accepted", 2)),
        replays=replays,
    )
    assert [type(c) for c in calls] == [Put, Get]


def test_several_suspects_of_one_order_match_in_offset_order() -> None:
    """x1 -> processing, x2 -> accepted, x3 -> processing (not there): x1 and x2 matched, in
    order, each with its own previous state; only the newest gets a snapshot; x3 executes."""
    replays = ReplayBook()
    history = order(("checkout", -3600), ("processing", -50), ("accepted", -40))
    _, first = run(
        set_state("processing", cid="x1"), [Fetched(history, 1)], known=suspect(), replays=replays
    )
    _, second = run(
        set_state("accepted", cid="x2"), [Fetched(history, 1)], known=suspect(), replays=replays
    )
    assert (first.outcome, second.outcome) == (Outcome.ALREADY_APPLIED,) * 2
    assert kinds(first) == [OutputKind.EVENT, OutputKind.RESULT]  # no longer the newest
    assert kinds(second) == [OutputKind.SNAPSHOT, OutputKind.EVENT, OutputKind.RESULT]
    assert one(first, OutputKind.EVENT)["previousStatus"] == "checkout"
    assert one(second, OutputKind.EVENT)["previousStatus"] == "processing"
    assert result(first)["currentStatus"] == "processing"  # what x1 produced, not "accepted"
    calls, third = run(
        set_state("processing", cid="x3"),
        [Fetched(history, 1), Written(1), Fetched(history, 1)],
        known=suspect(),
        replays=replays,
    )
    assert [type(c) for c in calls] == [Get, Put, Get]
    assert result(third)["replayed"] is False


def test_a_suspect_already_at_its_target_position_is_matched_without_an_event() -> None:
    """The order was already in the command's target at the window's start (a no-op first
    execution): already_applied, snapshot only."""
    history = order(("accepted", -3600))
    _, done = run(set_state("accepted"), [Fetched(history, 1)], known=suspect())
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.RESULT]


def test_transitions_before_the_window_start_are_not_matched() -> None:
    """'accepted' happened before the window opened: it is not this command's doing."""
    history = order(("accepted", -3600), ("checkout", -1800))
    after = order(("accepted", -3600), ("checkout", -1800), ("accepted", 1))
    calls, done = run(
        set_state("accepted"),
        [Fetched(history, 1), Written(1), Fetched(after, 1)],
        known=suspect(),
    )
    assert [type(c) for c in calls] == [Get, Put, Get]
    assert done.outcome is Outcome.APPLIED


def test_an_order_created_inside_the_window_starts_from_its_creation_state() -> None:
    history = order(("checkout", -100), ("processing", -50))
    _, done = run(set_state("processing"), [Fetched(history, 1)], known=suspect())
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert one(done, OutputKind.EVENT)["previousStatus"] == "checkout"


def test_a_suspect_of_an_order_deleted_by_a_later_command_is_already_applied() -> None:
    """Gone at the replay's read: a later command deleted it; this one moved it to its target
    first, and the later suspect delete reports that state as the one it deleted from."""
    replays = ReplayBook()
    calls, done = run(set_state("accepted"), [not_found()], known=suspect(), replays=replays)
    assert calls == [Get()]
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert result(done)["replayed"] is True
    assert result(done)["currentStatus"] == "accepted"
    _, deleted = run(delete(), [not_found()], known=suspect(), replays=replays)
    assert deleted.outcome is Outcome.ALREADY_APPLIED
    event = one(deleted, OutputKind.EVENT)
    assert (event["alreadyDeleted"], event["previousStatus"]) == (False, "accepted")


def test_a_delete_replay_claims_the_deletion_once() -> None:
    """The first suspect delete of a gone order claims it (alreadyDeleted=false, with the noted
    state); a second delete in the same replay is alreadyDeleted=true."""
    replays = ReplayBook()
    _, first = run(
        delete(), [not_found()], known=suspect(delete_note=("completed",)), replays=replays
    )
    assert first.outcome is Outcome.ALREADY_APPLIED
    assert result(first)["replayed"] is True
    event = one(first, OutputKind.EVENT)
    assert (event["alreadyDeleted"], event["previousStatus"]) == (False, "completed")
    _, second = run(delete(cid="d-2"), [not_found()], known=suspect(), replays=replays)
    assert one(second, OutputKind.EVENT)["alreadyDeleted"] is True
    assert result(second)["replayed"] is False


def test_a_suspect_delete_of_an_existing_order_is_executed() -> None:
    replays = ReplayBook()
    calls, done = run(
        delete(), [Fetched(order(("accepted", -60)), 1), Written(1)], known=suspect(),
        replays=replays,
    )  # fmt: skip
    assert calls == [Get(), Delete("accepted")]
    assert done.outcome is Outcome.APPLIED
    # The order's matching is over: a later suspect delete finding it gone is alreadyDeleted.
    _, again = run(delete(cid="d-2"), [not_found()], known=suspect(), replays=replays)
    assert one(again, OutputKind.EVENT)["alreadyDeleted"] is True


def test_a_suspect_delete_whose_delete_404s_claims_the_deletion() -> None:
    """Seen by this replay, then gone at the DELETE: the replay's position is what it deleted."""
    calls, done = run(delete(), [not_found()], known=suspect(cached=OrderView("accepted", 2)))
    assert calls == [Delete("accepted")]
    assert result(done)["replayed"] is True


def test_a_fresh_command_ends_the_orders_matching() -> None:
    """A non-suspect command of the order (the replay is over) drops its matching state."""
    replays = ReplayBook()
    history = order(("checkout", -3600), ("processing", -50), ("accepted", -40))
    run(set_state("processing", cid="x1"), [Fetched(history, 1)], known=suspect(), replays=replays)
    assert len(replays) == 1
    fresh = Known(now=NOW, scope=SCOPE)
    run(set_state("accepted", cid="x2"), [Fetched(history, 1)], known=fresh, replays=replays)
    assert len(replays) == 0


def test_a_revoked_scope_forgets_its_matching_only() -> None:
    replays = ReplayBook()
    history = order(("checkout", -3600), ("processing", -50))
    run(set_state("processing"), [Fetched(history, 1)], known=suspect(), replays=replays)
    other = replace(suspect(), scope=("commands", 4, 1))
    run(set_state("processing"), [Fetched(history, 1)], known=other, replays=replays)
    assert len(replays) == 2
    replays.forget(SCOPE)
    assert len(replays) == 1


def test_a_suspect_whose_put_succeeded_before_claims_its_transition_again() -> None:
    """The memo of PUTs is not used for suspects: the replay matches them like the others."""
    history = order(("checkout", -3600), ("accepted", -60))
    calls, done = run(
        set_state("accepted"),
        [Fetched(history, 1)],
        known=suspect(put_done=None, cached=OrderView("accepted", 2)),
    )
    assert calls == [Get()]
    assert result(done)["replayed"] is True


# -- the protocol -----------------------------------------------------------------------------


def test_answers_are_refused_before_start_and_after_done() -> None:
    d = Decision(set_state("accepted"), SRC, Known(now=NOW), ReplayBook(), Policy())
    with pytest.raises(RuntimeError):
        d.feed(Written(1), NOW)
    assert d.start() == Get()
    with pytest.raises(RuntimeError):
        d.start()
    done = d.feed(Fetched(order(("accepted", -1)), 1), NOW)
    assert isinstance(done, Disposition)
    with pytest.raises(RuntimeError):
        d.feed(Written(1), NOW)


def test_a_get_answered_with_written_is_a_driver_bug() -> None:
    d = Decision(set_state("accepted"), SRC, Known(now=NOW), ReplayBook(), Policy())
    d.start()
    with pytest.raises(TypeError):
        d.feed(Written(1), NOW)


def test_an_order_without_transitions_is_matched_on_its_current_status() -> None:
    """No history at all (an API that keeps none): the current status is the position."""
    bare = {**order(("accepted", 0)), "state": {"currentStatus": "accepted"}}
    _, done = run(set_state("accepted"), [Fetched(bare, 1)], known=suspect())
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert result(done)["replayed"] is True


def test_an_order_without_a_state_object_has_no_previous_status() -> None:
    _, done = run(delete(), [Fetched({"id": ORDER_ID}, 1), Written(1)])
    assert done.outcome is Outcome.APPLIED
    assert one(done, OutputKind.EVENT)["previousStatus"] is None
