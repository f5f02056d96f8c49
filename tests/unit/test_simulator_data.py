"""Generated order content of the Norce Order API simulator: fields, ids, totals, determinism."""

from __future__ import annotations

import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from norce_simulator import ORDER_STATUSES, SimulatorApp, SimulatorConfig

SPEC = json.loads((Path(__file__).parents[1] / "norce-order-api.openapi.json").read_text())
SCHEMAS = SPEC["components"]["schemas"]
FIXED = datetime(2026, 1, 12, 8, 21, 29, tzinfo=UTC)
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ID_PATTERNS = {
    "order": re.compile(r"^o_[A-Za-z]{26}$"),
    "item": re.compile(r"^ci_[A-Za-z]{26}$"),
    "payment": re.compile(r"^p_[A-Za-z]{26}$"),
    "shipping": re.compile(r"^s_[A-Za-z]{26}$"),
    "callback": re.compile(r"^oc_[A-Za-z]{26}$"),
    "notification": re.compile(r"^oc[A-Za-z]{26}$"),
}


def make_app(
    seed: int = 1, orders: int = 50, statuses: tuple[str, ...] = ("checkout",)
) -> SimulatorApp:
    return SimulatorApp(
        SimulatorConfig(seed=seed, orders=orders, clock=lambda: FIXED, seed_statuses=statuses)
    )


def orders_of(app: SimulatorApp) -> list[dict[str, Any]]:
    result = []
    for oid in app.seeded_ids:
        order = app.get_order(oid)
        assert order is not None
        result.append(order)
    return result


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while True:
        if "$ref" in schema:
            schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
        elif "allOf" in schema and len(schema["allOf"]) == 1 and "properties" not in schema:
            schema = schema["allOf"][0]
        else:
            return schema


def missing_fields(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Return the documented properties absent from ``value`` (recursively)."""
    schema = resolve(schema)
    missing: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value:
                missing.append(f"{path}.{name}")
            else:
                missing += missing_fields(value[name], sub, f"{path}.{name}")
    elif isinstance(value, list) and "items" in schema:
        for index, element in enumerate(value):
            missing += missing_fields(element, schema["items"], f"{path}[{index}]")
    return missing


def cents(value: float) -> int:
    return round(value * 100)


def walk_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        out.append(item)
        out += walk_items(item["items"])
    return out


def walk_numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [n for k, v in value.items() if k != "vatRate" for n in walk_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in walk_numbers(v)]
    return []


def check_totals(order: dict[str, Any]) -> None:
    cart = order["cart"]
    for item in walk_items(cart["items"]):
        for part in ("includingVat", "excludingVat"):
            assert cents(item["originalTotal"][part]) == item["quantity"] * cents(
                item["price"][part]
            )
    for item in cart["items"]:
        for part in ("includingVat", "excludingVat"):
            discounted = sum(cents(d["value"][part]) for d in item["discounts"])
            assert cents(item["total"][part]) == cents(item["originalTotal"][part]) - discounted
            assert cents(item["total"][part]) >= 0
    for part in ("includingVat", "excludingVat"):
        assert cents(cart["total"][part]) == sum(cents(i["total"][part]) for i in cart["items"])
        item_discounts = sum(cents(d["value"][part]) for i in cart["items"] for d in i["discounts"])
        summary = sum(cents(d["value"][part]) for d in cart["discounts"] if d["type"] == "item")
        assert summary == item_discounts
        shipping = sum(cents(s["total"][part]) for s in order["shippings"])
        assert cents(order["total"][part]) == cents(cart["total"][part]) + shipping
    assert sum(cents(p["amount"]) for p in order["payments"]) == cents(
        order["total"]["includingVat"]
    )


def test_every_documented_order_field_is_present() -> None:
    """Every property of the Order schema (recursively, incl. nested objects) is generated."""
    for order in orders_of(make_app(orders=30)):
        assert missing_fields(order, SCHEMAS["Order"]) == []


def test_generated_content_covers_the_interesting_shapes() -> None:
    """Seeded orders include bundles with children, discounts, upsell items, vouchers, orgs."""
    orders = orders_of(make_app(orders=200))
    items = [i for o in orders for i in walk_items(o["cart"]["items"])]
    assert any(i["productType"] == "bundle" and i["items"] for i in items)
    assert any(i["upsell"] for i in items)
    assert any(i["discounts"] for i in items)
    assert {i["productType"] for i in items} == {"physical", "digital", "giftCard", "bundle"}
    assert any(d["type"] == "shipping" for o in orders for d in o["cart"]["discounts"])
    assert any(len(o["payments"]) == 2 for o in orders)
    assert any(o["customer"]["type"] == "organization" for o in orders)
    assert any(p["upsell"]["transactions"] for o in orders for p in o["payments"])
    assert len({o["currency"] for o in orders}) >= 3


def test_ids_follow_the_documented_style() -> None:
    """Ids are a prefix plus exactly 26 ASCII letters (o_, ci_, p_, s_, oc_, oc)."""
    for order in orders_of(make_app(orders=30)):
        assert ID_PATTERNS["order"].match(order["id"])
        for item in walk_items(order["cart"]["items"]):
            assert ID_PATTERNS["item"].match(item["id"])
        for payment in order["payments"]:
            assert ID_PATTERNS["payment"].match(payment["id"])
            assert payment["orderId"] == order["id"]
        for shipping in order["shippings"]:
            assert ID_PATTERNS["shipping"].match(shipping["id"])
            assert shipping["orderId"] == order["id"]
        for entry in order["validations"] + order["hooks"]:
            assert ID_PATTERNS["callback"].match(entry["id"])
        for notification in order["notifications"]:
            assert ID_PATTERNS["notification"].match(notification["id"])


def test_totals_are_consistent() -> None:
    """Item, cart, shipping, order and payment totals add up exactly (in cents)."""
    for order in orders_of(make_app(orders=200, statuses=ORDER_STATUSES)):
        check_totals(order)


def test_money_has_at_most_two_decimals() -> None:
    """Every money double is rounded to two decimals."""
    for order in orders_of(make_app(orders=50)):
        for section in ("cart", "shippings", "payments", "total"):
            for number in walk_numbers(order[section]):
                assert round(number, 2) == number


@given(seed=st.integers(min_value=0, max_value=2**32))
@settings(max_examples=40, deadline=None)
def test_totals_hold_for_any_seed(seed: int) -> None:
    """The totals invariants hold whatever the seed."""
    for order in orders_of(make_app(seed=seed, orders=3, statuses=ORDER_STATUSES)):
        check_totals(order)


def test_timestamps_are_rfc3339_utc_and_ordered() -> None:
    """created/lastModified/transition times end in Z, are ordered and not in the future."""
    for order in orders_of(make_app(orders=100, statuses=ORDER_STATUSES)):
        stamps = [t["timeStamp"] for t in order["state"]["transitions"]]
        for stamp in [order["created"], order["lastModified"], *stamps]:
            assert RFC3339_Z.match(stamp)
            assert datetime.fromisoformat(stamp) <= FIXED
        assert stamps == sorted(stamps)
        assert stamps[0] == order["created"]
        assert order["lastModified"] == stamps[-1]
        assert order["state"]["transitions"][0]["status"] == "checkout"
        assert order["state"]["transitions"][-1]["status"] == order["state"]["currentStatus"]


@pytest.mark.parametrize("status", ORDER_STATUSES)
def test_seeded_status_has_a_plausible_history(status: str) -> None:
    """Seeding in a given status yields a transition path that follows the default rules."""
    app = make_app(orders=10, statuses=(status,))
    allowed = app.config.transitions
    for order in orders_of(app):
        path = [t["status"] for t in order["state"]["transitions"]]
        assert path[-1] == status
        for before, after in itertools.pairwise(path):
            assert after in allowed[before]
        assert app.history(order["id"]) == path


def test_same_seed_gives_same_orders() -> None:
    """Two simulators with the same seed and clock generate identical orders and ids."""
    first, second = make_app(seed=7, orders=20), make_app(seed=7, orders=20)
    assert first.seeded_ids == second.seeded_ids
    assert orders_of(first) == orders_of(second)


def test_different_seed_gives_different_orders() -> None:
    """A different seed generates different orders."""
    assert make_app(seed=1, orders=5).seeded_ids != make_app(seed=2, orders=5).seeded_ids


def test_seed_adds_orders_under_other_merchant_and_channel() -> None:
    """seed(n, merchant, channel) creates orders owned by that merchant and channel."""
    app = make_app(orders=0)
    ids = app.seed(3, "acme", "se")
    assert len(ids) == 3
    for oid in ids:
        order = app.get_order(oid)
        assert order is not None
        assert (order["merchant"], order["channel"]) == ("acme", "se")
        assert all(p["merchant"] == "acme" for p in order["payments"])
