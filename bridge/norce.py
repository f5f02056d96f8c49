"""Async client for the Norce Checkout Order Management API (v0), over an injected HTTP client.

Only three operations are needed by the bridge: GET an order, PUT its state and DELETE it;
``list_orders`` (one page of the order list) serves ``order-bridge refresh --all``.

* The HTTP client (``bridge.norce_http.build_http_client``) is built once per process by the
  composition root, which closes it; ``NorceClient`` sends prepared requests straight to the
  transport it names.
* Every HTTP failure is mapped to a ``bridge.errors`` class in ``bridge.norce_errors``.
* Retries (``bridge.norce_retry``, on ``stamina``): one predicate, ``err.retriable``; full
  jitter, ``Retry-After`` honoured up to a cap, a total deadline per call; every write attempt,
  retries included, waits for the write gate first (``bridge.lease``). The first attempt runs
  before ``stamina.retry_context`` is entered (it costs ~45 us per call); its retriable failure
  is then replayed as the context's first attempt, so stamina's hook, sleep, testing mode and
  instrumentation see exactly the attempts they saw before.
* Per-request work is prepared once: header dicts per (merchant, channel), the encoded path of
  an order id, the JSON body of a state (bounded caches).
* Order ids and header values are checked by ``bridge.order_ids`` before any request.
* The API key lives in a ``SecretStr`` and is put into the ``Authorization`` header of each
  request only; it never appears in reprs, logs or exception messages.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import orjson
import stamina
from pydantic import SecretStr, ValidationError

from bridge.config import RetrySettings
from bridge.errors import ConfigError, InvalidCommandError, NorceApiError
from bridge.lease import sending_write, write_gate
from bridge.norce_errors import (
    ApiResponse,
    bad_body_error,
    error_for_exception,
    error_for_response,
)
from bridge.norce_http import NorceHttpClient, build_http_client
from bridge.norce_retry import RetryRun
from bridge.order_ids import (
    MAX_ORDER_ID_LENGTH,
    is_header_value,
    validate_header_value,
    validate_order_id,
)
from bridge.order_model import Order
from bridge.secret_files import load_secret
from bridge.tracing import NO_TRACING, Tracing

__all__ = [
    "MAX_ORDER_ID_LENGTH",
    "ApiObserver",
    "ApiResult",
    "NorceClient",
    "build_http_client",
    "load_secret",
    "order_path",
    "validate_order_id",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

ORDERS_PATH = "api/v0/checkout/orders"
"""Path of the orders collection, relative to the base URL."""
_DEFAULT_RETRY = RetrySettings()

ENDPOINT_GET_ORDER = "get_order"
ENDPOINT_SET_STATE = "set_state"
ENDPOINT_DELETE_ORDER = "delete_order"
ENDPOINT_LIST_ORDERS = "list_orders"

_CACHE_SIZE = 4096
"""Bound of each of the client's caches (headers, order paths, bodies); cleared when full."""


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


def order_path(order_id: str, suffix: str = "") -> str:
    """The path of one order (relative to the base URL), its id as one encoded segment."""
    segment = urllib.parse.quote(validate_order_id(order_id), safe="")
    return f"{ORDERS_PATH}/{segment}{suffix}"


class NorceClient:
    """Client of the three Norce Order API operations the bridge uses.

    ``http`` must have the Norce base URL set (see ``build_http_client``); it is injected and
    owned by the caller, so ``aclose()`` does not close it. ``clock`` and ``rng`` are injectable
    so tests can check backoff and deadlines; stamina does the sleeping.
    """

    def __init__(
        self,
        http: NorceHttpClient,
        *,
        api_key: SecretStr,
        adapter_id: str | None = None,
        retry: RetrySettings = _DEFAULT_RETRY,
        observer: ApiObserver | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        key = api_key.get_secret_value()
        if not key or not is_header_value(key):
            raise ConfigError("the API key is empty or not printable ASCII without CR/LF")
        if adapter_id is not None:
            try:
                validate_header_value("x-adapterid", adapter_id)
            except InvalidCommandError as exc:
                raise ConfigError(exc.message) from None
        self._http = http
        self._api_key = api_key
        self._adapter_id = adapter_id
        self._retry = retry
        self._observer = observer
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._tracing = tracing if tracing.enabled else None
        self._closed = False
        self._prepared: dict[tuple[str, str, bool], dict[str, str]] = {}
        self._segments: dict[str, str] = {}
        self._bodies: dict[str, bytes] = {}

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
        path = self._order_path(order_id)
        response, attempts = await self._call(
            "GET", ENDPOINT_GET_ORDER, path, merchant=merchant, channel=channel
        )
        try:
            data: Any = orjson.loads(response.content)  # hot path: ~4x faster than json
        except ValueError as exc:
            raise bad_body_error(ENDPOINT_GET_ORDER, response, attempts, "not JSON") from exc
        if not isinstance(data, dict):
            raise bad_body_error(ENDPOINT_GET_ORDER, response, attempts, "not a JSON object")
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
        path = self._order_path(order_id) + "/state"
        text = str(status)
        body = self._bodies.get(text)
        if body is None:
            body = json.dumps({"currentStatus": text}).encode()
            _remember(self._bodies, text, body)
        response, attempts = await self._call(
            "PUT", ENDPOINT_SET_STATE, path, merchant=merchant, channel=channel, body=body
        )
        return ApiResult(value=None, status=response.status_code, attempts=attempts)

    async def delete_order(self, order_id: str, *, merchant: str, channel: str) -> ApiResult[None]:
        """DELETE the order (204); an unknown order raises ``NorceNotFoundError``."""
        path = self._order_path(order_id)
        response, attempts = await self._call(
            "DELETE", ENDPOINT_DELETE_ORDER, path, merchant=merchant, channel=channel
        )
        return ApiResult(value=None, status=response.status_code, attempts=attempts)

    async def list_orders(
        self,
        *,
        merchant: str,
        channel: str,
        offset: int,
        limit: int,
        order_by: str = "created",
        direction: str = "desc",
    ) -> ApiResult[dict[str, Any]]:
        """GET one page of ``/api/v0/checkout/orders``: ``{"data": [...], "pagination": {...}}``.

        Used by ``order-bridge refresh --all`` (not by the service). The body is checked to be
        an object with a ``data`` list; the orders in it are returned as served.
        """
        query = urllib.parse.urlencode(
            {
                "offset": int(offset),
                "limit": int(limit),
                "order_by": order_by,
                "order_by_direction": direction,
            }
        )
        response, attempts = await self._call(
            "GET",
            ENDPOINT_LIST_ORDERS,
            f"{ORDERS_PATH}?{query}",
            merchant=merchant,
            channel=channel,
        )
        try:
            data: Any = orjson.loads(response.content)
        except ValueError as exc:
            raise bad_body_error(ENDPOINT_LIST_ORDERS, response, attempts, "not JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise bad_body_error(
                ENDPOINT_LIST_ORDERS, response, attempts, "not an object with a data list"
            )
        return ApiResult(value=data, status=response.status_code, attempts=attempts)

    # ---------------------------------------------------------------- machinery

    def _order_path(self, order_id: str) -> str:
        """:func:`order_path`, remembered per order id (checked on first use)."""
        path = self._segments.get(order_id)
        if path is None:
            path = order_path(order_id)
            _remember(self._segments, order_id, path)
        return path

    def _headers(self, merchant: str, channel: str, *, with_body: bool) -> dict[str, str]:
        """The prepared headers of a request (checked and built once per merchant/channel)."""
        key = (merchant, channel, with_body)
        prepared = self._prepared.get(key)
        if prepared is not None:
            return prepared
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            "x-merchant": validate_header_value("x-merchant", merchant),
            "x-channel": validate_header_value("x-channel", channel),
            "Accept": "application/json",
        }
        if self._adapter_id is not None:
            headers["x-adapterid"] = self._adapter_id
        if with_body:
            headers["Content-Type"] = "application/json"
        prepared = self._http.prepare_headers(headers)
        _remember(self._prepared, key, prepared)
        return prepared

    async def _call(
        self,
        method: str,
        endpoint: str,
        path: str,
        *,
        merchant: str,
        channel: str,
        body: bytes | None = None,
    ) -> tuple[ApiResponse, int]:
        """Send one logical request with retries; return the 2xx response and the attempt count."""
        if self._closed:
            raise RuntimeError("NorceClient is closed")
        headers = self._headers(merchant, channel, with_body=body is not None)
        run = RetryRun(
            self._retry,
            endpoint=endpoint,
            clock=self._clock,
            rng=self._rng,
            on_retry=self._observe_retry,
        )
        try:
            response = await self._attempt(run, method, endpoint, path, headers, body)
        except NorceApiError as exc:
            if not exc.retriable:
                raise  # what stamina's hook would decide (``RetryRun.on_error``)
            failed: NorceApiError | None = exc
        else:
            return response, run.attempts
        # The first attempt failed and may be retried: stamina takes over from here. Its first
        # iteration re-raises that failure, so the hook decides and stamina sleeps as always.
        async for attempt in stamina.retry_context(on=run.on_error, attempts=None, timeout=None):
            with attempt:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                response = await self._attempt(run, method, endpoint, path, headers, body)
                return response, run.attempts
        raise AssertionError("unreachable: stamina raises the last error")

    async def _attempt(
        self,
        run: RetryRun,
        method: str,
        endpoint: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
    ) -> ApiResponse:
        """One HTTP attempt: wait for the write gate (writes only), send, map failures.

        With tracing on, the attempt is a CLIENT span whose context goes to Norce as
        ``traceparent`` (:mod:`bridge.tracing`)."""
        tracing = self._tracing
        if tracing is None:
            return await self._send_once(run, method, endpoint, path, headers, content)
        span = tracing.client(method, endpoint, path, run.attempts)
        try:
            response = await self._send_once(
                run, method, endpoint, path, span.inject(headers), content
            )
        except BaseException as exc:
            span.failed(exc)
            raise
        span.succeeded(response.status_code)
        return response

    async def _send_once(
        self,
        run: RetryRun,
        method: str,
        endpoint: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
    ) -> ApiResponse:
        attempt = run.start_attempt()
        started = self._clock()
        # Writes go out only while the runtime's gate says the partition is ours (bridge.lease);
        # checked before every attempt, retries included.
        gate = write_gate.get() if method != "GET" else None
        if gate is not None:
            await gate.acquire()
            waited = self._clock() - started
            started += waited
            run.extend(waited)  # time spent waiting for the lease is not the API's
        sending = sending_write.set(gate) if gate is not None else None
        try:
            response = await self._http.send_direct(
                method, path, headers, content, remaining_s=run.remaining_s
            )
        except Exception as exc:
            self._observe_request(method, endpoint, None, self._clock() - started)
            error = error_for_exception(
                exc, endpoint=endpoint, attempts=attempt, redact=self._redact
            )
            if error is None:
                raise
            raise error from exc
        finally:
            if sending is not None:
                sending_write.reset(sending)
        self._observe_request(method, endpoint, response.status_code, self._clock() - started)
        error = error_for_response(
            response, endpoint=endpoint, attempts=attempt, redact=self._redact
        )
        if error is not None:
            raise error
        return response

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


K = TypeVar("K")
V = TypeVar("V")


def _remember(cache: dict[K, V], key: K, value: V) -> None:
    """Store ``value`` in a bounded cache (cleared when full: hits are the common case)."""
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[key] = value
