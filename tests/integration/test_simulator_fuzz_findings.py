"""Regression tests for the simulator defects the first schemathesis run found (issue 11).

Each sends the exact body of a finding to the real simulator over loopback HTTP and checks
the status, that nothing was stored, and that the merchant/channel stays usable: the list
answers 200 and existing orders can still be deleted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from norce_simulator import SimulatorConfig, SimulatorHandle, start_simulator

BASE = "/api/v0/checkout/orders"
SCOPE = {"Authorization": "Bearer sim-api-key", "x-merchant": "norce", "x-channel": "1"}


class ArmedClock:
    """A clock that raises once when armed: a way to make the simulator itself fail."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self) -> datetime:
        if self.armed:
            self.armed = False
            raise RuntimeError("clock failure injected by the test")
        return datetime.now(UTC)


@pytest.fixture
def clock() -> ArmedClock:
    return ArmedClock()


@pytest.fixture
async def sim(clock: ArmedClock) -> AsyncIterator[SimulatorHandle]:
    async with await start_simulator(SimulatorConfig(seed=5, orders=4, clock=clock)) as handle:
        yield handle


@pytest.fixture
async def client(sim: SimulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, headers=SCOPE, timeout=10) as http:
        yield http


async def post_raw(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post(BASE, content=body, headers={"content-type": "application/json"})


async def assert_scope_usable(client: httpx.AsyncClient, sim: SimulatorHandle) -> None:
    """GET /orders is 200 with a schema-shaped page, and every order can be deleted."""
    listed = await client.get(BASE, params={"limit": 100})
    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert page["pagination"]["size"] == len(page["data"])
    for order in page["data"]:
        assert (await client.delete(f"{BASE}/{order['id']}")).status_code == 204
    assert (await client.get(BASE)).json()["pagination"]["totalSize"] == 0
    assert [s for s in sim.app.stats()["by_status"] if s.startswith("5")] == []


def assert_bad_request(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "order-bad-request"
    assert isinstance(body["message"], str)
    assert field in body["message"]
    assert field in body["errors"]


FINDINGS: dict[str, tuple[Any, str]] = {
    "cart-null": ({"cart": None}, "cart"),
    "total-null": ({"total": None}, "total"),
    "money-1e307": ({"total": {"includingVat": 1e307, "excludingVat": 1}}, "total.includingVat"),
    "billing-array": ({"customer": {"type": "person", "billing": [1, 2]}}, "customer.billing"),
    "item-quantity-string": ({"cart": {"items": [{"quantity": "2"}]}}, "cart.items[0].quantity"),
    "item-price-string": (
        {"cart": {"items": [{"price": {"includingVat": "10"}}]}},
        "cart.items[0].price.includingVat",
    ),
    "address-country-number": (
        {"customer": {"type": "person", "shipping": {"country": 46}}},
        "customer.shipping.country",
    ),
    "hooks-of-strings": ({"hooks": ["x"]}, "hooks[0]"),
    "consent-checked-string": ({"consents": [{"checked": "yes"}]}, "consents[0].checked"),
    "nested-null": ({"cart": {"items": [{"logistics": None}]}}, "cart.items[0].logistics"),
    "quantity-beyond-int32": (
        {"cart": {"items": [{"quantity": 2**31}]}},
        "cart.items[0].quantity",
    ),
    "customer-without-type": ({"customer": {"billing": {}}}, "customer.type"),
}


@pytest.mark.parametrize("name", list(FINDINGS))
async def test_bad_create_is_400_and_leaves_the_scope_usable(
    name: str, client: httpx.AsyncClient, sim: SimulatorHandle
) -> None:
    """A create body that does not bind to Order is a 400 naming the field; nothing is stored."""
    body, field = FINDINGS[name]
    before = len(sim.app.store)
    assert_bad_request(await client.post(BASE, json=body), field)
    assert len(sim.app.store) == before
    await assert_scope_usable(client, sim)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"total": {"includingVat": NaN}}',
        b'{"total": {"includingVat": Infinity}}',
        b'{"total": {"includingVat": 1e400}}',
        b'{"reference": "\\ud800"}',
        b'{"attributes": ' + b'{"a": ' * 70 + b"1" + b"}" * 71,
        b"[" * 100_000,
        b"\r\n",
        b"\xff\xfe",
    ],
    ids=["nan", "infinity", "overflow", "lone-surrogate", "too-deep", "deep-array", "ws", "utf8"],
)
async def test_json_that_cannot_be_served_back_is_refused(
    raw: bytes, client: httpx.AsyncClient, sim: SimulatorHandle
) -> None:
    """Bodies Python would parse but no JSON writer could serve back are 400s, never stored."""
    before = len(sim.app.store)
    response = await post_raw(client, raw)
    assert response.status_code == 400, response.text
    assert {"code", "message"} <= set(response.json())
    assert len(sim.app.store) == before
    await assert_scope_usable(client, sim)


async def test_valid_nested_create_is_stored_in_documented_form(client: httpx.AsyncClient) -> None:
    """A well-typed body is kept: enums in documented spelling, unknown members dropped."""
    body = {
        "customer": {"type": "Person", "billing": {"givenName": "Ann", "shoeSize": 38}},
        "cart": {
            "items": [{"productType": "GIFTCARD", "quantity": 1, "logistics": {"weight": 10}}],
        },
        "total": {"includingVat": 1e13, "excludingVat": -1e13},
        "attributes": {"anything": [None, {"deep": 1.5}]},
    }
    created = await client.post(BASE, json=body)
    assert created.status_code == 201
    order = (await client.get(f"{BASE}/{created.json()}")).json()
    assert order["customer"]["type"] == "person"
    assert order["customer"]["billing"] == {"givenName": "Ann"}
    assert order["cart"]["items"][0]["productType"] == "giftCard"
    assert order["total"] == {"includingVat": 1e13, "excludingVat": -1e13}
    assert order["attributes"] == {"anything": [None, {"deep": 1.5}]}
    listed = await client.get(BASE, params={"limit": 100})
    assert listed.status_code == 200
    assert listed.json()["pagination"]["valueSum"] >= 1e13


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_put_and_post_with_non_json_content_type_are_415(
    content_type: str, client: httpx.AsyncClient, sim: SimulatorHandle
) -> None:
    """PUT state and POST with a non-JSON Content-Type are 415 {code, message}; nothing changes."""
    oid = sim.app.seeded_ids[0]
    body = json.dumps({"currentStatus": "processing"}).encode()
    headers = {"content-type": content_type}
    put = await client.put(f"{BASE}/{oid}/state", content=body, headers=headers)
    assert put.status_code == 415
    assert put.json()["code"] == "unsupported-media-type"
    assert content_type in put.json()["message"]
    assert (await client.get(f"{BASE}/{oid}")).json()["state"]["currentStatus"] == "checkout"
    before = len(sim.app.store)
    post = await client.post(BASE, content=b"{}", headers=headers)
    assert post.status_code == 415
    assert len(sim.app.store) == before
    assert sim.app.stats()["by_status"]["415"] == 2


async def test_put_body_without_content_type_is_415(
    client: httpx.AsyncClient, sim: SimulatorHandle
) -> None:
    """A PUT body with no Content-Type at all is 415 too."""
    oid = sim.app.seeded_ids[0]
    request = client.build_request("PUT", f"{BASE}/{oid}/state", content=b'{"currentStatus":"x"}')
    assert "content-type" not in request.headers  # httpx adds none for raw content
    assert (await client.send(request)).status_code == 415


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/JSON; charset=utf-8",
        "Application/Json;charset=UTF-8",
        "text/json",
        "application/merge-patch+json",
    ],
)
async def test_json_content_types_with_parameters_and_any_case_are_accepted(
    content_type: str, client: httpx.AsyncClient, sim: SimulatorHandle
) -> None:
    """JSON media types are matched case-insensitively and with parameters."""
    oid = sim.app.seeded_ids[0]
    body = json.dumps({"currentStatus": "processing"}).encode()
    put = await client.put(
        f"{BASE}/{oid}/state", content=body, headers={"content-type": content_type}
    )
    assert put.status_code == 200, put.text


async def test_catch_all_500_is_base_error_and_counted(
    client: httpx.AsyncClient, sim: SimulatorHandle, clock: ArmedClock
) -> None:
    """A failure inside the simulator is a counted 500 {code, message} that stores nothing."""
    before = len(sim.app.store)
    clock.armed = True
    response = await client.post(BASE, json={"reference": "r"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "code": "internal-server-error",
        "message": "The simulator failed to handle the request.",
    }
    assert len(sim.app.store) == before
    assert sim.app.stats()["by_status"]["500"] == 1
    assert (await client.post(BASE, json={"reference": "r"})).status_code == 201


async def test_unparseable_http_is_answered_with_base_error_and_counted(
    sim: SimulatorHandle,
) -> None:
    """The server's own 4xx for broken HTTP carry {code, message} and are counted in stats."""
    host, port = sim.host, sim.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GARBAGE\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert set(json.loads(body)) == {"code", "message"}
    assert sim.app.stats()["by_status"]["400"] == 1
