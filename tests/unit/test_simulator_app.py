"""Status paths of the Norce Order API simulator, exercised through the pure ``handle``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from norce_simulator import Response, SimulatorApp, SimulatorConfig

BASE = "/api/v0/checkout/orders"
KEY = "sim-api-key"
HEADERS = {
    "Authorization": f"Bearer {KEY}",
    "x-merchant": "norce",
    "x-channel": "1",
    "content-type": "application/json",
}


class Clock:
    """A manually advanced clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 12, 8, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> SimulatorApp:
    return SimulatorApp(SimulatorConfig(seed=3, orders=5, clock=clock))


@pytest.fixture
def oid(app: SimulatorApp) -> str:
    return app.seeded_ids[0]


def call(
    app: SimulatorApp,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Response:
    payload = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return app.handle(method, path, HEADERS if headers is None else headers, payload)


def put_state(app: SimulatorApp, order_id: str, status: str, **kw: Any) -> Response:
    return call(app, "PUT", f"{BASE}/{order_id}/state", {"currentStatus": status}, **kw)


def status_of(app: SimulatorApp, order_id: str) -> str:
    order = app.get_order(order_id)
    assert order is not None
    value: str = order["state"]["currentStatus"]
    return value


def is_problem(response: Response) -> bool:
    return (response.header("content-type") or "").startswith("application/problem+json")


def test_get_seeded_order(app: SimulatorApp, oid: str) -> None:
    """GET of a seeded order returns 200 and the order JSON."""
    response = call(app, "GET", f"{BASE}/{oid}")
    assert response.status == 200
    assert response.header("content-type") == "application/json; charset=utf-8"
    assert response.json() == app.get_order(oid)
    assert response.json()["id"] == oid


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", "Basic c2ltLWFwaS1rZXk=", "sim-api-key-x", "Bearer  "],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_missing_or_wrong_key_is_401(
    app: SimulatorApp, oid: str, authorization: str | None, method: str
) -> None:
    """Without a valid key every endpoint answers 401 unauthorized and changes nothing."""
    headers = {"x-merchant": "norce", "x-channel": "1"}
    if authorization is not None:
        headers["Authorization"] = authorization
    path = f"{BASE}/{oid}/state" if method == "PUT" else f"{BASE}/{oid}"
    response = call(app, method, path, {"currentStatus": "processing"}, headers=headers)
    assert response.status == 401
    assert response.json()["code"] == "unauthorized"
    assert response.header("www-authenticate") == "Bearer"
    assert status_of(app, oid) == "checkout"


@pytest.mark.parametrize(
    "authorization", ["sim-api-key", "bearer sim-api-key", "BEARER sim-api-key"]
)
def test_bare_key_and_any_bearer_case_are_accepted(
    app: SimulatorApp, oid: str, authorization: str
) -> None:
    """The bare key (as in the docs' curl sample) and any case of 'Bearer' authenticate."""
    headers = {**HEADERS, "Authorization": authorization}
    assert call(app, "GET", f"{BASE}/{oid}", headers=headers).status == 200


def test_configured_keys_are_accepted(clock: Clock) -> None:
    """Every configured key is accepted and the default key no longer is."""
    app = SimulatorApp(SimulatorConfig(api_keys=("k1", "k2"), orders=1, clock=clock))
    path = f"{BASE}/{app.seeded_ids[0]}"
    for key, expected in (("k1", 200), ("k2", 200), (KEY, 401)):
        assert call(app, "GET", path, headers={**HEADERS, "Authorization": key}).status == expected


@pytest.mark.parametrize("header", ["x-merchant", "x-channel"])
@pytest.mark.parametrize("value", [None, "", "   "])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_missing_scope_header_is_400(
    app: SimulatorApp, oid: str, header: str, value: str | None, method: str
) -> None:
    """A missing or empty x-merchant/x-channel is a 400 BaseError order-bad-request."""
    headers = {k: v for k, v in HEADERS.items() if k != header}
    if value is not None:
        headers[header] = value
    path = f"{BASE}/{oid}/state" if method == "PUT" else f"{BASE}/{oid}"
    response = call(app, method, path, {"currentStatus": "processing"}, headers=headers)
    assert response.status == 400
    assert not is_problem(response)
    assert response.json()["code"] == "order-bad-request"
    assert header in response.json()["message"]
    assert app.get_order(oid) is not None
    assert status_of(app, oid) == "checkout"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"{not json",
        b"[]",
        b'"processing"',
        b"{}",
        b'{"currentStatus": null}',
        b'{"currentStatus": "bogus"}',
        b'{"currentStatus": 2}',
        b'{"status": "processing"}',
    ],
)
def test_bad_state_body_is_problem_400(app: SimulatorApp, oid: str, raw: bytes) -> None:
    """Unparseable bodies, a missing currentStatus or an unknown enum give RFC 7807 400s."""
    response = call(app, "PUT", f"{BASE}/{oid}/state", raw=raw)
    assert response.status == 400
    assert is_problem(response)
    body = response.json()
    assert body["status"] == 400
    assert {"type", "title", "detail"} <= set(body)
    assert status_of(app, oid) == "checkout"


def test_enum_is_case_insensitive_and_stored_lower_case(app: SimulatorApp, oid: str) -> None:
    """'Processing' is accepted like .NET does and stored as 'processing'."""
    assert put_state(app, oid, "Processing").status == 200
    assert status_of(app, oid) == "processing"


def test_unknown_order_body_errors_take_precedence_over_404(app: SimulatorApp) -> None:
    """Body validation (model binding) runs before the order lookup."""
    response = call(app, "PUT", f"{BASE}/o_unknown/state", raw=b"{")
    assert response.status == 400


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "order_id",
    ["o_doesNotExistAtAllXXXXXXXXXX", "x", "%20", "..", "o_" + "a" * 500, "ö", "%00", "a%2Fb"],
)
def test_unknown_order_is_404(app: SimulatorApp, method: str, order_id: str) -> None:
    """Unknown or odd ids answer the documented 404 order-not-found."""
    path = f"{BASE}/{order_id}/state" if method == "PUT" else f"{BASE}/{order_id}"
    response = call(app, method, path, {"currentStatus": "processing"})
    assert response.status == 404
    assert response.json() == {
        "code": "order-not-found",
        "message": f"Order with id:{unquote(order_id)} not found.",
    }


@pytest.mark.parametrize(("merchant", "channel"), [("other", "1"), ("norce", "2")])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_merchant_or_channel_is_404(
    app: SimulatorApp, oid: str, merchant: str, channel: str, method: str
) -> None:
    """An order that exists under another merchant or channel is not found."""
    headers = {**HEADERS, "x-merchant": merchant, "x-channel": channel}
    path = f"{BASE}/{oid}/state" if method == "PUT" else f"{BASE}/{oid}"
    response = call(app, method, path, {"currentStatus": "processing"}, headers=headers)
    assert response.status == 404
    assert response.json()["code"] == "order-not-found"
    assert status_of(app, oid) == "checkout"


def test_percent_encoded_id_is_decoded(app: SimulatorApp, oid: str) -> None:
    """The id path segment is percent-decoded before the lookup."""
    encoded = "".join(f"%{ord(c):02X}" for c in oid)
    assert call(app, "GET", f"{BASE}/{encoded}").status == 200
    assert call(app, "GET", f"{BASE}/{quote(oid + '/x', safe='')}").status == 404


def test_trailing_slash_is_tolerated(app: SimulatorApp, oid: str) -> None:
    """One trailing slash after the id, state or collection path routes the same."""
    assert call(app, "GET", f"{BASE}/{oid}/").status == 200
    assert call(app, "PUT", f"{BASE}/{oid}/state/", {"currentStatus": "processing"}).status == 200
    assert call(app, "GET", f"{BASE}/").status == 200
    assert call(app, "GET", f"{BASE}//state").status == 405


def test_checkout_order_path_prefix_is_accepted(app: SimulatorApp, oid: str) -> None:
    """Paths under /checkout/order (the server base URL of the docs) work the same."""
    assert call(app, "GET", f"/checkout/order{BASE}/{oid}").status == 200
    response = call(
        app, "PUT", f"/checkout/order{BASE}/{oid}/state", {"currentStatus": "processing"}
    )
    assert response.status == 200
    assert call(app, "DELETE", f"/checkout/order{BASE}/{oid}").status == 204


def test_happy_path_transitions(app: SimulatorApp, oid: str, clock: Clock) -> None:
    """checkout -> processing -> checkout -> processing -> accepted -> completed is allowed."""
    path = ["processing", "checkout", "processing", "accepted", "completed"]
    for status in path:
        clock.advance(1)
        response = put_state(app, oid, status)
        assert (response.status, response.body, response.headers) == (200, b"", [])
    order = app.get_order(oid)
    assert order is not None
    assert [t["status"] for t in order["state"]["transitions"]] == ["checkout", *path]
    assert app.history(oid) == ["checkout", *path]


def test_transitions_are_appended_oldest_first_with_utc_times(
    app: SimulatorApp, oid: str, clock: Clock
) -> None:
    """Each change appends a transition stamped with the clock in UTC and moves lastModified."""
    before = app.get_order(oid)
    assert before is not None
    clock.advance(60)
    put_state(app, oid, "processing")
    clock.advance(60)
    put_state(app, oid, "accepted")
    after = app.get_order(oid)
    assert after is not None
    transitions = after["state"]["transitions"]
    assert transitions[:-2] == before["state"]["transitions"]
    assert transitions[-2:] == [
        {"status": "processing", "timeStamp": "2026-01-12T08:01:00.000000Z"},
        {"status": "accepted", "timeStamp": "2026-01-12T08:02:00.000000Z"},
    ]
    assert after["lastModified"] == "2026-01-12T08:02:00.000000Z"
    assert after["created"] == before["created"]


def test_writes_in_the_same_instant_still_get_increasing_times(app: SimulatorApp, oid: str) -> None:
    """With a frozen clock, lastModified still strictly increases on every write."""
    put_state(app, oid, "processing")
    first = app.get_order(oid)
    put_state(app, oid, "checkout")
    second = app.get_order(oid)
    assert first is not None
    assert second is not None
    assert second["lastModified"] > first["lastModified"]


def test_same_state_put_is_a_no_op(app: SimulatorApp, oid: str, clock: Clock) -> None:
    """PUT of the current status answers 200 without a new transition or lastModified change."""
    before = app.get_order(oid)
    clock.advance(5)
    response = put_state(app, oid, "checkout")
    assert response.status == 200
    assert app.get_order(oid) == before
    assert app.history(oid) == ["checkout"]


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], "accepted"),
        ([], "completed"),
        ([], "declined"),
        (["processing"], "completed"),
        (["processing", "accepted"], "checkout"),
        (["processing", "accepted"], "removed"),
        (["processing", "accepted", "completed"], "checkout"),
        (["processing", "accepted", "completed"], "declined"),
        (["processing", "declined"], "checkout"),
        (["removed"], "checkout"),
    ],
)
def test_illegal_transition_is_400(
    app: SimulatorApp, oid: str, path: list[str], target: str
) -> None:
    """A transition outside the allowed graph is a 400 order-bad-request; nothing changes."""
    for status in path:
        assert put_state(app, oid, status).status == 200
    before = app.get_order(oid)
    response = put_state(app, oid, target)
    assert response.status == 400
    assert not is_problem(response)
    assert response.json()["code"] == "order-bad-request"
    assert app.get_order(oid) == before


def test_enforcement_can_be_switched_off(clock: Clock) -> None:
    """With enforce_transitions=False any status may follow any other."""
    app = SimulatorApp(SimulatorConfig(orders=1, enforce_transitions=False, clock=clock))
    oid = app.seeded_ids[0]
    for status in ("completed", "checkout", "removed", "accepted"):
        assert put_state(app, oid, status).status == 200
    assert app.history(oid) == ["checkout", "completed", "checkout", "removed", "accepted"]


def test_custom_transition_graph(clock: Clock) -> None:
    """A custom transitions mapping replaces the default graph."""
    graph = {"checkout": frozenset({"completed"})}
    app = SimulatorApp(SimulatorConfig(orders=1, transitions=graph, clock=clock))
    oid = app.seeded_ids[0]
    assert put_state(app, oid, "processing").status == 400
    assert put_state(app, oid, "completed").status == 200


def test_delete_then_everything_is_404(app: SimulatorApp, oid: str) -> None:
    """DELETE answers 204 once; afterwards GET, PUT and DELETE are 404."""
    put_state(app, oid, "processing")
    response = call(app, "DELETE", f"{BASE}/{oid}")
    assert (response.status, response.body) == (204, b"")
    assert call(app, "GET", f"{BASE}/{oid}").status == 404
    assert put_state(app, oid, "checkout").status == 404
    assert call(app, "DELETE", f"{BASE}/{oid}").status == 404
    assert app.get_order(oid) is None
    assert app.history(oid) == ["checkout", "processing", "deleted"]


def test_create_with_empty_body(app: SimulatorApp, clock: Clock) -> None:
    """POST {} (or no body) answers 201 with the new id as a bare JSON string."""
    for raw in (b"{}", b""):
        clock.advance(1)
        response = call(app, "POST", BASE, raw=raw)
        assert response.status == 201
        new_id = response.json()
        assert isinstance(new_id, str)
        assert response.body == json.dumps(new_id).encode()
        order = call(app, "GET", f"{BASE}/{new_id}").json()
        assert order["state"] == {
            "currentStatus": "checkout",
            "transitions": [{"status": "checkout", "timeStamp": order["created"]}],
        }
        assert order["created"] == order["lastModified"]
        assert datetime.fromisoformat(order["created"]) == clock.now
        assert (order["merchant"], order["channel"]) == ("norce", "1")
        assert app.history(new_id) == ["checkout"]


def test_create_uses_given_fields_and_ignores_read_only_ones(app: SimulatorApp) -> None:
    """Writeable fields from the body are kept; id, merchant, state etc. are server-owned."""
    body = {
        "id": "o_mine",
        "merchant": "evil",
        "reference": "ERP-1",
        "culture": "en-GB",
        "currency": "GBP",
        "country": "GB",
        "state": {"currentStatus": "completed"},
        "attributes": {"k": "v"},
        "hooks": [{"adapterId": "a", "subscribeTo": "/cart", "target": "/cart", "invoke": "u"}],
        "cart": {
            "reference": "basket-x",
            "items": [
                {
                    "name": "Thing",
                    "quantity": 2,
                    "price": {"includingVat": 10.0, "excludingVat": 8.0},
                    "originalTotal": {"includingVat": 20.0, "excludingVat": 16.0},
                    "total": {"includingVat": 20.0, "excludingVat": 16.0},
                    "items": [],
                }
            ],
            "discounts": [],
            "attributes": {},
        },
    }
    headers = {**HEADERS, "x-merchant": "m2", "x-channel": "c2"}
    response = call(app, "POST", BASE, body, headers=headers)
    assert response.status == 201
    order = call(app, "GET", f"{BASE}/{response.json()}", headers=headers).json()
    assert order["id"] != "o_mine"
    assert (order["merchant"], order["channel"]) == ("m2", "c2")
    assert order["state"]["currentStatus"] == "checkout"
    assert (order["reference"], order["culture"], order["currency"]) == ("ERP-1", "en-GB", "GBP")
    assert order["attributes"] == {"k": "v"}
    assert order["hooks"][0]["id"].startswith("oc_")
    assert order["cart"]["items"][0]["id"].startswith("ci_")
    assert order["cart"]["total"] == {"includingVat": 20.0, "excludingVat": 16.0}
    shipping = order["shippings"][0]["total"]["includingVat"]
    assert order["total"]["includingVat"] == round(20.0 + shipping, 2)
    assert order["payments"][0]["amount"] == order["total"]["includingVat"]
    assert call(app, "GET", f"{BASE}/{order['id']}").status == 404  # other merchant


@pytest.mark.parametrize(
    "raw",
    [
        b"{oops",
        b"[]",
        b'"x"',
        b'{"currency": "KRONOR"}',
        b'{"country": "SWE"}',
        b'{"culture": "sv_SE"}',
        b'{"cart": []}',
        b'{"state": {"currentStatus": "nope"}}',
        b'{"customer": {"type": "robot"}}',
        b'{"total": {"includingVat": "12"}}',
    ],
)
def test_create_with_invalid_body_is_problem_400(app: SimulatorApp, raw: bytes) -> None:
    """Malformed or ill-typed create bodies are rejected with RFC 7807 400s."""
    before = len(app.store)
    response = call(app, "POST", BASE, raw=raw)
    assert response.status == 400
    assert is_problem(response)
    assert len(app.store) == before


def test_create_with_duplicate_cart_reference_is_409(app: SimulatorApp) -> None:
    """Cart references are unique per merchant and channel: a second create is a conflict."""
    body = {"cart": {"reference": "basket-dup", "items": []}}
    assert call(app, "POST", BASE, body).status == 201
    response = call(app, "POST", BASE, body)
    assert response.status == 409
    assert response.json()["code"] == "order-conflict"
    other = {**HEADERS, "x-channel": "2"}
    assert call(app, "POST", BASE, body, headers=other).status == 201


def test_unchecked_required_consent_blocks_processing(app: SimulatorApp) -> None:
    """An order with an unchecked required consent cannot move to processing."""
    consents = [{"id": "ci_terms", "checked": False, "text": "Terms", "required": True}]
    new_id = call(app, "POST", BASE, {"consents": consents}).json()
    response = put_state(app, new_id, "processing")
    assert response.status == 400
    assert response.json()["code"] == "order-validation"
    assert put_state(app, new_id, "removed").status == 200


def test_list_default_page(clock: Clock) -> None:
    """GET the collection returns 10 orders by default with a full pagination block."""
    app = SimulatorApp(SimulatorConfig(orders=25, clock=clock))
    app.seed(3, "norce", "other-channel")
    body = call(app, "GET", BASE).json()
    assert len(body["data"]) == 10
    # get_order is Optional, but every seeded id exists (a None would fail the test here).
    expected_sum = round(
        sum(app.get_order(i)["total"]["includingVat"] for i in app.seeded_ids),  # type: ignore[index]
        2,
    )
    assert body["pagination"] == {
        "offset": 0,
        "limit": 10,
        "size": 25,
        "valueSum": expected_sum,
        "totalSize": 25,
    }
    created = [o["created"] for o in body["data"]]
    assert created == sorted(created, reverse=True)


def test_list_pages_cover_every_order_once(clock: Clock) -> None:
    """Walking offset/limit pages yields every order of the scope exactly once."""
    app = SimulatorApp(SimulatorConfig(orders=37, clock=clock))
    seen: list[str] = []
    for offset in range(0, 40, 7):
        body = call(app, "GET", f"{BASE}?offset={offset}&limit=7").json()
        assert body["pagination"]["offset"] == offset
        seen += [o["id"] for o in body["data"]]
    assert sorted(seen) == sorted(app.seeded_ids)
    assert call(app, "GET", f"{BASE}?offset=100&limit=100").json()["data"] == []


@pytest.mark.parametrize(
    ("query", "problem_shape"),
    [
        ("limit=101", False),
        ("limit=0", False),
        ("offset=-1", False),
        ("limit=ten", True),
        ("offset=1.5", True),
        ("order_by=price", True),
        ("order_by_direction=up", True),
        ("status=shipped", True),
    ],
)
def test_list_rejects_bad_paging(app: SimulatorApp, query: str, problem_shape: bool) -> None:
    """Out-of-range paging is a BaseError 400; unparseable values are RFC 7807 400s."""
    response = call(app, "GET", f"{BASE}?{query}")
    assert response.status == 400
    assert is_problem(response) is problem_shape


def test_list_limit_100_is_allowed(clock: Clock) -> None:
    """limit=100 is the maximum page size."""
    app = SimulatorApp(SimulatorConfig(orders=120, clock=clock))
    assert len(call(app, "GET", f"{BASE}?limit=100").json()["data"]) == 100


def test_list_filters(clock: Clock) -> None:
    """status, reference and payment_id filters narrow the result and size."""
    app = SimulatorApp(SimulatorConfig(orders=12, clock=clock))
    target = app.seeded_ids[4]
    put_state(app, target, "processing")
    order = app.get_order(target)
    assert order is not None
    by_status = call(app, "GET", f"{BASE}?status=processing").json()
    assert [o["id"] for o in by_status["data"]] == [target]
    assert by_status["pagination"]["size"] == 1
    assert by_status["pagination"]["totalSize"] == 12
    by_ref = call(app, "GET", f"{BASE}?reference={order['reference']}").json()
    assert target in [o["id"] for o in by_ref["data"]]
    by_payment = call(app, "GET", f"{BASE}?payment_id={order['payments'][0]['id']}").json()
    assert [o["id"] for o in by_payment["data"]] == [target]
    by_search = call(app, "GET", f"{BASE}?search={target.lower()}").json()
    assert [o["id"] for o in by_search["data"]] == [target]


def test_list_is_scoped_to_merchant_and_channel(app: SimulatorApp) -> None:
    """Another merchant sees none of the seeded orders."""
    body = call(app, "GET", BASE, headers={**HEADERS, "x-merchant": "other"}).json()
    assert body["data"] == []
    assert body["pagination"]["totalSize"] == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/api/v0/checkout/order", 404),
        ("GET", "/api/v1/checkout/orders/x", 404),
        ("PATCH", f"{BASE}/o_x", 405),
        ("POST", f"{BASE}/o_x/state", 405),
        ("PUT", BASE, 405),
        ("PUT", f"{BASE}/o_x/cart", 501),
        ("GET", f"{BASE}/o_x/payments/p_y", 501),
    ],
)
def test_routing_errors(app: SimulatorApp, method: str, path: str, status: int) -> None:
    """Unknown routes are 404, wrong methods 405 with Allow, unsimulated sub-routes 501."""
    response = call(app, method, path)
    assert response.status == status
    assert isinstance(response.json()["code"], str)
    if status == 405:
        assert response.header("allow")


def test_call_log_records_what_the_client_did(app: SimulatorApp, oid: str) -> None:
    """Each API call is logged per order with headers and body but never the API key."""
    headers = {**HEADERS, "x-adapterid": "bridge"}
    put_state(app, oid, "processing", headers=headers)
    call(app, "GET", f"{BASE}/{oid}", headers=headers)
    calls = app.calls(oid)
    assert [(c["method"], c["status"]) for c in calls] == [("PUT", 200), ("GET", 200)]
    first = calls[0]
    assert set(first) == {
        "seq",
        "ts",
        "monotonic",
        "method",
        "path",
        "order_id",
        "status",
        "fault",
        "headers",
        "body",
    }
    assert first["path"] == f"{BASE}/{oid}/state"
    assert first["headers"] == {"x-merchant": "norce", "x-channel": "1", "x-adapterid": "bridge"}
    assert first["body"] == {"currentStatus": "processing"}
    assert first["fault"] is None
    assert calls[1]["seq"] > first["seq"]
    assert KEY not in json.dumps(app.calls())
    assert "authorization" not in json.dumps(app.calls()).lower()


def test_sync_mock_transport(app: SimulatorApp, oid: str) -> None:
    """app.mock_transport() serves the app to a synchronous httpx.Client."""
    transport = app.mock_transport()
    assert isinstance(transport, httpx.MockTransport)
    with httpx.Client(transport=transport, base_url="http://sim", headers=HEADERS) as client:
        assert client.get(f"{BASE}/{oid}").json()["id"] == oid
        assert (
            client.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"}).status_code
            == 200
        )
        assert client.delete(f"{BASE}/{oid}").status_code == 204
        missing = client.get(f"{BASE}/{oid}")
        assert missing.status_code == 404
        assert missing.json()["code"] == "order-not-found"


async def test_async_mock_transport(app: SimulatorApp, oid: str) -> None:
    """app.mock_transport() serves the app to an httpx.AsyncClient."""
    async with httpx.AsyncClient(
        transport=app.mock_transport(), base_url="http://sim", headers=HEADERS
    ) as client:
        response = await client.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"})
        assert response.status_code == 200
        created = await client.post(BASE, json={})
        assert created.status_code == 201
        assert (await client.get(f"{BASE}/{created.json()}")).status_code == 200
    assert status_of(app, oid) == "processing"
