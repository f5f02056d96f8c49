"""Pure rules of order notifications (reference §5.12, §7.2): scope, schema, ``invoke`` template.

* ``scope`` is a JSON pointer (RFC 6901) into the order. Scopes inside arrays are not supported
  (the reference says so): a pointer that would index an array has no value, and a notification
  whose scope has no value never fires.
* ``schema`` is a JSON Schema 2020-12 applied to the new value, checked with the ``jsonschema``
  library (``Draft202012Validator``); ``{"const": X}`` and ``{"enum": [...]}`` alone take a fast
  path with the same result. An empty or absent schema accepts every value.
* A notification fires when the value at its scope changed (JSON equality: ``1`` and ``true``
  differ) and the new value validates.
* ``invoke`` placeholders: ``{configuration.adapter.KEY}`` from the configuration of the
  notification's ``adapterId`` (``PUT /__admin/adapters/{id}``), ``{order.id}`` and ``{order_id}``
  by the percent-encoded order id. Anything else in braces is unresolvable.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


class _Missing:
    """The value at a scope that does not exist."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CONFIG_PREFIX = "configuration.adapter."


class UnresolvedPlaceholderError(ValueError):
    """An ``invoke`` template names something the simulator cannot resolve."""


@functools.lru_cache(maxsize=4096)
def _tokens(pointer: str) -> tuple[str, ...] | None:
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        return None
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))


def resolve_pointer(document: Any, pointer: Any) -> Any:
    """Return the value at the JSON pointer ``pointer`` (``MISSING`` if absent or unsupported)."""
    tokens = _tokens(pointer) if isinstance(pointer, str) else None
    if tokens is None:
        return MISSING
    value = document
    for token in tokens:
        if type(value) is not dict:
            return MISSING  # arrays (and scalars) cannot be entered
        value = value.get(token, MISSING)
    return value


def same_json(a: Any, b: Any) -> bool:
    """JSON equality (``1 == True`` and ``1 == 1.0`` in Python, but not in JSON)."""
    if a is MISSING or b is MISSING:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict | list):
        return _canonical(a) == _canonical(b)
    return bool(a == b)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_schema(schema: Any) -> None:
    """Raise ``ValueError`` if ``schema`` is not a valid JSON Schema 2020-12."""
    if schema is None:
        return
    if not isinstance(schema, dict | bool):
        raise ValueError("schema must be a JSON object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"schema is not a valid JSON Schema 2020-12: {exc.message}") from exc


class SchemaMatcher:
    """Validates values against schemas, with compiled validators cached by schema text."""

    def __init__(self, max_cached: int = 1024) -> None:
        self._validators: dict[str, Draft202012Validator] = {}
        self._max = max_cached

    def matches(self, schema: Any, value: Any) -> bool:
        """Tell whether ``value`` validates against ``schema`` (absent/empty schema: always)."""
        if value is MISSING:
            return False
        if schema is None or schema == {} or schema is True:
            return True
        if schema is False:
            return False
        if not isinstance(schema, dict):
            return False
        if len(schema) == 1:
            if "const" in schema:
                return same_json(schema["const"], value)
            options = schema.get("enum")
            if isinstance(options, list):
                return any(same_json(option, value) for option in options)
        key = _canonical(schema)
        validator = self._validators.get(key)
        if validator is None:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError:
                return False
            if len(self._validators) >= self._max:
                self._validators.clear()
            validator = self._validators[key] = Draft202012Validator(schema)
        try:
            return bool(validator.is_valid(value))
        except Exception:  # an unresolvable $ref, a bad pattern: the value does not validate
            return False


def resolve_invoke(template: str, order_id: str, adapter_config: Mapping[str, str] | None) -> str:
    """Fill the placeholders of an ``invoke`` template (raises ``UnresolvedPlaceholderError``)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name in ("order.id", "order_id"):
            return quote(order_id, safe="")
        if name.startswith(_CONFIG_PREFIX):
            key = name[len(_CONFIG_PREFIX) :]
            value = (adapter_config or {}).get(key)
            if isinstance(value, str) and value:
                return value.rstrip("/") if key.lower().endswith("url") else value
        raise UnresolvedPlaceholderError(f"cannot resolve {{{name}}} in invoke")

    resolved = _PLACEHOLDER.sub(replace, template)
    if not resolved.startswith(("http://", "https://")):
        raise UnresolvedPlaceholderError(f"invoke {resolved[:200]!r} is not an http(s) URL")
    return resolved
