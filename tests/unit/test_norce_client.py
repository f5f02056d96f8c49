"""Unit tests of bridge.norce over httpx.MockTransport (no sockets, no real sleeping).

stamina sleeps with ``asyncio.sleep``; the ``fake_time`` fixture replaces it for the test with
a fake that records the delay and moves the client's injected clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.config import NorceSettings, RetrySettings, load_settings
from bridge.errors import (
    BridgeError,
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
from bridge.lease import LeaseLost, write_gate
from bridge.norce import (
    MAX_ORDER_ID_LENGTH,
    ApiResult,
    NorceClient,
    build_http_client,
    load_secret,
    order_path,
    validate_order_id,
)
from bridge.norce_http import DirectResponse, NorceHttpClient, http_client_from_settings
from bridge.norce_retry import full_jitter
from bridge.order_model import Order, OrderStatus

T = TypeVar("T")

API_KEY = "s3cr3t-KEY-do-not-leak-0123456789"
BASE = "https://customer-slug.api-se.playground.norce.tech/checkout/order/"
PREFIX = "/checkout/order/api/v0/checkout/orders"
ORDER = {
    "id": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
    "merchant": "norce",
    "channel": "1",
    "state": {"currentStatus": "checkout", "transitions": []},
    "total": {"includingVat": 1234, "excludingVat": 987.2},
}

Handler = Callable[[httpx.Request], httpx.Response]


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class RecordingObserver:
    """Records observer calls."""

    requests: list[tuple[str, str, int | None]] = field(default_factory=list)
    retries: list[tuple[str, str]] = field(default_factory=list)

    def on_request(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        assert seconds >= 0
        self.requests.append((method, endpoint, status))

    def on_retry(self, endpoint: str, reason: str) -> None:
        self.retries.append((endpoint, reason))


@dataclass
class Harness:
    """A client wired to a scripted handler, a fake clock and a recording observer."""

    client: NorceClient
    http: httpx.AsyncClient
    requests: list[httpx.Request]
    time: FakeTime
    observer: RecordingObserver


def script(*steps: httpx.Response | Exception) -> Handler:
    """A handler answering each request with the next step (the last one repeats)."""
    remaining = list(steps)

    def handler(request: httpx.Request) -> httpx.Response:
        step = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        if isinstance(step, Exception):
            raise step
        return step

    return handler


def err(status: int, body: Any = None, **kwargs: Any) -> httpx.Response:
    """An error response with a JSON body (or none)."""
    if body is None:
        return httpx.Response(status, **kwargs)
    return httpx.Response(status, json=body, **kwargs)


MakeHarness = Callable[..., Harness]


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """The test's clock; asyncio.sleep (what stamina awaits) advances it instead of waiting."""
    fake = FakeTime()
    monkeypatch.setattr(asyncio, "sleep", fake.sleep)
    return fake


@pytest.fixture
async def make(fake_time: FakeTime) -> AsyncIterator[MakeHarness]:
    """Factory of harnesses; closes every http client afterwards."""
    opened: list[httpx.AsyncClient] = []

    def factory(
        handler: Handler,
        *,
        retry: RetrySettings | None = None,
        adapter_id: str | None = None,
        base_url: str = BASE,
    ) -> Harness:
        requests: list[httpx.Request] = []

        def recording(request: httpx.Request) -> httpx.Response:
            requests.append(request)
            return handler(request)

        http = build_http_client(base_url, transport=httpx.MockTransport(recording))
        opened.append(http)
        fake = fake_time
        observer = RecordingObserver()
        client = NorceClient(
            http,
            api_key=SecretStr(API_KEY),
            adapter_id=adapter_id,
            retry=retry or RetrySettings(),
            observer=observer,
            rng=random.Random(7),
            clock=fake.clock,
        )
        return Harness(client, http, requests, fake, observer)

    yield factory
    for http in opened:
        await http.aclose()


# --------------------------------------------------------------------------- happy paths


async def test_get_order_json_returns_body_as_served(make: MakeHarness) -> None:
    """GET returns the JSON object unchanged, with status and attempt count."""
    h = make(script(httpx.Response(200, json=ORDER)))
    result = await h.client.get_order_json("o_1", merchant="norce", channel="1")
    assert result == ApiResult(value=ORDER, status=200, attempts=1)
    (request,) = h.requests
    assert request.method == "GET"
    assert request.url.raw_path == f"{PREFIX}/o_1".encode()


async def test_get_order_parses_order_model(make: MakeHarness) -> None:
    """get_order returns a parsed Order with its status."""
    h = make(script(httpx.Response(200, json=ORDER)))
    result = await h.client.get_order("o_1", merchant="norce", channel="1")
    assert isinstance(result.value, Order)
    assert result.value.status is OrderStatus.checkout


async def test_get_order_rejects_body_that_is_not_an_order(make: MakeHarness) -> None:
    """A 200 body without merchant/channel raises a non-retriable NorceApiError."""
    h = make(script(httpx.Response(200, json={"id": "o_1"})))
    with pytest.raises(NorceApiError) as info:
        await h.client.get_order("o_1", merchant="norce", channel="1")
    assert type(info.value) is NorceApiError
    assert not info.value.retriable
    assert len(h.requests) == 1


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]", b""])
async def test_get_order_json_rejects_non_object_body(make: MakeHarness, body: bytes) -> None:
    """A 200 body that is not a JSON object raises NorceApiError with status 200."""
    h = make(script(httpx.Response(200, content=body)))
    with pytest.raises(NorceApiError) as info:
        await h.client.get_order_json("o_1", merchant="norce", channel="1")
    assert info.value.status == 200
    assert info.value.endpoint == "get_order"


@pytest.mark.parametrize("status", [200, 202, 204])
async def test_set_state_accepts_every_2xx(make: MakeHarness, status: int) -> None:
    """PUT state succeeds on 200, 202 (accepted) and 204, sending the documented body."""
    h = make(script(httpx.Response(status)))
    result = await h.client.set_state("o_1", "completed", merchant="norce", channel="1")
    assert result == ApiResult(value=None, status=status, attempts=1)
    (request,) = h.requests
    assert request.method == "PUT"
    assert request.url.raw_path == f"{PREFIX}/o_1/state".encode()
    assert json.loads(request.content) == {"currentStatus": "completed"}
    assert request.headers["content-type"] == "application/json"


async def test_set_state_accepts_order_status_enum(make: MakeHarness) -> None:
    """An OrderStatus member is sent as its plain value."""
    h = make(script(httpx.Response(200)))
    await h.client.set_state("o_1", OrderStatus.accepted, merchant="norce", channel="1")
    assert json.loads(h.requests[0].content) == {"currentStatus": "accepted"}


async def test_delete_order_sends_delete(make: MakeHarness) -> None:
    """DELETE succeeds on 204 without a body."""
    h = make(script(httpx.Response(204)))
    result = await h.client.delete_order("o_1", merchant="norce", channel="1")
    assert result == ApiResult(value=None, status=204, attempts=1)
    (request,) = h.requests
    assert request.method == "DELETE"
    assert request.url.raw_path == f"{PREFIX}/o_1".encode()
    assert "content-type" not in request.headers


# --------------------------------------------------------------------------- headers and URLs


async def test_headers_are_sent_without_adapter_id_by_default(make: MakeHarness) -> None:
    """Every call carries bearer auth, merchant, channel and Accept; no x-adapterid unless set."""
    h = make(script(httpx.Response(200, json=ORDER)))
    await h.client.get_order_json("o_1", merchant="norce", channel="1")
    headers = h.requests[0].headers
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["x-merchant"] == "norce"
    assert headers["x-channel"] == "1"
    assert headers["accept"] == "application/json"
    assert "x-adapterid" not in headers
    assert "content-type" not in headers


async def test_adapter_id_header_is_sent_when_configured(make: MakeHarness) -> None:
    """x-adapterid is sent on every call when the client has an adapter id."""
    h = make(script(httpx.Response(200)), adapter_id="order_bridge")
    await h.client.set_state("o_1", "processing", merchant="norce", channel="1")
    await h.client.delete_order("o_1", merchant="norce", channel="1")
    assert [r.headers["x-adapterid"] for r in h.requests] == ["order_bridge", "order_bridge"]


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://customer-slug.api-se.playground.norce.tech/checkout/order/", PREFIX),
        ("https://customer-slug.api-se.playground.norce.tech/checkout/order", PREFIX),
        ("https://customer-slug.api-se.playground.norce.tech/checkout/order//", PREFIX),
        ("http://127.0.0.1:8089", "/api/v0/checkout/orders"),
        ("http://127.0.0.1:8089/", "/api/v0/checkout/orders"),
    ],
)
async def test_base_url_is_joined_without_double_slashes(
    make: MakeHarness, base_url: str, expected: str
) -> None:
    """The orders path is appended to the base URL with exactly one slash."""
    h = make(script(httpx.Response(204)), base_url=base_url)
    await h.client.delete_order("o_1", merchant="norce", channel="1")
    assert h.requests[0].url.raw_path == f"{expected}/o_1".encode()


@pytest.mark.parametrize("base_url", ["ftp://example.com/", "not a url", "/relative/path"])
def test_build_http_client_rejects_bad_base_url(base_url: str) -> None:
    """A base URL that is not absolute http(s) is a ConfigError."""
    with pytest.raises(ConfigError):
        build_http_client(base_url)


async def test_build_http_client_sets_limits_and_timeouts() -> None:
    """The built client carries the explicit timeouts."""
    http = build_http_client(
        BASE, connect_timeout=1, read_timeout=2, write_timeout=3, pool_timeout=4
    )
    async with http:
        assert http.timeout == httpx.Timeout(connect=1, read=2, write=3, pool=4)
        assert not http.follow_redirects


async def test_build_http_client_with_aiohttp_backend() -> None:
    """http_backend='aiohttp' installs httpx_aiohttp's transport behind the httpx API."""
    from httpx_aiohttp import AiohttpTransport

    http = build_http_client(BASE, http_backend="aiohttp")
    async with http:
        assert isinstance(http.transport, AiohttpTransport)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (None, "caf\u00e9 \U0001f600".encode()),
        ("text/plain; charset=latin-1", "caf\u00e9".encode("latin-1")),
        ("application/json; charset=UTF-8", b'{"message": "ok"}'),
        ("text/plain; charset=no-such-codec", "caf\u00e9".encode()),
        ("text/plain", b"\xff\xfe broken utf-8"),
    ],
)
def test_direct_response_text_decodes_as_httpx_does(content_type: str | None, body: bytes) -> None:
    """The aiohttp hot path's response reads its text (error messages) as httpx.Response."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    expected = httpx.Response(500, headers=headers, content=body)
    direct = DirectResponse(500, body, httpx.Headers(headers))
    assert direct.text == expected.text
    assert direct.content == expected.content
    assert direct.status_code == expected.status_code


async def test_build_http_client_defaults_are_the_settings_defaults() -> None:
    """Without arguments the client is what BRIDGE_NORCE__* defaults describe."""
    from httpx_aiohttp import AiohttpTransport

    defaults = NorceSettings()
    assert defaults.http_backend == "aiohttp"
    async with build_http_client(BASE) as http:
        assert http.timeout == httpx.Timeout(
            connect=defaults.connect_timeout_s,
            read=defaults.read_timeout_s,
            write=defaults.write_timeout_s,
            pool=defaults.pool_timeout_s,
        )
        assert isinstance(http.transport, AiohttpTransport)
        assert http.transport.limits.max_connections == defaults.max_connections


async def test_http_client_from_settings_follows_them() -> None:
    """Every HTTP setting reaches the client; the httpx backend is httpx's own transport."""
    settings = NorceSettings(
        base_url=BASE,
        http_backend="httpx",
        connect_timeout_s=1.5,
        read_timeout_s=2.5,
        write_timeout_s=3.5,
        pool_timeout_s=4.5,
        max_connections=7,
    )
    async with http_client_from_settings(settings) as http:
        assert http.timeout == httpx.Timeout(connect=1.5, read=2.5, write=3.5, pool=4.5)
        assert isinstance(http.transport, httpx.AsyncHTTPTransport)
        assert str(http.base_url) == BASE


# --------------------------------------------------------------------------- order ids


@pytest.mark.parametrize(
    "order_id",
    [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/",
        "%2e%2e",
        "a%2Fb",
        "a?b",
        "a#b",
        "a\\b",
        "a b",
        "a\tb",
        "o_1\r\nx-merchant: evil",
        "o_1\n",
        "o\x00",
        "o\x7f",
        "o\u200b",
        "o\u2028",
        "o\u00a0",
        "\ud800",
        "x" * (MAX_ORDER_ID_LENGTH + 1),
    ],
)
async def test_bad_order_ids_are_rejected_before_any_request(
    make: MakeHarness, order_id: str
) -> None:
    """Unsafe order ids raise InvalidOrderIdError (a command fault) and send nothing."""
    h = make(script(httpx.Response(200, json=ORDER)))
    with pytest.raises(InvalidOrderIdError) as info:
        await h.client.get_order_json(order_id, merchant="norce", channel="1")
    assert info.value.reason == "bad_order_id"
    assert info.value.command_fault
    with pytest.raises(InvalidOrderIdError):
        await h.client.set_state(order_id, "checkout", merchant="norce", channel="1")
    with pytest.raises(InvalidOrderIdError):
        await h.client.delete_order(order_id, merchant="norce", channel="1")
    assert h.requests == []


@pytest.mark.parametrize(
    ("order_id", "segment"),
    [
        ("o_yClTSySjyAuuBjmiBlHCjuEcTf", "o_yClTSySjyAuuBjmiBlHCjuEcTf"),
        ("ordré-ü", "ordr%C3%A9-%C3%BC"),
        ("a:b@c;d=e&f+g", "a%3Ab%40c%3Bd%3De%26f%2Bg"),
        ("...", "..."),
        ("x" * MAX_ORDER_ID_LENGTH, "x" * MAX_ORDER_ID_LENGTH),
        ("注文", "%E6%B3%A8%E6%96%87"),
    ],
)
async def test_good_order_ids_are_percent_encoded_as_one_segment(
    make: MakeHarness, order_id: str, segment: str
) -> None:
    """Accepted ids are sent as exactly one percent-encoded path segment."""
    h = make(script(httpx.Response(200, json=ORDER)))
    await h.client.get_order_json(order_id, merchant="norce", channel="1")
    assert h.requests[0].url.raw_path == f"{PREFIX}/{segment}".encode()


@given(st.text(max_size=MAX_ORDER_ID_LENGTH + 8))
def test_any_order_id_is_rejected_or_maps_to_one_segment(order_id: str) -> None:
    """Any string is either rejected or becomes exactly one path segment with no slash."""
    try:
        validate_order_id(order_id)
    except InvalidOrderIdError:
        return
    http = httpx.AsyncClient(base_url=BASE)
    request = http.build_request("GET", order_path(order_id))
    raw_path = request.url.raw_path
    assert raw_path.startswith(PREFIX.encode() + b"/")
    segment = raw_path[len(PREFIX) + 1 :]
    assert b"/" not in segment
    assert b"?" not in segment
    assert b"#" not in segment
    assert segment not in (b".", b"..")
    assert urllib.parse.unquote(segment.decode("ascii"), errors="strict") == order_id


@pytest.mark.parametrize(
    ("merchant", "channel"),
    [
        ("norce\r\nx-evil: 1", "1"),
        ("norce", "1\nx"),
        ("", "1"),
        ("norce", ""),
        (" norce", "1"),
        ("nörce", "1"),
        ("norce\x00", "1"),
        ("m" * 300, "1"),
    ],
)
async def test_bad_header_values_are_rejected_before_any_request(
    make: MakeHarness, merchant: str, channel: str
) -> None:
    """Merchant/channel values with CR/LF, control or non-ASCII characters are command faults."""
    h = make(script(httpx.Response(200, json=ORDER)))
    with pytest.raises(InvalidCommandError) as info:
        await h.client.get_order_json("o_1", merchant=merchant, channel=channel)
    assert info.value.reason == "bad_header_value"
    assert info.value.command_fault
    assert h.requests == []


@pytest.mark.parametrize("adapter_id", ["", "a\r\nb", "é"])
def test_bad_adapter_id_is_a_config_error(adapter_id: str) -> None:
    """An adapter id that cannot be a header value fails at construction."""
    with pytest.raises(ConfigError):
        NorceClient(
            NorceHttpClient(transport=httpx.AsyncHTTPTransport()),
            api_key=SecretStr(API_KEY),
            adapter_id=adapter_id,
        )


@pytest.mark.parametrize("key", ["", API_KEY + "\n", "a\r\nb"])
def test_bad_api_key_is_a_config_error_without_the_key(key: str) -> None:
    """An API key that cannot be a header value fails at construction, without echoing it."""
    with pytest.raises(ConfigError) as info:
        NorceClient(NorceHttpClient(transport=httpx.AsyncHTTPTransport()), api_key=SecretStr(key))
    if key:
        assert key.strip() not in str(info.value)


# --------------------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "error_type", "command_fault"),
    [
        (400, NorceInvalidRequestError, True),
        (409, NorceInvalidRequestError, True),
        (422, NorceInvalidRequestError, True),
        (404, NorceNotFoundError, True),
        (401, NorceUnauthorizedError, False),
        (403, NorceUnauthorizedError, False),
        (405, NorceApiError, False),
    ],
)
async def test_non_retriable_statuses_map_to_error_types(
    make: MakeHarness, status: int, error_type: type[NorceApiError], command_fault: bool
) -> None:
    """Each non-retriable status raises its error type after one attempt, with code and message."""
    body = {"code": "order-bad-request", "message": "Nope."}
    h = make(script(err(status, body)))
    with pytest.raises(NorceApiError) as info:
        await h.client.set_state("o_1", "completed", merchant="norce", channel="1")
    error = info.value
    assert type(error) is error_type
    assert (error.status, error.code, error.api_message) == (status, "order-bad-request", "Nope.")
    assert (error.attempts, error.endpoint) == (1, "set_state")
    assert error.command_fault is command_fault
    assert not error.retriable
    assert f"HTTP {status}" in str(error)
    assert "order-bad-request" in str(error)
    assert len(h.requests) == 1
    assert h.time.sleeps == []
    assert h.observer.retries == []


async def test_not_found_on_delete_is_raised(make: MakeHarness) -> None:
    """DELETE of an unknown order raises NorceNotFoundError with the API's BaseError."""
    body = {"code": "order-not-found", "message": "Order with id:o_1 not found."}
    h = make(script(err(404, body)))
    with pytest.raises(NorceNotFoundError) as info:
        await h.client.delete_order("o_1", merchant="norce", channel="1")
    assert info.value.code == "order-not-found"
    assert info.value.api_message == "Order with id:o_1 not found."
    assert info.value.endpoint == "delete_order"


async def test_empty_401_body_is_tolerated(make: MakeHarness) -> None:
    """A 401 without a body raises NorceUnauthorizedError with no code or message."""
    h = make(script(httpx.Response(401)))
    with pytest.raises(NorceUnauthorizedError) as info:
        await h.client.get_order_json("o_1", merchant="norce", channel="1")
    assert (info.value.code, info.value.api_message, info.value.status) == (None, None, 401)
    assert not info.value.command_fault
    assert not info.value.retriable


async def test_rfc7807_problem_body_is_parsed(make: MakeHarness) -> None:
    """An application/problem+json 400 yields its title, detail and field errors as the message."""
    problem = {
        "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        "title": "One or more validation errors occurred.",
        "status": 400,
        "detail": "Bad status value.",
        "errors": {"currentStatus": ["The value 'nonsense' is not valid."]},
    }
    response = httpx.Response(
        400,
        content=json.dumps(problem).encode(),
        headers={"content-type": "application/problem+json"},
    )
    h = make(script(response))
    with pytest.raises(NorceInvalidRequestError) as info:
        await h.client.set_state("o_1", "nonsense", merchant="norce", channel="1")
    message = info.value.api_message or ""
    assert info.value.code is None
    assert "One or more validation errors occurred." in message
    assert "Bad status value." in message
    assert "currentStatus: The value 'nonsense' is not valid." in message


async def test_problem_body_with_code_extension_keeps_code(make: MakeHarness) -> None:
    """A problem body that also carries a code keeps it."""
    h = make(script(err(409, {"title": "Conflict", "code": "order-conflict"})))
    with pytest.raises(NorceInvalidRequestError) as info:
        await h.client.set_state("o_1", "accepted", merchant="norce", channel="1")
    assert (info.value.code, info.value.api_message) == ("order-conflict", "Conflict")


async def test_non_json_error_body_becomes_message(make: MakeHarness) -> None:
    """A non-JSON error body (a proxy's HTML page) is kept, shortened, as the message."""
    html = b"<html>\n<body>Bad gateway " + b"x" * 2000 + b"</body></html>"
    h = make(script(httpx.Response(502, content=html)), retry=RetrySettings(max_attempts=1))
    with pytest.raises(NorceUnavailableError) as info:
        await h.client.get_order_json("o_1", merchant="norce", channel="1")
    message = info.value.api_message or ""
    assert message.startswith("<html> <body>Bad gateway")
    assert len(message) <= 503


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (err(500, {"code": "internal-server-error", "message": "boom"}), "5xx"),
        (err(503), "5xx"),
        (err(429), "429"),
        (httpx.ReadTimeout("timed out"), "timeout"),
        (httpx.ConnectTimeout("timed out"), "timeout"),
        (httpx.PoolTimeout("no connection"), "timeout"),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            "connection",
        ),
        (httpx.ConnectError("refused"), "connection"),
        (httpx.ReadError("reset"), "connection"),
        (httpx.WriteError("broken pipe"), "connection"),
    ],
)
async def test_retriable_failures_are_retried_until_success(
    make: MakeHarness, failure: httpx.Response | Exception, reason: str
) -> None:
    """Transient failures are retried with full-jitter backoff until the call succeeds."""
    h = make(script(failure, failure, httpx.Response(200, json=ORDER)))
    result = await h.client.get_order_json("o_1", merchant="norce", channel="1")
    assert (result.value, result.attempts) == (ORDER, 3)
    assert len(h.requests) == 3
    policy = RetrySettings()
    assert len(h.time.sleeps) == 2
    for n, delay in enumerate(h.time.sleeps):
        assert 0 <= delay <= min(policy.max_delay_s, policy.base_delay_s * 2**n)
    assert h.observer.retries == [("get_order", reason), ("get_order", reason)]


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [
        (err(503), NorceUnavailableError),
        (err(429), NorceRateLimitedError),
        (httpx.ReadTimeout("timed out"), NorceTimeoutError),
        (httpx.PoolTimeout("pool"), NorceTimeoutError),
        (httpx.RemoteProtocolError("Server disconnected"), NorceConnectionError),
        (httpx.ConnectError("refused"), NorceConnectionError),
    ],
)
async def test_max_attempts_is_respected(
    make: MakeHarness, failure: httpx.Response | Exception, error_type: type[NorceApiError]
) -> None:
    """A persistent failure is attempted max_attempts times and then raised with that count."""
    h = make(script(failure), retry=RetrySettings(max_attempts=4))
    with pytest.raises(error_type) as info:
        await h.client.delete_order("o_1", merchant="norce", channel="1")
    assert info.value.attempts == 4
    assert info.value.retriable
    assert not info.value.command_fault
    assert len(h.requests) == 4
    assert len(h.time.sleeps) == 3
    if isinstance(failure, Exception):
        assert info.value.__cause__ is failure
        assert info.value.status is None


async def test_backoff_grows_exponentially_and_is_capped() -> None:
    """The full-jitter ceiling doubles per retry and stops at max_delay_s."""
    policy = RetrySettings(base_delay_s=0.5, max_delay_s=3.0)

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert [full_jitter(policy, n, Top()) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    rng = random.Random(1)
    samples = [full_jitter(policy, 3, rng) for _ in range(200)]
    assert all(0 <= s <= 3.0 for s in samples)
    assert min(samples) < 0.5 < max(samples)


async def test_retry_after_seconds_is_honoured(make: MakeHarness) -> None:
    """A 429 with Retry-After: 2 sleeps exactly two seconds before retrying."""
    limited = err(429, {"code": "too-many-requests"}, headers={"Retry-After": "2"})
    h = make(script(limited, httpx.Response(200)))
    result = await h.client.set_state("o_1", "completed", merchant="norce", channel="1")
    assert result.attempts == 2
    assert h.time.sleeps == [2.0]


async def test_retry_after_on_503_is_honoured(make: MakeHarness) -> None:
    """A 503 with Retry-After uses the server's delay instead of jitter."""
    h = make(script(err(503, headers={"Retry-After": "1.5"}), httpx.Response(204)))
    await h.client.delete_order("o_1", merchant="norce", channel="1")
    assert h.time.sleeps == [1.5]


async def test_retry_after_http_date_is_honoured(make: MakeHarness) -> None:
    """A Retry-After HTTP-date is turned into the seconds until that time."""
    when = datetime.now(UTC) + timedelta(seconds=10)
    limited = err(429, headers={"Retry-After": email.utils.format_datetime(when, usegmt=True)})
    h = make(script(limited, httpx.Response(200)))
    await h.client.set_state("o_1", "completed", merchant="norce", channel="1")
    (delay,) = h.time.sleeps
    assert 8.0 <= delay <= 10.0


async def test_retry_after_is_capped(make: MakeHarness) -> None:
    """A Retry-After longer than the cap sleeps only the cap."""
    limited = err(429, headers={"Retry-After": "3600"})
    policy = RetrySettings(retry_after_cap_s=4.0)
    h = make(script(limited, httpx.Response(200)), retry=policy)
    await h.client.set_state("o_1", "completed", merchant="norce", channel="1")
    assert h.time.sleeps == [4.0]


@pytest.mark.parametrize("value", ["soon", "-5", "nan", ""])
async def test_unusable_retry_after_falls_back_to_jitter(make: MakeHarness, value: str) -> None:
    """An unparseable or negative Retry-After does not break the retry."""
    h = make(script(err(429, headers={"Retry-After": value}), httpx.Response(200)))
    await h.client.set_state("o_1", "completed", merchant="norce", channel="1")
    (delay,) = h.time.sleeps
    assert 0 <= delay <= RetrySettings().base_delay_s


async def test_deadline_stops_retries_without_oversleeping(make: MakeHarness) -> None:
    """Retries stop before the total deadline; the last error is raised."""
    policy = RetrySettings(max_attempts=100, base_delay_s=1.0, max_delay_s=1.0, deadline_s=5.0)
    h = make(script(err(503, {"code": "unavailable"})), retry=policy)
    start = h.time.now
    with pytest.raises(NorceUnavailableError) as info:
        await h.client.get_order_json("o_1", merchant="norce", channel="1")
    assert h.time.now - start < 5.0
    assert sum(h.time.sleeps) < 5.0
    assert info.value.attempts == len(h.requests) < 100
    assert info.value.code == "unavailable"


async def test_retry_after_beyond_deadline_raises_immediately(make: MakeHarness) -> None:
    """A Retry-After that would overrun the deadline raises the 429 without sleeping."""
    policy = RetrySettings(deadline_s=10.0, retry_after_cap_s=60.0)
    h = make(script(err(429, headers={"Retry-After": "20"})), retry=policy)
    with pytest.raises(NorceRateLimitedError) as info:
        await h.client.get_order_json("o_1", merchant="norce", channel="1")
    assert info.value.retry_after == 20.0
    assert info.value.attempts == 1
    assert h.time.sleeps == []


async def test_per_attempt_timeout_is_capped_by_remaining_deadline(make: MakeHarness) -> None:
    """Each attempt's timeouts never exceed the time left before the deadline."""
    policy = RetrySettings(deadline_s=3.0, base_delay_s=1.0, max_delay_s=1.0)
    h = make(script(err(503), httpx.Response(200, json=ORDER)), retry=policy)
    await h.client.get_order_json("o_1", merchant="norce", channel="1")
    first, second = (r.extensions["timeout"] for r in h.requests)
    assert first == {"connect": 3.0, "read": 3.0, "write": 3.0, "pool": 3.0}
    remaining = 3.0 - h.time.sleeps[0]
    assert second["read"] == pytest.approx(remaining)


async def test_unknown_exception_from_transport_propagates(make: MakeHarness) -> None:
    """A programming error inside the transport is not disguised as a Norce error."""
    h = make(script(ZeroDivisionError("bug")))
    with pytest.raises(ZeroDivisionError):
        await h.client.get_order_json("o_1", merchant="norce", channel="1")


async def test_local_protocol_error_is_not_retried(make: MakeHarness) -> None:
    """An httpx error that is our own fault maps to a plain, non-retriable NorceApiError."""
    h = make(script(httpx.UnsupportedProtocol("nope")))
    with pytest.raises(NorceApiError) as info:
        await h.client.get_order_json("o_1", merchant="norce", channel="1")
    assert type(info.value) is NorceApiError
    assert len(h.requests) == 1


# --------------------------------------------------------------------------- write gate


class ScriptedGate:
    """A write gate that grants ``grants`` acquisitions, each after ``wait_s`` of fake time."""

    def __init__(self, time: FakeTime, grants: int = 100, wait_s: float = 0.0) -> None:
        self.time = time
        self.grants = grants
        self.wait_s = wait_s
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1
        if self.acquired > self.grants:
            raise LeaseLost("partition 0 is no longer assigned here")
        self.time.now += self.wait_s

    async def before_delete(self, previous_status: str | None) -> None:
        return None


async def _with_gate(gate: ScriptedGate, call: Callable[[], Awaitable[T]]) -> T:
    token = write_gate.set(gate)
    try:
        return await call()
    finally:
        write_gate.reset(token)


async def test_every_write_attempt_waits_for_the_gate_and_reads_never_do(
    make: MakeHarness,
) -> None:
    """Retries of a write pass the gate again before each attempt; a GET never asks it."""
    h = make(script(err(503), httpx.ReadTimeout("t"), httpx.Response(204)))
    gate = ScriptedGate(h.time)
    result = await _with_gate(
        gate, lambda: h.client.delete_order("o_1", merchant="norce", channel="1")
    )
    assert (result.attempts, gate.acquired) == (3, 3)
    g = make(script(httpx.Response(200, json=ORDER)))
    read_gate = ScriptedGate(g.time)
    await _with_gate(read_gate, lambda: g.client.get_order_json("o_1", merchant="n", channel="1"))
    assert read_gate.acquired == 0


async def test_time_waiting_for_the_gate_does_not_count_against_the_deadline(
    make: MakeHarness,
) -> None:
    """A lease wait longer than the whole deadline still leaves the API its full deadline."""
    policy = RetrySettings(deadline_s=5.0, base_delay_s=1.0, max_delay_s=1.0)
    h = make(script(err(503), httpx.Response(204)), retry=policy)
    gate = ScriptedGate(h.time, wait_s=60.0)
    result = await _with_gate(
        gate, lambda: h.client.delete_order("o_1", merchant="norce", channel="1")
    )
    assert result.attempts == 2
    first, second = (r.extensions["timeout"] for r in h.requests)
    assert first["read"] == pytest.approx(5.0)  # the wait before it was not the API's time
    assert second["read"] == pytest.approx(5.0 - h.time.sleeps[0])


async def test_a_lease_lost_before_a_retry_ends_the_call_without_sending(
    make: MakeHarness,
) -> None:
    """The gate refusing the retry raises LeaseLost at once: no second request, no retry."""
    h = make(script(err(503)))
    gate = ScriptedGate(h.time, grants=1)
    with pytest.raises(LeaseLost):
        await _with_gate(gate, lambda: h.client.set_state("o_1", "x", merchant="n", channel="1"))
    assert len(h.requests) == 1
    assert h.observer.retries == [("set_state", "5xx")]


# --------------------------------------------------------------------------- observer


async def test_observer_sees_every_attempt_and_retry(make: MakeHarness) -> None:
    """on_request is called per attempt (status None without a response), on_retry per retry."""
    h = make(script(err(503), httpx.ReadTimeout("t"), err(429), httpx.Response(204)))
    await h.client.delete_order("o_1", merchant="norce", channel="1")
    assert h.observer.requests == [
        ("DELETE", "delete_order", 503),
        ("DELETE", "delete_order", None),
        ("DELETE", "delete_order", 429),
        ("DELETE", "delete_order", 204),
    ]
    assert h.observer.retries == [
        ("delete_order", "5xx"),
        ("delete_order", "timeout"),
        ("delete_order", "429"),
    ]


async def test_failing_observer_does_not_break_calls(
    caplog: pytest.LogCaptureFixture, fake_time: FakeTime
) -> None:
    """An observer that raises is logged and ignored."""

    class Broken:
        def on_request(
            self, method: str, endpoint: str, status: int | None, seconds: float
        ) -> None:
            raise RuntimeError("metrics down")

        def on_retry(self, endpoint: str, reason: str) -> None:
            raise RuntimeError("metrics down")

    fake = fake_time
    handler = script(err(503), httpx.Response(204))
    async with build_http_client(BASE, transport=httpx.MockTransport(handler)) as http:
        client = NorceClient(http, api_key=SecretStr(API_KEY), observer=Broken(), clock=fake.clock)
        result = await client.delete_order("o_1", merchant="norce", channel="1")
    assert result.attempts == 2
    assert "ApiObserver.on_request failed" in caplog.text


# --------------------------------------------------------------------------- secrets


async def test_repr_and_str_hide_the_api_key(make: MakeHarness) -> None:
    """repr(client) and str(client) show the base URL but never the key."""
    h = make(script(httpx.Response(204)))
    for text in (repr(h.client), str(h.client)):
        assert API_KEY not in text
        assert "customer-slug.api-se.playground.norce.tech" in text
        assert "**********" in text


ERROR_PATHS: list[httpx.Response | Exception] = [
    err(400, {"code": "order-bad-request", "message": f"bad header Bearer {API_KEY}"}),
    err(401),
    err(401, {"code": "unauthorized", "message": f"key {API_KEY} is not valid"}),
    err(403, {"title": "Forbidden", "detail": f"Authorization: Bearer {API_KEY}"}),
    err(404, {"code": "order-not-found", "message": "Order with id:o_1 not found."}),
    err(409, {"code": "order-conflict"}),
    err(422, {"code": "order-validation"}),
    err(429, headers={"Retry-After": "1"}),
    err(500, {"code": "internal-server-error", "message": API_KEY}),
    httpx.Response(502, content=f"<h1>echo {API_KEY}</h1>".encode()),
    err(503),
    err(405),
    httpx.ReadTimeout(f"timed out {API_KEY}"),
    httpx.PoolTimeout("pool timeout"),
    httpx.ConnectError("refused"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.ReadError("reset"),
    httpx.WriteError("broken pipe"),
    httpx.UnsupportedProtocol("bad scheme"),
    httpx.Response(200, content=b"not json"),
]


@pytest.mark.parametrize("failure", ERROR_PATHS)
async def test_api_key_never_in_errors_or_logs(
    make: MakeHarness, caplog: pytest.LogCaptureFixture, failure: httpx.Response | Exception
) -> None:
    """No error path leaks the key via str/repr of the error (or its cause) or DEBUG logs."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "bridge", "bridge.norce"):
        caplog.set_level(logging.DEBUG, logger=name)
    h = make(script(failure), retry=RetrySettings(max_attempts=2))
    with pytest.raises(BridgeError) as info:
        await h.client.get_order_json("o_1", merchant="norce", channel="1")
    error = info.value
    assert isinstance(error, NorceApiError)
    texts = [str(error), repr(error), repr(vars(error)), str(error.api_message), str(error.code)]
    assert all(API_KEY not in text for text in texts)
    assert API_KEY not in caplog.text
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert API_KEY not in repr(record.args)


async def test_successful_calls_do_not_log_the_key(
    make: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """DEBUG logging of httpx and the client during successful calls never shows the key."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    h = make(script(httpx.Response(200, json=ORDER)))
    await h.client.get_order_json("o_1", merchant="norce", channel="1")
    await h.client.set_state("o_1", "processing", merchant="norce", channel="1")
    assert API_KEY not in caplog.text


# --------------------------------------------------------------------------- lifecycle


async def test_aclose_is_idempotent_and_leaves_http_client_open(make: MakeHarness) -> None:
    """aclose() can be called twice, blocks later calls and does not close the injected client."""
    h = make(script(httpx.Response(204)))
    async with h.client as client:
        await client.delete_order("o_1", merchant="norce", channel="1")
    await h.client.aclose()
    assert not h.http.is_closed
    with pytest.raises(RuntimeError):
        await h.client.delete_order("o_1", merchant="norce", channel="1")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay_s": -1}, {"deadline_s": 0}, {"retry_after_cap_s": -1}],
)
def test_retry_settings_reject_nonsense(kwargs: dict[str, Any]) -> None:
    """The retry settings validate their fields; as configuration that is a ConfigError."""
    with pytest.raises(pydantic.ValidationError):
        RetrySettings(**kwargs)
    with pytest.raises(ConfigError, match="BRIDGE_NORCE__RETRY__"):
        load_settings(norce={"retry": kwargs})


# --------------------------------------------------------------------------- load_secret


def test_load_secret_from_value() -> None:
    """A directly given key is used."""
    assert load_secret(SecretStr("abc"), None).get_secret_value() == "abc"


def test_load_secret_from_file_strips_newline(tmp_path: Path) -> None:
    """A key file's trailing newline is stripped."""
    path = tmp_path / "api-key"
    path.write_text(API_KEY + "\n", encoding="utf-8")
    assert load_secret(None, path).get_secret_value() == API_KEY


def test_load_secret_requires_a_source() -> None:
    """Neither a key nor a file is a ConfigError."""
    with pytest.raises(ConfigError, match="no API key"):
        load_secret(None, None)
    with pytest.raises(ConfigError):
        load_secret(SecretStr(""), None)


def test_load_secret_rejects_both_sources(tmp_path: Path) -> None:
    """Setting both the key and a file is ambiguous and rejected."""
    path = tmp_path / "api-key"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match="not both"):
        load_secret(SecretStr("y"), path)


def test_load_secret_unreadable_file_names_path(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the path."""
    path = tmp_path / "missing"
    with pytest.raises(ConfigError) as info:
        load_secret(None, path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"\n", b"\xff\xfe" + API_KEY.encode()])
def test_load_secret_bad_file_content_is_not_echoed(tmp_path: Path, content: bytes) -> None:
    """Empty or non-UTF-8 key files fail without showing the content."""
    path = tmp_path / "api-key"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_secret(None, path)
    assert str(path) in str(info.value)
    assert API_KEY not in str(info.value)
    assert info.value.__cause__ is None
