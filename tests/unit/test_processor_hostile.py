"""The record-handling path never raises, whatever the bytes (property-based, issue 10)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import AvroCodec
from bridge.commands import parse_command
from bridge.config import BridgeSettings
from bridge.errors import InvalidCommandError
from bridge.processor import (
    Processor,
    SourceRecord,
    best_effort_ids,
    check_record_limits,
    dead_letter,
    record_size,
)

CODEC = AvroCodec.load(BridgeSettings().schemas_dir)


class _NoApi:
    """The record-handling path for invalid records never calls Norce."""

    async def get_order_json(self, order_id: str, *, merchant: str, channel: str) -> Any:
        raise AssertionError("no API call expected")

    async def set_state(self, order_id: str, status: str, *, merchant: str, channel: str) -> Any:
        raise AssertionError("no API call expected")

    async def delete_order(self, order_id: str, *, merchant: str, channel: str) -> Any:
        raise AssertionError("no API call expected")


NOW = datetime(2026, 1, 1, tzinfo=UTC)
PROCESSOR = Processor(_NoApi(), codec=CODEC, clock=lambda: NOW)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["content-type", "trace", "Content-Type"]),
        st.one_of(
            st.none(),
            st.binary(max_size=40),
            st.sampled_from(
                [b"application/avro", b"application/json; charset=utf-16", b"APPLICATION/AVRO;x"]
            ),
        ),
    ),
    max_size=3,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
FIELDS = ["type", "commandId", "orderId", "merchant", "channel", "issuedAt", "state"]


def _handle(value: bytes | None, headers: list[tuple[str, bytes | None]]) -> None:
    """Parse, and for an invalid record build and encode its outputs, as the runtime does."""
    src = SourceRecord("t", 0, 7, b"k", value, tuple(headers), 0)
    error: InvalidCommandError | None = None
    try:
        parse_command(value, headers, codec=CODEC, max_bytes=4096)
    except InvalidCommandError as exc:
        error = exc
    if error is None:
        return
    outcome = PROCESSOR.invalid(src, error)
    assert outcome.outcome == "failed"
    assert outcome.dead_letter_reason == error.reason
    assert outcome.outputs[0].kind == "dlq"
    for o in outcome.outputs:
        if o.kind == "result":
            assert o.schema is not None
            assert isinstance(o.value, dict)
            CODEC.encode(o.schema, o.value)
            assert all(v is None or isinstance(v, bytes) for _, v in o.headers)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(value=st.one_of(st.none(), st.binary(max_size=600)), headers=HEADERS)
def test_arbitrary_bytes_always_end_in_a_disposition(
    value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    """Any bytes with any headers: a command or a dead letter, never an exception."""
    _handle(value, headers)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=7),
    raw=JSON_VALUES,
    use_raw=st.booleans(),
)
def test_arbitrary_json_always_ends_in_a_disposition(
    fields: dict[str, Any], raw: Any, use_raw: bool
) -> None:
    """Any JSON value, including command-shaped objects with wrong types, never raises."""
    doc = raw if use_raw else fields
    value = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _handle(value, [])


def test_last_resort_dead_letter_drops_unencodable_ids_and_says_so() -> None:
    """internal_error: raw bytes kept, lone-surrogate ids dropped, the reason names them."""
    record = dict.fromkeys(
        [
            "commandId", "type", "orderId", "merchant", "channel", "issuedAt", "state",
            "expectedState", "expiresAt", "correlationId",
        ]
    )  # fmt: skip
    record.update(
        commandId="c-1", type="SetOrderState", orderId="o_1", merchant="m", channel="1",
        issuedAt="x", correlationId="QQQ",
    )  # fmt: skip
    value = CODEC.encode("OrderCommand", record)
    src = SourceRecord("t", 0, 1, None, value, (("h", None),), 0)
    outcome = PROCESSOR.internal_error(src, RecursionError("boom"))
    assert outcome.dead_letter_reason == "internal_error"
    dlq = outcome.outputs[0]
    assert dlq.value == value
    assert ("h", None) in dlq.headers
    names = dict((k, v) for k, v in dlq.headers if v is not None)
    assert names["__connect.errors.class.name"] == b"builtins.RecursionError"
    assert [o.kind for o in outcome.outputs] == ["dlq", "result"]


def test_ids_that_are_not_valid_unicode_are_dropped() -> None:
    """A lone surrogate in an Avro correlation id is left out of the ids and named."""
    record = {
        "commandId": "c-2", "type": "DeleteOrder", "orderId": "o_1", "merchant": "m",
        "channel": "1", "issuedAt": "x", "state": None, "expectedState": None,
        "expiresAt": None, "correlationId": "\ud800",
    }  # fmt: skip
    # fastavro refuses to write a surrogate, so write a placeholder and patch the bytes.
    value = CODEC.encode("OrderCommand", {**record, "correlationId": "QQQ"})
    assert best_effort_ids(value.replace(b"QQQ", b"\xed\xa0\x80"), (), CODEC) is None
    ids = best_effort_ids(
        json.dumps({"commandId": "c-3", "orderId": 5, "merchant": "m"}).encode(), (), CODEC
    )
    assert ids is not None
    assert ids.command_id == "c-3"
    assert ids.order_id == ""
    # An invalid command keeps its type in the failed result, whichever of the three it is.
    for kind in ("SetOrderState", "DeleteOrder", "RefreshOrder"):
        typed = best_effort_ids(json.dumps({"type": kind, "commandId": "c-4"}).encode())
        assert typed is not None
        assert typed.type == kind
    untyped = best_effort_ids(json.dumps({"type": "ShipOrder", "commandId": "c-5"}).encode())
    assert untyped is not None
    assert untyped.type == "unknown"


def test_a_dead_letter_that_would_be_too_large_is_truncated_with_its_hash() -> None:
    """Over the limit: value cut to fit, original size and SHA-256 in the headers."""
    big = b"x" * 2_000_000
    src = SourceRecord("t", 0, 1, b"k", big, (("trace", b"t"),), 0)
    out = dead_letter(src, "oversize", ValueError("too big"), stage="S", now=NOW, max_bytes=100_000)
    assert (
        record_size(out.key, out.value if isinstance(out.value, bytes) else None, out.headers)
        <= 100_000
    )
    h = dict(out.headers)
    assert h["__bridge.dlq.truncated"] == b"true"
    assert h["__bridge.dlq.original.size"] == b"2000000"
    assert h["__bridge.dlq.original.sha256"] == hashlib.sha256(big).hexdigest().encode()


def test_record_limit_check_names_the_settings() -> None:
    """max_record_bytes beyond the producer's or the topic's limit is reported at start-up."""
    assert (
        check_record_limits(
            65536, producer_max_request_size=1_048_576, topic_max_message_bytes=1_048_588
        )
        == []
    )
    problems = check_record_limits(
        1_048_576, producer_max_request_size=1_048_576, topic_max_message_bytes=500_000
    )
    assert len(problems) == 2
    assert all("BRIDGE_PROCESSING__MAX_RECORD_BYTES" in p for p in problems)
