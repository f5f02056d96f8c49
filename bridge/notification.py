"""A Norce notification delivery: its validation, its Kafka headers, the ingress's secrets.

Shared by the ingress (:mod:`bridge.ingress`, which answers 400/422 with the reason) and the
relay (:mod:`bridge.notify_relay`, which dead-letters with it): one definition of a valid
delivery. Reason codes are :class:`~bridge.vocabulary.DeadLetterReason` values; messages name
fields by their fixed path, never their content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from bridge.commands import MAX_SCOPE_LENGTH, RECEIVED_AT_HEADER, SCOPE_PATTERN
from bridge.config import MIN_INGRESS_SECRET_LENGTH, IngressSettings
from bridge.errors import ConfigError, InvalidCommandError, InvalidOrderIdError
from bridge.jsonstrict import JsonInputError, loads_strict
from bridge.order_ids import is_header_value, validate_order_id
from bridge.secret_files import load_secret
from bridge.vocabulary import DeadLetterReason

__all__ = [
    "H_CONTENT_TYPE",
    "H_NOTIFICATION_ID",
    "H_ORDER_ID",
    "H_RECEIVED_AT",
    "MAX_NOTIFICATION_ID_LENGTH",
    "IngressAuth",
    "NotificationError",
    "StoredNotification",
    "load_ingress_auth",
    "notification_headers",
    "parse_notification",
]

MAX_NOTIFICATION_ID_LENGTH: Final = 100
"""Longest notification id accepted (documented ids are 28 characters); it becomes part of a
command id (``ntf-<id>-<12 hex>``, at most 128 characters) and a Kafka header."""
_MAX_STRING_FIELD: Final = 4096  # reference, scope, invoke: bounded, never used beyond a check
_PATH_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
_SCOPE = re.compile(SCOPE_PATTERN)

H_CONTENT_TYPE: Final = "content-type"
H_ORDER_ID: Final = "norce.order.id"
H_NOTIFICATION_ID: Final = "norce.notification.id"
H_RECEIVED_AT: Final = RECEIVED_AT_HEADER


# -- the payload ---------------------------------------------------------------------------------


class NotificationError(InvalidCommandError):
    """A delivery body that is not a notification; ``outcome`` is ``malformed`` or ``invalid``.

    ``reason`` is a :class:`~bridge.vocabulary.DeadLetterReason` value (the relay dead-letters
    with it) and ``field`` names the offending field by its fixed path, never its content.
    """

    def __init__(self, outcome: str, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(reason, message)
        self.outcome = outcome
        self.field = field


@dataclass(frozen=True, slots=True)
class StoredNotification:
    """What the bridge reads from a valid delivery."""

    notification_id: str
    order_id: str
    merchant: str
    channel: str


def _invalid(reason: DeadLetterReason, field: str, message: str) -> NotificationError:
    return NotificationError("invalid", reason.value, f"{field}: {message}", field)


def _object(parent: dict[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name)
    if value is None:
        raise _invalid(DeadLetterReason.MISSING_FIELD, name, "missing")
    if not isinstance(value, dict):
        raise _invalid(DeadLetterReason.INVALID_FIELD, name, "not an object")
    return value


def _string(parent: dict[str, Any], path: str, name: str, limit: int = _MAX_STRING_FIELD) -> str:
    value = parent.get(name)
    field = f"{path}.{name}"
    if value is None:
        raise _invalid(DeadLetterReason.MISSING_FIELD, field, "missing")
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _invalid(DeadLetterReason.INVALID_FIELD, field, f"not a string of 1..{limit}")
    return value


def _scope_value(parent: dict[str, Any], path: str, name: str) -> str:
    value = _string(parent, path, name, MAX_SCOPE_LENGTH)
    if not _SCOPE.fullmatch(value):
        raise _invalid(
            DeadLetterReason.INVALID_FIELD, f"{path}.{name}", "not printable ASCII without CR/LF"
        )
    return value


def parse_notification(body: bytes) -> StoredNotification:
    """Validate a delivery body; raise :class:`NotificationError` (never anything else).

    Strict JSON (:func:`~bridge.jsonstrict.loads_strict`), an object with ``notification``
    (string ``id``, ``reference``, ``scope``, ``invoke``; the id printable ASCII, at most
    :data:`MAX_NOTIFICATION_ID_LENGTH`) and ``order`` (``id`` safe as a URL path segment per
    :func:`~bridge.order_ids.validate_order_id`; ``merchant`` and ``channel``, the Order's own
    required fields, usable as HTTP header values). Other fields are kept as they are.
    """
    try:
        data = loads_strict(body)
    except JsonInputError as exc:
        raise NotificationError("malformed", exc.reason, exc.message) from None
    if not isinstance(data, dict):
        raise NotificationError("invalid", DeadLetterReason.NOT_AN_OBJECT.value, "not an object")
    notification = _object(data, "notification")
    order = _object(data, "order")
    nid = _string(notification, "notification", "id", MAX_NOTIFICATION_ID_LENGTH)
    if not is_header_value(nid) or " " in nid:
        raise _invalid(
            DeadLetterReason.INVALID_FIELD, "notification.id", "not printable ASCII without blanks"
        )
    for name in ("reference", "scope", "invoke"):
        _string(notification, "notification", name)
    order_id = order.get("id")
    if order_id is None:
        raise _invalid(DeadLetterReason.MISSING_FIELD, "order.id", "missing")
    if not isinstance(order_id, str):
        raise _invalid(DeadLetterReason.BAD_ORDER_ID, "order.id", "not a string")
    try:
        validate_order_id(order_id)
    except InvalidOrderIdError:
        # The validator's message quotes the id: not echoed to a sender, not logged.
        raise _invalid(DeadLetterReason.BAD_ORDER_ID, "order.id", "not a valid order id") from None
    merchant = _scope_value(order, "order", "merchant")
    channel = _scope_value(order, "order", "channel")
    return StoredNotification(nid, order_id, merchant, channel)


def notification_headers(n: StoredNotification, received_ms: int) -> list[tuple[str, bytes]]:
    """The headers of one stored delivery on the notifications topic."""
    return [
        (H_CONTENT_TYPE, b"application/json"),
        (H_ORDER_ID, n.order_id.encode()),
        (H_NOTIFICATION_ID, n.notification_id.encode()),
        (H_RECEIVED_AT, str(received_ms).encode()),
    ]


# -- authentication ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IngressAuth:
    """The expected secret header value and path token, as bytes (None: not configured)."""

    secret: bytes | None
    path_token: bytes | None

    def __repr__(self) -> str:  # never show the values
        return (
            f"IngressAuth(secret={'set' if self.secret else None}, "
            f"path_token={'set' if self.path_token else None})"
        )


def _given(value: Any, file: Any) -> bool:
    return (value is not None and value.get_secret_value() != "") or file is not None


def load_ingress_auth(s: IngressSettings) -> IngressAuth:
    """Read the secret and the path token (env or ``_FILE``); ConfigError names no value."""
    secret = token = None
    if _given(s.secret, s.secret_file):
        text = load_secret(
            s.secret, s.secret_file, variable="BRIDGE_INGRESS__SECRET", what="webhook secret"
        ).get_secret_value()
        if len(text) < MIN_INGRESS_SECRET_LENGTH or not is_header_value(text):
            raise ConfigError(
                f"BRIDGE_INGRESS__SECRET: the webhook secret must be at least "
                f"{MIN_INGRESS_SECRET_LENGTH} printable ASCII characters (a header value)"
            )
        secret = text.encode()
    if _given(s.path_token, s.path_token_file):
        text = load_secret(
            s.path_token,
            s.path_token_file,
            variable="BRIDGE_INGRESS__PATH_TOKEN",
            what="webhook path token",
        ).get_secret_value()
        if not _PATH_TOKEN.fullmatch(text):
            raise ConfigError(
                "BRIDGE_INGRESS__PATH_TOKEN: the path token must be 16..256 characters of "
                "A-Z a-z 0-9 . _ ~ - (usable in a URL as it is)"
            )
        token = text.encode()
    if secret is None and token is None:
        raise ConfigError(
            "BRIDGE_INGRESS__ENABLED=true needs BRIDGE_INGRESS__SECRET(_FILE) and/or "
            "BRIDGE_INGRESS__PATH_TOKEN(_FILE)"
        )
    return IngressAuth(secret, token)
