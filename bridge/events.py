"""Pure builders of the bridge's Avro records: order snapshots, events and command results.

Nothing here does I/O. Every function takes plain data and returns plain ``dict`` records that
:class:`bridge.codec.AvroCodec` encodes with the schemas in ``schemas/``.

Order snapshots are lossless. :func:`snapshot_from_order` maps the order JSON, as the Order API
returned it, to an ``OrderSnapshot`` record, and :func:`order_from_snapshot` rebuilds exactly
that JSON. The mapping works as follows:

* Every documented field keeps its API name. Enum-like values (order, payment and shipping
  states, product and customer types, ...) stay plain strings, so a value the API adds later
  never breaks encoding. Date-times stay the API's RFC 3339 strings.
* ``attributes`` objects and ``Notification.schema`` are stored as compact JSON text with
  sorted keys.
* Keys that the schema does not model, for example fields the API adds later, are stored in
  the ``extra`` field (JSON object text) of the record for the API object that held them.
  Known keys whose value was an explicit JSON ``null`` go there too, so "absent" and
  "explicitly null" stay different.
* Money fields are Avro doubles, so an integral JSON amount such as ``1234`` comes back as
  ``1234.0``: numerically equal, and ``==`` in Python holds. Integer fields (quantity,
  logistics) stay ints. An integer amount that a double cannot hold exactly (beyond 2**53)
  is rejected rather than rounded.
* Values of the wrong JSON type make :func:`snapshot_from_order` raise
  :class:`SnapshotMappingError` with the JSON path, e.g. ``order.cart.items[1].quantity``.
  They are never coerced or dropped silently.

Event ids are deterministic: ``f"{command_id}:{kind}"``. A replayed command (at-least-once
delivery) therefore gives a record with the same id, and consumers can deduplicate on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import orjson

from bridge.vocabulary import Outcome

__all__ = [
    "COMMAND_RESULT_SCHEMA",
    "DELETED_KIND",
    "ORDER_COMMAND_SCHEMA",
    "ORDER_DELETED_SCHEMA",
    "ORDER_SNAPSHOT_SCHEMA",
    "OUTCOMES",
    "SNAPSHOT_SCHEMA_VERSION",
    "STATE_CHANGED_KIND",
    "STATE_CHANGED_SCHEMA",
    "CommandOutcome",
    "SnapshotMappingError",
    "command_result",
    "event_id",
    "format_rfc3339",
    "latest_transition_at",
    "order_deleted_event",
    "order_from_snapshot",
    "parse_rfc3339",
    "snapshot_from_order",
    "state_changed_event",
]

ORDER_SNAPSHOT_SCHEMA: Final = "OrderSnapshot"
STATE_CHANGED_SCHEMA: Final = "OrderStateChanged"
ORDER_DELETED_SCHEMA: Final = "OrderDeleted"
COMMAND_RESULT_SCHEMA: Final = "CommandResult"
ORDER_COMMAND_SCHEMA: Final = "OrderCommand"

SNAPSHOT_SCHEMA_VERSION: Final = 1
"""Value of ``OrderSnapshot.schemaVersion`` written by this code."""

STATE_CHANGED_KIND: Final = "state-changed"
DELETED_KIND: Final = "deleted"


CommandOutcome = Outcome
"""Compatibility name of :class:`bridge.vocabulary.Outcome`."""

OUTCOMES: Final = frozenset(Outcome)
"""The allowed ``CommandResult.outcome`` values."""

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


class SnapshotMappingError(ValueError):
    """The order JSON does not have the documented shape; the message names the JSON path."""


# --------------------------------------------------------------------------------------------
# Mapping specification: one _Obj per API object, its documented keys and their kinds.
# Field names are identical in the API JSON and in schemas/OrderSnapshot.avsc.

_Scalar: TypeAlias = Literal["string", "int", "double", "boolean", "attributes", "json"]


class _Obj:
    """Documented keys of one API object and the kind of each value."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, _Kind] = {}

    def define(self, **fields: _Kind) -> _Obj:
        self.fields.update(fields)
        return self


@dataclass(frozen=True, slots=True)
class _Array:
    items: _Kind


_Kind: TypeAlias = "_Scalar | _Obj | _Array"

_S: Final = "string"
_ATTR: Final = "attributes"

_PRICE = _Obj("Price").define(includingVat="double", excludingVat="double")
_DISCOUNT = _Obj("Discount").define(
    type=_S, name=_S, reference=_S, description=_S, code=_S, value=_PRICE, attributes=_ATTR
)
_LOGISTICS = _Obj("Logistics").define(
    weight="int", height="int", width="int", length="int", tags=_Array(_S), shippingDate=_S
)
_ITEM = _Obj("Item")
_ITEM.define(
    id=_S,
    reference=_S,
    name=_S,
    sku=_S,
    productType=_S,
    items=_Array(_ITEM),
    url=_S,
    imageUrl=_S,
    quantity="int",
    unit=_S,
    price=_PRICE,
    total=_PRICE,
    originalTotal=_PRICE,
    vatRate="double",
    discounts=_Array(_DISCOUNT),
    logistics=_LOGISTICS,
    upsell="boolean",
    attributes=_ATTR,
)
_CART = _Obj("Cart").define(
    reference=_S, items=_Array(_ITEM), discounts=_Array(_DISCOUNT), total=_PRICE, attributes=_ATTR
)
_TRANSITION = _Obj("Transition").define(status=_S, timeStamp=_S)
_STATE = _Obj("State").define(currentStatus=_S, transitions=_Array(_TRANSITION))
_ADDRESS = _Obj("Address").define(
    type=_S,
    givenName=_S,
    familyName=_S,
    careOf=_S,
    reference=_S,
    organizationName=_S,
    streetAddress=_S,
    streetAddress2=_S,
    postalCode=_S,
    city=_S,
    region=_S,
    country=_S,
    phone=_S,
    email=_S,
    nationalIdentificationNumber=_S,
    organizationIdentificationNumber=_S,
    attributes=_ATTR,
)
_CUSTOMER = _Obj("Customer").define(billing=_ADDRESS, shipping=_ADDRESS, type=_S, attributes=_ATTR)
_CONSENT = _Obj("Consent").define(id=_S, checked="boolean", text=_S, required="boolean")
_CALLBACK = _Obj("Callback").define(id=_S, adapterId=_S, url=_S)
_HOOK = _Obj("Hook").define(id=_S, adapterId=_S, subscribeTo=_S, target=_S, invoke=_S, version=_S)
_NOTIFICATION = _Obj("Notification").define(
    id=_S,
    adapterId=_S,
    reference=_S,
    description=_S,
    scope=_S,
    schema="json",
    invoke=_S,
    version=_S,
)
_PRODUCT = _Obj("Product").define(reference=_S, name=_S)
_PICKUP_ADDRESS = _Obj("PickupLocationAddress").define(
    streetAddress=_S, city=_S, postalCode=_S, country=_S
)
_PICKUP = _Obj("PickupLocation").define(reference=_S, name=_S, address=_PICKUP_ADDRESS)
_DELIVERY = _Obj("DeliveryDetails").define(
    carrier=_S, carrierProductId=_S, product=_PRODUCT, pickupLocation=_PICKUP
)
_DELIVERY.fields["class"] = _S  # a Python keyword, so not passable to define()
_ADDON = _Obj("Addon").define(reference=_S, price="double")
_SHIPPING = _Obj("Shipping").define(
    id=_S,
    merchant=_S,
    channel=_S,
    state=_S,
    reference=_S,
    tmsReference=_S,
    orderId=_S,
    adapterId=_S,
    name=_S,
    total=_PRICE,
    vatRate="double",
    deliveryDetails=_DELIVERY,
    addons=_Array(_ADDON),
    attributes=_ATTR,
)
_PAYMENT_ACTION = _Obj("PaymentAction").define(id=_S, adapterId=_S, type=_S, url=_S)
_RECURRING = _Obj("Recurring").define(token=_S, description=_S, attributes=_ATTR)
_UPSELL_TX = _Obj("UpsellTransaction").define(id=_S, state=_S, attributes=_ATTR)
_UPSELL = _Obj("Upsell").define(
    eligible="boolean", expiration=_S, transactions=_Array(_UPSELL_TX), attributes=_ATTR
)
_PAYMENT = _Obj("Payment").define(
    id=_S,
    adapterId=_S,
    name=_S,
    merchant=_S,
    channel=_S,
    currency=_S,
    type=_S,
    orderId=_S,
    amount="double",
    upperLimitAmount="double",
    state=_S,
    reference=_S,
    attributes=_ATTR,
    actions=_Array(_PAYMENT_ACTION),
    recurring=_RECURRING,
    upsell=_UPSELL,
)
_ORDER = _Obj("Order").define(
    id=_S,
    merchant=_S,
    channel=_S,
    reference=_S,
    created=_S,
    lastModified=_S,
    state=_STATE,
    culture=_S,
    currency=_S,
    country=_S,
    cart=_CART,
    shippings=_Array(_SHIPPING),
    payments=_Array(_PAYMENT),
    customer=_CUSTOMER,
    consents=_Array(_CONSENT),
    validations=_Array(_CALLBACK),
    hooks=_Array(_HOOK),
    notifications=_Array(_NOTIFICATION),
    total=_PRICE,
    attributes=_ATTR,
)
_ORDER_REQUIRED: Final = ("id", "merchant", "channel")


# --------------------------------------------------------------------------------------------
# Order JSON -> OrderSnapshot


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _wrong(path: str, expected: str, value: object) -> SnapshotMappingError:
    return SnapshotMappingError(f"{path}: expected {expected}, got {_type_name(value)}")


# Only what JSON itself has: datetimes, dataclasses and subclasses are refused, not converted.
_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _refuse_non_finite(value: object, path: str) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SnapshotMappingError(f"{path}: not representable as JSON: {value!r}")
    elif isinstance(value, dict):
        for v in value.values():
            _refuse_non_finite(v, path)
    elif isinstance(value, list | tuple):
        for v in value:
            _refuse_non_finite(v, path)


def _dumps(value: object, path: str) -> str:
    try:
        # Compact, sorted keys, UTF-8 kept (as json.dumps with sort_keys, separators and
        # ensure_ascii=False), about 5x faster. orjson writes NaN/inf as null, so they are
        # refused by the walk below rather than silently changed.
        _refuse_non_finite(value, path)
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SnapshotMappingError(f"{path}: not representable as JSON: {exc}") from exc


def _conv_string(value: object, path: str) -> str:
    if isinstance(value, str):
        return value
    raise _wrong(path, "string", value)


def _conv_int(value: object, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT32_MIN <= value <= _INT32_MAX:
            return value
        raise SnapshotMappingError(f"{path}: integer {value} outside the int32 range")
    raise _wrong(path, "integer", value)


def _conv_double(value: object, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:
            raise SnapshotMappingError(f"{path}: number {value} too large for a double") from None
        if not math.isfinite(result):
            raise SnapshotMappingError(f"{path}: expected a finite number, got {value}")
        if isinstance(value, int) and int(result) != value:
            raise SnapshotMappingError(f"{path}: integer {value} is not exact as a double")
        return result
    raise _wrong(path, "number", value)


def _conv_boolean(value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise _wrong(path, "boolean", value)


def _conv_attributes(value: object, path: str) -> str:
    if isinstance(value, dict):
        return _dumps(value, path)
    raise _wrong(path, "object", value)


def _conv_json(value: object, path: str) -> str:
    return _dumps(value, path)


_SCALAR_TO_AVRO: Final[dict[str, Callable[[object, str], Any]]] = {
    "string": _conv_string,
    "int": _conv_int,
    "double": _conv_double,
    "boolean": _conv_boolean,
    "attributes": _conv_attributes,
    "json": _conv_json,
}


def _to_avro(kind: _Kind, value: object, path: str) -> Any:
    if isinstance(kind, _Obj):
        return _object_to_record(kind, value, path)
    if isinstance(kind, _Array):
        if not isinstance(value, list):
            raise _wrong(path, "array", value)
        return [_to_avro(kind.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    return _SCALAR_TO_AVRO[kind](value, path)


def _object_to_record(spec: _Obj, value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _wrong(path, f"{spec.name} object", value)
    record: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, kind in spec.fields.items():
        item = value.get(key)
        if item is None:
            record[key] = None
            if key in value:  # explicit null: remember it, the Avro null means "absent"
                extra[key] = None
        else:
            record[key] = _to_avro(kind, item, f"{path}.{key}")
    for key, item in value.items():
        if key not in spec.fields:
            if not isinstance(key, str):
                raise SnapshotMappingError(f"{path}: object key {key!r} is not a string")
            extra[key] = item
    record["extra"] = _dumps(extra, f"{path} (unknown fields)") if extra else None
    return record


# --------------------------------------------------------------------------------------------
# Compiled fast path. The generic walk above builds a JSON path string for every field so that
# errors can name it; that is most of its cost. The converters below are compiled once from the
# same specification, build no paths and check types exactly; on anything unexpected they give
# up (``_Mismatch``) and the generic walk runs instead, so results and error messages are the
# generic walk's, only faster on well-formed orders.


class _Mismatch(Exception):
    """The fast path met something it does not handle; use the generic walk."""


_MISMATCH = _Mismatch()
_FastConv: TypeAlias = Callable[[Any], Any]


def _fast_string(v: Any) -> Any:
    if type(v) is str:
        return v
    raise _MISMATCH


def _fast_int(v: Any) -> Any:
    if type(v) is int and _INT32_MIN <= v <= _INT32_MAX:
        return v
    raise _MISMATCH


def _fast_double(v: Any) -> Any:
    if type(v) is float and v - v == 0.0:  # finite
        return v
    if type(v) is int and -(2**53) <= v <= 2**53:
        return float(v)
    raise _MISMATCH


def _fast_boolean(v: Any) -> Any:
    if type(v) is bool:
        return v
    raise _MISMATCH


def _fast_attributes(v: Any) -> Any:
    if type(v) is dict:
        return _dumps(v, "")
    raise _MISMATCH


def _fast_json(v: Any) -> Any:
    return _dumps(v, "")


_FAST_SCALARS: Final[dict[str, _FastConv]] = {
    "string": _fast_string,
    "int": _fast_int,
    "double": _fast_double,
    "boolean": _fast_boolean,
    "attributes": _fast_attributes,
    "json": _fast_json,
}


def _compile_fast(kind: _Kind, done: dict[int, _FastConv] | None = None) -> _FastConv:
    done = {} if done is None else done
    if isinstance(kind, _Array):
        item = _compile_fast(kind.items, done)

        def conv_array(v: Any) -> Any:
            if type(v) is not list:
                raise _MISMATCH
            return [item(x) for x in v]

        return conv_array
    if not isinstance(kind, _Obj):
        return _FAST_SCALARS[kind]
    if id(kind) in done:  # recursive (Item.items): resolve at call time
        return lambda v: done[id(kind)](v)
    fields: list[tuple[str, _FastConv]] = []
    known = frozenset(kind.fields)

    def conv_object(v: Any) -> Any:
        if type(v) is not dict:
            raise _MISMATCH
        record: dict[str, Any] = {}
        extra: dict[str, Any] | None = None
        present = 0  # known keys present in v (with a value or an explicit null)
        for key, conv in fields:
            item = v.get(key)
            if item is None:
                record[key] = None
                if key in v:
                    present += 1
                    if extra is None:
                        extra = {}
                    extra[key] = None
            else:
                present += 1
                record[key] = conv(item)
        if len(v) > present:  # unknown keys
            for key in v:
                if key not in known:
                    if type(key) is not str:
                        raise _MISMATCH
                    if extra is None:
                        extra = {}
                    extra[key] = v[key]
        record["extra"] = _dumps(extra, "") if extra else None
        return record

    done[id(kind)] = conv_object
    fields.extend((key, _compile_fast(sub, done)) for key, sub in kind.fields.items())
    return conv_object


def snapshot_from_order(
    order: Mapping[str, Any],
    *,
    fetched_at: datetime,
    command_id: str | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """Map the order JSON as the API returned it to an ``OrderSnapshot`` record.

    Missing sections become null (absent arrays null, empty arrays empty). Unknown keys and
    explicit nulls go to the ``extra`` field of their object. Raises
    :class:`SnapshotMappingError` when a value has the wrong JSON type or when ``id``,
    ``merchant`` or ``channel`` is missing. ``fetched_at`` must be timezone-aware.
    """
    try:
        record = _FAST_ORDER(order)
    except (_Mismatch, SnapshotMappingError):
        record = _object_to_record(_ORDER, order, "order")
    for key in _ORDER_REQUIRED:
        if record[key] is None:
            raise SnapshotMappingError(f"order.{key}: required string is missing or null")
    last_modified = record["lastModified"]
    snapshot: dict[str, Any] = {
        "schemaVersion": SNAPSHOT_SCHEMA_VERSION,
        "fetchedAt": format_rfc3339(fetched_at),
        "commandId": command_id,
        "correlationId": correlation_id,
    }
    snapshot.update(record)
    snapshot["lastModifiedMillis"] = None if last_modified is None else _epoch_millis(last_modified)
    return snapshot


# --------------------------------------------------------------------------------------------
# OrderSnapshot -> order JSON


def _from_avro(kind: _Kind, value: Any, path: str) -> Any:
    if isinstance(kind, _Obj):
        return _record_to_object(kind, value, path)
    if isinstance(kind, _Array):
        return [_from_avro(kind.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind in ("attributes", "json"):
        return _loads(value, path)
    return value


def _loads(text: Any, path: str) -> Any:
    if not isinstance(text, str):
        raise _wrong(path, "JSON text", text)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SnapshotMappingError(f"{path}: invalid JSON text: {exc}") from exc


def _record_to_object(spec: _Obj, record: Any, path: str) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise _wrong(path, f"{spec.name} record", record)
    result: dict[str, Any] = {}
    for key, kind in spec.fields.items():
        value = record.get(key)
        if value is not None:
            result[key] = _from_avro(kind, value, f"{path}.{key}")
    extra_text = record.get("extra")
    if extra_text is not None:
        extra = _loads(extra_text, f"{path}.extra")
        if not isinstance(extra, dict):
            raise _wrong(f"{path}.extra", "JSON object", extra)
        for key, value in extra.items():
            result.setdefault(key, value)  # a modelled, non-null field wins over a stale copy
    return result


def order_from_snapshot(record: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the order JSON from an ``OrderSnapshot`` record, including unknown fields.

    This is the inverse of :func:`snapshot_from_order`: the snapshot metadata
    (``fetchedAt``, ``commandId``, ...) and the derived ``lastModifiedMillis`` are dropped.
    Raises :class:`SnapshotMappingError` when a JSON-text field does not hold valid JSON.
    """
    return _record_to_object(_ORDER, record, "snapshot")


# --------------------------------------------------------------------------------------------
# Time helpers


def format_rfc3339(moment: datetime) -> str:
    """Format a timezone-aware datetime as RFC 3339 in UTC with microseconds and ``Z``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime {moment!r} is naive; a timezone-aware datetime is required")
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


def parse_rfc3339(text: str) -> datetime | None:
    """Parse an RFC 3339 / ISO 8601 date-time leniently; None when it cannot be parsed.

    Accepts ``Z`` or numeric offsets, lower-case ``t``/``z``, and any number of fraction
    digits (.NET writes seven; Python keeps six). A missing offset is taken as UTC, which is
    what the API documents for its timestamps.
    """
    try:
        parsed = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _epoch_millis(text: str) -> int | None:
    parsed = parse_rfc3339(text)
    if parsed is None:
        return None
    return (parsed - _EPOCH) // _ONE_MS


def latest_transition_at(order: Mapping[str, Any], status: str) -> str | None:
    """The ``timeStamp`` of the newest transition to ``status`` in the order JSON, or None.

    Status matching is case-insensitive. "Newest" means the latest parsed time, with list
    position breaking ties. If any matching time cannot be parsed, the last match in list
    order wins, because the API appends transitions oldest-first. This never raises on
    malformed input: a missing or odd ``state`` gives None.
    """
    state = order.get("state") if isinstance(order, Mapping) else None
    transitions = state.get("transitions") if isinstance(state, Mapping) else None
    if not isinstance(transitions, list):
        return None
    wanted = status.casefold()
    matches: list[tuple[int, str, datetime | None]] = []
    for index, transition in enumerate(transitions):
        if not isinstance(transition, Mapping):
            continue
        found = transition.get("status")
        stamp = transition.get("timeStamp")
        if isinstance(found, str) and found.casefold() == wanted and isinstance(stamp, str):
            matches.append((index, stamp, parse_rfc3339(stamp)))
    if not matches:
        return None
    if any(parsed is None for _, _, parsed in matches):
        return matches[-1][1]
    return max(matches, key=lambda m: (m[2], m[0]))[1]


# --------------------------------------------------------------------------------------------
# Events and results


def event_id(command_id: str, kind: str) -> str:
    """Deterministic event id ``f"{command_id}:{kind}"``, stable across command replays."""
    return f"{command_id}:{kind}"


def state_changed_event(
    *,
    command_id: str,
    order_id: str,
    merchant: str,
    channel: str,
    previous_status: str | None,
    new_status: str,
    transition_at: str | None,
    correlation_id: str | None,
    occurred_at: datetime,
) -> dict[str, Any]:
    """Build an ``OrderStateChanged`` record with ``eventId = f"{command_id}:state-changed"``.

    ``transition_at`` is normally ``latest_transition_at(order, new_status)`` of the
    re-fetched order. ``occurred_at`` should be the transition's own time when known, so that a
    replay rebuilds the same record (same id, same content).
    """
    return {
        "eventId": event_id(command_id, STATE_CHANGED_KIND),
        "orderId": order_id,
        "merchant": merchant,
        "channel": channel,
        "previousStatus": previous_status,
        "newStatus": new_status,
        "transitionAt": transition_at,
        "commandId": command_id,
        "correlationId": correlation_id,
        "occurredAt": format_rfc3339(occurred_at),
    }


def order_deleted_event(
    *,
    command_id: str,
    order_id: str,
    merchant: str,
    channel: str,
    previous_status: str | None,
    already_deleted: bool,
    correlation_id: str | None,
    occurred_at: datetime,
) -> dict[str, Any]:
    """Build an ``OrderDeleted`` record with ``eventId = f"{command_id}:deleted"``.

    ``already_deleted`` is True when the API answered 404 to the DELETE.
    """
    return {
        "eventId": event_id(command_id, DELETED_KIND),
        "orderId": order_id,
        "merchant": merchant,
        "channel": channel,
        "previousStatus": previous_status,
        "alreadyDeleted": already_deleted,
        "commandId": command_id,
        "correlationId": correlation_id,
        "occurredAt": format_rfc3339(occurred_at),
    }


def command_result(
    *,
    command_id: str,
    command_type: str,
    order_id: str,
    merchant: str,
    channel: str,
    correlation_id: str | None,
    outcome: str,
    attempts: int,
    processed_at: datetime,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    reason: str | None = None,
    current_status: str | None = None,
    http_status: int | None = None,
    replayed: bool = False,
) -> dict[str, Any]:
    """Build a ``CommandResult`` record; ``outcome`` must be one of :data:`OUTCOMES`.

    ``replayed`` marks a command found already applied during a replay; ``current_status`` is
    then the state that command produced.

    Raises ValueError for an unknown outcome or a negative ``attempts``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {sorted(OUTCOMES)}")
    if attempts < 0:
        raise ValueError(f"attempts must be >= 0, got {attempts}")
    return {
        "commandId": command_id,
        "commandType": command_type,
        "orderId": order_id,
        "merchant": merchant,
        "channel": channel,
        "correlationId": correlation_id,
        "outcome": outcome,
        "reason": reason,
        "currentStatus": current_status,
        "httpStatus": http_status,
        "attempts": attempts,
        "processedAt": format_rfc3339(processed_at),
        "source": {"topic": source_topic, "partition": source_partition, "offset": source_offset},
        "replayed": replayed,
    }


_FAST_ORDER: Final = _compile_fast(_ORDER)
