"""Deterministic generation of realistic Norce Checkout orders (every field of ``Order``).

Money is computed in integer minor units and converted to major-unit doubles rounded to two
decimals at the end, so every documented invariant holds exactly:

* ``item.originalTotal == quantity * item.price`` (both with and without VAT),
* ``item.total == item.originalTotal - sum(item.discounts[].value)``,
* ``cart.total == sum(top-level item.total)``,
* ``order.total == cart.total + sum(shipping.total)``; the payments cover ``order.total``.

Cart-level campaigns are spread over the items (each item lists its share as a discount) and
``cart.discounts`` summarises all discounts, including a ``shipping`` type discount when the
shipping fee was waived.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

ID_LETTERS = string.ascii_letters
ID_LENGTH = 26

JsonObj = dict[str, Any]


def new_id(rng: random.Random, prefix: str) -> str:
    """Return ``prefix`` followed by exactly 26 random ASCII letters."""
    return prefix + "".join(rng.choices(ID_LETTERS, k=ID_LENGTH))


def format_ts(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with microseconds and a trailing ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def money(minor: int) -> float:
    """Convert integer minor units to a major-unit double rounded to two decimals."""
    return round(minor / 100, 2)


def price(incl: int, excl: int) -> JsonObj:
    """Build a ``Price`` object from minor units."""
    return {"includingVat": money(incl), "excludingVat": money(excl)}


def excl_vat(incl: int, vat_rate: float) -> int:
    """Return the amount without VAT (minor units) for an amount including VAT."""
    return round(incl / (1.0 + vat_rate))


@dataclass(frozen=True, slots=True)
class Market:
    """A country with its culture, currency, VAT rates and a SEK conversion factor."""

    country: str
    culture: str
    currency: str
    vat: dict[str, float]
    sek_factor: float
    cities: tuple[tuple[str, str], ...]
    phone_prefix: str


MARKETS: tuple[Market, ...] = (
    Market(
        "SE",
        "sv-SE",
        "SEK",
        {"standard": 0.25, "reduced": 0.12, "low": 0.06, "none": 0.0},
        1.0,
        (("Stockholm", "111 22"), ("Göteborg", "411 06"), ("Malmö", "211 20"), ("Umeå", "903 26")),
        "+46",
    ),
    Market(
        "NO",
        "nb-NO",
        "NOK",
        {"standard": 0.25, "reduced": 0.15, "low": 0.0, "none": 0.0},
        1.0,
        (("Oslo", "0150"), ("Bergen", "5003"), ("Trondheim", "7011")),
        "+47",
    ),
    Market(
        "DK",
        "da-DK",
        "DKK",
        {"standard": 0.25, "reduced": 0.25, "low": 0.25, "none": 0.0},
        0.7,
        (("København", "1050"), ("Aarhus", "8000"), ("Odense", "5000")),
        "+45",
    ),
    Market(
        "FI",
        "fi-FI",
        "EUR",
        {"standard": 0.255, "reduced": 0.14, "low": 0.10, "none": 0.0},
        0.09,
        (("Helsinki", "00100"), ("Tampere", "33100"), ("Turku", "20100")),
        "+358",
    ),
    Market(
        "DE",
        "de-DE",
        "EUR",
        {"standard": 0.19, "reduced": 0.07, "low": 0.07, "none": 0.0},
        0.09,
        (("Berlin", "10115"), ("Hamburg", "20095"), ("München", "80331")),
        "+49",
    ),
)


@dataclass(frozen=True, slots=True)
class Product:
    """A catalogue entry used to build cart items."""

    name: str
    sku: str
    sek_price: int  # minor units, including VAT
    product_type: str
    unit: str
    vat_class: str
    weight: int
    dims: tuple[int, int, int]
    tags: tuple[str, ...]


CATALOG: tuple[Product, ...] = (
    Product(
        "T-Shirt Organic Cotton",
        "TS-ORG",
        24900,
        "physical",
        "st",
        "standard",
        180,
        (20, 250, 300),
        ("apparel",),
    ),
    Product(
        "Hoodie Heavyweight",
        "HD-HVY",
        79900,
        "physical",
        "st",
        "standard",
        650,
        (60, 300, 350),
        ("apparel",),
    ),
    Product(
        "Trail Running Shoes",
        "SH-TRL",
        129900,
        "physical",
        "st",
        "standard",
        900,
        (130, 210, 330),
        ("shoes", "bulky"),
    ),
    Product(
        "Merino Wool Socks 3-pack",
        "SO-WL3",
        19900,
        "physical",
        "st",
        "standard",
        150,
        (30, 100, 200),
        ("apparel", "letterbox"),
    ),
    Product(
        "Cookbook: The Nordic Kitchen",
        "BK-NRD",
        34900,
        "physical",
        "st",
        "low",
        1100,
        (35, 200, 270),
        ("books",),
    ),
    Product(
        "Dark Roast Coffee Beans 500 g",
        "CF-DRK",
        12900,
        "physical",
        "st",
        "reduced",
        520,
        (70, 110, 230),
        ("food",),
    ),
    Product(
        "Sencha Green Tea",
        "TE-SEN",
        8900,
        "physical",
        "kg",
        "reduced",
        1000,
        (80, 150, 200),
        ("food",),
    ),
    Product(
        "Stoneware Mug",
        "MG-STN",
        14900,
        "physical",
        "st",
        "standard",
        380,
        (95, 90, 120),
        ("fragile",),
    ),
    Product(
        "E-book: Commerce Patterns",
        "EB-CMP",
        14900,
        "digital",
        "st",
        "low",
        0,
        (0, 0, 0),
        ("download",),
    ),
    Product(
        "Gift Card 500",
        "GC-500",
        50000,
        "giftCard",
        "st",
        "none",
        0,
        (0, 0, 0),
        ("giftcard",),
    ),
)

BUNDLES: tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...] = (
    # name, sku, ((catalog index, quantity per bundle), ...)
    # (components share one VAT class, so the bundle's vatRate is exact)
    ("Morning Ritual Box", "BX-MRN", ((5, 2), (6, 1))),
    ("Trail Starter Kit", "BX-TRL", ((2, 1), (3, 2))),
    ("Cosy Evening Bundle", "BX-CSY", ((1, 1), (3, 1), (7, 2))),
)

GIVEN_NAMES = ("Anna", "Erik", "Maja", "Lars", "Sofia", "Oskar", "Ingrid", "Johan", "Elin", "Nils")
FAMILY_NAMES = (
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Olsen",
    "Hansen",
    "Virtanen",
    "Müller",
)
STREETS = ("Storgatan", "Drottninggatan", "Kungsgatan", "Sveavägen", "Hamngatan", "Parkvägen")
COMPANIES = ("Nordic Retail AB", "Fjord Supplies AS", "Lakeside Oy", "Baltic Trading GmbH")
PSPS = (
    ("klarna_checkout_adapter", "Klarna"),
    ("adyen_adapter", "Adyen"),
    ("walley_checkout_adapter", "Walley"),
    ("qliro_checkout_adapter", "Qliro"),
    ("avarda_checkout_adapter", "Avarda"),
)
CARRIERS = (
    ("PostNord", "PostNord MyPack Home", "delivery", "pn-mypack-home", 4900),
    ("PostNord", "PostNord MyPack Collect", "pickup", "pn-mypack-collect", 3900),
    ("Budbee", "Budbee Home Delivery", "delivery", "budbee-home", 5900),
    ("Instabox", "Instabox Locker", "locker", "instabox-locker", 2900),
    ("DHL", "DHL Service Point", "pickup", "dhl-servicepoint", 4500),
)

PAYMENT_STATE_FOR = {
    "checkout": "intent",
    "processing": "processing",
    "accepted": "reserved",
    "completed": "captured",
    "declined": "declined",
    "removed": "removed",
}
SHIPPING_STATE_FOR = {
    "checkout": "intent",
    "processing": "processing",
    "accepted": "confirmed",
    "completed": "confirmed",
    "declined": "failed",
    "removed": "removed",
}
UPSELL_STATE_FOR = {
    "checkout": "created",
    "processing": "created",
    "accepted": "actionRequired",
    "completed": "completed",
    "declined": "failed",
    "removed": "failed",
}


def status_path(rng: random.Random, status: str) -> list[str]:
    """Return a plausible history of statuses ending in ``status`` (oldest first)."""
    prefix = ["checkout"]
    if status != "checkout" and rng.random() < 0.2:
        prefix += ["processing", "checkout"]  # a cancelled payment attempt
    tails = {
        "checkout": [],
        "processing": ["processing"],
        "accepted": ["processing", "accepted"],
        "completed": ["processing", "accepted", "completed"],
        "declined": (
            ["processing", "accepted", "declined"]
            if rng.random() < 0.5
            else ["processing", "declined"]
        ),
        "removed": ["removed"] if rng.random() < 0.5 else ["processing", "removed"],
    }
    return prefix + tails[status]


class OrderFactory:
    """Builds complete orders from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def new_id(self, prefix: str) -> str:
        """Return a fresh id with ``prefix`` drawn from this factory's RNG."""
        return new_id(self.rng, prefix)

    # -- public -----------------------------------------------------------------------------

    def build(
        self,
        *,
        order_id: str,
        merchant: str,
        channel: str,
        now: datetime,
        status: str = "checkout",
        backdate: bool = True,
    ) -> JsonObj:
        """Return a full order ending in ``status``; seeded orders are backdated up to 30 days."""
        rng = self.rng
        market = rng.choice(MARKETS)
        history = status_path(rng, status)
        age = timedelta(seconds=rng.randint(3_600, 30 * 86_400)) if backdate else timedelta(0)
        created = now - age
        moments = [created]
        for _ in history[1:]:
            moments.append(moments[-1] + timedelta(seconds=rng.randint(5, 900)))
        if moments[-1] > now:
            shift = moments[-1] - now
            moments = [m - shift for m in moments]
            created = moments[0]
        transitions = [
            {"status": s, "timeStamp": format_ts(m)} for s, m in zip(history, moments, strict=True)
        ]

        cart, cart_total = self._cart(market, created)
        shipping, shipping_total, shipping_discount = self._shipping(
            market, order_id, merchant, channel, status, cart
        )
        if shipping_discount is not None:
            cart["discounts"].append(shipping_discount)
        total_incl = cart_total[0] + shipping_total[0]
        total_excl = cart_total[1] + shipping_total[1]
        customer = self._customer(market)
        payments = self._payments(
            market, order_id, merchant, channel, status, total_incl, cart, created
        )
        adapter = payments[0]["adapterId"]
        return {
            "id": order_id,
            "merchant": merchant,
            "channel": channel,
            "reference": f"{rng.randint(100000, 999999)}",
            "created": format_ts(created),
            "lastModified": transitions[-1]["timeStamp"],
            "state": {"currentStatus": history[-1], "transitions": transitions},
            "culture": market.culture,
            "currency": market.currency,
            "country": market.country,
            "cart": cart,
            "shippings": [shipping],
            "payments": payments,
            "customer": customer,
            "consents": self._consents(),
            "validations": [
                {
                    "id": self.new_id("oc_"),
                    "adapterId": "norce_adapter",
                    "url": "https://norce-adapter.checkout.example.com/api/v1/validate/{order_id}",
                }
            ],
            "hooks": [
                {
                    "id": self.new_id("oc_"),
                    "adapterId": adapter,
                    "subscribeTo": "/cart",
                    "target": "/payments",
                    "invoke": f"https://{adapter.replace('_', '-')}.checkout.example.com"
                    "/api/v1/hooks/cart-changed/{order_id}",
                    "version": "v0",
                }
            ],
            "notifications": [
                {
                    "id": self.new_id("oc"),
                    "adapterId": "norce_adapter",
                    "reference": f"order-completed-{order_id}",
                    "description": "Tell the platform that the order is completed.",
                    "scope": "/state/currentStatus",
                    "schema": {"const": "completed"},
                    "invoke": "{configuration.adapter.internalUrl}/api/v1/callbacks/orders"
                    "/{order.id}/completed",
                    "version": "v0",
                }
            ],
            "total": price(total_incl, total_excl),
            "attributes": {
                "source": rng.choice(("web", "app", "kiosk")),
                "userAgent": "Mozilla/5.0 (simulated)",
                "campaign": rng.choice(("none", "newsletter", "black-week")),
            },
        }

    # -- parts --------------------------------------------------------------------------------

    def _unit_price(self, market: Market, product: Product) -> int:
        if market.sek_factor == 1.0:
            return product.sek_price
        whole = max(1, round(product.sek_price * market.sek_factor / 100))
        return whole * 100 - 5  # e.g. 22.95

    def _item(
        self,
        market: Market,
        product: Product,
        quantity: int,
        created: datetime,
        *,
        unit_incl: int | None = None,
        unit_excl: int | None = None,
        vat_rate: float | None = None,
    ) -> JsonObj:
        rng = self.rng
        vat = market.vat[product.vat_class] if vat_rate is None else vat_rate
        incl = self._unit_price(market, product) if unit_incl is None else unit_incl
        excl = excl_vat(incl, vat) if unit_excl is None else unit_excl
        slug = product.sku.lower()
        ships = product.product_type in ("physical", "bundle")
        return {
            "id": self.new_id("ci_"),
            "reference": f"{product.sku}-{rng.randint(1000, 9999)}",
            "name": product.name,
            "sku": f"{product.sku}-{rng.randint(10, 99)}",
            "productType": product.product_type,
            "items": [],
            "url": f"https://shop.example.com/p/{slug}",
            "imageUrl": f"https://cdn.example.com/img/{slug}.jpg",
            "quantity": quantity,
            "unit": product.unit,
            "price": price(incl, excl),
            "total": price(incl * quantity, excl * quantity),
            "originalTotal": price(incl * quantity, excl * quantity),
            "vatRate": vat,
            "discounts": [],
            "logistics": {
                "weight": product.weight,
                "height": product.dims[0],
                "width": product.dims[1],
                "length": product.dims[2],
                "tags": list(product.tags),
                "shippingDate": format_ts(
                    created + timedelta(days=rng.randint(1, 3) if ships else 0)
                ),
            },
            "upsell": False,
            "attributes": {"color": rng.choice(("black", "white", "oat", "forest"))}
            if product.product_type == "physical"
            else {},
        }

    def _bundle(self, market: Market, quantity: int, created: datetime) -> JsonObj:
        name, sku, parts = self.rng.choice(BUNDLES)
        children = []
        unit_incl = 0
        unit_excl = 0
        for index, per_bundle in parts:
            child = self._item(market, CATALOG[index], per_bundle * quantity, created)
            child["attributes"] = {"bundleComponent": True, "perBundle": per_bundle}
            child_incl = round(child["price"]["includingVat"] * 100)
            child_excl = round(child["price"]["excludingVat"] * 100)
            unit_incl += child_incl * per_bundle
            unit_excl += child_excl * per_bundle
            children.append(child)
        vat = max(child["vatRate"] for child in children)
        shell = Product(name, sku, 0, "bundle", "st", "standard", 0, (0, 0, 0), ("bundle",))
        parent = self._item(
            market,
            shell,
            quantity,
            created,
            unit_incl=unit_incl,
            unit_excl=unit_excl,
            vat_rate=vat,
        )
        parent["items"] = children
        parent["logistics"]["weight"] = sum(
            c["logistics"]["weight"] * c["attributes"]["perBundle"] for c in children
        )
        parent["logistics"]["height"] = max(c["logistics"]["height"] for c in children)
        parent["logistics"]["width"] = max(c["logistics"]["width"] for c in children)
        parent["logistics"]["length"] = sum(c["logistics"]["length"] for c in children)
        parent["attributes"] = {"bundleId": sku}
        return parent

    def _cart(self, market: Market, created: datetime) -> tuple[JsonObj, tuple[int, int]]:
        rng = self.rng
        items: list[JsonObj] = []
        for product in rng.sample(CATALOG, rng.randint(1, 4)):
            items.append(self._item(market, product, rng.randint(1, 3), created))
        if rng.random() < 0.4:
            items.append(self._bundle(market, rng.randint(1, 2), created))
        if rng.random() < 0.15:
            upsell = self._item(market, CATALOG[3], 1, created)
            upsell["upsell"] = True
            upsell["attributes"] = {"offer": "post-purchase"}
            items.append(upsell)

        # Per item: net amounts in minor units [incl, excl], reduced by each discount.
        net: list[list[int]] = []
        for item in items:
            net.append(
                [
                    round(item["originalTotal"]["includingVat"] * 100),
                    round(item["originalTotal"]["excludingVat"] * 100),
                ]
            )
        summary: dict[tuple[str, str], JsonObj] = {}

        def add_discount(
            index: int, name: str, code: str, reference: str, description: str, incl: int
        ) -> None:
            item = items[index]
            incl = min(incl, net[index][0])
            if incl <= 0:
                return
            excl = min(excl_vat(incl, item["vatRate"]), net[index][1])
            net[index][0] -= incl
            net[index][1] -= excl
            item["discounts"].append(
                {
                    "type": "item",
                    "name": name,
                    "reference": reference,
                    "description": description,
                    "code": code,
                    "value": price(incl, excl),
                    "attributes": {"source": "promotion-engine"},
                }
            )
            entry = summary.setdefault(
                (name, code),
                {
                    "type": "item",
                    "name": name,
                    "reference": reference,
                    "description": description,
                    "code": code,
                    "value": [0, 0],
                    "attributes": {"source": "promotion-engine"},
                },
            )
            entry["value"][0] += incl
            entry["value"][1] += excl

        for index, item in enumerate(items):
            if item["productType"] != "giftCard" and rng.random() < 0.3:
                add_discount(
                    index,
                    "Member price 10%",
                    "MEMBER10",
                    "promo-member-10",
                    "10% off for club members.",
                    round(net[index][0] * 0.10),
                )
        eligible = [i for i, item in enumerate(items) if item["productType"] != "giftCard"]
        if eligible and rng.random() < 0.35:
            campaign = round(rng.choice((50, 100, 150)) * market.sek_factor) * 100
            base = sum(net[i][0] for i in eligible)
            campaign = min(campaign, base // 2)
            remaining = campaign
            for pos, index in enumerate(eligible):
                share = (
                    remaining
                    if pos == len(eligible) - 1
                    else campaign * net[index][0] // max(base, 1)
                )
                remaining -= share
                add_discount(
                    index,
                    "Spend and save",
                    "SAVE",
                    "promo-spend-save",
                    "Campaign discount spread over the cart.",
                    share,
                )

        for item, (incl, excl) in zip(items, net, strict=True):
            item["total"] = price(incl, excl)
        cart_incl = sum(n[0] for n in net)
        cart_excl = sum(n[1] for n in net)
        discounts = []
        for entry in summary.values():
            incl, excl = entry["value"]
            discounts.append({**entry, "value": price(incl, excl)})
        cart = {
            "reference": f"basket-{rng.randint(10_000_000, 99_999_999)}",
            "items": items,
            "discounts": discounts,
            "total": price(cart_incl, cart_excl),
            "attributes": {"priceListSeed": f"{rng.randint(1, 9)}", "basketVersion": 1},
        }
        return cart, (cart_incl, cart_excl)

    def _shipping(
        self,
        market: Market,
        order_id: str,
        merchant: str,
        channel: str,
        status: str,
        cart: JsonObj,
    ) -> tuple[JsonObj, tuple[int, int], JsonObj | None]:
        rng = self.rng
        carrier, name, klass, product_ref, sek_fee = rng.choice(CARRIERS)
        vat = market.vat["standard"]
        fee = sek_fee if market.sek_factor == 1.0 else round(sek_fee * market.sek_factor)
        addon_price = 0 if rng.random() < 0.5 else round(2000 * market.sek_factor)
        gross = fee + addon_price
        waived: JsonObj | None = None
        if cart["total"]["includingVat"] * 100 > 150_000 * market.sek_factor:
            waived = {
                "type": "shipping",
                "name": "Free shipping",
                "reference": "promo-free-shipping",
                "description": "Free shipping on orders above the threshold.",
                "code": "FREESHIP",
                "value": price(gross, excl_vat(gross, vat)),
                "attributes": {"threshold": 1500},
            }
            gross = 0
        city, postal = rng.choice(market.cities)
        shipping = {
            "id": self.new_id("s_"),
            "merchant": merchant,
            "channel": channel,
            "state": SHIPPING_STATE_FOR[status],
            "reference": f"ingrid-{rng.randint(10**8, 10**9 - 1)}",
            "tmsReference": f"TMS{rng.randint(10**9, 10**10 - 1)}",
            "orderId": order_id,
            "adapterId": "ingrid-shipping-adapter",
            "name": name,
            "total": price(gross, excl_vat(gross, vat)),
            "vatRate": vat,
            "deliveryDetails": {
                "carrier": carrier,
                "carrierProductId": f"{carrier.lower()}-{rng.randint(10, 99)}",
                "class": klass,
                "product": {"reference": product_ref, "name": name},
                "pickupLocation": {
                    "reference": f"pl-{rng.randint(100000, 999999)}",
                    "name": f"{carrier} Ombud {rng.choice(STREETS)}",
                    "address": {
                        "streetAddress": f"{rng.choice(STREETS)} {rng.randint(1, 80)}",
                        "city": city,
                        "postalCode": postal,
                        "country": market.country,
                    },
                },
            },
            "addons": [
                {"reference": "leave-at-door", "price": 0.0},
                {"reference": "evening-delivery", "price": money(addon_price)},
            ],
            "attributes": {"deliveryPromise": f"{rng.randint(1, 3)}-{rng.randint(3, 5)} days"},
        }
        return shipping, (gross, excl_vat(gross, vat)), waived

    def _address(self, market: Market, kind: str, given: str, family: str) -> JsonObj:
        rng = self.rng
        city, postal = rng.choice(market.cities)
        org = kind == "organization"
        email_domain = "example.com" if not org else "corp.example.com"
        return {
            "type": kind,
            "givenName": given,
            "familyName": family,
            "careOf": f"c/o {rng.choice(FAMILY_NAMES)}" if rng.random() < 0.1 else "",
            "reference": f"cust-{rng.randint(10000, 99999)}",
            "organizationName": rng.choice(COMPANIES) if org else "",
            "streetAddress": f"{rng.choice(STREETS)} {rng.randint(1, 120)}",
            "streetAddress2": f"lgh {rng.randint(1001, 1399)}" if rng.random() < 0.3 else "",
            "postalCode": postal,
            "city": city,
            "region": "",
            "country": market.country,
            "phone": f"{market.phone_prefix}70{rng.randint(1000000, 9999999)}",
            "email": f"{given.lower()}.{family.lower()}@{email_domain}",
            "nationalIdentificationNumber": ""
            if org
            else f"{rng.randint(50, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
            f"-{rng.randint(1000, 9999)}",
            "organizationIdentificationNumber": f"{rng.randint(100000, 999999)}-"
            f"{rng.randint(1000, 9999)}"
            if org
            else "",
            "attributes": {},
        }

    def _customer(self, market: Market) -> JsonObj:
        rng = self.rng
        kind = "organization" if rng.random() < 0.15 else "person"
        given, family = rng.choice(GIVEN_NAMES), rng.choice(FAMILY_NAMES)
        billing = self._address(market, kind, given, family)
        if rng.random() < 0.8:
            shipping = dict(billing)
            shipping["attributes"] = {}
        else:
            shipping = self._address(market, kind, rng.choice(GIVEN_NAMES), family)
        return {
            "billing": billing,
            "shipping": shipping,
            "type": kind,
            "attributes": {"loyaltyTier": rng.choice(("none", "silver", "gold"))},
        }

    def _consents(self) -> list[JsonObj]:
        return [
            {
                "id": "ci_terms",
                "checked": True,
                "text": "I accept the terms and conditions.",
                "required": True,
            },
            {
                "id": "ci_newsletter",
                "checked": self.rng.random() < 0.4,
                "text": "Send me the newsletter.",
                "required": False,
            },
        ]

    def _payments(
        self,
        market: Market,
        order_id: str,
        merchant: str,
        channel: str,
        status: str,
        total_incl: int,
        cart: JsonObj,
        created: datetime,
    ) -> list[JsonObj]:
        rng = self.rng
        adapter, psp = rng.choice(PSPS)
        payments: list[JsonObj] = []
        remaining = total_incl
        if total_incl > 20_000 and rng.random() < 0.2:
            voucher_amount = min(round(20_000 * market.sek_factor), total_incl // 2)
            remaining -= voucher_amount
            payments.append(
                self._payment(
                    "norce_giftcard_adapter",
                    "Norce Gift Card",
                    "voucher",
                    voucher_amount,
                    voucher_amount + rng.randint(0, 30_000),
                    market,
                    order_id,
                    merchant,
                    channel,
                    status,
                    created,
                )
            )
        payments.insert(
            0,
            self._payment(
                adapter,
                psp,
                "default",
                remaining,
                remaining,
                market,
                order_id,
                merchant,
                channel,
                status,
                created,
            ),
        )
        return payments

    def _payment(
        self,
        adapter: str,
        name: str,
        kind: str,
        amount: int,
        upper: int,
        market: Market,
        order_id: str,
        merchant: str,
        channel: str,
        status: str,
        created: datetime,
    ) -> JsonObj:
        rng = self.rng
        base = f"https://{adapter.replace('_', '-')}.checkout.example.com/api/v1/orders/{order_id}"
        return {
            "id": self.new_id("p_"),
            "adapterId": adapter,
            "name": name,
            "merchant": merchant,
            "channel": channel,
            "currency": market.currency,
            "type": kind,
            "orderId": order_id,
            "amount": money(amount),
            "upperLimitAmount": money(upper),
            "state": PAYMENT_STATE_FOR[status],
            "reference": "".join(rng.choices("0123456789abcdef", k=32)),
            "attributes": {"pspMerchantId": f"M{rng.randint(1000, 9999)}"},
            "actions": [
                {
                    "id": self.new_id("pa_"),
                    "adapterId": adapter,
                    "type": "capture",
                    "url": f"{base}/capture",
                },
                {
                    "id": self.new_id("pa_"),
                    "adapterId": adapter,
                    "type": "refund",
                    "url": f"{base}/refund",
                },
            ],
            "recurring": {
                "token": "".join(rng.choices(ID_LETTERS + "0123456789", k=24)),
                "description": "Stored card for subscription renewals",
                "attributes": {"scheme": rng.choice(("visa", "mastercard"))},
            },
            "upsell": {
                "eligible": status in ("accepted", "checkout", "processing"),
                "expiration": format_ts(created + timedelta(hours=1)),
                "transactions": [
                    {
                        "id": f"{rng.randint(10**7, 10**8 - 1)}",
                        "state": UPSELL_STATE_FOR[status],
                        "attributes": {"offer": "post-purchase"},
                    }
                ],
                "attributes": {},
            },
        }
