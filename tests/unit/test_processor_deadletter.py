"""Dead letters (bridge.deadletter): bounded, exact headers, injected time, never failing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bridge.commands import DeleteOrder
from bridge.deadletter import (
    dead_letter,
    format_traceback,
    internal_error,
    invalid_record,
    record_size,
)
from bridge.errors import RecordHandlingError
from bridge.outputs import SourceRecord
from bridge.vocabulary import DeadLetterReason, Outcome, OutputKind

NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
DELETE = DeleteOrder.model_validate(
    {
        "type": "DeleteOrder",
        "commandId": "d-1",
        "orderId": "o_1",
        "merchant": "norce",
        "channel": "1",
        "issuedAt": "2031-05-06T07:00:00Z",
        "correlationId": "corr",
    }
)


def test_the_timestamp_header_is_the_time_passed_in() -> None:
    src = SourceRecord("t", 1, 2, None, b"v", (), 0)
    out = dead_letter(src, "oversize", ValueError("x"), stage="S", now=NOW, ids=DELETE)
    headers = dict(out.headers)
    assert headers["__connect.errors.timestamp"] == b"2031-05-06T07:08:09.000000Z"
    assert headers["__connect.errors.exception.message"] == b"x"
    assert headers["norce.command.id"] == b"d-1"
    assert headers["norce.correlation.id"] == b"corr"
    assert out.kind is OutputKind.DLQ


def test_a_huge_key_and_huge_headers_are_cut_and_said_so() -> None:
    """Key over a quarter of the limit: cut and its size named; original headers that alone
    exceed the limit: dropped, only the bridge's kept."""
    src = SourceRecord("t", 0, 1, b"k" * 50_000, b"v" * 10, (("big", b"h" * 200_000),), 0)
    out = dead_letter(src, "oversize", ValueError("x"), stage="S", now=NOW, max_bytes=100_000)
    value = out.value if isinstance(out.value, bytes) else None
    assert record_size(out.key, value, out.headers) <= 100_000
    headers = dict(out.headers)
    assert headers["__bridge.dlq.original.key.size"] == b"50000"
    assert headers["__bridge.dlq.original.headers.dropped"] == b"true"
    assert "big" not in headers
    assert out.key == b"k" * 25_000


def test_a_record_handling_error_is_dead_lettered_as_internal_error() -> None:
    src = SourceRecord("t", 0, 1, None, json.dumps({"commandId": "c-1"}).encode(), (), 0)
    done = invalid_record(src, RecordHandlingError(KeyError("x")), now=NOW, codec=None)
    assert done.dead_letter_reason is DeadLetterReason.INTERNAL_ERROR
    assert done.outcome is Outcome.FAILED
    assert [o.kind for o in done.outputs] == [OutputKind.DLQ, OutputKind.RESULT]


def test_the_last_resort_names_ids_it_left_out() -> None:
    """An id that is not a string cannot go into a header: left out, and named."""
    raw = json.dumps({"commandId": "c-1", "type": "DeleteOrder", "orderId": 5}).encode()
    src = SourceRecord("t", 0, 1, None, raw, (), 0)
    done = internal_error(src, RuntimeError("bug"), now=NOW, codec=None)
    assert done.reason == "internal_error: RuntimeError (unencodable ids left out: orderId)"


def test_the_last_resort_survives_a_failing_diagnosis() -> None:
    """Even when building the full dead letter fails, the bare minimum is published: the raw
    value, the reason, partition and offset."""

    class Unencodable(str):
        def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
            raise RuntimeError("no")

    src = SourceRecord(Unencodable("t"), 4, 9, None, b"raw", (), 0)
    done = internal_error(src, RuntimeError("bug"), now=NOW, codec=None, with_result=False)
    [dlq] = done.outputs
    assert dlq.value == b"raw"
    assert dict(dlq.headers) == {
        "__connect.errors.reason": b"internal_error",
        "__connect.errors.partition": b"4",
        "__connect.errors.offset": b"9",
    }


def test_format_traceback_names_the_exception() -> None:
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom") as info:
        fail()
    text = format_traceback(info.value)
    assert "ValueError: boom" in text
    assert "in fail" in text
