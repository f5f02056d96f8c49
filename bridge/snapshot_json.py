"""The JSON side of the snapshot mapping: its error, the names of JSON types, and the compact
JSON text that ``attributes`` and ``extra`` fields hold (NaN and infinities refused)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import orjson

__all__ = ["INT32_MAX", "INT32_MIN", "SnapshotMappingError", "dumps", "type_name", "wrong_type"]

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


class SnapshotMappingError(ValueError):
    """The order JSON does not have the documented shape; the message names the JSON path."""


# --------------------------------------------------------------------------------------------
# Order JSON -> OrderSnapshot


def type_name(value: object) -> str:
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


def wrong_type(path: str, expected: str, value: object) -> SnapshotMappingError:
    return SnapshotMappingError(f"{path}: expected {expected}, got {type_name(value)}")


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


def dumps(value: object, path: str) -> str:
    try:
        # Compact, sorted keys, UTF-8 kept (as json.dumps with sort_keys, separators and
        # ensure_ascii=False), about 5x faster. orjson writes NaN/inf as null, so they are
        # refused by the walk below rather than silently changed.
        _refuse_non_finite(value, path)
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SnapshotMappingError(f"{path}: not representable as JSON: {exc}") from exc
