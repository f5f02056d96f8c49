"""The decision core of ``RefreshOrder`` (bridge.decision.refresh): every row of the README's
"Processing" table for it, each one deterministic test, plus the command model (JSON and Avro),
the order state record and its encoding next to the outputs."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from bridge.codec import AvroCodec
from bridge.commands import (
    RefreshOrder,
    command_to_avro_record,
    command_to_json,
    parse_command,
    received_at_ms,
)
from bridge.decision import Fetched, Get, Known, Policy
from bridge.decision.announce import external_events, index_of
from bridge.decision.history import transitions
from bridge.decision.refresh import STALE_REASON, UNCHANGED_REASON
from bridge.errors import InvalidCommandError
from bridge.order_state import OrderState, decode_state, order_digest
from bridge.outputs import new_order_state
from bridge.settle import ORDER_STATE_TOPIC, encode_outputs
from bridge.vocabulary import DeadLetterReason, Outcome, OutputKind
from tests.unit.test_decision import (
    NOW,
    ORDER_ID,
    SRC,
    bad_request,
    kinds,
    not_found,
    one,
    order,
    result,
    run,
    set_state,
    stamp,
)

ACCEPTED = order(("checkout", -60), ("accepted", 1))
PROCESSING = order(("checkout", -60), ("accepted", 1), ("processing", 5))


def refresh(*, cid: str = "r-1", **extra: Any) -> RefreshOrder:
    raw = {
        "type": "RefreshOrder",
        "commandId": cid,
        "orderId": ORDER_ID,
        "merchant": "norce",
        "channel": "1",
        "issuedAt": stamp(-1),
        "reason": "notification",
        **extra,
    }
    return RefreshOrder.model_validate(raw)


def published(o: dict[str, Any], cid: str = "c-0") -> OrderState:
    return OrderState.of_order(o, now=NOW, command_id=cid)


def known(last: OrderState | None) -> Known:
    return Known(now=NOW, published=last)


# -- rows --------------------------------------------------------------------------------------


def test_one_command_run_again_after_a_later_change_announces_it_under_another_id() -> None:
    """A duplicate notification relayed late is the same command (same id) run after the next
    change: its event is that change's, so it must not reuse the first run's eventId; a replay
    that reads the same order rebuilds the same id."""
    checkout = order(("checkout", -60))
    _, first = run(refresh(), [Fetched(ACCEPTED, 1)], known=known(published(checkout)))
    _, again = run(refresh(), [Fetched(PROCESSING, 1)], known=known(published(ACCEPTED)))
    _, replay = run(refresh(), [Fetched(ACCEPTED, 1)], known=known(published(checkout)))
    ids = [one(d, OutputKind.EVENT)["eventId"] for d in (first, again, replay)]
    assert ids == ["r-1:state-changed:2", "r-1:state-changed:3", "r-1:state-changed:2"]


def test_changed_status_publishes_snapshot_and_external_event() -> None:
    calls, done = run(refresh(), [Fetched(PROCESSING, 1)], known=known(published(ACCEPTED)))
    assert calls == [Get()]  # always a fresh read
    assert done.outcome is Outcome.APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.EVENT, OutputKind.RESULT]
    event = one(done, OutputKind.EVENT)
    assert (event["previousStatus"], event["newStatus"]) == ("accepted", "processing")
    assert event["source"] == "external"
    assert event["eventId"] == "r-1:state-changed:3"  # the command and the change it saw
    assert event["transitionAt"] == stamp(5)
    assert event["occurredAt"].startswith("2026-11-27T10:00:05")  # the transition's own time
    state = new_order_state(done)
    assert state is not None
    assert (state.status, state.transitions, state.deleted) == ("processing", 3, False)
    assert state.digest == order_digest(PROCESSING)
    assert result(done)["currentStatus"] == "processing"


def test_unchanged_order_publishes_nothing() -> None:
    _, done = run(refresh(), [Fetched(ACCEPTED, 1)], known=known(published(ACCEPTED)))
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert done.reason == UNCHANGED_REASON
    assert kinds(done) == [OutputKind.RESULT]
    assert new_order_state(done) is None


def test_same_status_other_content_republishes_the_snapshot_without_event() -> None:
    changed = {**ACCEPTED, "attributes": {"note": "gift"}}
    _, done = run(refresh(), [Fetched(changed, 1)], known=known(published(ACCEPTED)))
    assert done.outcome is Outcome.APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.RESULT]


def test_stale_read_publishes_nothing() -> None:
    """Fewer transitions than already published: an older snapshot is never published."""
    _, done = run(refresh(), [Fetched(ACCEPTED, 1)], known=known(published(PROCESSING)))
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert done.reason is not None
    assert done.reason.startswith(STALE_REASON)
    assert kinds(done) == [OutputKind.RESULT]
    assert result(done)["currentStatus"] == "processing"


def test_first_sight_publishes_the_snapshot_without_event() -> None:
    """Nothing published yet (a backfill or an operator's refresh): the snapshot is the baseline,
    no change was observed."""
    for why in ({"reason": None}, {"reason": "backfill"}, {"reason": "manual"}):
        _, done = run(refresh(**why), [Fetched(ACCEPTED, 1)], known=known(None))
        assert done.outcome is Outcome.APPLIED
        assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.RESULT]


def test_first_sight_from_a_notification_announces_the_latest_transition() -> None:
    """Norce said the order changed: the change is its latest transition, announced once, with
    the status before it from the order's own history."""
    _, done = run(refresh(reason="notification"), [Fetched(PROCESSING, 1)], known=known(None))
    assert done.outcome is Outcome.APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.EVENT, OutputKind.RESULT]
    event = one(done, OutputKind.EVENT)
    assert (event["previousStatus"], event["newStatus"]) == ("accepted", "processing")
    assert event["source"] == "external"
    created = order(("checkout", -60))
    _, done = run(refresh(reason="notification"), [Fetched(created, 1)], known=known(None))
    event = one(done, OutputKind.EVENT)
    assert (event["previousStatus"], event["newStatus"]) == (None, "checkout")
    # once published, a second notification of the same state announces nothing
    _, again = run(
        refresh(reason="notification"), [Fetched(PROCESSING, 1)], known=known(published(PROCESSING))
    )
    assert again.outcome is Outcome.ALREADY_APPLIED


def test_404_publishes_tombstone_and_order_deleted() -> None:
    _, done = run(refresh(), [not_found()], known=known(published(ACCEPTED)))
    assert done.outcome is Outcome.APPLIED
    assert kinds(done) == [OutputKind.SNAPSHOT, OutputKind.EVENT, OutputKind.RESULT]
    tomb = done.outputs[0]
    assert tomb.value is None
    deleted = one(done, OutputKind.EVENT)
    assert deleted["previousStatus"] == "accepted"
    assert deleted["alreadyDeleted"] is False
    state = new_order_state(done)
    assert state is not None
    assert state.deleted
    assert state.status == "accepted"


def test_404_after_delete_publishes_nothing() -> None:
    gone = OrderState.gone("accepted", now=NOW, command_id="d-1")
    _, done = run(refresh(), [not_found()], known=known(gone))
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert kinds(done) == [OutputKind.RESULT]


def test_order_reading_as_existing_after_its_tombstone_is_a_stale_read() -> None:
    gone = OrderState.gone("accepted", now=NOW, command_id="d-1")
    _, done = run(refresh(), [Fetched(ACCEPTED, 1)], known=known(gone))
    assert done.outcome is Outcome.ALREADY_APPLIED
    assert done.reason is not None
    assert done.reason.startswith(STALE_REASON)
    assert kinds(done) == [OutputKind.RESULT]


@pytest.mark.parametrize("answer", ["found", "gone"])
def test_expired_publishes_nothing(answer: str) -> None:
    cmd = refresh(expiresAt=stamp(-0.5))
    reply = Fetched(PROCESSING, 1) if answer == "found" else not_found()
    _, done = run(cmd, [reply], known=known(published(ACCEPTED)))
    assert done.outcome is Outcome.EXPIRED
    assert kinds(done) == [OutputKind.RESULT]
    assert result(done)["currentStatus"] == ("processing" if answer == "found" else None)


def test_max_command_age_expires_it_too() -> None:
    cmd = refresh(issuedAt=(NOW - timedelta(hours=2)).isoformat())
    _, done = run(cmd, [Fetched(ACCEPTED, 1)], policy=Policy(max_command_age_s=60))
    assert done.outcome is Outcome.EXPIRED


def test_400_on_read_is_a_dead_letter() -> None:
    _, done = run(refresh(), [bad_request()])
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.API_REJECTED
    assert kinds(done) == [OutputKind.DLQ, OutputKind.RESULT]


def test_unmappable_order_is_a_dead_letter() -> None:
    broken = {**ACCEPTED, "total": {"includingVat": "a lot"}}
    _, done = run(refresh(), [Fetched(broken, 1)])
    assert done.outcome is Outcome.FAILED
    assert done.dead_letter_reason is DeadLetterReason.UNMAPPABLE_ORDER


def test_bridges_own_set_state_event_says_bridge_and_records_state() -> None:
    before = order(("checkout", -60))
    _, done = run(set_state("accepted"), [Fetched(before, 1), *_put_then(ACCEPTED)])
    assert one(done, OutputKind.EVENT)["source"] == "bridge"
    state = new_order_state(done)
    assert state is not None
    assert (state.status, state.transitions) == ("accepted", 2)


def event_values(done: Any) -> list[dict[str, Any]]:
    return [
        o.value for o in done.outputs if o.kind is OutputKind.EVENT and isinstance(o.value, dict)
    ]


def test_every_transition_since_the_last_snapshot_is_announced_in_order() -> None:
    """A burst of external changes read at once: one event per transition, an unbroken chain,
    each id naming its transition; also when the status came back to the published one."""
    burst = order(("checkout", -60), ("accepted", 1), ("processing", 5), ("accepted", 7))
    _, done = run(refresh(), [Fetched(burst, 1)], known=known(published(ACCEPTED)))
    events = event_values(done)
    assert [(e["previousStatus"], e["newStatus"]) for e in events] == [
        ("accepted", "processing"),
        ("processing", "accepted"),
    ]
    assert [e["eventId"] for e in events] == ["r-1:state-changed:3", "r-1:state-changed:4"]
    assert {e["source"] for e in events} == {"external"}
    assert [e["transitionAt"] for e in events] == [stamp(5), stamp(7)]


def test_an_external_change_before_the_bridges_own_is_announced_first() -> None:
    """Another adapter moved the order (accepted -> processing) after the bridge last published
    it; the bridge's own SetOrderState then runs before that change's notification: the
    external change gets its event, then the bridge's own, in one chain."""
    moved = order(("checkout", -60), ("accepted", 1), ("processing", 5))
    after = order(("checkout", -60), ("accepted", 1), ("processing", 5), ("completed", 9))
    _, done = run(
        set_state("completed"),
        [Fetched(moved, 1), *_put_then(after)],
        known=Known(now=NOW, published=published(ACCEPTED)),
    )
    chain = [(e["previousStatus"], e["newStatus"], e["source"]) for e in event_values(done)]
    assert chain == [("accepted", "processing", "external"), ("processing", "completed", "bridge")]
    # Without a published state (never published) only its own change is announced.
    _, alone = run(set_state("completed"), [Fetched(moved, 1), *_put_then(after)])
    assert [e["source"] for e in event_values(alone)] == ["bridge"]


def test_announcing_skips_repeats_and_finds_a_transition_by_identity() -> None:
    """The helpers behind both: a repeated status is no change; a transition is found at or
    after a start index (a replay locates its own transition after the published ones)."""
    repeated = order(("checkout", -60), ("accepted", 1), ("accepted", 2), ("processing", 5))
    cmd = refresh()
    events = external_events(cmd, repeated, 1, 4, NOW)
    assert [
        (e.value["previousStatus"], e.value["newStatus"])
        for e in events
        if isinstance(e.value, dict)
    ] == [
        ("checkout", "accepted"),
        ("accepted", "processing"),
    ]
    history = transitions(repeated)
    assert index_of(repeated, history[3], 2) == 3
    assert index_of(repeated, history[0], 1) is None


def _put_then(after: dict[str, Any]) -> list[Any]:
    from bridge.decision import Written

    return [Written(1), Fetched(after, 1)]


# -- the command model ------------------------------------------------------------------------


def test_refresh_parses_from_json_and_avro_alike(codec: AvroCodec) -> None:
    cmd = refresh(correlationId="n-9", expiresAt=stamp(60))
    assert parse_command(command_to_json(cmd)) == cmd
    avro = codec.encode("OrderCommand", command_to_avro_record(cmd))
    assert parse_command(avro, [("content-type", b"application/avro")], codec=codec) == cmd
    assert json.loads(command_to_json(cmd))["reason"] == "notification"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"expectedState": "accepted"}, "unknown_field"),
        ({"state": "accepted"}, "unknown_field"),
        ({"reason": "x" * 201}, "invalid_field"),
        ({"reason": "bad\nreason"}, "invalid_field"),
        ({"reason": ""}, "invalid_field"),
        ({"orderId": "o/../1"}, "bad_order_id"),
        ({"issuedAt": 1764237600}, "bad_timestamp"),
    ],
)
def test_malformed_refresh_is_refused_with_a_reason(change: dict[str, Any], reason: str) -> None:
    raw = {**json.loads(command_to_json(refresh())), **change}
    with pytest.raises(InvalidCommandError) as info:
        parse_command(json.dumps(raw).encode())
    assert info.value.reason == reason


def test_received_at_header() -> None:
    assert received_at_ms([("norce.notification.received-at", b"1764237600123")]) == 1764237600123
    for bad in (b"", b"12a", b"-1", b"1" * 17, None):
        assert received_at_ms([("norce.notification.received-at", bad)]) is None
    assert received_at_ms(None) is None


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec.load()


# -- the state record and where it goes -------------------------------------------------------


def test_state_record_round_trips_and_rejects_what_it_cannot_read() -> None:
    state = published(PROCESSING, "c-9")
    assert decode_state(state.encode()) == state
    gone = OrderState.gone(None, now=NOW, command_id="d")
    assert decode_state(gone.encode()) == gone
    for bad in (
        None,
        b"",
        b"not json",
        b"[]",
        b'{"v":2}',
        b'{"v":1,"status":1,"transitions":1,"deleted":false,"digest":null,"at":"x","commandId":"c"}',
        b'{"v":1,"status":null,"transitions":-1,"deleted":false,"digest":null,"at":"x",'
        b'"commandId":"c"}',
        b'{"v":1,"status":null,"transitions":true,"deleted":false,"digest":null,"at":"x",'
        b'"commandId":"c"}',
    ):
        assert decode_state(bad) is None


def test_digest_ignores_key_order() -> None:
    reordered = dict(reversed(list(PROCESSING.items())))
    assert order_digest(reordered) == order_digest(PROCESSING)
    assert order_digest(ACCEPTED) != order_digest(PROCESSING)


def test_state_record_goes_last_to_the_source_partition(codec: AvroCodec) -> None:
    _, done = run(refresh(), [Fetched(PROCESSING, 1)], known=known(published(ACCEPTED)))
    topics = {"snapshot": "s", "event": "e", "result": "r", "dlq": "d", ORDER_STATE_TOPIC: "st"}
    records = encode_outputs(done, topics, codec, state_partition=SRC.partition)
    assert [r[0] for r in records] == ["s", "e", "r", "st"]
    _, key, value, _, partition = records[-1]
    assert (key, partition) == (ORDER_ID.encode(), 3)
    assert decode_state(value) == new_order_state(done)
    assert all(r[4] is None for r in records[:-1])  # outputs keep the key partitioner
    # without a store configured (or a partition), nothing extra
    plain = {k: v for k, v in topics.items() if k != ORDER_STATE_TOPIC}
    assert len(encode_outputs(done, plain, codec, state_partition=3)) == 3


_REFRESH_BASE: dict[str, object] = {
    "type": "RefreshOrder",
    "commandId": "r-1",
    "orderId": "o_abc",
    "merchant": "norce",
    "channel": "1",
    "issuedAt": "2026-01-01T10:00:00Z",
}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"reason": "notification"},
        {"reason": "backfill run 7"},
        {"reason": "x" * 200},
        {"reason": "x" * 201},
        {"reason": ""},
        {"reason": " padded"},
        {"reason": "tab\tinside"},
        {"reason": "a\u2028b"},
        {"state": "processing"},
        {"expectedState": "accepted"},
        {"expiresAt": "2026-01-01T10:05:00Z"},
        {"correlationId": "n-1"},
        {"orderId": "../x"},
    ],
)
def test_refresh_json_avro_and_the_json_schema_agree(change: dict[str, object]) -> None:
    """A RefreshOrder is accepted or refused alike as JSON, as Avro, and by the JSON Schema."""
    import jsonschema

    from bridge.commands import command_json_schema

    codec = AvroCodec.load()
    doc = {**_REFRESH_BASE, **change}
    schema_ok = jsonschema.Draft202012Validator(command_json_schema()).is_valid(doc)

    def accepted(value: bytes) -> bool:
        try:
            parse_command(value, [], codec=codec)
        except InvalidCommandError:
            return False
        return True

    json_ok = accepted(json.dumps(doc).encode())
    assert json_ok == schema_ok, doc
    record = dict.fromkeys(f["name"] for f in codec.parsed_schema("OrderCommand")["fields"])
    record.update(doc)
    assert accepted(codec.encode("OrderCommand", record)) == json_ok, doc
