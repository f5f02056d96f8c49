"""Order JSON <-> ``OrderSnapshot`` records: lossless, pure, shaped by ``bridge.snapshot_spec``.

:func:`snapshot_from_order` maps the order JSON, as the Order API returned it, to an
``OrderSnapshot`` record, and :func:`order_from_snapshot` rebuilds exactly that JSON. The
shape (which keys, which kinds, which nesting) is :data:`bridge.snapshot_spec.ORDER_SPEC`,
derived from the pydantic ``Order``; this module only says how each kind is converted:

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

Speed: well-formed orders take converters generated once from the spec (straight-line code per
record type); anything unexpected falls back to the generic walk, which names the JSON path.
:func:`tagged_snapshot_from_order` (what the bridge encodes) builds fastavro's union tags in the
same pass, so the codec writes it without a tagged copy (:class:`TaggedRecord`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from bridge.snapshot_fast import (
    FAST_ORDER,
    FAST_ORDER_TAGGED,
    SNAPSHOT_NAMESPACE,
    Mismatch,
    TaggedRecord,
)
from bridge.snapshot_json import INT32_MAX, INT32_MIN, SnapshotMappingError, dumps, wrong_type
from bridge.snapshot_spec import ORDER_REQUIRED, ORDER_SPEC, ArraySpec, Kind, ObjectSpec
from bridge.timestamps import epoch_millis, format_rfc3339

__all__ = [
    "SNAPSHOT_NAMESPACE",
    "SNAPSHOT_SCHEMA_VERSION",
    "SnapshotMappingError",
    "TaggedRecord",
    "order_from_snapshot",
    "order_record_checked",
    "order_record_fast",
    "snapshot_from_order",
    "tagged_snapshot_from_order",
]

SNAPSHOT_SCHEMA_VERSION: Final = 1
"""Value of ``OrderSnapshot.schemaVersion`` written by this code."""


def _conv_string(value: object, path: str) -> str:
    if isinstance(value, str):
        return value
    raise wrong_type(path, "string", value)


def _conv_int(value: object, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if INT32_MIN <= value <= INT32_MAX:
            return value
        raise SnapshotMappingError(f"{path}: integer {value} outside the int32 range")
    raise wrong_type(path, "integer", value)


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
    raise wrong_type(path, "number", value)


def _conv_boolean(value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    raise wrong_type(path, "boolean", value)


def _conv_attributes(value: object, path: str) -> str:
    if isinstance(value, dict):
        return dumps(value, path)
    raise wrong_type(path, "object", value)


def _conv_json(value: object, path: str) -> str:
    return dumps(value, path)


_SCALAR_TO_AVRO: Final[dict[str, Callable[[object, str], Any]]] = {
    "string": _conv_string,
    "int": _conv_int,
    "double": _conv_double,
    "boolean": _conv_boolean,
    "attributes": _conv_attributes,
    "json": _conv_json,
}


def _to_avro(kind: Kind, value: object, path: str) -> Any:
    if isinstance(kind, ObjectSpec):
        return _object_to_record(kind, value, path)
    if isinstance(kind, ArraySpec):
        if not isinstance(value, list):
            raise wrong_type(path, "array", value)
        return [_to_avro(kind.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    return _SCALAR_TO_AVRO[kind](value, path)


def _object_to_record(spec: ObjectSpec, value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise wrong_type(path, f"{spec.name} object", value)
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
    record["extra"] = dumps(extra, f"{path} (unknown fields)") if extra else None
    return record


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
    record = order_record_fast(order)
    if record is None:
        record = order_record_checked(order)
    return _with_metadata(record, fetched_at, command_id, correlation_id, dict)


def tagged_snapshot_from_order(
    order: Mapping[str, Any],
    *,
    fetched_at: datetime,
    command_id: str | None,
    correlation_id: str | None,
) -> dict[str, Any]:
    """:func:`snapshot_from_order`, ready for the codec: a :class:`TaggedRecord` (union tags
    built while mapping, no second pass before fastavro) for a well-formed order; an untagged
    record (the codec tags it) where the compiled converters defer to the generic walk.

    Same bytes once encoded, same errors. For encoding only (``bridge.outputs``)."""
    try:
        record: dict[str, Any] | None = FAST_ORDER_TAGGED(order)
    except (Mismatch, SnapshotMappingError):
        record = None
    if record is None:
        checked = order_record_checked(order)
        return _with_metadata(checked, fetched_at, command_id, correlation_id, dict)
    return _with_metadata(record, fetched_at, command_id, correlation_id, TaggedRecord)


def _with_metadata(
    record: dict[str, Any],
    fetched_at: datetime,
    command_id: str | None,
    correlation_id: str | None,
    factory: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """The snapshot record: metadata, the Order part, the derived ``lastModifiedMillis``."""
    for key in ORDER_REQUIRED:
        if record[key] is None:
            raise SnapshotMappingError(f"order.{key}: required string is missing or null")
    last_modified = record["lastModified"]
    snapshot = factory()
    snapshot["schemaVersion"] = SNAPSHOT_SCHEMA_VERSION
    snapshot["fetchedAt"] = format_rfc3339(fetched_at)
    snapshot["commandId"] = command_id
    snapshot["correlationId"] = correlation_id
    snapshot.update(record)
    snapshot["lastModifiedMillis"] = None if last_modified is None else epoch_millis(last_modified)
    return snapshot


# --------------------------------------------------------------------------------------------
# OrderSnapshot -> order JSON


def _from_avro(kind: Kind, value: Any, path: str) -> Any:
    if isinstance(kind, ObjectSpec):
        return _record_to_object(kind, value, path)
    if isinstance(kind, ArraySpec):
        return [_from_avro(kind.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind in ("attributes", "json"):
        return _loads(value, path)
    return value


def _loads(text: Any, path: str) -> Any:
    if not isinstance(text, str):
        raise wrong_type(path, "JSON text", text)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SnapshotMappingError(f"{path}: invalid JSON text: {exc}") from exc


def _record_to_object(spec: ObjectSpec, record: Any, path: str) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise wrong_type(path, f"{spec.name} record", record)
    result: dict[str, Any] = {}
    for key, kind in spec.fields.items():
        value = record.get(key)
        if value is not None:
            result[key] = _from_avro(kind, value, f"{path}.{key}")
    extra_text = record.get("extra")
    if extra_text is not None:
        extra = _loads(extra_text, f"{path}.extra")
        if not isinstance(extra, dict):
            raise wrong_type(f"{path}.extra", "JSON object", extra)
        for key, value in extra.items():
            result.setdefault(key, value)  # a modelled, non-null field wins over a stale copy
    return result


def order_from_snapshot(record: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild the order JSON from an ``OrderSnapshot`` record, including unknown fields.

    This is the inverse of :func:`snapshot_from_order`: the snapshot metadata
    (``fetchedAt``, ``commandId``, ...) and the derived ``lastModifiedMillis`` are dropped.
    Raises :class:`SnapshotMappingError` when a JSON-text field does not hold valid JSON.
    """
    return _record_to_object(ORDER_SPEC, record, "snapshot")


def order_record_checked(order: Mapping[str, Any]) -> dict[str, Any]:
    """The Order part of a snapshot record by the generic walk (errors name the JSON path)."""
    return _object_to_record(ORDER_SPEC, order, "order")


def order_record_fast(order: Any) -> dict[str, Any] | None:
    """The same record by the compiled converters; None where they defer to the generic walk."""
    try:
        record: dict[str, Any] = FAST_ORDER(order)
    except (Mismatch, SnapshotMappingError):
        return None
    return record
