"""Pydantic models of the Norce Checkout ``Order`` (API v0), as a tolerant reader.

Design rules, so that an order served by the API survives a read → dump round trip unchanged
(``order.model_dump(mode="json", by_alias=True, exclude_unset=True)`` equals the input):

* Every model keeps unknown fields (``extra="allow"``): the API may add fields at any time.
* Every field is optional except ``Order.merchant`` and ``Order.channel``.
* Enums the API may extend (payment state, product type, customer type, ...) are plain ``str``.
  Only ``OrderStatus`` is an enum; it is matched case-insensitively.
  ``Customer.type`` is kept as sent (the docs show ``"Person"`` for the enum value ``person``);
  use ``Customer.kind`` for the lower-cased value.
* Money amounts are ``int | float`` so that ``1234`` stays ``1234`` (not ``1234.0``).
* Date-times are kept as the strings the API sent (``Timestamp``): parsing and re-serialising
  would change their text (.NET writes 7 fractional digits, ``+00:00`` vs ``Z``).
  ``parse_timestamp`` turns one into an aware ``datetime``.
* Format patterns in the docs (culture, currency, country) are not enforced.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "Addon",
    "Address",
    "Callback",
    "Cart",
    "Consent",
    "Customer",
    "DeliveryDetails",
    "Discount",
    "Hook",
    "Item",
    "Logistics",
    "Notification",
    "Number",
    "Order",
    "OrderStatus",
    "Payment",
    "PaymentAction",
    "PickupLocation",
    "PickupLocationAddress",
    "Price",
    "Product",
    "Recurring",
    "Shipping",
    "State",
    "Timestamp",
    "Transition",
    "Upsell",
    "UpsellTransaction",
    "parse_timestamp",
]

Number: TypeAlias = int | float
"""A JSON number; ``int`` first so integral amounts round-trip without a ``.0``."""

Timestamp: TypeAlias = str
"""An ISO 8601 / RFC 3339 date-time, kept verbatim."""

Attributes: TypeAlias = dict[str, Any]


def parse_timestamp(value: Timestamp) -> datetime:
    """Parse an API date-time (``Z`` suffix, up to 7 fractional digits) into an aware datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    date_part, sep, rest = text.partition("T")
    if sep and "." in rest:
        # Python accepts at most 6 fractional digits; .NET writes 7.
        seconds, _, fraction_and_zone = rest.partition(".")
        digits = ""
        for ch in fraction_and_zone:
            if not ch.isdigit():
                break
            digits += ch
        zone = fraction_and_zone[len(digits) :]
        text = f"{date_part}T{seconds}.{digits[:6].ljust(6, '0')}{zone}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp has no time zone: {value!r}")
    return parsed


class OrderStatus(StrEnum):
    """The order state (``State.currentStatus``)."""

    checkout = "checkout"
    processing = "processing"
    accepted = "accepted"
    completed = "completed"
    declined = "declined"
    removed = "removed"

    @classmethod
    def _missing_(cls, value: object) -> OrderStatus | None:
        if isinstance(value, str):
            lowered = value.strip().lower()
            for member in cls:
                if member.value == lowered:
                    return member
        return None


class NorceModel(BaseModel):
    """Base of every Norce model: camelCase aliases, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
    )


class Price(NorceModel):
    """An amount in the order currency, major units."""

    including_vat: Number | None = None
    excluding_vat: Number | None = None


class Transition(NorceModel):
    """One entry of the state history."""

    status: OrderStatus | None = None
    time_stamp: Timestamp | None = None


class State(NorceModel):
    """The order state and its history (oldest first)."""

    current_status: OrderStatus | None = None
    transitions: list[Transition] | None = None


class Logistics(NorceModel):
    """Physical properties of an item (grams, millimetres)."""

    weight: int | None = None
    height: int | None = None
    width: int | None = None
    length: int | None = None
    tags: list[str] | None = None
    shipping_date: Timestamp | None = None


class Discount(NorceModel):
    """A discount on an item or the cart."""

    type: str | None = None
    name: str | None = None
    reference: str | None = None
    description: str | None = None
    code: str | None = None
    value: Price | None = None
    attributes: Attributes | None = None


class Item(NorceModel):
    """A cart item; a bundle carries its children in ``items``."""

    id: str | None = None
    reference: str | None = None
    name: str | None = None
    sku: str | None = None
    product_type: str | None = None
    items: list[Item] | None = None
    url: str | None = None
    image_url: str | None = None
    quantity: int | None = None
    unit: str | None = None
    price: Price | None = None
    total: Price | None = None
    original_total: Price | None = None
    vat_rate: Number | None = None
    discounts: list[Discount] | None = None
    logistics: Logistics | None = None
    upsell: bool | None = None
    attributes: Attributes | None = None


class Cart(NorceModel):
    """The cart; ``total`` excludes shipping."""

    reference: str | None = None
    items: list[Item] | None = None
    discounts: list[Discount] | None = None
    total: Price | None = None
    attributes: Attributes | None = None


class Address(NorceModel):
    """A billing or shipping address."""

    type: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    care_of: str | None = None
    reference: str | None = None
    organization_name: str | None = None
    street_address: str | None = None
    street_address2: str | None = None
    postal_code: str | None = None
    city: str | None = None
    region: str | None = None
    country: str | None = None
    phone: str | None = None
    email: str | None = None
    national_identification_number: str | None = None
    organization_identification_number: str | None = None
    attributes: Attributes | None = None


class Customer(NorceModel):
    """The customer; ``type`` is ``person`` or ``organization`` in any letter case."""

    billing: Address | None = None
    shipping: Address | None = None
    type: str | None = None
    attributes: Attributes | None = None

    @property
    def kind(self) -> str | None:
        """The customer type lower-cased (``"Person"`` → ``"person"``)."""
        return self.type.lower() if self.type is not None else None


class Consent(NorceModel):
    """A consent; ``required`` ones must be checked before ``processing``."""

    id: str | None = None
    checked: bool | None = None
    text: str | None = None
    required: bool | None = None


class Callback(NorceModel):
    """A validation ("order action") callback, POSTed to ``url``."""

    id: str | None = None
    adapter_id: str | None = None
    url: str | None = None


class Hook(NorceModel):
    """A synchronous hook that answers with JSON Patch operations."""

    id: str | None = None
    adapter_id: str | None = None
    subscribe_to: str | None = None
    target: str | None = None
    invoke: str | None = None
    version: str | None = None


class Notification(NorceModel):
    """An asynchronous notification fired when ``scope`` changes and matches ``schema``."""

    id: str | None = None
    adapter_id: str | None = None
    reference: str | None = None
    description: str | None = None
    scope: str | None = None
    # ``schema`` would shadow a (deprecated) BaseModel attribute.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    invoke: str | None = None
    version: str | None = None


class Product(NorceModel):
    """A carrier product."""

    reference: str | None = None
    name: str | None = None


class PickupLocationAddress(NorceModel):
    """The address of a pickup location."""

    street_address: str | None = None
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None


class PickupLocation(NorceModel):
    """A pickup point."""

    reference: str | None = None
    name: str | None = None
    address: PickupLocationAddress | None = None


class DeliveryDetails(NorceModel):
    """Carrier and delivery option of a shipping."""

    carrier: str | None = None
    carrier_product_id: str | None = None
    class_: str | None = Field(default=None, alias="class")
    product: Product | None = None
    pickup_location: PickupLocation | None = None


class Addon(NorceModel):
    """A shipping add-on."""

    reference: str | None = None
    price: Number | None = None


class Shipping(NorceModel):
    """A shipping attached to the order."""

    id: str | None = None
    merchant: str | None = None
    channel: str | None = None
    state: str | None = None
    reference: str | None = None
    tms_reference: str | None = None
    order_id: str | None = None
    adapter_id: str | None = None
    name: str | None = None
    total: Price | None = None
    vat_rate: Number | None = None
    delivery_details: DeliveryDetails | None = None
    addons: list[Addon] | None = None
    attributes: Attributes | None = None


class PaymentAction(NorceModel):
    """An after-payment action of a payment."""

    id: str | None = None
    adapter_id: str | None = None
    type: str | None = None
    url: str | None = None


class Recurring(NorceModel):
    """Recurring-payment data."""

    token: str | None = None
    description: str | None = None
    attributes: Attributes | None = None


class UpsellTransaction(NorceModel):
    """One upsell transaction at the PSP."""

    id: str | None = None
    state: str | None = None
    attributes: Attributes | None = None


class Upsell(NorceModel):
    """Upsell eligibility of a payment."""

    eligible: bool | None = None
    expiration: Timestamp | None = None
    transactions: list[UpsellTransaction] | None = None
    attributes: Attributes | None = None


class Payment(NorceModel):
    """A payment attached to the order."""

    id: str | None = None
    adapter_id: str | None = None
    name: str | None = None
    merchant: str | None = None
    channel: str | None = None
    currency: str | None = None
    type: str | None = None
    order_id: str | None = None
    amount: Number | None = None
    upper_limit_amount: Number | None = None
    state: str | None = None
    reference: str | None = None
    attributes: Attributes | None = None
    actions: list[PaymentAction] | None = None
    recurring: Recurring | None = None
    upsell: Upsell | None = None


class Order(NorceModel):
    """A Norce Checkout order; ``total`` includes shipping fees."""

    id: str | None = None
    merchant: str = Field(min_length=1)
    channel: str = Field(min_length=1)
    reference: str | None = None
    created: Timestamp | None = None
    last_modified: Timestamp | None = None
    state: State | None = None
    culture: str | None = None
    currency: str | None = None
    country: str | None = None
    cart: Cart | None = None
    shippings: list[Shipping] | None = None
    payments: list[Payment] | None = None
    customer: Customer | None = None
    consents: list[Consent] | None = None
    validations: list[Callback] | None = None
    hooks: list[Hook] | None = None
    notifications: list[Notification] | None = None
    total: Price | None = None
    attributes: Attributes | None = None

    @property
    def status(self) -> OrderStatus | None:
        """The current order status, if the order has a state."""
        return self.state.current_status if self.state is not None else None
