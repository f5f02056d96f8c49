"""Every way a Norce API call can fail, mapped to one ``bridge.errors`` class, in one place.

Responses (:func:`error_for_response`: status, ``BaseError`` / RFC 7807 body, ``Retry-After``)
and transport exceptions (:func:`error_for_exception`: timeouts, resets, refused connections of
either HTTP backend). Text from outside passes through the caller's ``redact`` (the API key is
removed) and is truncated; nothing here logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import aiohttp
import httpx

from bridge.errors import (
    NorceApiError,
    NorceConnectionError,
    NorceInvalidRequestError,
    NorceNotFoundError,
    NorceRateLimitedError,
    NorceTimeoutError,
    NorceUnauthorizedError,
    NorceUnavailableError,
)
from bridge.order_ids import short

__all__ = [
    "ApiResponse",
    "Redact",
    "error_for_exception",
    "error_for_response",
    "parse_retry_after",
    "retry_reason",
]

Redact = Callable[[str | None], str | None]


class ApiResponse(Protocol):
    """What the mapping reads of a complete response: ``httpx.Response`` or the aiohttp hot
    path's ``bridge.norce_http.DirectResponse``."""

    @property
    def status_code(self) -> int: ...

    @property
    def content(self) -> bytes: ...

    @property
    def text(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


_MAX_API_MESSAGE = 500
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
    OSError,
    aiohttp.ClientError,
)


def bad_body_error(endpoint: str, response: ApiResponse, attempts: int, what: str) -> NorceApiError:
    """A 2xx response whose body is not what the endpoint returns (``what`` says how)."""
    return NorceApiError(
        f"{endpoint}: HTTP {response.status_code} response body is {what}",
        status=response.status_code,
        attempts=attempts,
        endpoint=endpoint,
    )


def retry_reason(err: NorceApiError) -> str:
    """The metric label of a retried failure: ``429``, ``timeout``, ``connection`` or ``5xx``."""
    if isinstance(err, NorceRateLimitedError):
        return "429"
    if isinstance(err, NorceTimeoutError):
        return "timeout"
    if isinstance(err, NorceConnectionError):
        return "connection"
    return "5xx"


def _error_class(status: int) -> type[NorceApiError]:
    if status in (404, 410):
        return NorceNotFoundError
    if status in (400, 409, 422):
        return NorceInvalidRequestError
    if status in (401, 403):
        return NorceUnauthorizedError
    if status == 429:
        return NorceRateLimitedError
    if status == 408:
        return NorceTimeoutError
    if status >= 500:
        return NorceUnavailableError
    return NorceApiError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds != seconds or seconds == float("inf"):  # NaN or infinity
        return None
    return max(0.0, seconds)


def _as_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _parse_error_body(response: ApiResponse) -> tuple[str | None, str | None]:
    """``(code, message)`` from a BaseError or RFC 7807 body; tolerates empty or non-JSON."""
    raw = response.content
    if not raw.strip():
        return None, None
    try:
        data: Any = json.loads(raw)
    except ValueError:
        text = " ".join(response.text.split())
        return None, text or None
    if isinstance(data, str):
        return None, data or None
    if not isinstance(data, dict):
        return None, " ".join(response.text.split()) or None
    code = _as_text(data.get("code"))
    message = _as_text(data.get("message"))
    if message is None:
        # RFC 7807 problem details: title/detail (and ASP.NET's "errors" map).
        parts = [p for p in (_as_text(data.get("title")), _as_text(data.get("detail"))) if p]
        errors = data.get("errors")
        if isinstance(errors, dict):
            for field, problems in errors.items():
                items = problems if isinstance(problems, list) else [problems]
                parts.append(f"{field}: {', '.join(str(p) for p in items)}")
        message = "; ".join(parts) or None
    return code, message


def error_for_response(
    response: ApiResponse, *, endpoint: str, attempts: int, redact: Redact
) -> NorceApiError | None:
    """None for a 2xx response; otherwise the matching ``NorceApiError`` (not raised)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    code, api_message = _parse_error_body(response)
    code = redact(code)
    api_message = redact(api_message)
    if api_message is not None and len(api_message) > _MAX_API_MESSAGE:
        api_message = api_message[:_MAX_API_MESSAGE] + "..."
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    text = f"{endpoint}: HTTP {status}"
    if code:
        text += f" {code}"
    if api_message:
        text += f": {api_message}"
    text += f" (attempt {attempts})"
    return _error_class(status)(
        text,
        status=status,
        code=code,
        api_message=api_message,
        attempts=attempts,
        endpoint=endpoint,
        retry_after=retry_after,
    )


def error_for_exception(
    exc: Exception, *, endpoint: str, attempts: int, redact: Redact
) -> NorceApiError | None:
    """The ``NorceApiError`` for a transport exception; None if it is not one (a bug: re-raise).

    The caller raises the result ``from exc``.
    """
    cls: type[NorceApiError]
    cause = exc.__cause__
    if (
        isinstance(exc, httpx.TimeoutException)
        and isinstance(cause, aiohttp.ClientConnectionError)
        and not isinstance(cause, aiohttp.ServerTimeoutError | aiohttp.ConnectionTimeoutError)
    ):
        # httpx-aiohttp maps every aiohttp connection error (resets too) to ConnectTimeout.
        cls, kind = NorceConnectionError, "connection error"
    elif isinstance(exc, httpx.TimeoutException | TimeoutError):
        cls, kind = NorceTimeoutError, "timeout"
    elif isinstance(exc, _CONNECTION_ERRORS):
        # Raw OSError / aiohttp errors can escape the aiohttp transport's own mapping.
        cls, kind = NorceConnectionError, "connection error"
    elif isinstance(exc, httpx.HTTPError):
        cls, kind = NorceApiError, "request error"
    else:
        return None
    detail = redact(str(exc)) or ""
    text = f"{endpoint}: {kind} ({type(exc).__name__}"
    text += f": {short(detail, 200)})" if detail else ")"
    text += f" (attempt {attempts})"
    return cls(text, status=None, attempts=attempts, endpoint=endpoint)
