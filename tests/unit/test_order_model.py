"""Unit tests of bridge.order_model (the tolerant Order reader)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.order_model import (
    Customer,
    DeliveryDetails,
    Item,
    Notification,
    Order,
    OrderStatus,
    Price,
    State,
    parse_timestamp,
)

RICH_ORDER: dict[str, Any] = {
    "id": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
    "merchant": "norce",
    "channel": "1",
    "reference": "ext-1001",
    "created": "2019-08-24T14:15:22Z",
    "lastModified": "2019-08-24T14:20:00.1234567Z",
    "state": {
        "currentStatus": "accepted",
        "transitions": [
            {"status": "checkout", "timeStamp": "2019-08-24T14:15:22Z"},
            {"status": "processing", "timeStamp": "2019-08-24T14:18:00+00:00"},
            {"status": "accepted", "timeStamp": "2019-08-24T14:20:00.1234567Z", "by": "psp"},
        ],
    },
    "culture": "sv-SE",
    "currency": "SEK",
    "country": "SE",
    "cart": {
        "reference": "basket-77",
        "items": [
            {
                "id": "ci_FpEzyBvBBUyKxkeNriFUxZOCje",
                "reference": "line-1",
                "name": "T-Shirt XL",
                "sku": "TS-XL",
                "productType": "physical",
                "url": "https://shop.example/ts",
                "imageUrl": "https://shop.example/ts.png",
                "quantity": 2,
                "unit": "st",
                "price": {"includingVat": 250, "excludingVat": 200},
                "total": {"includingVat": 480, "excludingVat": 384},
                "originalTotal": {"includingVat": 500, "excludingVat": 400},
                "vatRate": 0.25,
                "discounts": [
                    {
                        "type": "item",
                        "name": "Summer",
                        "reference": "d-1",
                        "description": "Summer sale",
                        "code": "SUMMER",
                        "value": {"includingVat": 20, "excludingVat": 16},
                        "attributes": {"campaign": 12},
                    }
                ],
                "logistics": {
                    "weight": 300,
                    "height": 20,
                    "width": 300,
                    "length": 400,
                    "tags": ["small"],
                    "shippingDate": "2019-08-26T00:00:00Z",
                },
                "upsell": False,
                "attributes": {"color": "red"},
            },
            {
                "id": "ci_bundle",
                "name": "Gift box",
                "productType": "bundle",
                "quantity": 1,
                "items": [
                    {
                        "id": "ci_child1",
                        "name": "Mug",
                        "productType": "physical",
                        "items": [{"id": "ci_grandchild", "name": "Spoon", "futureField": 1}],
                    },
                    {"id": "ci_child2", "name": "Card", "productType": "giftCard"},
                ],
            },
        ],
        "discounts": [{"type": "shipping", "name": "Free shipping", "futureFlag": True}],
        "total": {"includingVat": 740, "excludingVat": 592},
        "attributes": {},
    },
    "shippings": [
        {
            "id": "s_pmHreuEBboeezpixrHMDPQlazU",
            "merchant": "norce",
            "channel": "1",
            "state": "confirmed",
            "reference": "ship-1",
            "tmsReference": "tms-1",
            "orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
            "adapterId": "ingrid-shipping-adapter",
            "name": "PostNord MyPack Home",
            "total": {"includingVat": 49, "excludingVat": 39.2},
            "vatRate": 0.25,
            "deliveryDetails": {
                "carrier": "PostNord",
                "carrierProductId": "19",
                "class": "home",
                "product": {"reference": "pn-home", "name": "MyPack Home"},
                "pickupLocation": {
                    "reference": "pl-1",
                    "name": "ICA Nära",
                    "address": {
                        "streetAddress": "Storgatan 1",
                        "city": "Stockholm",
                        "postalCode": "11122",
                        "country": "SE",
                    },
                },
            },
            "addons": [{"reference": "carry-in", "price": 99.5}],
            "attributes": {"eta": "2d"},
        }
    ],
    "payments": [
        {
            "id": "p_KBiXuYjvYxsezKCQAMuuSKGDaT",
            "adapterId": "klarna-checkout",
            "name": "Klarna",
            "merchant": "norce",
            "channel": "1",
            "currency": "SEK",
            "type": "default",
            "orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
            "amount": 789,
            "upperLimitAmount": 1000.5,
            "state": "Reserved",
            "reference": "kco-1",
            "attributes": {"psp": {"nested": [1, 2, 3]}},
            "actions": [
                {
                    "id": "pa_1",
                    "adapterId": "klarna-checkout",
                    "type": "capture",
                    "url": "https://x",
                }
            ],
            "recurring": {"token": "tok", "description": "monthly", "attributes": {}},
            "upsell": {
                "eligible": True,
                "expiration": "2019-08-24T15:15:22Z",
                "transactions": [{"id": "up-1", "state": "actionRequired", "attributes": {}}],
                "attributes": {"x": None},
            },
        }
    ],
    "customer": {
        "type": "Person",
        "billing": {
            "type": "person",
            "givenName": "Anna",
            "familyName": "Andersson",
            "careOf": "Bertil",
            "reference": "cust-1",
            "organizationName": "",
            "streetAddress": "Storgatan 1",
            "streetAddress2": "lgh 1101",
            "postalCode": "11122",
            "city": "Stockholm",
            "region": "Stockholm",
            "country": "SE",
            "phone": "+46701234567",
            "email": "anna@example.com",
            "nationalIdentificationNumber": "890201-3286",
            "organizationIdentificationNumber": "212000-1355",
            "attributes": {"vip": True},
        },
        "shipping": {"givenName": "Anna", "country": "se"},
        "attributes": {},
    },
    "consents": [{"id": "ci_newsleter", "checked": True, "text": "Newsletter", "required": False}],
    "validations": [
        {"id": "oc_BaDIudFOjBEuFmLlmDExePUFTh", "adapterId": "jetshop_adapter", "url": "https://v"}
    ],
    "hooks": [
        {
            "id": "oc_hook",
            "adapterId": "a",
            "subscribeTo": "cart",
            "target": "/cart",
            "invoke": "https://h/{order_id}",
            "version": "v1",
        }
    ],
    "notifications": [
        {
            "id": "ocGooDddTOjKOuFmNnkEozEpfuTh",
            "adapterId": "a",
            "reference": "n-1",
            "description": "completed",
            "scope": "/state/currentStatus",
            "schema": {"const": "completed"},
            "invoke": "{configuration.adapter.internalUrl}/cb/{order.id}",
            "version": "v0",
        }
    ],
    "total": {"includingVat": 789, "excludingVat": 631.2},
    "attributes": {"source": "web", "numbers": [1, 2.5, None]},
    "someFutureField": {"deeply": {"nested": ["value"]}},
    "anotherNewField": 42,
}


def dump(order: Order) -> dict[str, Any]:
    """Dump the way the bridge serialises orders."""
    return order.model_dump(mode="json", by_alias=True, exclude_unset=True)


def test_rich_order_round_trips_exactly() -> None:
    """A rich order with unknown fields dumps back to the same JSON text."""
    original = copy.deepcopy(RICH_ORDER)
    order = Order.model_validate(RICH_ORDER)
    assert original == RICH_ORDER
    assert json.dumps(dump(order), sort_keys=True) == json.dumps(original, sort_keys=True)


def test_round_trip_through_json_text() -> None:
    """model_validate_json of the served bytes round-trips as well."""
    text = json.dumps(RICH_ORDER)
    order = Order.model_validate_json(text)
    assert json.dumps(dump(order), sort_keys=True) == json.dumps(RICH_ORDER, sort_keys=True)


def test_minimal_order_needs_only_merchant_and_channel() -> None:
    """Everything but merchant and channel is optional."""
    order = Order.model_validate({"merchant": "m", "channel": "c"})
    assert dump(order) == {"merchant": "m", "channel": "c"}
    assert order.status is None


@pytest.mark.parametrize(
    "body", [{"channel": "1"}, {"merchant": "m"}, {"merchant": "", "channel": "1"}]
)
def test_merchant_and_channel_are_required(body: dict[str, Any]) -> None:
    """A missing or empty merchant/channel is a validation error."""
    with pytest.raises(ValidationError):
        Order.model_validate(body)


def test_typed_access_uses_snake_case() -> None:
    """Fields are reachable by their Python names, nested models are parsed."""
    order = Order.model_validate(RICH_ORDER)
    assert order.status is OrderStatus.accepted
    assert order.last_modified == "2019-08-24T14:20:00.1234567Z"
    assert order.cart is not None
    assert order.cart.items is not None
    bundle = order.cart.items[1]
    assert isinstance(bundle, Item)
    assert bundle.items is not None
    assert bundle.items[0].items is not None
    assert bundle.items[0].items[0].name == "Spoon"
    assert order.shippings is not None
    details = order.shippings[0].delivery_details
    assert isinstance(details, DeliveryDetails)
    assert details.class_ == "home"
    assert details.pickup_location is not None
    assert details.pickup_location.address is not None
    assert details.pickup_location.address.postal_code == "11122"
    assert order.notifications is not None
    assert isinstance(order.notifications[0], Notification)
    assert order.notifications[0].schema_ == {"const": "completed"}
    assert order.customer is not None
    assert order.customer.billing is not None
    assert order.customer.billing.street_address2 == "lgh 1101"
    assert order.model_extra == {
        "someFutureField": {"deeply": {"nested": ["value"]}},
        "anotherNewField": 42,
    }


def test_integral_amounts_stay_integral() -> None:
    """1234 stays 1234 (not 1234.0) and 987.2 stays a float."""
    price = Price.model_validate({"includingVat": 1234, "excludingVat": 987.2})
    assert json.dumps(price.model_dump(mode="json", by_alias=True)) == (
        '{"includingVat": 1234, "excludingVat": 987.2}'
    )


@pytest.mark.parametrize("value", ["checkout", "Checkout", "PROCESSING", "removed"])
def test_order_status_is_case_insensitive(value: str) -> None:
    """Order statuses parse in any letter case to the lower-case enum member."""
    state = State.model_validate({"currentStatus": value})
    assert state.current_status == value.lower()
    assert isinstance(state.current_status, OrderStatus)


def test_unknown_order_status_is_rejected() -> None:
    """A status outside the documented enum is a validation error."""
    with pytest.raises(ValidationError):
        State.model_validate({"currentStatus": "teleported"})


def test_order_status_values() -> None:
    """OrderStatus has exactly the six documented values and behaves as str."""
    assert [s.value for s in OrderStatus] == [
        "checkout",
        "processing",
        "accepted",
        "completed",
        "declined",
        "removed",
    ]
    assert OrderStatus.completed == "completed"
    assert f"{OrderStatus.declined}" == "declined"


@pytest.mark.parametrize(
    ("value", "kind"), [("Person", "person"), ("ORGANIZATION", "organization"), (None, None)]
)
def test_customer_type_is_accepted_case_insensitively(value: str | None, kind: str | None) -> None:
    """Customer.type keeps the sent text; kind gives the lower-cased value."""
    customer = Customer.model_validate({"type": value})
    assert customer.type == value
    assert customer.kind == kind


def test_extensible_enums_accept_new_values() -> None:
    """Payment state, product type and similar enums accept values the API adds later."""
    order = Order.model_validate(
        {
            "merchant": "m",
            "channel": "c",
            "payments": [{"state": "refunded", "type": "subscription"}],
            "cart": {"items": [{"productType": "service"}]},
            "hooks": [{"version": "v2"}],
        }
    )
    assert order.payments is not None
    assert order.payments[0].state == "refunded"


def test_populate_by_python_name() -> None:
    """Models can be built with snake_case names and dump camelCase."""
    order = Order(merchant="m", channel="c", last_modified="2020-01-01T00:00:00Z")
    assert dump(order) == {"merchant": "m", "channel": "c", "lastModified": "2020-01-01T00:00:00Z"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-08-24T14:15:22Z", datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)),
        ("2019-08-24T14:15:22.1234567Z", datetime(2019, 8, 24, 14, 15, 22, 123456, tzinfo=UTC)),
        ("2019-08-24T14:15:22.5+00:00", datetime(2019, 8, 24, 14, 15, 22, 500000, tzinfo=UTC)),
        (
            "2019-08-24T16:15:22+02:00",
            datetime(2019, 8, 24, 16, 15, 22, tzinfo=timezone(timedelta(hours=2))),
        ),
    ],
)
def test_parse_timestamp(text: str, expected: datetime) -> None:
    """API date-times parse into aware datetimes, including .NET's 7 fractional digits."""
    assert parse_timestamp(text) == expected


def test_parse_timestamp_requires_zone() -> None:
    """A naive timestamp is rejected."""
    with pytest.raises(ValueError, match="time zone"):
        parse_timestamp("2019-08-24T14:15:22")
