"""The reference pipeline's Avro: its own snapshot mapping and single-object encoders.

Written for the reference (``bridge_devkit.throughput.reference``), independently of
``bridge.snapshot`` and ``bridge.codec``: only the ``.avsc`` files are the bridge's (loaded from
its packaged ``bridge/schemas``, so the fingerprints are the same). The mapping is compiled once
from the parsed ``OrderSnapshot`` schema and builds fastavro's tagged union values
(``(branch name, value)``) while it maps, in one pass over the keys the order JSON actually has;
absent and null fields are left out (fastavro writes their ``null`` default).

The mapping rules are the snapshot contract (README, "Outputs"): documented keys keep their
names; ``attributes`` objects and ``Notification.schema`` are compact JSON text with sorted keys;
undocumented keys, and documented keys whose value was an explicit ``null``, go to the record's
``extra`` (JSON object text with sorted keys); money is a double, quantities are int32. A value of
another type is not handled (``UnmappableOrder``): the reference has no dead letters.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Final

import fastavro
import fastavro.schema
import orjson

MARKER: Final = b"\xc3\x01"
NAMESPACE: Final = "com.norce.bridge.v1"
SNAPSHOT_META: Final = frozenset(
    {"schemaVersion", "fetchedAt", "commandId", "correlationId", "lastModifiedMillis"}
)
JSON_TEXT_FIELDS: Final = frozenset({("Notification", "schema")})  # any JSON value, as text
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_DOUBLE_EXACT: Final = 2**53

Conv = Callable[[Any], Any]


class UnmappableOrder(ValueError):
    """The order JSON has a value the snapshot schema cannot carry as documented."""


class Encoder:
    """Single-object encoding of one schema: ``C3 01`` + CRC-64-AVRO fingerprint + body."""

    __slots__ = ("full_name", "header", "parsed")

    def __init__(self, name: str) -> None:
        text = resources.files("bridge").joinpath("schemas", f"{name}.avsc").read_text("utf-8")
        parsed = fastavro.parse_schema(json.loads(text))
        if not isinstance(parsed, dict):
            raise TypeError(f"{name}.avsc is not a record schema")
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        self.header = MARKER + bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))
        self.full_name = str(parsed["name"])
        self.parsed: dict[str, Any] = parsed

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.header)
        fastavro.schemaless_writer(buf, self.parsed, record)
        return buf.getvalue()


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _string(v: Any) -> Any:
    if type(v) is str:
        return v
    raise UnmappableOrder(f"expected a string, got {type(v).__name__}")


def _int(v: Any) -> Any:
    if type(v) is int and _INT32_MIN <= v <= _INT32_MAX:
        return v
    raise UnmappableOrder(f"expected an int32, got {v!r}")


def _double(v: Any) -> Any:
    if type(v) is float:
        return v
    if type(v) is int and -_DOUBLE_EXACT <= v <= _DOUBLE_EXACT:
        return float(v)
    raise UnmappableOrder(f"expected a number, got {type(v).__name__}")


def _boolean(v: Any) -> Any:
    if type(v) is bool:
        return v
    raise UnmappableOrder(f"expected a boolean, got {type(v).__name__}")


def _attributes(v: Any) -> Any:
    if type(v) is dict:
        return _json_text(v)
    raise UnmappableOrder(f"expected an attributes object, got {type(v).__name__}")


_PRIMITIVES: Final[dict[str, Conv]] = {
    "string": _string,
    "int": _int,
    "double": _double,
    "boolean": _boolean,
}


class SnapshotMapper:
    """Order JSON -> tagged ``OrderSnapshot`` record, compiled from the parsed schema."""

    def __init__(self, parsed: dict[str, Any]) -> None:
        self._records: dict[str, Conv] = {}
        fields = self._fields(parsed, skip=SNAPSHOT_META)
        self._order = self._record(str(parsed["name"]), fields)

    def __call__(
        self, order: Any, fetched_at: str, command_id: str, correlation_id: str | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = self._order(order)
        record["schemaVersion"] = 1
        record["fetchedAt"] = fetched_at
        record["commandId"] = command_id
        record["correlationId"] = correlation_id
        modified = order.get("lastModified")
        if type(modified) is str:
            record["lastModifiedMillis"] = _millis(modified)
        return record

    def _fields(
        self, schema: dict[str, Any], skip: frozenset[str] = frozenset()
    ) -> dict[str, Conv]:
        owner = str(schema["name"]).rpartition(".")[2]
        out: dict[str, Conv] = {}
        for field in schema["fields"]:
            name = field["name"]
            if name == "extra" or name in skip:
                continue
            if name == "attributes":
                out[name] = _attributes
            elif (owner, name) in JSON_TEXT_FIELDS:
                out[name] = _json_text
            else:
                out[name] = self._conv(field["type"])
        return out

    def _conv(self, t: Any) -> Conv:
        """The converter of a non-null value of type ``t`` (tagged where fastavro needs it)."""
        if isinstance(t, list):
            (branch,) = [b for b in t if b != "null"]
            inner = self._conv(branch)
            if isinstance(branch, str) and branch in _PRIMITIVES:
                return inner
            tag = branch if isinstance(branch, str) else branch.get("name", branch["type"])
            return lambda v: (tag, inner(v))
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return _PRIMITIVES[t]
            return lambda v: self._records[t](v)  # a named record, maybe recursive (Item.items)
        if t["type"] == "record":
            return self._record(str(t["name"]), self._fields(t))
        if t["type"] == "array":
            item = self._conv(t["items"])

            def array(v: Any) -> Any:
                if type(v) is not list:
                    raise UnmappableOrder(f"expected an array, got {type(v).__name__}")
                return [item(x) for x in v]

            return array
        raise TypeError(f"no snapshot converter for {t!r}")

    def _record(self, name: str, fields: dict[str, Conv]) -> Conv:
        def record(v: Any) -> Any:
            if type(v) is not dict:
                raise UnmappableOrder(f"{name}: expected an object, got {type(v).__name__}")
            out: dict[str, Any] = {}
            extra: dict[str, Any] | None = None
            for key, item in v.items():
                conv = fields.get(key)
                if conv is not None and item is not None:
                    out[key] = conv(item)
                else:  # an undocumented key, or an explicit null: kept in ``extra``
                    if extra is None:
                        extra = {}
                    extra[key] = item
            if extra:
                out["extra"] = _json_text(extra)
            return out

        self._records[name] = record
        return record


def _millis(text: str) -> int | None:
    try:
        moment = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_MS


def rfc3339_now() -> str:
    """Now in UTC, microseconds, ``Z`` (the bridge's format for times it writes)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def rfc3339(text: str) -> str | None:
    """An API time re-formatted in UTC with microseconds and ``Z`` (None if unparseable)."""
    try:
        moment = datetime.fromisoformat(text.strip().upper())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
