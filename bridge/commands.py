"""Inbound order commands: frozen models (a discriminated union on ``type``) and record parsing.

Wire format (JSON, UTF-8, camelCase)::

    {"type": "SetOrderState", "commandId": "c-1", "orderId": "o_...", "merchant": "norce",
     "channel": "1", "issuedAt": "2026-11-27T10:00:00Z", "state": "accepted",
     "expectedState": "processing", "expiresAt": "2026-11-27T10:05:00Z", "correlationId": "x"}
    {"type": "DeleteOrder", "commandId": "c-2", "orderId": "o_...", "merchant": "norce",
     "channel": "1", "issuedAt": "2026-11-27T10:00:00Z"}

The same commands may be Avro-encoded (``schemas/OrderCommand.avsc``, single-object encoding),
told apart by a ``content-type: application/avro`` header or the Avro marker bytes ``C3 01``.

Unknown fields are rejected (``extra="forbid"``): a misspelt ``expectedState`` silently ignored
would turn a guarded command into an unguarded one. Every parse failure raises
:class:`~bridge.errors.InvalidCommandError` with a short, bounded ``reason`` code used as the
dead-letter reason and metric label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from bridge.codec import AvroCodec
from bridge.errors import AvroDecodeError, InvalidCommandError, InvalidOrderIdError
from bridge.norce import validate_order_id
from bridge.order_model import OrderStatus

AVRO_CONTENT_TYPE = "application/avro"
JSON_CONTENT_TYPE = "application/json"
AVRO_COMMAND_SCHEMA = "OrderCommand"
MAX_ID_LENGTH = 128
MAX_SCOPE_LENGTH = 64

# Dead-letter reasons (bounded: they are metric label values).
REASONS = (
    "empty_value",
    "oversize",
    "invalid_utf8",
    "invalid_json",
    "invalid_avro",
    "not_an_object",
    "unknown_type",
    "missing_field",
    "invalid_field",
    "unknown_field",
    "bad_order_id",
    "unknown_state",
    "bad_timestamp",
    "api_rejected",
    "order_not_found",
)


def _check_token(value: str, what: str, limit: int) -> str:
    if not value or len(value) > limit:
        raise ValueError(f"{what} must be 1..{limit} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or value != value.strip():
        raise ValueError(f"{what} must not contain control characters or surrounding whitespace")
    return value


class _CommandBase(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )

    command_id: str = Field(description="Unique id of this command; results correlate by it.")
    order_id: str = Field(description="Norce order id (one opaque path segment).")
    merchant: str = Field(description="Norce merchant (x-merchant).")
    channel: str = Field(description="Norce channel (x-channel).")
    issued_at: AwareDatetime = Field(description="When the producer issued it (RFC 3339).")
    expected_state: OrderStatus | None = Field(
        default=None, description="Precondition: apply only if the order is in this state."
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="Do not execute after this instant (RFC 3339)."
    )
    correlation_id: str | None = Field(default=None, description="Free correlation id.")

    @field_validator("command_id", "correlation_id")
    @classmethod
    def _id_token(cls, v: str | None) -> str | None:
        return None if v is None else _check_token(v, "id", MAX_ID_LENGTH)

    @field_validator("merchant", "channel")
    @classmethod
    def _scope_token(cls, v: str) -> str:
        _check_token(v, "merchant/channel", MAX_SCOPE_LENGTH)
        if not v.isascii() or not v.isprintable():
            raise ValueError(
                "merchant/channel must be printable ASCII (they are HTTP header values)"
            )
        return v

    @field_validator("order_id")
    @classmethod
    def _order_id(cls, v: str) -> str:
        try:
            return validate_order_id(v)
        except InvalidOrderIdError as exc:
            raise ValueError(f"bad order id: {exc.message}") from None


class SetOrderState(_CommandBase):
    """Move an order to ``state`` (PUT state, then re-fetch)."""

    type: Literal["SetOrderState"] = "SetOrderState"
    state: OrderStatus = Field(description="Target state.")


class DeleteOrder(_CommandBase):
    """Delete an order (DELETE; a 404 means it is already deleted)."""

    type: Literal["DeleteOrder"] = "DeleteOrder"


Command = Annotated[SetOrderState | DeleteOrder, Field(discriminator="type")]
_ADAPTER: TypeAdapter[SetOrderState | DeleteOrder] = TypeAdapter(Command)


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


def _content_type(headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    for name, value in headers or ():
        if name.lower() == "content-type":
            try:
                return value.decode("ascii", "strict").strip().lower()
            except UnicodeDecodeError:
                return None
    return None


def parse_command(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None = None,
    *,
    codec: AvroCodec | None = None,
    max_bytes: int = 64 * 1024,
) -> SetOrderState | DeleteOrder:
    """Parse one record value into a command or raise InvalidCommandError(reason, message)."""
    if value is None or len(value) == 0:
        raise InvalidCommandError("empty_value", "record has no value (null or empty)")
    if len(value) > max_bytes:
        raise InvalidCommandError(
            "oversize", f"record value is {len(value)} bytes, limit {max_bytes}"
        )
    ctype = _content_type(headers)
    is_avro = ctype == AVRO_CONTENT_TYPE or (
        ctype in (None, AVRO_CONTENT_TYPE) and codec is not None and codec.is_single_object(value)
    )
    if is_avro:
        return _parse_avro(value, codec)
    try:
        text = value.decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise InvalidCommandError(
            "invalid_utf8", f"value is not UTF-8 at byte {exc.start}"
        ) from None
    try:
        raw = orjson.loads(text)
    except ValueError as exc:
        raise InvalidCommandError("invalid_json", f"value is not JSON: {exc}") from None
    return _validate(raw)


def _validate(raw: Any) -> SetOrderState | DeleteOrder:
    if not isinstance(raw, dict):
        raise InvalidCommandError(
            "not_an_object", f"command must be a JSON object, got {type(raw).__name__}"
        )
    kind = raw.get("type")
    if kind is None:
        raise InvalidCommandError("missing_field", "type: Field required")
    if kind not in ("SetOrderState", "DeleteOrder"):
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
        raise InvalidCommandError("unknown_type", f"unknown command type {shown!r}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        reason, msg = _reason_for(exc)
        raise InvalidCommandError(reason, msg) from None


def _parse_avro(value: bytes, codec: AvroCodec | None) -> SetOrderState | DeleteOrder:
    if codec is None:
        raise InvalidCommandError("invalid_avro", "Avro command received but no codec is loaded")
    try:
        name, record = codec.decode(value)
    except AvroDecodeError as exc:
        raise InvalidCommandError("invalid_avro", f"undecodable Avro command: {exc}") from None
    if name != AVRO_COMMAND_SCHEMA:
        raise InvalidCommandError(
            "invalid_avro", f"Avro record {name!r} is not an {AVRO_COMMAND_SCHEMA}"
        )
    raw = {k: v for k, v in record.items() if v is not None}
    if raw.get("type") == "DeleteOrder":
        raw.pop("state", None)
    return _validate(raw)


def command_to_json(command: SetOrderState | DeleteOrder) -> bytes:
    """Serialise a command to its JSON wire form (used by ``order-bridge send`` and tests)."""
    return command.model_dump_json(by_alias=True, exclude_none=True).encode()


def command_to_avro_record(command: SetOrderState | DeleteOrder) -> dict[str, Any]:
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
    }


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> Mapping[str, bytes]:
    """Headers as a dict (last value wins), for lookups."""
    return {k: v for k, v in headers or ()}


def is_expired(
    command: SetOrderState | DeleteOrder, now: datetime, max_age_s: float | None
) -> str | None:
    """Why the command must not run any more (``expiresAt`` passed, or older than the max age)."""
    if command.expires_at is not None and now >= command.expires_at:
        return f"expired at {command.expires_at.isoformat()}"
    if max_age_s is not None and (now - command.issued_at).total_seconds() > max_age_s:
        return f"older than the maximum command age of {max_age_s:g}s"
    return None
