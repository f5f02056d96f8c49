"""Async client for the Norce Checkout Order Management API (v0), over an injected httpx client.

Only three operations are needed by the bridge: GET an order, PUT its state and DELETE it.

* ``build_http_client`` builds the one ``httpx.AsyncClient`` per process (explicit pool limits and
  timeouts, optional aiohttp transport). ``NorceClient`` receives it and never closes it: whoever
  built it closes it (the composition root, in reverse order of construction).
* Every HTTP failure is mapped to a ``bridge.errors`` class in one place
  (``_raise_for_response`` for responses, ``_translate_transport_error`` for exceptions).
* Retries: one predicate, ``err.retriable``; exponential backoff with full jitter,
  ``Retry-After`` honoured up to a cap, and a total deadline per call.
* The API key lives in a ``SecretStr`` and is put into the ``Authorization`` header of each
  request only; it never appears in reprs, logs or exception messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Generic, Literal, NoReturn, Protocol, TypeVar

import httpx
import orjson
from pydantic import SecretStr, ValidationError

from bridge import __version__
from bridge.errors import (
    ConfigError,
    InvalidCommandError,
    InvalidOrderIdError,
    NorceApiError,
    NorceConnectionError,
    NorceInvalidRequestError,
    NorceNotFoundError,
    NorceRateLimitedError,
    NorceTimeoutError,
    NorceUnauthorizedError,
    NorceUnavailableError,
)
from bridge.lease import recheck_before_send, sending_write, write_gate
from bridge.order_model import Order

try:  # aiohttp is only needed for the optional aiohttp transport.
    import aiohttp as _aiohttp
except ImportError:  # pragma: no cover - aiohttp is installed with httpx-aiohttp
    _aiohttp = None  # type: ignore[assignment]

__all__ = [
    "MAX_ORDER_ID_LENGTH",
    "ApiObserver",
    "ApiResult",
    "NorceClient",
    "RetryPolicy",
    "build_http_client",
    "load_secret",
    "validate_order_id",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ORDER_ID_LENGTH = 128
"""Longest order id accepted (documented ids are 28 characters)."""

MAX_HEADER_VALUE_LENGTH = 256
"""Longest ``x-merchant`` / ``x-channel`` / ``x-adapterid`` value accepted."""

ORDERS_PATH = "api/v0/checkout/orders"
_URL_CACHE_SIZE = 8192
"""Path of the orders collection, relative to the base URL."""

ENDPOINT_GET_ORDER = "get_order"
ENDPOINT_SET_STATE = "set_state"
ENDPOINT_DELETE_ORDER = "delete_order"

_MAX_API_MESSAGE = 500
_FORBIDDEN_ID_CHARS = frozenset("/?#%\\")
_FORBIDDEN_ID_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})
# Visible ASCII, inner spaces allowed; no CR/LF/control characters, no leading/trailing blanks.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
    OSError,
) + ((_aiohttp.ClientError,) if _aiohttp is not None else ())


# --------------------------------------------------------------------------- HTTP client


def _exact_path_aiohttp_transport(
    limits: httpx.Limits, trust_env: bool
) -> httpx.AsyncBaseTransport:
    """httpx-aiohttp's transport, sending the request path exactly as encoded.

    httpx-aiohttp hands aiohttp ``str(request.url)``; aiohttp (yarl) then re-quotes it and turns
    e.g. ``%3B`` back into ``;``, so the order id on the wire would differ from the one segment
    we encoded. This subclass passes a ``yarl.URL(..., encoded=True)`` instead; the rest of the
    method is httpx-aiohttp 0.2's own (pinned below 0.3 in pyproject.toml).
    """
    import yarl
    from aiohttp import ClientRequest, ClientSession, ClientTimeout, TCPConnector, TraceConfig
    from httpx_aiohttp import AiohttpTransport
    from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

    async def recheck(*_: object) -> None:
        await recheck_before_send()

    lease_trace = TraceConfig()
    # Connection in hand, request not yet written: the last point to stop a stale write. Also
    # covers aiohttp's own re-send of an idempotent request on a dropped keep-alive connection.
    lease_trace.on_connection_reuseconn.append(recheck)
    lease_trace.on_connection_create_end.append(recheck)

    class GatedClientRequest(ClientRequest):
        # On Python < 3.12 aiohttp writes a request body (and the headers it buffers with it)
        # in a task of its own, one loop iteration after the connection hooks above: check the
        # gate again in that task, right before the first byte.
        async def write_bytes(self, writer: Any, conn: Any, *args: Any, **kwargs: Any) -> None:
            try:
                await recheck_before_send()
            except Exception as exc:  # LeaseLost: fail the request, nothing was written
                if conn.protocol is not None:
                    conn.protocol.set_exception(exc)
                conn.close()
                return
            await super().write_bytes(writer, conn, *args, **kwargs)

    class ExactPathAiohttpTransport(AiohttpTransport):
        def get_client(self) -> ClientSession:
            connector = TCPConnector(
                keepalive_timeout=self.limits.keepalive_expiry,
                ssl=self.ssl_context,
                limit=self.limits.max_connections or 0,
            )
            return ClientSession(
                connector=connector,
                trace_configs=[lease_trace],
                request_class=GatedClientRequest,
            )

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if not isinstance(self.client, ClientSession):
                self.client = self.get_client()
            timeout = request.extensions.get("timeout", {})
            data: bytes | None = request.content or None
            with map_aiohttp_exceptions():
                response = await self.client.request(
                    method=request.method,
                    url=yarl.URL(str(request.url), encoded=True),
                    headers=request.headers,
                    data=data,
                    allow_redirects=False,
                    auto_decompress=False,
                    compress=False,
                    timeout=ClientTimeout(
                        sock_connect=timeout.get("connect"),
                        sock_read=timeout.get("read"),
                        connect=timeout.get("pool"),
                    ),
                ).__aenter__()
            extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
            if response.reason:
                extensions["reason_phrase"] = response.reason.encode()
            return httpx.Response(
                status_code=response.status,
                headers=response.raw_headers,
                stream=AiohttpResponseStream(response),
                request=request,
                extensions=extensions,
            )

    transport: httpx.AsyncBaseTransport = ExactPathAiohttpTransport(
        limits=limits, trust_env=trust_env
    )
    return transport


def build_http_client(
    base_url: str,
    *,
    max_connections: int = 100,
    max_keepalive: int = 100,
    connect_timeout: float = 5,
    read_timeout: float = 10,
    write_timeout: float = 10,
    pool_timeout: float = 5,
    transport: httpx.AsyncBaseTransport | None = None,
    http_backend: Literal["httpx", "aiohttp"] = "httpx",
    trust_env: bool = False,
) -> httpx.AsyncClient:
    """Build the process-wide ``httpx.AsyncClient`` for the Norce API.

    ``base_url`` may or may not end in ``/``; request paths are joined to it with exactly one
    slash. ``transport`` (e.g. ``httpx.MockTransport``) wins over ``http_backend``.
    ``http_backend="aiohttp"`` uses ``httpx_aiohttp.AiohttpTransport`` behind the same httpx API
    (it honours ``max_connections`` and the timeouts; aiohttp has no keep-alive pool size).
    ``trust_env`` is off so that proxy and TLS settings come from configuration only.
    """
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise ConfigError("the Norce base URL is not a valid URL (value not shown)") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            "the Norce base URL must be an absolute http(s) URL with a host (value not shown)"
        )
    normalised = str(url.copy_with(raw_path=url.raw_path.rstrip(b"/") + b"/"))
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout
    )
    if transport is None and http_backend == "aiohttp":
        transport = _exact_path_aiohttp_transport(limits, trust_env)
    elif http_backend not in ("httpx", "aiohttp"):
        raise ConfigError(f"unknown http_backend {http_backend!r}")
    return httpx.AsyncClient(
        base_url=normalised,
        limits=limits,
        timeout=timeout,
        transport=transport,
        follow_redirects=False,
        trust_env=trust_env,
        headers={"User-Agent": f"norce-order-bridge/{__version__}"},
    )


# --------------------------------------------------------------------------- policy and types


@dataclass(frozen=True)
class RetryPolicy:
    """How one client call retries retriable errors.

    Delay before retry ``n`` (0-based) is ``uniform(0, min(max_delay_s, base_delay_s * 2**n))``
    (full jitter), or the server's ``Retry-After`` capped at ``retry_after_cap_s``. The call
    never sleeps past ``deadline_s`` after it started: it raises the last error instead.
    """

    max_attempts: int = 6
    base_delay_s: float = 0.1
    max_delay_s: float = 5.0
    retry_after_cap_s: float = 30.0
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts must be at least 1")
        if min(self.base_delay_s, self.max_delay_s, self.retry_after_cap_s) < 0:
            raise ConfigError("RetryPolicy delays must not be negative")
        if self.deadline_s <= 0:
            raise ConfigError("RetryPolicy.deadline_s must be positive")

    def backoff(self, retry_index: int, rng: random.Random) -> float:
        """Full-jitter delay before retry ``retry_index`` (0 for the first retry)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** min(retry_index, 64))
        return rng.uniform(0.0, ceiling)


class ApiObserver(Protocol):
    """Receives one call per HTTP attempt and per retry (for metrics)."""

    def on_request(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        """One HTTP attempt finished; ``status`` is None when no response arrived."""

    def on_retry(self, endpoint: str, reason: str) -> None:
        """A retry is about to happen; reason is ``429``, ``5xx``, ``timeout`` or ``connection``."""


@dataclass(frozen=True)
class ApiResult(Generic[T]):
    """A successful call: its value, the final HTTP status and how many attempts it took."""

    value: T
    status: int
    attempts: int


# --------------------------------------------------------------------------- validation


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
                f"order id {_short(order_id)!r} contains a forbidden character {ch!r}"
            )
    return order_id


def _order_path(order_id: str, suffix: str = "") -> str:
    segment = urllib.parse.quote(validate_order_id(order_id), safe="")
    return f"{ORDERS_PATH}/{segment}{suffix}"


def _validate_header_value(name: str, value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE_LENGTH:
        raise InvalidCommandError(
            "bad_header_value", f"{name} must be a string of at most {MAX_HEADER_VALUE_LENGTH}"
        )
    if not _HEADER_VALUE.fullmatch(value):
        raise InvalidCommandError(
            "bad_header_value",
            f"{name} value {_short(value)!r} is empty or not printable ASCII without CR/LF",
        )
    return value


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- secrets


def load_secret(
    value: SecretStr | None,
    file: Path | None,
    *,
    variable: str = "BRIDGE_NORCE__API_KEY",
    what: str = "API key",
) -> SecretStr:
    """Return a secret from ``value`` (environment) or ``file`` (a mounted Kubernetes Secret).

    Exactly one source must be set. Surrounding whitespace (the trailing newline of a file) is
    stripped. Errors name the secret's own variable (``variable`` or ``variable_FILE``) and the
    file, never the content.
    """
    given = value is not None and value.get_secret_value() != ""
    if given and file is not None:
        raise ConfigError(f"set either {variable} or {variable}_FILE, not both ({what})")
    if value is not None and given:
        stripped = value.get_secret_value().strip()
        if not stripped:
            raise ConfigError(f"{variable}: the {what} is blank")
        return SecretStr(stripped)
    if file is None:
        raise ConfigError(f"no {what} configured: set {variable} or {variable}_FILE")
    try:
        content = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{variable}_FILE: the {what} file {str(file)!r} is not UTF-8 text"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{variable}_FILE: cannot read the {what} file {str(file)!r}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None
    stripped = content.strip()
    if not stripped:
        raise ConfigError(f"{variable}_FILE: the {what} file {str(file)!r} is empty")
    return SecretStr(stripped)


# --------------------------------------------------------------------------- client


def _retry_reason(err: NorceApiError) -> str:
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


def _parse_retry_after(value: str | None) -> float | None:
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


def _parse_error_body(response: httpx.Response) -> tuple[str | None, str | None]:
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


class NorceClient:
    """Client of the three Norce Order API operations the bridge uses.

    ``http`` must have the Norce base URL set (see ``build_http_client``); it is injected and
    owned by the caller, so ``aclose()`` does not close it. ``clock`` and ``sleep`` are injectable
    so tests can check backoff and deadlines without waiting.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_key: SecretStr,
        adapter_id: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # frozen dataclass: safe as a default
        observer: ApiObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        key = api_key.get_secret_value()
        if not key or not _HEADER_VALUE.fullmatch(key):
            raise ConfigError("the API key is empty or not printable ASCII without CR/LF")
        if adapter_id is not None:
            try:
                _validate_header_value("x-adapterid", adapter_id)
            except InvalidCommandError as exc:
                raise ConfigError(exc.message) from None
        self._http = http
        self._api_key = api_key
        self._adapter_id = adapter_id
        self._retry = retry
        self._observer = observer
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._closed = False
        self._base_url = http.base_url
        base_path = self._base_url.raw_path
        self._base_raw_path = base_path if base_path.endswith(b"/") else base_path + b"/"
        self._default_headers = {k.lower(): v for k, v in http.headers.items()}
        self._urls: dict[
            str, httpx.URL
        ] = {}  # parsed URLs of recent paths (GET and PUT reuse them)

    def __repr__(self) -> str:
        url = self._http.base_url
        port = f":{url.port}" if url.port is not None else ""
        return (
            f"NorceClient(base_url='{url.scheme}://{url.host}{port}{url.path}', "
            f"adapter_id={self._adapter_id!r}, api_key={self._api_key!r})"
        )

    async def __aenter__(self) -> NorceClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Mark the client closed (idempotent); the injected http client stays open."""
        self._closed = True

    # ---------------------------------------------------------------- operations

    async def get_order_json(
        self, order_id: str, *, merchant: str, channel: str
    ) -> ApiResult[dict[str, Any]]:
        """GET the order and return its JSON object exactly as served."""
        path = _order_path(order_id)
        response, attempts = await self._call(
            "GET", ENDPOINT_GET_ORDER, path, merchant=merchant, channel=channel
        )
        try:
            data: Any = orjson.loads(response.content)  # hot path: ~4x faster than json
        except ValueError as exc:
            raise self._bad_body(ENDPOINT_GET_ORDER, response, attempts, "not JSON") from exc
        if not isinstance(data, dict):
            raise self._bad_body(ENDPOINT_GET_ORDER, response, attempts, "not a JSON object")
        return ApiResult(value=data, status=response.status_code, attempts=attempts)

    async def get_order(self, order_id: str, *, merchant: str, channel: str) -> ApiResult[Order]:
        """GET the order and parse it into an ``Order``."""
        raw = await self.get_order_json(order_id, merchant=merchant, channel=channel)
        try:
            order = Order.model_validate(raw.value)
        except ValidationError as exc:
            raise NorceApiError(
                f"{ENDPOINT_GET_ORDER}: order body does not match the Order schema "
                f"({exc.error_count()} errors)",
                status=raw.status,
                attempts=raw.attempts,
                endpoint=ENDPOINT_GET_ORDER,
            ) from exc
        return ApiResult(value=order, status=raw.status, attempts=raw.attempts)

    async def set_state(
        self, order_id: str, status: str, *, merchant: str, channel: str
    ) -> ApiResult[None]:
        """PUT ``{"currentStatus": status}``; any 2xx (200, 202 accepted, 204) is success."""
        path = _order_path(order_id, "/state")
        response, attempts = await self._call(
            "PUT",
            ENDPOINT_SET_STATE,
            path,
            merchant=merchant,
            channel=channel,
            body={"currentStatus": str(status)},
        )
        return ApiResult(value=None, status=response.status_code, attempts=attempts)

    async def delete_order(self, order_id: str, *, merchant: str, channel: str) -> ApiResult[None]:
        """DELETE the order (204); an unknown order raises ``NorceNotFoundError``."""
        path = _order_path(order_id)
        response, attempts = await self._call(
            "DELETE", ENDPOINT_DELETE_ORDER, path, merchant=merchant, channel=channel
        )
        return ApiResult(value=None, status=response.status_code, attempts=attempts)

    # ---------------------------------------------------------------- machinery

    def _headers(self, merchant: str, channel: str, *, with_body: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "x-merchant": _validate_header_value("x-merchant", merchant),
            "x-channel": _validate_header_value("x-channel", channel),
            "Accept": "application/json",
        }
        if self._adapter_id is not None:
            headers["x-adapterid"] = self._adapter_id
        if with_body:
            headers["Content-Type"] = "application/json"
        return headers

    def _attempt_timeout(self, remaining: float) -> httpx.Timeout:
        """The client's timeouts, each capped at the time left before the call's deadline."""
        base = self._http.timeout

        def cap(value: float | None) -> float:
            return remaining if value is None else min(value, remaining)

        return httpx.Timeout(
            connect=cap(base.connect),
            read=cap(base.read),
            write=cap(base.write),
            pool=cap(base.pool),
        )

    async def _call(
        self,
        method: str,
        endpoint: str,
        path: str,
        *,
        merchant: str,
        channel: str,
        body: dict[str, Any] | None = None,
    ) -> tuple[httpx.Response, int]:
        """Send one logical request with retries; return the 2xx response and the attempt count."""
        if self._closed:
            raise RuntimeError("NorceClient is closed")
        headers = self._headers(merchant, channel, with_body=body is not None)
        content = json.dumps(body).encode() if body is not None else None
        policy = self._retry
        deadline = self._clock() + policy.deadline_s
        attempt = 0
        while True:
            attempt += 1
            started = self._clock()
            try:
                # Writes go out only while the runtime's gate says the partition is ours
                # (bridge.lease); checked before every attempt, retries included.
                gate = write_gate.get() if method != "GET" else None
                if gate is not None:
                    await gate.acquire()
                    waited = self._clock() - started
                    started += waited
                    deadline += waited  # time spent waiting for the lease is not the API's
                sending = sending_write.set(gate) if gate is not None else None
                try:
                    response = await self._send(
                        method, path, headers, content, self._attempt_timeout(deadline - started)
                    )
                except Exception as exc:
                    self._observe_request(method, endpoint, None, self._clock() - started)
                    self._translate_transport_error(exc, endpoint=endpoint, attempts=attempt)
                finally:
                    if sending is not None:
                        sending_write.reset(sending)
                self._observe_request(
                    method, endpoint, response.status_code, self._clock() - started
                )
                self._raise_for_response(response, endpoint=endpoint, attempts=attempt)
                return response, attempt
            except NorceApiError as err:
                failure = err
            if not failure.retriable or attempt >= policy.max_attempts:
                raise failure
            if failure.retry_after is not None:
                delay = min(failure.retry_after, policy.retry_after_cap_s)
            else:
                delay = policy.backoff(attempt - 1, self._rng)
            if self._clock() + delay >= deadline:
                raise failure
            reason = _retry_reason(failure)
            logger.info(
                "Norce %s failed (%s) on attempt %d/%d; retrying in %.3fs",
                endpoint,
                reason,
                attempt,
                policy.max_attempts,
                delay,
            )
            self._observe_retry(endpoint, reason)
            await self._sleep(delay)
            if self._clock() >= deadline:
                raise failure

    async def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
        limits: httpx.Timeout,
    ) -> httpx.Response:
        """Send one request straight to the client's transport.

        ``AsyncClient.request`` re-merges the base URL, default headers, cookies and auth on
        every call, which measured about 150 us of CPU per request (a third of the total with
        the aiohttp transport). The bridge needs none of it, so it builds the ``httpx.Request``
        itself and hands it to the transport the client would have used (same pool, same
        limits, same timeouts via the request's ``timeout`` extension).
        """
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._base_url.copy_with(raw_path=self._base_raw_path + path.encode("ascii"))
            self._urls[path] = url
        request = httpx.Request(
            method,
            url,
            headers={**self._default_headers, **{k.lower(): v for k, v in headers.items()}},
            content=content,
            extensions={"timeout": limits.as_dict()},
        )
        transport = self._http._transport_for_url(url)  # httpx's own choice (mounts, proxies)
        response = await transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        response.request = request
        return response

    def _raise_for_response(
        self, response: httpx.Response, *, endpoint: str, attempts: int
    ) -> None:
        """Return for a 2xx response; otherwise raise the matching ``NorceApiError``."""
        status = response.status_code
        if 200 <= status < 300:
            return
        code, api_message = _parse_error_body(response)
        code = self._redact(code)
        api_message = self._redact(api_message)
        if api_message is not None and len(api_message) > _MAX_API_MESSAGE:
            api_message = api_message[:_MAX_API_MESSAGE] + "..."
        retry_after = _parse_retry_after(response.headers.get("Retry-After"))
        text = f"{endpoint}: HTTP {status}"
        if code:
            text += f" {code}"
        if api_message:
            text += f": {api_message}"
        text += f" (attempt {attempts})"
        raise _error_class(status)(
            text,
            status=status,
            code=code,
            api_message=api_message,
            attempts=attempts,
            endpoint=endpoint,
            retry_after=retry_after,
        )

    def _translate_transport_error(
        self, exc: Exception, *, endpoint: str, attempts: int
    ) -> NoReturn:
        """Map a transport-level exception to a ``NorceApiError`` (``raise ... from exc``)."""
        cls: type[NorceApiError]
        cause = exc.__cause__
        if (
            _aiohttp is not None
            and isinstance(exc, httpx.TimeoutException)
            and isinstance(cause, _aiohttp.ClientConnectionError)
            and not isinstance(cause, _aiohttp.ServerTimeoutError | _aiohttp.ConnectionTimeoutError)
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
            raise exc
        detail = self._redact(str(exc)) or ""
        text = f"{endpoint}: {kind} ({type(exc).__name__}"
        text += f": {_short(detail, 200)})" if detail else ")"
        text += f" (attempt {attempts})"
        raise cls(text, status=None, attempts=attempts, endpoint=endpoint) from exc

    def _bad_body(
        self, endpoint: str, response: httpx.Response, attempts: int, what: str
    ) -> NorceApiError:
        return NorceApiError(
            f"{endpoint}: HTTP {response.status_code} response body is {what}",
            status=response.status_code,
            attempts=attempts,
            endpoint=endpoint,
        )

    def _redact(self, text: str | None) -> str | None:
        """Remove the API key from text that came from outside (defence in depth)."""
        if text is None:
            return None
        key = self._api_key.get_secret_value()
        return text.replace(key, "**********") if key else text

    def _observe_request(
        self, method: str, endpoint: str, status: int | None, seconds: float
    ) -> None:
        if self._observer is None:
            return
        try:
            self._observer.on_request(method, endpoint, status, seconds)
        except Exception:
            logger.exception("ApiObserver.on_request failed")

    def _observe_retry(self, endpoint: str, reason: str) -> None:
        if self._observer is None:
            return
        try:
            self._observer.on_retry(endpoint, reason)
        except Exception:
            logger.exception("ApiObserver.on_retry failed")
