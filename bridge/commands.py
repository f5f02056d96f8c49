"""Inbound order commands: frozen models (a discriminated union on ``type``) and record parsing.

Wire format (JSON, UTF-8, camelCase)::

    {"type": "SetOrderState", "commandId": "c-1", "orderId": "o_...", "merchant": "norce",
     "channel": "1", "issuedAt": "2026-11-27T10:00:00Z", "state": "accepted",
     "expectedState": "processing", "expiresAt": "2026-11-27T10:05:00Z", "correlationId": "x"}
    {"type": "DeleteOrder", "commandId": "c-2", "orderId": "o_...", "merchant": "norce",
     "channel": "1", "issuedAt": "2026-11-27T10:00:00Z"}
    {"type": "RefreshOrder", "commandId": "c-3", "orderId": "o_...", "merchant": "norce",
     "channel": "1", "issuedAt": "2026-11-27T10:00:00Z", "reason": "notification"}

The same commands may be Avro-encoded (``schemas/OrderCommand.avsc``, single-object encoding),
told apart by a ``content-type`` of ``application/avro`` or ``application/vnd.apache.avro+binary``
(parameters such as ``; charset=binary`` allowed, any case) or, without a content type, the Avro
marker bytes ``C3 01``. Avro in the Confluent wire format (issue 15: magic byte ``00``, a 4-byte
schema id, the body) is told apart by ``application/vnd.confluent.avro`` or that first byte (no
JSON text starts with it); an id the codec has not seen raises :class:`UnresolvedSchemaError`,
which the worker resolves with the registry before parsing the record again. Both encodings
obey the same rules: the JSON is read by the one strict parser (:mod:`bridge.jsonstrict`:
bounded depth, strict UTF-8, no surrogates, no duplicate keys), and the decoded Avro record goes
through the same validation as the JSON object.

The contract is exactly the published JSON Schema: enums are case-sensitive without whitespace,
date-times are RFC 3339 strings (no epoch numbers), ids are non-empty, bounded and free of
control characters, surrounding whitespace and lone surrogates.

Unknown fields are rejected (``extra="forbid"``): a misspelt ``expectedState`` silently ignored
would turn a guarded command into an unguarded one. Every parse failure raises
:class:`~bridge.errors.InvalidCommandError` with a short, bounded ``reason`` code used as the
dead-letter reason and metric label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from bridge.codec import AvroCodec, UnknownSchemaIdError
from bridge.errors import (
    AvroDecodeError,
    InvalidCommandError,
    InvalidOrderIdError,
)
from bridge.jsonstrict import JsonInputError, loads_strict
from bridge.order_ids import validate_order_id
from bridge.order_model import OrderStatus

AVRO_CONTENT_TYPE = "application/avro"
AVRO_CONTENT_TYPES: Final = frozenset(
    {"application/avro", "application/vnd.apache.avro+binary", "application/vnd.confluent.avro"}
)
JSON_CONTENT_TYPE = "application/json"
AVRO_COMMAND_SCHEMA = "OrderCommand"
MAX_ID_LENGTH = 128
MAX_SCOPE_LENGTH = 64
MAX_REASON_LENGTH = 200
COMMAND_TYPES: Final = ("SetOrderState", "DeleteOrder", "RefreshOrder")

# The published contract, as regular expressions the JSON Schema carries too (ECMA 262 and
# Python agree on these). The validators below use the same expressions, so the schema and the
# bridge accept the same strings.
RFC3339_PATTERN: Final = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})(?!\n)$"
)
# An id: no control characters, no surrounding whitespace.
# Every pattern ends in (?!\n)$: in Python (and the jsonschema library) a bare $ also matches
# before a final newline, in ECMA-262 it does not; the lookahead makes all engines agree.
ID_PATTERN: Final = r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f\s])?(?!\n)$"
# merchant/channel are HTTP header values: printable ASCII, inner spaces only.
SCOPE_PATTERN: Final = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?(?!\n)$"
# The Unicode format characters (category Cf; Unicode 14.0, Python 3.11's unicodedata), which
# bridge.order_ids.validate_order_id refuses by category (a unit test checks the table and the
# pattern against every code point).
FORMAT_CHARACTER_RANGES: Final = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),
    (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E), (0x200B, 0x200F), (0x202A, 0x202E),
    (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD),
    (0x110CD, 0x110CD), (0x13430, 0x13438), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
# The pattern lists the ones in the Basic Multilingual Plane only: a supplementary character in
# a character class is one code point to Python and to ECMA-262 with the u flag, but a pair of
# surrogates (and a range of them an error) to ECMA-262 without it, and a published schema must
# compile everywhere. The others are named in the field's description instead.
SUPPLEMENTARY_FORMAT_CHARACTERS: Final = ", ".join(
    f"U+{a:04X}" if a == b else f"U+{a:04X}-U+{b:04X}"
    for a, b in FORMAT_CHARACTER_RANGES
    if a > 0xFFFF
)
# One URL path segment (see bridge.order_ids.validate_order_id, the authority): no / ? # % \,
# whitespace, control or format characters, not a dot segment.
ORDER_ID_PATTERN: Final = (
    r"^(?!\.\.?$)[^/?#%\\\s\x00-\x1f\x7f-\x9f"
    + "".join(
        f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}"
        for a, b in FORMAT_CHARACTER_RANGES
        if b <= 0xFFFF
    )
    + "]+$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)
_TOKEN = re.compile(ID_PATTERN)
_SCOPE = re.compile(SCOPE_PATTERN)
_STATUS_VALUES: Final = frozenset(m.value for m in OrderStatus)


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8", "strict")
    except UnicodeEncodeError:
        return True
    return False


def _check_token(value: str, what: str, limit: int) -> str:
    if not value or len(value) > limit:
        raise ValueError(f"{what} must be 1..{limit} characters")
    if _has_surrogate(value):
        raise ValueError(f"{what} contains a lone surrogate (not valid Unicode)")
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} must not contain control characters or surrounding whitespace")
    return value


def _rfc3339(value: Any) -> datetime:
    """RFC 3339 date-times only: an epoch number or a date without a time zone is refused."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError("timezone_aware", "Input should have timezone info")
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time string")
    if not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "datetime_from_date_parsing", "Input should be an RFC 3339 date-time"
        )
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:
        raise PydanticCustomError(
            "datetime_from_date_parsing", "Input is not a valid calendar date-time"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _strict_status(value: Any) -> OrderStatus:
    """Exactly one of the enum's values: case-sensitive, no whitespace."""
    if isinstance(value, OrderStatus):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError("string_type", "Input should be a valid string")
    if value not in _STATUS_VALUES:
        raise PydanticCustomError(
            "enum",
            "Input should be one of: {expected}",
            {"expected": ", ".join(m.value for m in OrderStatus)},
        )
    return OrderStatus(value)


Rfc3339 = Annotated[
    datetime,
    BeforeValidator(_rfc3339),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
StrictStatus = Annotated[
    OrderStatus,
    BeforeValidator(_strict_status),
    WithJsonSchema({"enum": [m.value for m in OrderStatus], "type": "string"}),
]


def _token_schema(limit: int, pattern: str) -> dict[str, Any]:
    return {"minLength": 1, "maxLength": limit, "pattern": pattern}


class _BaseCommand(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )

    command_id: str = Field(
        description="Unique id of this command; results correlate by it.",
        json_schema_extra=_token_schema(MAX_ID_LENGTH, ID_PATTERN),
    )
    order_id: str = Field(
        description="Norce order id (one opaque path segment). Also refused, beyond what the "
        f"pattern can say portably: the supplementary format characters "
        f"({SUPPLEMENTARY_FORMAT_CHARACTERS}).",
        json_schema_extra=_token_schema(MAX_ID_LENGTH, ORDER_ID_PATTERN),
    )
    merchant: str = Field(
        description="Norce merchant (x-merchant).",
        json_schema_extra=_token_schema(MAX_SCOPE_LENGTH, SCOPE_PATTERN),
    )
    channel: str = Field(
        description="Norce channel (x-channel).",
        json_schema_extra=_token_schema(MAX_SCOPE_LENGTH, SCOPE_PATTERN),
    )
    issued_at: Rfc3339 = Field(description="When the producer issued it (RFC 3339).")
    expires_at: Rfc3339 | None = Field(
        default=None, description="Do not execute after this instant (RFC 3339)."
    )
    correlation_id: str | None = Field(
        default=None,
        description="Free correlation id.",
        json_schema_extra=_token_schema(MAX_ID_LENGTH, ID_PATTERN),
    )

    @field_validator("command_id", "correlation_id")
    @classmethod
    def _id_token(cls, v: str | None) -> str | None:
        return None if v is None else _check_token(v, "id", MAX_ID_LENGTH)

    @field_validator("merchant", "channel")
    @classmethod
    def _scope_token(cls, v: str) -> str:
        if not v or len(v) > MAX_SCOPE_LENGTH:
            raise ValueError(f"merchant/channel must be 1..{MAX_SCOPE_LENGTH} characters")
        if not _SCOPE.fullmatch(v):
            raise ValueError(
                "merchant/channel must be printable ASCII without surrounding whitespace "
                "(they are HTTP header values)"
            )
        return v

    @field_validator("order_id")
    @classmethod
    def _order_id(cls, v: str) -> str:
        try:
            return validate_order_id(v)
        except InvalidOrderIdError as exc:
            raise ValueError(f"bad order id: {exc.message}") from None


class _CommandBase(_BaseCommand):
    """The commands that write to Norce: they may carry a precondition."""

    expected_state: StrictStatus | None = Field(
        default=None, description="Precondition: apply only if the order is in this state."
    )


class SetOrderState(_CommandBase):
    """Move an order to ``state`` (PUT state, then re-fetch)."""

    type: Literal["SetOrderState"] = "SetOrderState"
    state: StrictStatus = Field(description="Target state.")


class DeleteOrder(_CommandBase):
    """Delete an order (DELETE; a 404 means it is already deleted)."""

    type: Literal["DeleteOrder"] = "DeleteOrder"


class RefreshOrder(_BaseCommand):
    """Re-read an order (GET, no write) and publish what changed since the bridge last published
    it: its snapshot, and ``OrderStateChanged`` (``source=external``) when its status moved."""

    type: Literal["RefreshOrder"] = "RefreshOrder"
    reason: str | None = Field(
        default=None,
        description="Why the refresh was asked for (notification, backfill, manual, ...).",
        json_schema_extra=_token_schema(MAX_REASON_LENGTH, ID_PATTERN),
    )

    @field_validator("reason")
    @classmethod
    def _reason_token(cls, v: str | None) -> str | None:
        return None if v is None else _check_token(v, "reason", MAX_REASON_LENGTH)


AnyCommand = SetOrderState | DeleteOrder | RefreshOrder
"""Every command type (the discriminated union's members)."""
Command = Annotated[AnyCommand, Field(discriminator="type")]
_ADAPTER: TypeAdapter[AnyCommand] = TypeAdapter(Command)


def command_json_schema() -> dict[str, Any]:
    """The JSON Schema of the commands, generated from the models (published in ``schemas/``)."""
    schema = _ADAPTER.json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://norce-order-bridge/schemas/order-command.schema.json"
    schema["title"] = "OrderCommand"
    return schema


def _reason_for(exc: ValidationError) -> tuple[str, str]:
    """Map the first pydantic error to a bounded reason code and a readable message."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = ".".join(str(p) for p in first["loc"])
    kind = first["type"]
    msg = f"{loc}: {first['msg']}" if loc else first["msg"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return ("unknown_type" if kind == "union_tag_invalid" else "missing_field", msg)
    if kind == "missing":
        return "missing_field", msg
    if kind == "extra_forbidden":
        return "unknown_field", msg
    field = str(first["loc"][-1]) if first["loc"] else ""
    if field == "orderId":
        return "bad_order_id", msg
    if field in ("state", "expectedState") and kind == "enum":
        return "unknown_state", msg
    if field in ("issuedAt", "expiresAt"):
        return "bad_timestamp", msg
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "not_an_object", msg
    if kind == "json_invalid":
        return "invalid_json", msg
    return "invalid_field", msg


def media_type(
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> tuple[str | None, dict[str, str]]:
    """The record's ``content-type`` as (lower-case type/subtype, parameters), or (None, {}).

    Parameters (``; charset=binary``) are split off and their names lower-cased (RFC 9110
    §8.3.1). The last ``content-type`` header wins; a null, empty or non-ASCII value counts as
    absent (the record is then told apart by its bytes).
    """
    value: bytes | None = None
    for name, v in headers or ():
        if name.lower() == "content-type":
            value = v
    if not value:
        return None, {}
    try:
        text = value.decode("ascii", "strict")
    except UnicodeDecodeError:
        return None, {}
    main, *params = text.split(";")
    kind = main.strip().lower()
    parsed: dict[str, str] = {}
    for param in params:
        pname, sep, pvalue = param.partition("=")
        if sep:
            parsed[pname.strip().lower()] = pvalue.strip().strip('"').lower()
    return (kind or None), parsed


def parse_command(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
    *,
    codec: AvroCodec | None = None,
    max_bytes: int = 64 * 1024,
) -> AnyCommand:
    """Parse one record value into a command or raise InvalidCommandError(reason, message).

    Never raises anything else, whatever the bytes and headers.
    """
    if value is None or len(value) == 0:
        raise InvalidCommandError("empty_value", "record has no value (null or empty)")
    if len(value) > max_bytes:
        raise InvalidCommandError(
            "oversize", f"record value is {len(value)} bytes, limit {max_bytes}"
        )
    ctype, params = media_type(headers)
    if ctype in AVRO_CONTENT_TYPES:
        return _parse_avro(value, codec)
    if (
        ctype is None
        and codec is not None
        and (codec.is_single_object(value) or codec.is_confluent(value))
    ):
        return _parse_avro(value, codec)
    charset = params.get("charset")
    if charset is not None and charset not in ("utf-8", "utf8", "us-ascii"):
        raise InvalidCommandError(
            "unsupported_content_type",
            f"charset {charset[:40]!r} is not supported: commands are UTF-8 JSON or Avro",
        )
    try:
        raw = loads_strict(value)
    except JsonInputError as exc:
        raise InvalidCommandError(exc.reason, exc.message) from None
    return _validate(raw)


def _validate(raw: Any) -> AnyCommand:
    if not isinstance(raw, dict):
        raise InvalidCommandError(
            "not_an_object", f"command must be a JSON object, got {type(raw).__name__}"
        )
    kind = raw.get("type")
    if kind is None:
        raise InvalidCommandError("missing_field", "type: Field required")
    if kind not in COMMAND_TYPES:
        shown = (
            kind
            if isinstance(kind, str) and len(kind) <= 40 and not _has_surrogate(kind)
            else type(kind).__name__
        )
        raise InvalidCommandError("unknown_type", f"unknown command type {shown!r}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        reason, msg = _reason_for(exc)
        raise InvalidCommandError(reason, msg) from None


class UnresolvedSchemaError(InvalidCommandError):
    """A Confluent-framed command whose writer schema id the codec has not fetched yet.

    A dead letter (``invalid_avro``) only when no registry can resolve it; otherwise the
    worker fetches the schema (holding the command while the registry is down) and parses the
    record again."""

    def __init__(self, schema_id: int) -> None:
        super().__init__("invalid_avro", f"unknown Confluent schema id {schema_id}")
        self.schema_id = schema_id


def decode_avro_command(value: bytes, codec: AvroCodec | None) -> dict[str, Any]:
    """The ``OrderCommand`` record of an Avro value (nulls dropped: Avro null means absent)."""
    if codec is None:
        raise InvalidCommandError("invalid_avro", "Avro command received but no codec is loaded")
    try:
        name, record = codec.decode(value)
    except UnknownSchemaIdError as exc:
        raise UnresolvedSchemaError(exc.schema_id) from None
    except AvroDecodeError as exc:
        raise InvalidCommandError("invalid_avro", f"undecodable Avro command: {exc}") from None
    if name != AVRO_COMMAND_SCHEMA:
        raise InvalidCommandError(
            "invalid_avro", f"Avro record {name!r} is not an {AVRO_COMMAND_SCHEMA}"
        )
    return {k: v for k, v in record.items() if v is not None}


def _parse_avro(value: bytes, codec: AvroCodec | None) -> AnyCommand:
    # The same rules as JSON: a DeleteOrder carrying a state is an unknown field, not ignored.
    return _validate(decode_avro_command(value, codec))


def command_to_json(command: AnyCommand) -> bytes:
    """Serialise a command to its JSON wire form (used by ``order-bridge send`` and tests)."""
    return command.model_dump_json(by_alias=True, exclude_none=True).encode()


def command_to_avro_record(command: AnyCommand) -> dict[str, Any]:
    """The ``OrderCommand`` Avro record for a command."""
    data = command.model_dump(mode="json", by_alias=True)
    return {
        "commandId": data["commandId"],
        "type": data["type"],
        "orderId": data["orderId"],
        "merchant": data["merchant"],
        "channel": data["channel"],
        "issuedAt": data["issuedAt"],
        "state": data.get("state"),
        "expectedState": data.get("expectedState"),
        "expiresAt": data.get("expiresAt"),
        "correlationId": data.get("correlationId"),
        "reason": data.get("reason"),
    }


def command_record(
    command: AnyCommand, *extra_headers: tuple[str, bytes]
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key (the order id), JSON value and headers of a command record, as ``order-bridge send``,
    ``order-bridge refresh`` and the notification relay write it (the default partitioner then
    puts every command of one order on one partition)."""
    headers = [
        ("content-type", JSON_CONTENT_TYPE.encode()),
        ("norce.command.id", command.command_id.encode()),
        ("norce.order.id", command.order_id.encode()),
    ]
    if command.correlation_id:
        headers.append(("norce.correlation.id", command.correlation_id.encode()))
    headers.extend(extra_headers)
    return command.order_id.encode(), command_to_json(command), headers


def header_map(
    headers: Sequence[tuple[str, bytes | None]] | None,
) -> Mapping[str, bytes | None]:
    """Headers as a dict (last value wins), for lookups."""
    return {k: v for k, v in headers or ()}


RECEIVED_AT_HEADER: Final = "norce.notification.received-at"
"""When the ingress received the notification a RefreshOrder came from (ms since the epoch)."""


def received_at_ms(headers: Sequence[tuple[str, bytes | None]] | None) -> int | None:
    """The ``norce.notification.received-at`` header as milliseconds, None if absent or bad."""
    value = header_map(headers).get(RECEIVED_AT_HEADER)
    if not value or len(value) > 16 or not value.isdigit():
        return None
    return int(value)


def is_expired(command: AnyCommand, now: datetime, max_age_s: float | None) -> str | None:
    """Why the command must not run any more (``expiresAt`` passed, or older than the max age)."""
    if command.expires_at is not None and now >= command.expires_at:
        return f"expired at {command.expires_at.isoformat()}"
    if max_age_s is not None and (now - command.issued_at).total_seconds() > max_age_s:
        return f"older than the maximum command age of {max_age_s:g}s"
    return None
