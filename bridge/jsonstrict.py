"""The one JSON parser for untrusted input: bounded depth, strict UTF-8, no surrogates.

Every path that reads a record's bytes as JSON (command parsing, best-effort id extraction for
dead letters and results) calls :func:`loads_strict`, so a record that one path rejects can never
crash another. The rules (RFC 8259 read strictly, plus what makes a command unambiguous):

* The bytes are UTF-8 (RFC 3629): no byte order mark, no UTF-16, no encoded surrogates
  (``ED A0 80``), no overlong forms. Failure: :class:`JsonInputError` with reason
  ``invalid_utf8``.
* The text is one JSON value with nothing around it but whitespace; no ``NaN``/``Infinity``
  literals, no number that overflows a double (``1e400``), no ``\\ud800`` escape without its
  pair, nesting at most :data:`MAX_DEPTH` deep, no object with the same key twice (a command
  with two ``state`` keys is ambiguous). Failure: reason ``invalid_json``.

Parsing never recurses in Python: orjson parses (it refuses nesting beyond 1024 on its own), the
depth of the result is measured iteratively, and only then, with the depth known to be small, is
the text read a second time by the standard library to find duplicate keys (orjson keeps the
last value silently).
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

__all__ = ["MAX_DEPTH", "JsonInputError", "loads_strict"]

MAX_DEPTH: Final = 32
"""Deepest nesting accepted (a command is depth 1; anything deep is hostile)."""


class JsonInputError(ValueError):
    """The bytes are not strict JSON; ``reason`` is ``invalid_utf8`` or ``invalid_json``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            shown = key if len(key) <= 40 else key[:39] + "…"
            raise _DuplicateKeyError(f"duplicate key {shown!r}")
        out[key] = value
    return out


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), measured without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            level += 1
            deepest = max(deepest, level)
            stack.extend((v, level) for v in node.values())
        elif isinstance(node, list):
            level += 1
            deepest = max(deepest, level)
            stack.extend((v, level) for v in node)
    return deepest


def loads_strict(data: bytes | bytearray | memoryview, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as strict JSON or raise :class:`JsonInputError` (never anything else)."""
    raw = bytes(data)
    try:
        text = raw.decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise JsonInputError(
            "invalid_utf8", f"value is not UTF-8 at byte {exc.start}: {exc.reason}"
        ) from None
    if text.startswith("\ufeff"):
        raise JsonInputError("invalid_json", "value starts with a byte order mark")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise JsonInputError("invalid_json", f"value is not JSON: {_clip(str(exc))}") from None
    if _depth(value) > max_depth:
        raise JsonInputError("invalid_json", f"JSON nested deeper than {max_depth} levels")
    if isinstance(value, dict | list):
        try:
            json.loads(text, object_pairs_hook=_no_duplicates)
        except _DuplicateKeyError as exc:
            raise JsonInputError("invalid_json", f"value is not JSON: {exc}") from None
        except (ValueError, RecursionError) as exc:  # pragma: no cover - orjson accepted it
            raise JsonInputError("invalid_json", f"value is not JSON: {_clip(str(exc))}") from None
    return value


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
