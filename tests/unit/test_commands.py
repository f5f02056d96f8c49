"""Command parsing: JSON and Avro forms, the published JSON Schema, expiry."""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from bridge.codec import AvroCodec
from bridge.commands import (
    FORMAT_CHARACTER_RANGES,
    ORDER_ID_PATTERN,
    DeleteOrder,
    SetOrderState,
    command_json_schema,
    command_to_avro_record,
    command_to_json,
    is_expired,
    parse_command,
)
from bridge.config import BridgeSettings
from bridge.errors import InvalidCommandError, InvalidOrderIdError
from bridge.order_ids import validate_order_id
from bridge.order_model import OrderStatus

ROOT = Path(__file__).resolve().parents[2]
CODEC = AvroCodec.load(BridgeSettings().schemas_dir)
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _set(**kw: object) -> SetOrderState:
    base: dict[str, object] = {
        "command_id": "c-1",
        "order_id": "o_AbcdefghijklmnopqrstuvwxyZ",
        "merchant": "norce",
        "channel": "1",
        "issued_at": NOW,
        "state": OrderStatus("accepted"),
    }
    base.update(kw)
    # Field values of several types in one dict; pydantic validates them when the model is built.
    return SetOrderState(**base)  # type: ignore[arg-type]


def test_json_round_trip() -> None:
    """A command serialised to JSON parses back to an equal command."""
    cmd = _set(expected_state=OrderStatus("processing"), correlation_id="x", expires_at=NOW)
    assert parse_command(command_to_json(cmd)) == cmd


def test_avro_command_is_accepted_by_marker_and_by_header() -> None:
    """The Avro form is told apart by its marker bytes or a content-type header."""
    cmd = DeleteOrder(command_id="c-2", order_id="o_x", merchant="m", channel="c", issued_at=NOW)
    data = CODEC.encode("OrderCommand", command_to_avro_record(cmd))
    assert parse_command(data, codec=CODEC) == cmd
    assert parse_command(data, [("content-type", b"application/avro")], codec=CODEC) == cmd


def test_published_json_schema_is_generated_from_the_models() -> None:
    """schemas/order-command.schema.json is what the models generate (`make schemas`)."""
    on_disk = json.loads((ROOT / "schemas" / "order-command.schema.json").read_text())
    assert on_disk == command_json_schema()


def test_the_order_id_pattern_refuses_what_the_validator_refuses() -> None:
    """Every code point (but lone surrogates, which no UTF-8 JSON carries) as the second
    character of an order id: the published pattern and validate_order_id agree, but for the
    supplementary format characters the pattern cannot list portably, which the schema's
    description names. The table is this Python's category Cf: a newer Unicode adds Cf
    characters, then this fails and the table needs them."""
    formats = [cp for cp in range(0x110000) if unicodedata.category(chr(cp)) == "Cf"]
    listed = [cp for first, last in FORMAT_CHARACTER_RANGES for cp in range(first, last + 1)]
    assert listed == formats
    pattern = re.compile(ORDER_ID_PATTERN)
    disagree = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        order_id = "o" + chr(cp)
        try:
            validate_order_id(order_id)
            valid = True
        except InvalidOrderIdError:
            valid = False
        if valid != (pattern.fullmatch(order_id) is not None):
            disagree.append(cp)
    assert disagree == [cp for cp in formats if cp > 0xFFFF]
    described = command_json_schema()["$defs"]["SetOrderState"]["properties"]["orderId"]
    assert "U+E0020-U+E007F" in described["description"]
    assert ORDER_ID_PATTERN.isascii()  # compiles in every regex dialect a schema meets


def test_json_schema_agrees_with_the_parser() -> None:
    """Valid commands validate against the JSON Schema; an unknown state does not."""
    schema = command_json_schema()
    good = json.loads(command_to_json(_set()))
    jsonschema.validate(good, schema)
    bad = dict(good, state="shipped")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(InvalidCommandError) as info:
        parse_command(json.dumps(bad).encode())
    assert info.value.reason == "unknown_state"


def test_expiry_by_expires_at_and_by_max_age() -> None:
    """expiresAt in the past and issuedAt older than the maximum age both expire a command."""
    assert is_expired(_set(expires_at=NOW - timedelta(seconds=1)), NOW, None)
    assert is_expired(_set(expires_at=NOW + timedelta(seconds=1)), NOW, None) is None
    assert is_expired(_set(), NOW + timedelta(minutes=10), 60)
    assert is_expired(_set(), NOW + timedelta(seconds=30), 60) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{", "invalid_json"),
        (b"\xff", "invalid_utf8"),
        (b"1", "not_an_object"),
        (b'{"type": 5}', "unknown_type"),
        (b'{"type": "SetOrderState"}', "missing_field"),
        (None, "empty_value"),
    ],
)
def test_reasons_are_bounded_codes(value: bytes | None, reason: str) -> None:
    """Each kind of bad input maps to its short reason code."""
    with pytest.raises(InvalidCommandError) as info:
        parse_command(value)
    assert info.value.reason == reason


_AGREE_BASE: dict[str, object] = {
    "type": "SetOrderState",
    "commandId": "c-1",
    "orderId": "o_abc",
    "merchant": "norce",
    "channel": "1",
    "issuedAt": "2026-01-01T10:00:00Z",
    "state": "processing",
}
_AGREE_CORPUS: list[dict[str, object]] = [
    {},
    {"state": "Processing"},
    {"state": " processing "},
    {"state": "shipped"},
    {"issuedAt": "1700000000"},
    {"issuedAt": "2026-01-01T10:00:00"},
    {"issuedAt": "2026-01-01 10:00:00Z"},
    {"issuedAt": "2026-01-01T10:00:00.1234567+02:00"},
    {"expiresAt": "2026-01-01t10:00:00z"},
    {"expectedState": "ACCEPTED"},
    {"expectedState": "accepted"},
    {"commandId": ""},
    {"commandId": " c"},
    {"commandId": "c\n"},
    {"commandId": "x" * 129},
    {"merchant": "nor ce"},
    {"merchant": " norce"},
    {"merchant": "nørce"},
    {"channel": "x" * 65},
    {"orderId": "../x"},
    {"orderId": ".."},
    {"orderId": "a b"},
    {"orderId": "a\u200bb"},
    {"correlationId": "ok id"},
    {"type": "DeleteOrder", "state": None},
    {"type": "DeleteOrder", "state": "bogus"},
    {"type": "ShipOrder"},
    {"extra": "x"},
]


@pytest.mark.parametrize("change", _AGREE_CORPUS)
def test_json_avro_and_the_json_schema_agree(change: dict[str, object]) -> None:
    """The same command accepted or refused alike as JSON, as Avro, and by the JSON Schema."""
    from bridge.codec import AvroCodec
    from bridge.config import BridgeSettings

    codec = AvroCodec.load(BridgeSettings().schemas_dir)
    doc = {**_AGREE_BASE, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    schema_ok = jsonschema.Draft202012Validator(command_json_schema()).is_valid(doc)

    def accepted(value: bytes, headers: list[tuple[str, bytes | None]]) -> bool:
        try:
            parse_command(value, headers, codec=codec)
        except InvalidCommandError:
            return False
        return True

    json_ok = accepted(json.dumps(doc).encode(), [])
    assert json_ok == schema_ok, doc
    avro_fields = [f["name"] for f in codec.parsed_schema("OrderCommand")["fields"]]
    if set(doc) <= set(avro_fields):
        record = dict.fromkeys(avro_fields)
        record.update(doc)
        avro_ok = accepted(codec.encode("OrderCommand", record), [])
        assert avro_ok == json_ok, doc


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("merchant", "norce\n", "invalid_field"),
        ("channel", "1\n", "invalid_field"),
        ("commandId", "c-1\n", "invalid_field"),
        ("issuedAt", "2026-11-27T10:00:00Z\n", "bad_timestamp"),
    ],
)
def test_a_trailing_newline_never_passes_a_pattern(field: str, value: str, reason: str) -> None:
    """Python's ``$`` matches before a final newline; the validators match the whole value."""
    raw = {
        "type": "DeleteOrder",
        "commandId": "c-1",
        "orderId": "o_1",
        "merchant": "norce",
        "channel": "1",
        "issuedAt": "2026-11-27T10:00:00Z",
        field: value,
    }
    with pytest.raises(InvalidCommandError) as info:
        parse_command(json.dumps(raw).encode())
    assert info.value.reason == reason
