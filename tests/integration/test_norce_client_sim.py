"""NorceClient against the Norce Order API simulator over real HTTP (both HTTP backends)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import stamina
from norce_simulator import (
    SimulatorConfig,
    SimulatorHandle,
    start_simulator,
)
from pydantic import SecretStr

from bridge.config import RetrySettings
from bridge.errors import (
    NorceInvalidRequestError,
    NorceNotFoundError,
    NorceUnauthorizedError,
    NorceUnavailableError,
)
from bridge.norce import NorceClient
from bridge.norce_http import NorceHttpClient, build_http_client
from bridge.order_model import Order, OrderStatus

API_KEY = "sim-api-key"
MERCHANT = "norce"
CHANNEL = "1"
READ_TIMEOUT = 0.3
FAST = RetrySettings(max_attempts=6, base_delay_s=0.005, max_delay_s=0.02, deadline_s=10.0)


@dataclass
class Recorder:
    """Observer and stamina retry hook that record what the client did (and slept)."""

    requests: list[tuple[str, str, int | None]] = field(default_factory=list)
    retries: list[tuple[str, str]] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[], object] | None = None

    def on_request(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        self.requests.append((method, endpoint, status))

    def on_retry(self, endpoint: str, reason: str) -> None:
        self.retries.append((endpoint, reason))

    def before_sleep(self, details: stamina.instrumentation.RetryDetails) -> None:
        """stamina calls this right before it sleeps ``details.wait_for`` seconds."""
        self.sleeps.append(details.wait_for)
        if self.on_sleep is not None:
            self.on_sleep()


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    """A fresh simulator on a free loopback port."""
    handle = await start_simulator(
        SimulatorConfig(api_keys=(API_KEY,), seed=1, orders=10), host="127.0.0.1", port=0
    )
    try:
        yield handle
    finally:
        await handle.aclose()


@pytest.fixture(params=["httpx", "aiohttp"])
async def http(
    request: pytest.FixtureRequest, sim: SimulatorHandle
) -> AsyncIterator[NorceHttpClient]:
    """The process-wide HTTP client, once per backend, with a short read timeout."""
    client = build_http_client(sim.url, read_timeout=READ_TIMEOUT, http_backend=request.param)
    try:
        yield client
    finally:
        await client.aclose()


MakeClient = Callable[..., NorceClient]


@pytest.fixture
def make(http: NorceHttpClient) -> Iterator[MakeClient]:
    """Factory of NorceClients sharing the fixture's HTTP client (one recorder per test)."""
    hooks = stamina.instrumentation.get_on_retry_hooks()

    def factory(
        *,
        key: str = API_KEY,
        retry: RetrySettings = FAST,
        recorder: Recorder | None = None,
        adapter_id: str | None = None,
    ) -> NorceClient:
        rec = recorder or Recorder()
        client = NorceClient(
            http,
            api_key=SecretStr(key),
            adapter_id=adapter_id,
            retry=retry,
            observer=rec,
        )
        stamina.instrumentation.set_on_retry_hooks([rec.before_sleep])
        return client

    yield factory
    stamina.instrumentation.set_on_retry_hooks(hooks)


def seed_one(sim: SimulatorHandle) -> str:
    """Seed one order in checkout for the default merchant and channel."""
    (order_id,) = sim.app.seed(1, MERCHANT, CHANNEL)
    return order_id


def fail_first(sim: SimulatorHandle, recorder: Recorder, failures: int, **faults: Any) -> None:
    """Switch the given fault rates on until the client has slept ``failures`` times."""
    off = {name: 0.0 for name in faults if name.endswith("_rate")}
    sim.app.set_faults(**faults)

    def maybe_switch_off() -> None:
        if len(recorder.sleeps) >= failures:
            sim.app.set_faults(**off)

    recorder.on_sleep = maybe_switch_off


async def test_get_order_returns_the_served_json(sim: SimulatorHandle, make: MakeClient) -> None:
    """GET returns exactly the simulator's order, and the Order model round-trips it."""
    order_id = seed_one(sim)
    client = make()
    raw = await client.get_order_json(order_id, merchant=MERCHANT, channel=CHANNEL)
    assert (raw.status, raw.attempts) == (200, 1)
    assert raw.value == sim.app.get_order(order_id)
    typed = await client.get_order(order_id, merchant=MERCHANT, channel=CHANNEL)
    assert isinstance(typed.value, Order)
    assert typed.value.status is OrderStatus.checkout
    assert typed.value.model_dump(mode="json", by_alias=True, exclude_unset=True) == raw.value


async def test_seeded_orders_round_trip_through_the_model(
    sim: SimulatorHandle, make: MakeClient
) -> None:
    """Every kind of generated order survives Order parsing and dumping unchanged."""
    ids = sim.app.seed(20, MERCHANT, CHANNEL)
    client = make()
    for order_id in ids:
        raw = await client.get_order_json(order_id, merchant=MERCHANT, channel=CHANNEL)
        order = Order.model_validate(raw.value)
        assert order.model_dump(mode="json", by_alias=True, exclude_unset=True) == raw.value


async def test_set_state_changes_the_order_and_sends_headers(
    sim: SimulatorHandle, make: MakeClient
) -> None:
    """PUT state moves checkout → processing and carries merchant, channel and adapter id."""
    order_id = seed_one(sim)
    client = make(adapter_id="order-bridge")
    result = await client.set_state(order_id, "processing", merchant=MERCHANT, channel=CHANNEL)
    assert result.status in (200, 202)
    stored = sim.app.get_order(order_id)
    assert stored is not None
    assert stored["state"]["currentStatus"] == "processing"
    (call,) = sim.app.calls(order_id)
    assert call["method"] == "PUT"
    assert call["body"] == {"currentStatus": "processing"}
    assert call["headers"] == {
        "x-merchant": MERCHANT,
        "x-channel": CHANNEL,
        "x-adapterid": "order-bridge",
    }


async def test_delete_order_then_not_found(sim: SimulatorHandle, make: MakeClient) -> None:
    """DELETE answers 204; afterwards GET and a second DELETE raise NorceNotFoundError."""
    order_id = seed_one(sim)
    client = make()
    result = await client.delete_order(order_id, merchant=MERCHANT, channel=CHANNEL)
    assert result.status == 204
    assert sim.app.get_order(order_id) is None
    with pytest.raises(NorceNotFoundError) as info:
        await client.get_order_json(order_id, merchant=MERCHANT, channel=CHANNEL)
    assert info.value.code == "order-not-found"
    with pytest.raises(NorceNotFoundError):
        await client.delete_order(order_id, merchant=MERCHANT, channel=CHANNEL)


@pytest.mark.parametrize(("merchant", "channel"), [("other", CHANNEL), (MERCHANT, "2")])
async def test_other_merchant_or_channel_is_not_found(
    sim: SimulatorHandle, make: MakeClient, merchant: str, channel: str
) -> None:
    """An order is invisible under another merchant or channel (404, a command fault)."""
    order_id = seed_one(sim)
    with pytest.raises(NorceNotFoundError) as info:
        await make().get_order_json(order_id, merchant=merchant, channel=channel)
    assert info.value.code == "order-not-found"
    assert info.value.command_fault
    assert info.value.attempts == 1


async def test_unicode_order_id_is_one_decoded_segment(
    sim: SimulatorHandle, make: MakeClient
) -> None:
    """A non-ASCII id reaches the server as exactly that id (percent-encoded on the wire)."""
    with pytest.raises(NorceNotFoundError) as info:
        await make().get_order_json("ordré-注文", merchant=MERCHANT, channel=CHANNEL)
    assert "ordré-注文" in (info.value.api_message or "")
    (call,) = sim.app.calls("ordré-注文")
    assert call["path"] == "/api/v0/checkout/orders/ordr%C3%A9-%E6%B3%A8%E6%96%87"


async def test_illegal_transition_is_invalid_request(
    sim: SimulatorHandle, make: MakeClient
) -> None:
    """checkout → completed is rejected with 400 order-bad-request and not retried."""
    order_id = seed_one(sim)
    with pytest.raises(NorceInvalidRequestError) as info:
        await make().set_state(order_id, "completed", merchant=MERCHANT, channel=CHANNEL)
    assert (info.value.status, info.value.code, info.value.attempts) == (
        400,
        "order-bad-request",
        1,
    )
    assert info.value.command_fault
    stored = sim.app.get_order(order_id)
    assert stored is not None
    assert stored["state"]["currentStatus"] == "checkout"


async def test_unknown_status_gets_problem_details(sim: SimulatorHandle, make: MakeClient) -> None:
    """An unknown status value is answered with RFC 7807 details, parsed into the message."""
    order_id = seed_one(sim)
    with pytest.raises(NorceInvalidRequestError) as info:
        await make().set_state(order_id, "teleported", merchant=MERCHANT, channel=CHANNEL)
    assert info.value.status == 400
    assert "teleported" in (info.value.api_message or "")


async def test_wrong_key_is_unauthorized(
    sim: SimulatorHandle, make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong API key raises NorceUnauthorizedError after one attempt, leaking no key."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    order_id = seed_one(sim)
    wrong = "wrong-key-0123456789-SECRET"
    with pytest.raises(NorceUnauthorizedError) as info:
        await make(key=wrong).get_order_json(order_id, merchant=MERCHANT, channel=CHANNEL)
    assert (info.value.status, info.value.code, info.value.attempts) == (401, "unauthorized", 1)
    assert not info.value.retriable
    assert not info.value.command_fault
    for text in (str(info.value), repr(info.value), caplog.text):
        assert wrong not in text
        assert API_KEY not in text


async def test_debug_logs_over_real_http_never_show_the_key(
    sim: SimulatorHandle, make: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """With httpx/httpcore at DEBUG, real requests (incl. retries) never log the key."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "aiohttp", "bridge"):
        caplog.set_level(logging.DEBUG, logger=name)
    order_id = seed_one(sim)
    recorder = Recorder()
    fail_first(sim, recorder, 1, error_rate=1.0, error_statuses=(503,))
    client = make(recorder=recorder)
    await client.get_order_json(order_id, merchant=MERCHANT, channel=CHANNEL)
    await client.set_state(order_id, "processing", merchant=MERCHANT, channel=CHANNEL)
    await client.delete_order(order_id, merchant=MERCHANT, channel=CHANNEL)
    assert caplog.records
    assert API_KEY not in caplog.text


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"error_rate": 1.0, "error_statuses": (503,)}, "5xx"),
        ({"error_rate": 1.0, "error_statuses": (500,)}, "5xx"),
        ({"reset_rate": 1.0}, "connection"),
        ({"hang_rate": 1.0, "hang_s": 5.0}, "timeout"),
    ],
)
async def test_retries_through_injected_faults(
    sim: SimulatorHandle, make: MakeClient, faults: dict[str, Any], reason: str
) -> None:
    """Two injected failures in a row are retried, and the third attempt succeeds."""
    order_id = seed_one(sim)
    recorder = Recorder()
    fail_first(sim, recorder, 2, **faults)
    client = make(recorder=recorder)
    result = await client.set_state(order_id, "processing", merchant=MERCHANT, channel=CHANNEL)
    assert result.attempts == 3
    assert recorder.retries == [("set_state", reason)] * 2
    stored = sim.app.get_order(order_id)
    assert stored is not None
    assert stored["state"]["currentStatus"] == "processing"


async def test_retry_after_from_429_is_honoured(sim: SimulatorHandle, make: MakeClient) -> None:
    """The simulator's 429 Retry-After is the delay the client sleeps."""
    order_id = seed_one(sim)
    sim.app.set_faults(rate_limit_rate=1.0, retry_after_s=0.05)
    recorder = Recorder()
    recorder.on_sleep = lambda: sim.app.set_faults(rate_limit_rate=0.0)
    result = await make(recorder=recorder).get_order_json(
        order_id, merchant=MERCHANT, channel=CHANNEL
    )
    assert result.attempts == 2
    assert recorder.sleeps == [0.05]
    assert recorder.retries == [("get_order", "429")]


async def test_random_faults_are_absorbed_by_retries(
    sim: SimulatorHandle, make: MakeClient
) -> None:
    """Under 503/429/reset/hang faults, concurrent calls all succeed within their retries."""
    ids = sim.app.seed(30, MERCHANT, CHANNEL)
    sim.app.set_faults(
        error_rate=0.15,
        rate_limit_rate=0.1,
        retry_after_s=0.01,
        reset_rate=0.1,
        hang_rate=0.05,
        hang_s=5.0,
    )
    recorder = Recorder()
    policy = RetrySettings(max_attempts=20, base_delay_s=0.005, max_delay_s=0.02, deadline_s=30.0)
    client = make(recorder=recorder, retry=policy)
    results = await asyncio.gather(
        *(client.get_order_json(i, merchant=MERCHANT, channel=CHANNEL) for i in ids)
    )
    assert [r.value["id"] for r in results] == ids
    # aiohttp itself re-sends once when a reused keep-alive connection was reset, so
    # "connection" retries may not reach our retry loop on that backend.
    assert {reason for _, reason in recorder.retries} >= {"5xx", "429"}
    assert sum(r.attempts for r in results) == len(recorder.requests)


async def test_down_then_up(sim: SimulatorHandle, make: MakeClient) -> None:
    """While the API is down the client retries; once it is back the call succeeds."""
    order_id = seed_one(sim)
    sim.app.set_faults(down=True)
    recorder = Recorder()
    recorder.on_sleep = lambda: sim.app.set_faults(down=len(recorder.sleeps) < 2)
    result = await make(recorder=recorder).delete_order(
        order_id, merchant=MERCHANT, channel=CHANNEL
    )
    assert (result.status, result.attempts) == (204, 3)
    assert recorder.requests == [
        ("DELETE", "delete_order", 503),
        ("DELETE", "delete_order", 503),
        ("DELETE", "delete_order", 204),
    ]
    assert sim.app.get_order(order_id) is None


async def test_down_for_good_gives_up_after_max_attempts(
    sim: SimulatorHandle, make: MakeClient
) -> None:
    """A permanently down API raises NorceUnavailableError after max_attempts, changing nothing."""
    order_id = seed_one(sim)
    sim.app.set_faults(down=True)
    policy = RetrySettings(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002)
    with pytest.raises(NorceUnavailableError) as info:
        await make(retry=policy).set_state(
            order_id, "processing", merchant=MERCHANT, channel=CHANNEL
        )
    assert (info.value.status, info.value.attempts) == (503, 3)
    assert not info.value.command_fault
    stored = sim.app.get_order(order_id)
    assert stored is not None
    assert stored["state"]["currentStatus"] == "checkout"


async def test_keep_alive_connections_survive_server_resets(
    sim: SimulatorHandle, make: MakeClient
) -> None:
    """After a reset drops a pooled connection, later calls on the same client still work."""
    ids = sim.app.seed(5, MERCHANT, CHANNEL)
    recorder = Recorder()
    client = make(recorder=recorder)
    for order_id in ids:
        recorder.sleeps.clear()
        fail_first(sim, recorder, 1, reset_rate=1.0)
        result = await client.get_order_json(order_id, merchant=MERCHANT, channel=CHANNEL)
        assert result.attempts == 2
