"""Unit tests of bridge.codec: schemas, single-object encoding, and interop with Apache avro."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro
import fastavro.schema
import pytest

from bridge.codec import (
    HEADER_SIZE,
    MARKER,
    AvroCodec,
    AvroDecodeError,
    AvroEncodeError,
    SchemaLoadError,
    UnknownSchemaError,
)
from bridge.events import (
    command_result,
    order_deleted_event,
    snapshot_from_order,
    state_changed_event,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
FIXTURE = ROOT / "tests" / "fixtures" / "order_full.json"
SCHEMA_FILES = sorted(SCHEMAS.glob("*.avsc"))
EXPECTED_NAMES = (
    "CommandResult",
    "OrderCommand",
    "OrderDeleted",
    "OrderSnapshot",
    "OrderStateChanged",
)
NOW = datetime(2026, 1, 12, 8, 21, 30, 123456, tzinfo=UTC)


def rabin_fingerprint(data: bytes) -> bytes:
    """CRC-64-AVRO exactly as the Avro specification spells it, little-endian."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def apache_schema(name: str) -> avro.schema.Schema:
    """Parse a schema file with Apache avro."""
    return avro.schema.parse((SCHEMAS / f"{name}.avsc").read_text(encoding="utf-8"))


def apache_read(name: str, data: bytes) -> Any:
    """Decode a single-object message body with Apache avro's DatumReader."""
    reader = avro.io.DatumReader(apache_schema(name))
    return reader.read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:])))


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    """The codec over the project's schemas."""
    return AvroCodec.load(SCHEMAS)


@pytest.fixture(scope="module")
def snapshot() -> dict[str, Any]:
    """An OrderSnapshot record of the full fixture order."""
    order = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return snapshot_from_order(order, fetched_at=NOW, command_id="cmd-1", correlation_id="corr-1")


def sample_records(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One realistic record per schema."""
    return {
        "OrderSnapshot": snapshot,
        "OrderStateChanged": state_changed_event(
            command_id="cmd-1",
            order_id="o_yClTSySjyAuuBjmiBlHCjuEcTf",
            merchant="norce",
            channel="1",
            previous_status="accepted",
            new_status="completed",
            transition_at="2026-01-12T08:21:29.512Z",
            correlation_id="corr-1",
            occurred_at=NOW,
        ),
        "OrderDeleted": order_deleted_event(
            command_id="cmd-2",
            order_id="o_yClTSySjyAuuBjmiBlHCjuEcTf",
            merchant="norce",
            channel="1",
            previous_status=None,
            already_deleted=True,
            correlation_id=None,
            occurred_at=NOW,
        ),
        "CommandResult": command_result(
            command_id="cmd-1",
            command_type="SetOrderState",
            order_id="o_yClTSySjyAuuBjmiBlHCjuEcTf",
            merchant="norce",
            channel="1",
            correlation_id="corr-1",
            outcome="applied",
            reason=None,
            current_status="completed",
            http_status=200,
            attempts=2,
            processed_at=NOW,
            source_topic="norce.order.commands",
            source_partition=3,
            source_offset=2**40 + 7,
        ),
        "OrderCommand": {
            "commandId": "cmd-1",
            "type": "SetOrderState",
            "orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
            "merchant": "norce",
            "channel": "1",
            "issuedAt": "2026-01-12T08:21:00Z",
            "state": "completed",
            "expectedState": "accepted",
            "expiresAt": "2026-01-12T09:21:00Z",
            "correlationId": "corr-1",
            "reason": None,
        },
    }


# ---------------------------------------------------------------------------------- schemas


def test_schema_files_are_the_expected_five() -> None:
    """The schemas directory holds exactly the five documented record schemas."""
    assert tuple(p.stem for p in SCHEMA_FILES) == EXPECTED_NAMES


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_schema_parses_with_fastavro_and_apache(path: Path) -> None:
    """Every schema parses with fastavro and Apache avro as a documented record in the namespace."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    parsed = fastavro.parse_schema(raw)
    apache = avro.schema.parse(path.read_text(encoding="utf-8"))
    assert isinstance(parsed, dict)
    assert isinstance(apache, avro.schema.RecordSchema)
    assert parsed["name"] == f"com.norce.bridge.v1.{path.stem}"
    assert apache.fullname == f"com.norce.bridge.v1.{path.stem}"
    assert raw["doc"]


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_every_record_and_field_has_a_doc(path: Path) -> None:
    """Every record and every field in every schema carries a doc string."""

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("type") == "record":
                assert node.get("doc"), node["name"]
                for field in node["fields"]:
                    assert field.get("doc"), f"{node['name']}.{field['name']}"
                    walk(field["type"])
            elif node.get("type") == "array":
                walk(node["items"])

    walk(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_optional_fields_are_null_first_with_null_default(path: Path) -> None:
    """Every union in every schema is ["null", T] with default null."""

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict) and node.get("type") == "record":
            for field in node["fields"]:
                if isinstance(field["type"], list):
                    assert field["type"][0] == "null", field["name"]
                    assert len(field["type"]) == 2, field["name"]
                    assert "default" in field, field["name"]
                    assert field["default"] is None, field["name"]
                walk(field["type"])
        elif isinstance(node, dict) and node.get("type") == "array":
            walk(node["items"])

    walk(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_fingerprint_matches_apache_avro_and_reference_rabin(codec: AvroCodec, name: str) -> None:
    """The codec's fingerprint equals Apache avro's CRC-64-AVRO and a from-the-spec Rabin."""
    apache = apache_schema(name)
    assert codec.canonical_form(name) == apache.canonical_form
    assert codec.fingerprint(name) == apache.fingerprint("CRC-64-AVRO")
    assert codec.fingerprint(name) == rabin_fingerprint(apache.canonical_form.encode("utf-8"))


def test_fingerprints_are_distinct(codec: AvroCodec) -> None:
    """No two schemas share a fingerprint."""
    fps = {codec.fingerprint(name) for name in codec.schema_names}
    assert len(fps) == len(EXPECTED_NAMES)


def test_names(codec: AvroCodec) -> None:
    """Short and full names resolve, and an unknown name raises UnknownSchemaError."""
    assert codec.schema_names == EXPECTED_NAMES
    assert codec.schema_full_name("OrderSnapshot") == "com.norce.bridge.v1.OrderSnapshot"
    with pytest.raises(UnknownSchemaError, match="NoSuchThing"):
        codec.schema_full_name("NoSuchThing")
    with pytest.raises(UnknownSchemaError):
        codec.fingerprint("NoSuchThing")


# --------------------------------------------------------------------------- encode/decode


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_round_trip_and_apache_interop(
    codec: AvroCodec, snapshot: dict[str, Any], name: str
) -> None:
    """Every record type round-trips and decodes identically with Apache avro and fastavro."""
    record = sample_records(snapshot)[name]
    data = codec.encode(name, record)
    assert data[:2] == MARKER
    assert data[2:HEADER_SIZE] == apache_schema(name).fingerprint("CRC-64-AVRO")
    assert AvroCodec.is_single_object(data)
    assert codec.decode(data) == (name, record)
    assert apache_read(name, data) == record
    body = io.BytesIO(data[HEADER_SIZE:])
    plain = fastavro.parse_schema(json.loads((SCHEMAS / f"{name}.avsc").read_text("utf-8")))
    assert fastavro.schemaless_reader(body, plain, None) == record


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_tagged_encoding_equals_plain_fastavro(
    codec: AvroCodec, snapshot: dict[str, Any], name: str
) -> None:
    """The union-tagging fast path writes exactly the bytes of an untagged fastavro write."""
    record = sample_records(snapshot)[name]
    plain = io.BytesIO()
    fastavro.schemaless_writer(plain, codec.parsed_schema(name), record)
    assert codec.encode(name, record)[HEADER_SIZE:] == plain.getvalue()


def test_apache_written_message_decodes(codec: AvroCodec, snapshot: dict[str, Any]) -> None:
    """A body written by Apache avro behind our header decodes with the codec."""
    schema = apache_schema("OrderSnapshot")
    buf = io.BytesIO()
    avro.io.DatumWriter(schema).write(snapshot, avro.io.BinaryEncoder(buf))
    data = MARKER + schema.fingerprint("CRC-64-AVRO") + buf.getvalue()
    assert codec.decode(data) == ("OrderSnapshot", snapshot)


def test_optional_fields_may_be_omitted(codec: AvroCodec) -> None:
    """Fields with a default may be left out of the record and decode as null."""
    record = {
        "eventId": "c:deleted",
        "orderId": "o_1",
        "merchant": "m",
        "channel": "1",
        "alreadyDeleted": False,
        "commandId": "c",
        "occurredAt": "2026-01-12T08:21:30Z",
    }
    _, decoded = codec.decode(codec.encode("OrderDeleted", record))
    assert decoded == {**record, "previousStatus": None, "correlationId": None}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda r: r.pop("orderId"), "orderId"),
        (lambda r: r.update(unknownField=1), "unknownField"),
        (lambda r: r.update(orderId=5), "orderId"),
        (lambda r: r.update(previousStatus=7), "previousStatus"),
    ],
    ids=["missing-required", "unknown-key", "wrong-type", "wrong-union-type"],
)
def test_encode_rejects_bad_records(
    codec: AvroCodec,
    snapshot: dict[str, Any],
    change: Callable[[dict[str, Any]], object],
    match: str,
) -> None:
    """A record with a missing, unknown or wrong-typed field raises AvroEncodeError."""
    record = dict(sample_records(snapshot)["OrderDeleted"])
    change(record)
    with pytest.raises(AvroEncodeError, match=match):
        codec.encode("OrderDeleted", record)


def test_encode_rejects_bad_nested_values(codec: AvroCodec, snapshot: dict[str, Any]) -> None:
    """Wrong types deep inside the snapshot raise AvroEncodeError, not a bare fastavro error."""
    bad = json.loads(json.dumps(snapshot))
    bad["cart"]["items"][1]["items"][0]["quantity"] = "3"
    with pytest.raises(AvroEncodeError, match="quantity"):
        codec.encode("OrderSnapshot", bad)
    bad = json.loads(json.dumps(snapshot))
    bad["cart"]["items"][0]["price"] = "free"
    with pytest.raises(AvroEncodeError):
        codec.encode("OrderSnapshot", bad)


def test_encode_unknown_schema(codec: AvroCodec) -> None:
    """Encoding under an unknown schema name raises UnknownSchemaError."""
    with pytest.raises(UnknownSchemaError):
        codec.encode("Nope", {})


# ------------------------------------------------------------------------------ decode errors


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc3", b"\xc3\x01\x00", b"{}", b"garbage garbage", b"\x00\x01" + bytes(20)],
    ids=["empty", "half-marker", "short-header", "json", "text", "wrong-marker"],
)
def test_decode_rejects_non_single_object(codec: AvroCodec, data: bytes) -> None:
    """Bytes without a full C3 01 header raise AvroDecodeError."""
    assert not AvroCodec.is_single_object(data)
    with pytest.raises(AvroDecodeError, match="marker"):
        codec.decode(data)


def test_decode_rejects_unknown_fingerprint(codec: AvroCodec, snapshot: dict[str, Any]) -> None:
    """A message whose fingerprint is not a loaded schema raises AvroDecodeError."""
    data = codec.encode("OrderDeleted", sample_records(snapshot)["OrderDeleted"])
    forged = MARKER + bytes(8) + data[HEADER_SIZE:]
    assert AvroCodec.is_single_object(forged)
    with pytest.raises(AvroDecodeError, match="unknown schema fingerprint 0000000000000000"):
        codec.decode(forged)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_decode_rejects_every_truncation(
    codec: AvroCodec, snapshot: dict[str, Any], name: str
) -> None:
    """Every strict prefix of a message body raises AvroDecodeError."""
    data = codec.encode(name, sample_records(snapshot)[name])
    step = max(1, (len(data) - HEADER_SIZE) // 200)
    for end in range(HEADER_SIZE, len(data), step):
        with pytest.raises(AvroDecodeError):
            codec.decode(data[:end])


def test_decode_rejects_trailing_bytes(codec: AvroCodec, snapshot: dict[str, Any]) -> None:
    """Bytes left over after the body raise AvroDecodeError."""
    data = codec.encode("OrderDeleted", sample_records(snapshot)["OrderDeleted"])
    with pytest.raises(AvroDecodeError, match="trailing"):
        codec.decode(data + b"\x00")


def test_decode_rejects_corrupt_body(codec: AvroCodec) -> None:
    """A bad union index or invalid UTF-8 in the body raises AvroDecodeError."""
    header = MARKER + codec.fingerprint("OrderDeleted")
    # eventId: length 1 then an invalid UTF-8 byte.
    with pytest.raises(AvroDecodeError):
        codec.decode(header + b"\x02\xff")
    # Four strings, then previousStatus union index 5 (zigzag 10).
    with pytest.raises(AvroDecodeError):
        codec.decode(header + b"\x02a\x02o\x02m\x02c\x0a")
    # A negative string length.
    with pytest.raises(AvroDecodeError):
        codec.decode(header + b"\x01")


def test_decode_accepts_bytearray_and_memoryview(
    codec: AvroCodec, snapshot: dict[str, Any]
) -> None:
    """decode works on any bytes-like input, as Kafka clients may hand over."""
    data = codec.encode("OrderDeleted", sample_records(snapshot)["OrderDeleted"])
    assert codec.decode(bytearray(data))[0] == "OrderDeleted"
    assert codec.decode(memoryview(data))[0] == "OrderDeleted"
    assert AvroCodec.is_single_object(memoryview(data))


# ---------------------------------------------------------------------------------- loading


def copy_schemas(tmp_path: Path) -> Path:
    """Copy the project's schemas into a temporary directory."""
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def test_load_empty_dir(tmp_path: Path) -> None:
    """A directory without schema files raises SchemaLoadError."""
    with pytest.raises(SchemaLoadError, match="no"):
        AvroCodec.load(tmp_path)


def test_load_bad_json_names_the_file(tmp_path: Path) -> None:
    """A file that is not JSON raises SchemaLoadError naming the file."""
    target = copy_schemas(tmp_path)
    (target / "Broken.avsc").write_text("{not json", encoding="utf-8")
    with pytest.raises(SchemaLoadError, match=r"Broken\.avsc"):
        AvroCodec.load(target)


def test_load_invalid_avro_names_the_file(tmp_path: Path) -> None:
    """A JSON file that is not a valid Avro schema raises SchemaLoadError naming the file."""
    target = copy_schemas(tmp_path)
    bad = {"type": "record", "name": "Bad", "fields": [{"name": "x", "type": "nosuchtype"}]}
    (target / "Bad.avsc").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(SchemaLoadError, match=r"Bad\.avsc"):
        AvroCodec.load(target)


def test_load_requires_a_record(tmp_path: Path) -> None:
    """A top-level schema that is not a record raises SchemaLoadError."""
    target = copy_schemas(tmp_path)
    enum = {"type": "enum", "name": "Color", "symbols": ["RED"]}
    (target / "Color.avsc").write_text(json.dumps(enum), encoding="utf-8")
    with pytest.raises(SchemaLoadError, match=r"Color\.avsc.*record"):
        AvroCodec.load(target)


def test_load_requires_name_to_match_file(tmp_path: Path) -> None:
    """A record whose name differs from its file stem raises SchemaLoadError."""
    target = copy_schemas(tmp_path)
    rec = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    (target / "Mismatch.avsc").write_text(json.dumps(rec), encoding="utf-8")
    with pytest.raises(SchemaLoadError, match=r"Mismatch\.avsc.*'Other'"):
        AvroCodec.load(target)


def test_loaded_codec_decodes_only_its_own_schemas(tmp_path: Path, codec: AvroCodec) -> None:
    """A codec loaded from a subset of schemas rejects messages of the others."""
    subset = tmp_path / "subset"
    subset.mkdir()
    shutil.copy(SCHEMAS / "OrderCommand.avsc", subset)
    small = AvroCodec.load(subset)
    record = {
        "commandId": "c",
        "type": "DeleteOrder",
        "orderId": "o",
        "merchant": "m",
        "channel": "1",
        "issuedAt": "2026-01-12T08:21:00Z",
    }
    data = codec.encode("OrderCommand", record)
    assert small.decode(data)[0] == "OrderCommand"
    other = codec.encode(
        "OrderDeleted",
        {
            "eventId": "c:deleted",
            "orderId": "o",
            "merchant": "m",
            "channel": "1",
            "alreadyDeleted": False,
            "commandId": "c",
            "occurredAt": "2026-01-12T08:21:00Z",
        },
    )
    with pytest.raises(AvroDecodeError, match="unknown schema fingerprint"):
        small.decode(other)
