"""Strict request-body binding for the simulator: JSON parsing and the writeable ``Order`` model.

The simulator only stores what it can serve back, so a create body is *bound* the way an
ASP.NET model binder would bind it to typed DTOs, then the bound copy (never the raw body) is
stored. Rules (the reference ``docs/norce-order-api.md`` §5 and
``tests/norce-order-api.openapi.json`` are the model; where they are silent the choice is marked
*(choice)*):

* JSON: strict RFC 8259. ``NaN``/``Infinity`` literals, numbers that overflow a double
  (``1e400``), lone UTF-16 surrogates (``"\\ud800"``) and nesting deeper than 64 levels (the
  System.Text.Json default) are refused: none of them can be written back as valid UTF-8 JSON.
* Typed fields must have their documented JSON type; ``null`` is refused in every typed field,
  because the OpenAPI document marks nothing ``nullable`` *(choice: reject rather than treat
  as absent, so a client that sends null learns it at once)*. ``attributes`` and
  ``Notification.schema`` are free-form objects and may contain any JSON, nulls included.
* ``int32`` fields take JSON integers in ``-2^31..2^31-1`` (``1.0`` is refused, as
  System.Text.Json refuses it). ``double`` fields take any finite number.
* Money (every ``Price.includingVat``/``excludingVat``) must lie within
  ``±MAX_MONEY`` (10^13 major units) *(choice: the simulator adds amounts in integer minor
  units -- totals, ``valueSum`` -- and this bound keeps every sum exact and finite; 1e307 is a
  double but no amount of money)*.
* Enums are matched case-insensitively and stored in their documented spelling
  (``"Person"`` -> ``person``, ``"GIFTCARD"`` -> ``giftCard``).
* Patterns (culture, currency, country, address country) and ``date-time`` formats
  (``Logistics.shippingDate``, RFC 3339) are checked.
* ``Customer.type`` is required when a customer is given (the reference marks it **req**).
* Read-only members (``id``, ``merchant``, ``channel``, ``created``, ``lastModified``,
  ``shippings``, ``payments``, ``state.transitions``, ``Callback.id``, ``Hook.id``) are ignored
  on input, whatever their content; the server fills them.
* Unknown members are ignored and not stored, as System.Text.Json ignores them by default
  *(choice: so every served order has documented members only)*.

Errors are collected per JSON path (``cart.items[0].quantity``) for the RFC 7807 ``errors``
map; at most ``MAX_ERRORS`` are reported.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MAX_DEPTH = 64
MAX_MONEY = 10**13
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
MAX_ERRORS = 20

CULTURE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z]{2,2})*$")
CURRENCY = re.compile(r"^[A-Za-z]{3,3}$")
COUNTRY = re.compile(r"^[A-Za-z]{2,2}$")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


class BodyError(ValueError):
    """The request body is not JSON the simulator can bind (message says why)."""


def _reject_constant(name: str) -> Any:
    raise BodyError(f"'{name}' is not valid JSON.")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BodyError(f"The number {text[:40]} is out of range for a double.")
    return value


def parse_json(body: bytes) -> Any:
    """Parse ``body`` as strict JSON, raising ``BodyError`` (never anything else) when it is not.

    Beyond ``json.loads``: refuses ``NaN``/``Infinity``, non-finite numbers, lone surrogates
    and nesting deeper than ``MAX_DEPTH``.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BodyError("The request body is not valid UTF-8.") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except BodyError:
        raise
    except (ValueError, RecursionError) as exc:
        raise BodyError("The request body is not valid JSON.") from exc
    _check_value(value)
    return value


def _check_value(value: Any) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and strings that cannot be encoded as UTF-8."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, str):
            _encodable(current)
        elif isinstance(current, dict | list):
            if depth >= MAX_DEPTH:
                raise BodyError(f"The JSON nesting depth exceeds {MAX_DEPTH}.")
            if isinstance(current, dict):
                for key, item in current.items():
                    _encodable(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in current)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BodyError("The JSON text contains an invalid UTF-16 surrogate.") from exc


# -- the model ---------------------------------------------------------------------------------

Errors = dict[str, list[str]]
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Field:
    """One member of an object: its binder, and whether it is required or read-only."""

    bind: Callable[[Any, str, Errors], Any]
    required: bool = False
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ObjectModel:
    """A typed JSON object; members are resolved lazily so models may be recursive."""

    name: str
    fields: Callable[[], Mapping[str, Field]]
    _cache: dict[str, Mapping[str, Field]] = field(default_factory=dict, compare=False)

    def members(self) -> Mapping[str, Field]:
        """Return the members (built once)."""
        cached = self._cache.get("m")
        if cached is None:
            cached = self._cache["m"] = self.fields()
        return cached

    def __call__(self, value: Any, path: str, errors: Errors) -> Any:
        if not _not_null(value, path, errors):
            return _MISSING
        if not isinstance(value, dict):
            return _error(errors, path, f"Expected a JSON object ({self.name}).")
        bound: dict[str, Any] = {}
        for name, member in self.members().items():
            if member.read_only:
                continue
            raw = value.get(name, _MISSING)
            sub = f"{path}.{name}" if path else name
            if raw is _MISSING:
                if member.required:
                    _error(errors, sub, f"The {name} field is required.")
                continue
            result = member.bind(raw, sub, errors)
            if result is not _MISSING:
                bound[name] = result
        return bound


def _error(errors: Errors, path: str, message: str) -> object:
    if len(errors) < MAX_ERRORS:
        errors.setdefault(path or "$", []).append(message)
    return _MISSING


def _not_null(value: Any, path: str, errors: Errors) -> bool:
    if value is None:
        _error(errors, path, "The value must not be null.")
        return False
    return True


def string(pattern: re.Pattern[str] | None = None) -> Callable[[Any, str, Errors], Any]:
    """Bind a JSON string, optionally matching ``pattern``."""

    def bind(value: Any, path: str, errors: Errors) -> Any:
        if not _not_null(value, path, errors):
            return _MISSING
        if not isinstance(value, str):
            return _error(errors, path, "Expected a JSON string.")
        if pattern is not None and not pattern.match(value):
            return _error(errors, path, f"The value does not match {pattern.pattern}.")
        return value

    return bind


def date_time(value: Any, path: str, errors: Errors) -> Any:
    """Bind an RFC 3339 date-time string."""
    text = string()(value, path, errors)
    if text is _MISSING:
        return _MISSING
    if not _RFC3339.match(text):
        return _error(errors, path, "Expected an RFC 3339 date-time.")
    try:
        datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return _error(errors, path, "Expected an RFC 3339 date-time.")
    return text


def boolean(value: Any, path: str, errors: Errors) -> Any:
    """Bind a JSON boolean."""
    if not _not_null(value, path, errors):
        return _MISSING
    if not isinstance(value, bool):
        return _error(errors, path, "Expected true or false.")
    return value


def int32(value: Any, path: str, errors: Errors) -> Any:
    """Bind a JSON integer in the int32 range."""
    if not _not_null(value, path, errors):
        return _MISSING
    if not isinstance(value, int) or isinstance(value, bool):
        return _error(errors, path, "Expected a JSON integer (int32).")
    if not INT32_MIN <= value <= INT32_MAX:
        return _error(errors, path, "The integer is out of range for int32.")
    return value


def double(value: Any, path: str, errors: Errors) -> Any:
    """Bind a finite JSON number (a double)."""
    if not _not_null(value, path, errors):
        return _MISSING
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _error(errors, path, "Expected a JSON number.")
    try:
        as_float = float(value)
    except OverflowError:
        return _error(errors, path, "The number is out of range for a double.")
    if not math.isfinite(as_float):
        return _error(errors, path, "The number is out of range for a double.")
    return value


def money(value: Any, path: str, errors: Errors) -> Any:
    """Bind an amount of money: a finite number within ``±MAX_MONEY``."""
    bound = double(value, path, errors)
    if bound is _MISSING:
        return _MISSING
    if abs(bound) > MAX_MONEY:
        return _error(errors, path, f"The amount must be within ±{MAX_MONEY:.0e}.")
    return bound


def enum(*values: str) -> Callable[[Any, str, Errors], Any]:
    """Bind a string enum case-insensitively, returning the documented spelling."""
    lookup = {v.lower(): v for v in values}

    def bind(value: Any, path: str, errors: Errors) -> Any:
        if not _not_null(value, path, errors):
            return _MISSING
        found = lookup.get(value.lower()) if isinstance(value, str) else None
        if found is None:
            return _error(errors, path, f"Allowed values: {', '.join(values)}.")
        return found

    return bind


def free_object(value: Any, path: str, errors: Errors) -> Any:
    """Bind a free-form JSON object (any content; already checked by ``parse_json``)."""
    if not _not_null(value, path, errors):
        return _MISSING
    if not isinstance(value, dict):
        return _error(errors, path, "Expected a JSON object.")
    return value


def array(item: Callable[[Any, str, Errors], Any]) -> Callable[[Any, str, Errors], Any]:
    """Bind a JSON array whose elements bind with ``item``."""

    def bind(value: Any, path: str, errors: Errors) -> Any:
        if not _not_null(value, path, errors):
            return _MISSING
        if not isinstance(value, list):
            return _error(errors, path, "Expected a JSON array.")
        bound = []
        failed = False
        for index, element in enumerate(value):
            result = item(element, f"{path}[{index}]", errors)
            if result is _MISSING:
                failed = True
            else:
                bound.append(result)
        return _MISSING if failed else bound

    return bind


def _object(name: str, fields: Callable[[], Mapping[str, Field]]) -> ObjectModel:
    return ObjectModel(name, fields)


ORDER_STATUSES = ("checkout", "processing", "accepted", "completed", "declined", "removed")
CUSTOMER_TYPES = ("person", "organization")

PRICE = _object("Price", lambda: {"includingVat": Field(money), "excludingVat": Field(money)})
STATE = _object(
    "State",
    lambda: {
        "currentStatus": Field(enum(*ORDER_STATUSES)),
        "transitions": Field(free_object, read_only=True),
    },
)
DISCOUNT = _object(
    "Discount",
    lambda: {
        "type": Field(enum("item", "shipping")),
        "name": Field(string()),
        "reference": Field(string()),
        "description": Field(string()),
        "code": Field(string()),
        "value": Field(PRICE),
        "attributes": Field(free_object),
    },
)
LOGISTICS = _object(
    "Logistics",
    lambda: {
        "weight": Field(int32),
        "height": Field(int32),
        "width": Field(int32),
        "length": Field(int32),
        "tags": Field(array(string())),
        "shippingDate": Field(date_time),
    },
)
ITEM: ObjectModel = _object(
    "Item",
    lambda: {
        "id": Field(string()),
        "reference": Field(string()),
        "name": Field(string()),
        "sku": Field(string()),
        "productType": Field(enum("physical", "digital", "giftCard", "bundle")),
        "items": Field(array(ITEM)),
        "url": Field(string()),
        "imageUrl": Field(string()),
        "quantity": Field(int32),
        "unit": Field(string()),
        "price": Field(PRICE),
        "total": Field(PRICE),
        "originalTotal": Field(PRICE),
        "vatRate": Field(double),
        "discounts": Field(array(DISCOUNT)),
        "logistics": Field(LOGISTICS),
        "upsell": Field(boolean),
        "attributes": Field(free_object),
    },
)
CART = _object(
    "Cart",
    lambda: {
        "reference": Field(string()),
        "items": Field(array(ITEM)),
        "discounts": Field(array(DISCOUNT)),
        "total": Field(PRICE),
        "attributes": Field(free_object),
    },
)
ADDRESS = _object(
    "Address",
    lambda: {
        "type": Field(enum(*CUSTOMER_TYPES)),
        **{
            name: Field(string())
            for name in (
                "givenName",
                "familyName",
                "careOf",
                "reference",
                "organizationName",
                "streetAddress",
                "streetAddress2",
                "postalCode",
                "city",
                "region",
                "phone",
                "email",
                "nationalIdentificationNumber",
                "organizationIdentificationNumber",
            )
        },
        "country": Field(string(COUNTRY)),
        "attributes": Field(free_object),
    },
)
CUSTOMER = _object(
    "Customer",
    lambda: {
        "billing": Field(ADDRESS),
        "shipping": Field(ADDRESS),
        "type": Field(enum(*CUSTOMER_TYPES), required=True),
        "attributes": Field(free_object),
    },
)
CONSENT = _object(
    "Consent",
    lambda: {
        "id": Field(string()),
        "checked": Field(boolean),
        "text": Field(string()),
        "required": Field(boolean),
    },
)
CALLBACK = _object(
    "Callback",
    lambda: {
        "id": Field(string(), read_only=True),
        "adapterId": Field(string()),
        "url": Field(string()),
    },
)
HOOK = _object(
    "Hook",
    lambda: {
        "id": Field(string(), read_only=True),
        "adapterId": Field(string()),
        "subscribeTo": Field(string()),
        "target": Field(string()),
        "invoke": Field(string()),
        "version": Field(enum("v0", "v1")),
    },
)
NOTIFICATION = _object(
    "Notification",
    lambda: {
        "id": Field(string()),
        "adapterId": Field(string()),
        "reference": Field(string()),
        "description": Field(string()),
        "scope": Field(string()),
        "schema": Field(free_object),
        "invoke": Field(string()),
        "version": Field(enum("v0", "v1")),
    },
)
ORDER = _object(
    "Order",
    lambda: {
        "id": Field(string(), read_only=True),
        "merchant": Field(string(), read_only=True),
        "channel": Field(string(), read_only=True),
        "reference": Field(string()),
        "created": Field(string(), read_only=True),
        "lastModified": Field(string(), read_only=True),
        "state": Field(STATE),
        "culture": Field(string(CULTURE)),
        "currency": Field(string(CURRENCY)),
        "country": Field(string(COUNTRY)),
        "cart": Field(CART),
        "shippings": Field(free_object, read_only=True),
        "payments": Field(free_object, read_only=True),
        "customer": Field(CUSTOMER),
        "consents": Field(array(CONSENT)),
        "validations": Field(array(CALLBACK)),
        "hooks": Field(array(HOOK)),
        "notifications": Field(array(NOTIFICATION)),
        "total": Field(PRICE),
        "attributes": Field(free_object),
    },
)


def bind_order(body: Any) -> tuple[dict[str, Any], Errors]:
    """Bind a create body to the writeable ``Order`` members: (bound copy, errors by path)."""
    errors: Errors = {}
    bound = ORDER(body, "", errors)
    if errors or not isinstance(bound, dict):
        return {}, errors
    return bound, errors
