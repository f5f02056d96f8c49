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
from typing import Any, Final, TypeAlias

import orjson

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

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


class SnapshotMappingError(ValueError):
    """The order JSON does not have the documented shape; the message names the JSON path."""


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


def _to_avro(kind: Kind, value: object, path: str) -> Any:
    if isinstance(kind, ObjectSpec):
        return _object_to_record(kind, value, path)
    if isinstance(kind, ArraySpec):
        if not isinstance(value, list):
            raise _wrong(path, "array", value)
        return [_to_avro(kind.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
    return _SCALAR_TO_AVRO[kind](value, path)


def _object_to_record(spec: ObjectSpec, value: object, path: str) -> dict[str, Any]:
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


SNAPSHOT_NAMESPACE: Final = "com.norce.bridge.v1"
"""Avro namespace of ``OrderSnapshot`` and its records (their names are the spec's names)."""


class TaggedRecord(dict[str, Any]):
    """A snapshot record whose ``["null", record]`` and ``["null", array]`` union values are
    already in fastavro's tuple notation (``(full name or "array", value)``).

    ``bridge.codec.AvroCodec.encode`` writes it as it is instead of tagging a copy first. Only
    for encoding: read the untagged record of :func:`snapshot_from_order` instead.
    """

    __slots__ = ()


def _union_tag(kind: Kind) -> str | None:
    """The fastavro branch name of a non-null value of ``kind`` (None: scalar, not tagged)."""
    if isinstance(kind, ObjectSpec):
        return f"{SNAPSHOT_NAMESPACE}.{kind.name}"
    if isinstance(kind, ArraySpec):
        return "array"
    return None


def _compile_fast(kind: Kind, record: Callable[[ObjectSpec], _FastConv]) -> _FastConv:
    """The converter of a scalar or array ``kind``; ``record`` gives that of a record type."""
    if isinstance(kind, ObjectSpec):
        return record(kind)
    if isinstance(kind, ArraySpec):
        item = _compile_fast(kind.items, record)

        def conv_array(v: Any) -> Any:
            if type(v) is not list:
                raise _MISMATCH
            return [item(x) for x in v]

        return conv_array
    return _FAST_SCALARS[kind]


# Generated converters: one function per record type, written out as straight-line code (one
# local per field, scalar checks inline; a loop over the fields with a call per field cost half
# again as much), generated once at import from the spec. The fast-path equality test and the
# byte-equality tests in tests/unit/test_events.py hold them to the generic walk.

_INLINE_CHECKS: Final[dict[str, str]] = {
    "string": "if type(x) is not str: raise _MISMATCH",
    "int": "if type(x) is not int or not (_INT32_MIN <= x <= _INT32_MAX): raise _MISMATCH",
    "boolean": "if type(x) is not bool: raise _MISMATCH",
}


def _generate_fast(root: ObjectSpec, *, tagged: bool) -> _FastConv:
    """Generate the converter functions of ``root`` and every record type under it."""
    names: dict[int, str] = {}
    specs: list[ObjectSpec] = []
    namespace: dict[str, Any] = {
        "_MISMATCH": _MISMATCH,
        "_INT32_MIN": _INT32_MIN,
        "_INT32_MAX": _INT32_MAX,
        "_dumps": _dumps,
    }

    def name_of(spec: ObjectSpec) -> str:
        if id(spec) not in names:
            names[id(spec)] = f"conv_{len(names)}_{spec.name}"
            specs.append(spec)
        return names[id(spec)]

    def late(spec: ObjectSpec) -> _FastConv:
        name = name_of(spec)
        return lambda v: namespace[name](v)

    def value_expr(kind: Kind) -> tuple[list[str], str]:
        """Statements checking a field's value ``x`` and the expression of its converted value."""
        if isinstance(kind, ObjectSpec):
            return [], f"{name_of(kind)}(x)"
        if isinstance(kind, ArraySpec):
            if isinstance(kind.items, ObjectSpec):
                item = f"{name_of(kind.items)}(y)"
            else:  # scalars (or nested arrays): the functions above
                conv = f"_item_{len(namespace)}"
                namespace[conv] = _compile_fast(kind.items, late)
                item = f"{conv}(y)"
            return ["if type(x) is not list: raise _MISMATCH"], f"[{item} for y in x]"
        if kind in _INLINE_CHECKS:
            return [_INLINE_CHECKS[kind]], "x"
        if kind == "double":  # _fast_double, inline
            return [
                "if type(x) is float:",
                "    if x - x != 0.0: raise _MISMATCH",
                "elif type(x) is int and -(2**53) <= x <= 2**53: x = float(x)",
                "else: raise _MISMATCH",
            ], "x"
        conv = f"_scalar_{kind}"
        namespace[conv] = _FAST_SCALARS[kind]
        return [], f"{conv}(x)"

    def generate(spec: ObjectSpec) -> str:
        known = f"_known_{name_of(spec)}"
        namespace[known] = frozenset(spec.fields)
        lines = [
            f"def {name_of(spec)}(v):",
            "    if type(v) is not dict: raise _MISMATCH",
            "    extra = None",
            "    present = 0",
        ]
        fields = []
        for i, (key, kind) in enumerate(spec.fields.items()):
            k = repr(key)
            checks, expr = value_expr(kind)
            tag = _union_tag(kind) if tagged else None
            if tag is not None:
                expr = f"({tag!r}, {expr})"
            lines += [
                f"    x = v.get({k})",
                "    if x is None:",
                f"        r{i} = None",
                f"        if {k} in v:",
                "            present += 1",
                "            if extra is None: extra = {}",
                f"            extra[{k}] = None",
                "    else:",
                "        present += 1",
                *(f"        {c}" for c in checks),
                f"        r{i} = {expr}",
            ]
            fields.append(f"{k}: r{i}")
        lines += [
            "    if len(v) > present:",
            "        for key in v:",
            f"            if key not in {known}:",
            "                if type(key) is not str: raise _MISMATCH",
            "                if extra is None: extra = {}",
            "                extra[key] = v[key]",
            f"    return {{{', '.join(fields)}, 'extra': _dumps(extra, '') if extra else None}}",
        ]
        return "\n".join(lines)

    root_name = name_of(root)
    done = 0
    while done < len(specs):  # generating a record type may name others
        source = generate(specs[done])
        exec(compile(source, f"<snapshot converter {specs[done].name}>", "exec"), namespace)  # noqa: S102
        done += 1
    conv: _FastConv = namespace[root_name]
    return conv


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
        record: dict[str, Any] | None = _FAST_ORDER_TAGGED(order)
    except (_Mismatch, SnapshotMappingError):
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
        raise _wrong(path, "JSON text", text)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SnapshotMappingError(f"{path}: invalid JSON text: {exc}") from exc


def _record_to_object(spec: ObjectSpec, record: Any, path: str) -> dict[str, Any]:
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
    return _record_to_object(ORDER_SPEC, record, "snapshot")


_FAST_ORDER: Final = _generate_fast(ORDER_SPEC, tagged=False)
_FAST_ORDER_TAGGED: Final = _generate_fast(ORDER_SPEC, tagged=True)


def order_record_checked(order: Mapping[str, Any]) -> dict[str, Any]:
    """The Order part of a snapshot record by the generic walk (errors name the JSON path)."""
    return _object_to_record(ORDER_SPEC, order, "order")


def order_record_fast(order: Any) -> dict[str, Any] | None:
    """The same record by the compiled converters; None where they defer to the generic walk."""
    try:
        record: dict[str, Any] = _FAST_ORDER(order)
    except (_Mismatch, SnapshotMappingError):
        return None
    return record
