"""The Confluent wire format in the codec, command parsing and output encoding (issue 15)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from bridge.codec import (
    CONFLUENT_CONTENT_TYPE,
    AvroCodec,
    AvroDecodeError,
    ConfluentId,
    SchemaLoadError,
    UnknownSchemaIdError,
)
from bridge.commands import (
    AnyCommand,
    UnresolvedSchemaError,
    command_to_avro_record,
    parse_command,
)
from bridge.errors import InvalidCommandError
from bridge.events import command_result, order_deleted_event
from bridge.outputs import Disposition, Output
from bridge.settle import encode_outputs
from bridge.vocabulary import Outcome, OutputKind

IDS = {
    "OrderSnapshot": ConfluentId(11),
    "CommandResult": ConfluentId(12),
    "OrderStateChanged": ConfluentId(13, 0),
    "OrderDeleted": ConfluentId(13, 1),
}
NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def plain() -> AvroCodec:
    return AvroCodec.load()


@pytest.fixture
def framed(plain: AvroCodec) -> AvroCodec:
    return plain.framed(IDS)


def _read(body: bytes, schema: Any) -> dict[str, Any]:
    record = fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema), None)
    assert isinstance(record, dict)
    return record


def set_state_cmd() -> AnyCommand:
    raw = {
        "type": "SetOrderState",
        "commandId": "c-9",
        "orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
        "merchant": "norce",
        "channel": "1",
        "issuedAt": "2026-11-27T10:00:00Z",
        "state": "accepted",
    }
    return parse_command(json.dumps(raw).encode())


def result_record() -> dict[str, Any]:
    return command_result(
        command_id="c-1",
        command_type="SetOrderState",
        order_id="o_1",
        merchant="norce",
        channel="1",
        correlation_id=None,
        outcome="applied",
        attempts=1,
        processed_at=NOW,
        source_topic="cmds",
        source_partition=0,
        source_offset=7,
    )


def deleted_record() -> dict[str, Any]:
    return order_deleted_event(
        order_id="o_1",
        merchant="norce",
        channel="1",
        previous_status="checkout",
        already_deleted=False,
        command_id="c-2",
        correlation_id=None,
        occurred_at=NOW,
    )


def test_framed_output_is_magic_id_and_the_plain_body(plain: AvroCodec, framed: AvroCodec) -> None:
    record = result_record()
    data = framed.encode("CommandResult", record)
    assert data[:5] == b"\x00" + (12).to_bytes(4, "big")
    assert data[5:] == plain.encode("CommandResult", record)[10:]  # same body as single-object
    assert framed.decode(data) == (
        "CommandResult",
        fastavro.schemaless_reader(
            io.BytesIO(data[5:]), plain.parsed_schema("CommandResult"), None
        ),
    )
    assert framed.content_type == CONFLUENT_CONTENT_TYPE
    assert plain.content_type == "application/avro"


def test_union_subject_writes_the_branch_index_and_reads_with_the_union(
    plain: AvroCodec, framed: AvroCodec
) -> None:
    data = framed.encode("OrderDeleted", deleted_record())
    assert data[:6] == b"\x00" + (13).to_bytes(4, "big") + b"\x02"  # branch 1, zig-zag
    union = [
        json.loads(plain.schema_text("OrderStateChanged")),
        json.loads(plain.schema_text("OrderDeleted")),
    ]
    decoded = _read(data[5:], union)
    assert decoded["commandId"] == "c-2"
    name, record = framed.decode(data)
    assert name == "OrderDeleted"
    assert record == decoded


def test_single_object_input_still_decodes_with_the_framed_codec(
    plain: AvroCodec, framed: AvroCodec
) -> None:
    data = plain.encode("CommandResult", result_record())
    assert framed.decode(data)[0] == "CommandResult"


def test_every_output_schema_needs_an_id(plain: AvroCodec) -> None:
    with pytest.raises(SchemaLoadError, match="OrderSnapshot"):
        plain.framed({k: v for k, v in IDS.items() if k != "OrderSnapshot"})


def test_unknown_id_then_learnt_writer_schema_resolves_to_the_own_record(
    plain: AvroCodec, framed: AvroCodec
) -> None:
    v2 = json.loads(plain.schema_text("OrderCommand"))
    v2["fields"].append({"name": "priority", "type": "int", "default": 0})
    command = set_state_cmd()
    buf = io.BytesIO()
    buf.write(b"\x00" + (99).to_bytes(4, "big"))
    fastavro.schemaless_writer(
        buf, fastavro.parse_schema(v2), {**command_to_avro_record(command), "priority": 3}
    )
    data = buf.getvalue()
    assert AvroCodec.confluent_id(data) == 99
    assert AvroCodec.confluent_id(b"{}") is None
    with pytest.raises(UnknownSchemaIdError) as unknown:
        framed.decode(data)
    assert unknown.value.schema_id == 99
    with pytest.raises(UnresolvedSchemaError) as unresolved:
        parse_command(data, [], codec=framed)
    assert unresolved.value.reason == "invalid_avro"
    assert unresolved.value.schema_id == 99
    framed.learn(99, json.dumps(v2))
    assert framed.knows_id(99)
    parsed = parse_command(data, [], codec=framed)  # no content type: the magic byte says
    assert parsed == command
    assert parse_command(data, [("content-type", CONFLUENT_CONTENT_TYPE.encode())], codec=framed)


def test_a_learnt_id_of_a_foreign_record_does_not_decode(framed: AvroCodec) -> None:
    framed.learn(98, json.dumps({"type": "record", "name": "x.Other", "fields": []}))
    with pytest.raises(AvroDecodeError, match="none of the bridge's records"):
        framed.decode(b"\x00" + (98).to_bytes(4, "big"))
    with pytest.raises(AvroDecodeError, match="not a valid Avro schema"):
        framed.learn(97, "{nope")


async def test_resolve_fetches_through_the_given_function_and_caches(plain: AvroCodec) -> None:
    calls: list[int] = []

    async def fetch(schema_id: int) -> str:
        calls.append(schema_id)
        return plain.schema_text("OrderCommand")

    codec = plain.framed(IDS, fetch=fetch)
    assert codec.can_resolve
    assert codec.fetcher is fetch
    await codec.resolve(50)
    await codec.resolve(50)
    await codec.resolve(11)  # an id of its own: nothing to fetch
    assert calls == [50]
    with pytest.raises(UnknownSchemaIdError):
        await plain.resolve(50)  # no fetch function


def test_truncated_and_trailing_confluent_bodies(framed: AvroCodec) -> None:
    data = framed.encode("CommandResult", result_record())
    with pytest.raises(AvroDecodeError, match="corrupt"):
        framed.decode(data[:-3])
    with pytest.raises(AvroDecodeError, match="trailing"):
        framed.decode(data + b"\x00")
    bad_branch = b"\x00" + (13).to_bytes(4, "big") + b"\x08"
    with pytest.raises(AvroDecodeError, match="branch"):
        framed.decode(bad_branch)


def test_use_latest_writes_with_the_registered_schema(plain: AvroCodec) -> None:
    latest = json.loads(plain.schema_text("CommandResult"))
    latest["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    ids = dict(IDS, CommandResult=ConfluentId(12, None, json.dumps(latest)))
    codec = plain.framed(ids)
    data = codec.encode("CommandResult", result_record())
    record = _read(data[5:], latest)
    assert record["note"] is None
    with pytest.raises(SchemaLoadError, match="no record"):
        plain.framed(dict(IDS, CommandResult=ConfluentId(12, None, '"string"')))


def test_encode_outputs_labels_confluent_records(framed: AvroCodec, plain: AvroCodec) -> None:
    output = Output(
        OutputKind.RESULT,
        b"o_1",
        "CommandResult",
        result_record(),
        [("norce.command.id", b"c-1"), ("content-type", b"application/avro")],
    )
    outcome = Disposition(Outcome.APPLIED, "SetOrderState", [output])
    topics = {OutputKind.RESULT.value: "results"}
    ((_, _, value, headers, _),) = encode_outputs(outcome, topics, framed)
    assert value is not None
    assert value[0] == 0
    assert headers == [
        ("norce.command.id", b"c-1"),
        ("content-type", CONFLUENT_CONTENT_TYPE.encode()),
    ]
    ((_, _, _, plain_headers, _),) = encode_outputs(outcome, topics, plain)
    assert plain_headers == output.headers


def test_a_leading_zero_byte_is_confluent_only_for_a_framed_codec(
    plain: AvroCodec, framed: AvroCodec
) -> None:
    utf16 = '{"type": "DeleteOrder"}'.encode("utf-16-be")  # starts with 00
    with pytest.raises(InvalidCommandError) as as_json:
        parse_command(utf16, [], codec=plain)
    assert as_json.value.reason == "invalid_json"  # as before issue 15
    assert not plain.is_confluent(utf16)
    assert framed.is_confluent(utf16)
    with pytest.raises(UnresolvedSchemaError):
        parse_command(utf16, [], codec=framed)
