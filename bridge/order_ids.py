"""Identifiers the bridge puts into Norce API requests: order ids and header values.

The authority on what is safe, shared by the inbound command model (``bridge.commands``, which
rejects a bad id before anything else happens) and the API client (which checks again before
building a URL). It imports nothing of the HTTP stack.
"""

from __future__ import annotations

import re
import unicodedata

from bridge.errors import InvalidCommandError, InvalidOrderIdError

__all__ = [
    "MAX_HEADER_VALUE_LENGTH",
    "MAX_ORDER_ID_LENGTH",
    "is_header_value",
    "short",
    "validate_header_value",
    "validate_order_id",
]

MAX_ORDER_ID_LENGTH = 128
"""Longest order id accepted (documented ids are 28 characters)."""

MAX_HEADER_VALUE_LENGTH = 256
"""Longest ``x-merchant`` / ``x-channel`` / ``x-adapterid`` value accepted."""

_FORBIDDEN_ID_CHARS = frozenset("/?#%\\")
_FORBIDDEN_ID_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
# Visible ASCII, inner spaces allowed; no CR/LF/control characters, no leading/trailing blanks.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


def short(text: str, limit: int = 64) -> str:
    """``text`` cut to ``limit`` characters (with ``...``) for error messages."""
    return text if len(text) <= limit else text[:limit] + "..."


def validate_order_id(order_id: str) -> str:
    """Return ``order_id`` if it is safe to use as one URL path segment, else raise.

    Rejected: empty, longer than ``MAX_ORDER_ID_LENGTH``, ``/ ? # % \\``, whitespace, control and
    format characters, lone surrogates, and the dot segments ``.`` and ``..``.
    """
    if not isinstance(order_id, str) or not order_id:
        raise InvalidOrderIdError("order id is empty")
    if len(order_id) > MAX_ORDER_ID_LENGTH:
        raise InvalidOrderIdError(
            f"order id is longer than {MAX_ORDER_ID_LENGTH} characters ({len(order_id)})"
        )
    if order_id in (".", ".."):
        raise InvalidOrderIdError(f"order id {order_id!r} is a dot segment")
    for ch in order_id:
        if (
            ch in _FORBIDDEN_ID_CHARS
            or ch.isspace()
            or unicodedata.category(ch) in _FORBIDDEN_ID_CATEGORIES
        ):
            raise InvalidOrderIdError(
                f"order id {short(order_id)!r} contains a forbidden character {ch!r}"
            )
    return order_id


def is_header_value(value: str) -> bool:
    """Whether ``value`` is non-empty printable ASCII without CR/LF or surrounding blanks."""
    return _HEADER_VALUE.fullmatch(value) is not None


def validate_header_value(name: str, value: str) -> str:
    """Return ``value`` if it can be sent as header ``name``; else an ``InvalidCommandError``."""
    if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE_LENGTH:
        raise InvalidCommandError(
            "bad_header_value", f"{name} must be a string of at most {MAX_HEADER_VALUE_LENGTH}"
        )
    if not is_header_value(value):
        raise InvalidCommandError(
            "bad_header_value",
            f"{name} value {short(value)!r} is empty or not printable ASCII without CR/LF",
        )
    return value
