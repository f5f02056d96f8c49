"""HTTP answers of the simulator: ``Response`` and the documented error shapes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from norce_simulator.store import dump_json

JSON = "application/json; charset=utf-8"
PROBLEM_JSON = "application/problem+json; charset=utf-8"
PROBLEM_TYPE_400 = "https://tools.ietf.org/html/rfc9110#section-15.5.1"
BAD_REQUEST = "order-bad-request"
INTERNAL_ERROR = "internal-server-error"


@dataclass(slots=True)
class Response:
    """What the simulator answers, plus instructions for the transport.

    ``delay_s``: wait this long before sending. ``hang_s``: send nothing, wait, then close the
    connection. ``reset``: send nothing and abort the connection (TCP RST). ``fault`` names the
    injected fault, if any.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay_s: float = 0.0
    fault: str | None = None
    hang_s: float | None = None
    reset: bool = False

    def json(self) -> Any:
        """Decode the body as JSON (``None`` for an empty body)."""
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        """Return the first header called ``name`` (case-insensitive)."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    return Response(status, [("content-type", JSON), *(headers or [])], dump_json(payload))


def base_error(status: int, code: str, message: str, **extra_headers: str) -> Response:
    """Build a ``BaseError`` response ``{code, message}``."""
    hdrs = [(k.replace("_", "-"), v) for k, v in extra_headers.items()]
    return json_response(status, {"code": code, "message": message}, hdrs)


def problem(detail: str, errors: Mapping[str, list[str]] | None = None) -> Response:
    """Build an RFC 7807 400 ``application/problem+json`` response (model-binding failure).

    Besides the RFC 7807 members it carries the ``BaseError`` members ``code``
    (``order-bad-request``) and ``message`` (the detail plus every field error), so a client
    that reads only ``{code, message}`` still learns what was wrong.
    """
    payload: dict[str, Any] = {
        "type": PROBLEM_TYPE_400,
        "title": "One or more validation errors occurred.",
        "status": 400,
        "detail": detail,
        "code": BAD_REQUEST,
        "message": detail,
    }
    if errors:
        payload["errors"] = {k: list(v) for k, v in errors.items()}
        fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
        payload["message"] = f"{detail} {fields}"
    return Response(400, [("content-type", PROBLEM_JSON)], dump_json(payload))


def internal_error() -> Response:
    """The catch-all 500 of a simulator bug, in the documented ``BaseError`` shape."""
    return base_error(500, INTERNAL_ERROR, "The simulator failed to handle the request.")


def is_json_media_type(content_type: str) -> bool:
    """Tell whether a ``Content-Type`` value names JSON (parameters and case are ignored).

    Accepted, as ASP.NET's JSON input formatter accepts them: ``application/json``,
    ``text/json`` and any ``application/*+json``.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/json", "text/json"):
        return True
    kind, _, subtype = media.partition("/")
    return kind == "application" and subtype.endswith("+json") and len(subtype) > 5


def not_found(order_id: str) -> Response:
    """The documented 404 for an unknown order."""
    return base_error(404, "order-not-found", f"Order with id:{order_id} not found.")
