"""In-memory order store of the simulator: orders scoped by merchant/channel, status history."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from norce_simulator.data import JsonObj, OrderFactory, format_ts, money

WRITEABLE_FIELDS = (
    "reference",
    "state",
    "culture",
    "currency",
    "country",
    "cart",
    "customer",
    "consents",
    "validations",
    "hooks",
    "notifications",
    "total",
    "attributes",
)


def dump_json(value: Any) -> bytes:
    """Serialise ``value`` compactly as UTF-8 JSON bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class ConflictError(Exception):
    """Raised when a new order would reuse the cart reference of an existing order."""


_DYNAMIC_FIELDS = frozenset({"lastModified", "state"})


class StoredOrder:
    """One order plus its owner and a cached JSON serialisation.

    The serialisation is cached in pieces: a status change only re-serialises ``state`` and
    ``lastModified``, which keeps GET fast after PUTs.
    """

    __slots__ = ("_json", "_pieces", "channel", "data", "merchant")

    def __init__(self, merchant: str, channel: str, data: JsonObj) -> None:
        self.merchant = merchant
        self.channel = channel
        self.data = data
        self._json: bytes | None = None
        self._pieces: list[tuple[str, bytes | None]] | None = None

    @property
    def id(self) -> str:
        """The order id."""
        value: str = self.data["id"]
        return value

    @property
    def status(self) -> str:
        """The current status."""
        value: str = self.data["state"]["currentStatus"]
        return value

    def json_bytes(self) -> bytes:
        """Return the order as served (compact JSON, cached until the next write)."""
        if self._json is None:
            pieces = self._pieces
            if pieces is None:
                pieces = self._pieces = [
                    (key, None if key in _DYNAMIC_FIELDS else _member(key, value))
                    for key, value in self.data.items()
                ]
            data = self.data
            self._json = (
                b"{"
                + b",".join(
                    piece if piece is not None else _member(key, data[key]) for key, piece in pieces
                )
                + b"}"
            )
        return self._json

    def touched(self, *, state_only: bool = True) -> None:
        """Drop the cached serialisation after a write (all of it unless ``state_only``)."""
        self._json = None
        if not state_only:
            self._pieces = None


def _member(key: str, value: Any) -> bytes:
    return dump_json(key) + b":" + dump_json(value)


class OrderStore:
    """Holds orders, their status history (kept after deletion) and the cart-reference index."""

    def __init__(self, rng: random.Random, clock: Callable[[], datetime]) -> None:
        self.factory = OrderFactory(rng)
        self.clock = clock
        self.orders: dict[str, StoredOrder] = {}
        self.histories: dict[str, list[str]] = {}
        self._cart_refs: dict[tuple[str, str, str], str] = {}
        self._last: datetime | None = None

    def __len__(self) -> int:
        return len(self.orders)

    def now(self) -> datetime:
        """Return the clock's time, bumped by 1 µs if needed so writes are strictly ordered."""
        moment = self.clock()
        if self._last is not None and moment <= self._last:
            moment = self._last + timedelta(microseconds=1)
        self._last = moment
        return moment

    def _unique_id(self, prefix: str) -> str:
        while True:
            candidate = self.factory.new_id(prefix)
            if candidate not in self.orders and candidate not in self.histories:
                return candidate

    def _index(self, order: StoredOrder) -> None:
        ref = _cart_reference(order.data)
        if ref:
            self._cart_refs[(order.merchant, order.channel, ref)] = order.id

    def _unindex(self, order: StoredOrder) -> None:
        ref = _cart_reference(order.data)
        if ref:
            key = (order.merchant, order.channel, ref)
            if self._cart_refs.get(key) == order.id:
                del self._cart_refs[key]

    def seed(self, count: int, merchant: str, channel: str, statuses: Sequence[str]) -> list[str]:
        """Add ``count`` generated orders with statuses drawn from ``statuses``; return ids."""
        ids = []
        now = self.clock()
        for _ in range(count):
            order_id = self._unique_id("o_")
            status = statuses[0] if len(statuses) == 1 else self.factory.rng.choice(statuses)
            data = self.factory.build(
                order_id=order_id, merchant=merchant, channel=channel, now=now, status=status
            )
            stored = StoredOrder(merchant, channel, data)
            self.orders[order_id] = stored
            self.histories[order_id] = [t["status"] for t in data["state"]["transitions"]]
            self._index(stored)
            ids.append(order_id)
        return ids

    def create(self, merchant: str, channel: str, body: JsonObj) -> str:
        """Create an order in ``checkout`` from the writeable fields of ``body``; return its id.

        ``body`` must already be bound to the model (``model.bind_order``). Fields that are
        absent are generated; read-only fields in ``body`` are ignored. The order is complete
        before it becomes visible: nothing is stored if building it fails.
        """
        ref = _cart_reference(body)
        if ref and (merchant, channel, ref) in self._cart_refs:
            raise ConflictError(f"An order with cart reference '{ref}' already exists.")
        now = self.now()
        order_id = self._unique_id("o_")
        data = self.factory.build(
            order_id=order_id,
            merchant=merchant,
            channel=channel,
            now=now,
            status="checkout",
            backdate=False,
        )
        for name in WRITEABLE_FIELDS:
            if name in body and name != "state":
                data[name] = copy.deepcopy(body[name])
        stamp = format_ts(now)
        data["created"] = stamp
        data["lastModified"] = stamp
        data["state"] = {
            "currentStatus": "checkout",
            "transitions": [{"status": "checkout", "timeStamp": stamp}],
        }
        self._complete_created(data, given=set(body))
        stored = StoredOrder(merchant, channel, data)
        stored.json_bytes()  # fails here, before the order is visible, if it cannot be served
        self._index(stored)
        self.orders[order_id] = stored
        self.histories[order_id] = ["checkout"]
        return order_id

    def _complete_created(self, data: JsonObj, given: set[str]) -> None:
        """Fill ids and totals that a caller-supplied body left out, keeping content coherent."""
        for collection, prefix in (
            ("validations", "oc_"),
            ("hooks", "oc_"),
            ("notifications", "oc"),
        ):
            for entry in data.get(collection) or []:
                # Callback and Hook ids are read-only (server-generated); a Notification id
                # is writeable in v0 and kept when given.
                if isinstance(entry, dict) and (
                    collection != "notifications" or not entry.get("id")
                ):
                    entry["id"] = self.factory.new_id(prefix)
        cart = data.get("cart")
        if "cart" in given and isinstance(cart, dict):
            for item in _walk_items(cart.get("items") or []):
                if not item.get("id"):
                    item["id"] = self.factory.new_id("ci_")
            if "total" not in cart:
                cart["total"] = _sum_prices(
                    item.get("total") for item in cart.get("items") or [] if isinstance(item, dict)
                )
        if "total" not in given and isinstance(cart, dict):
            parts = [cart.get("total")] + [s.get("total") for s in data.get("shippings") or []]
            data["total"] = _sum_prices(parts)
        if "currency" in given:
            for payment in data.get("payments") or []:
                payment["currency"] = data["currency"]
        if "total" in given or "cart" in given:
            total = data.get("total")
            amount = total.get("includingVat") if isinstance(total, dict) else None
            payments = data.get("payments") or []
            if isinstance(amount, int | float) and payments:
                payments[0]["amount"] = round(float(amount), 2)
                payments[0]["upperLimitAmount"] = round(float(amount), 2)
                del payments[1:]

    def get(self, order_id: str, merchant: str, channel: str) -> StoredOrder | None:
        """Return the order if it exists under ``merchant``/``channel``."""
        order = self.orders.get(order_id)
        if order is None or order.merchant != merchant or order.channel != channel:
            return None
        return order

    def set_status(self, order: StoredOrder, status: str) -> None:
        """Record a status change: new transition, ``lastModified``, history."""
        stamp = format_ts(self.now())
        state = order.data["state"]
        state["currentStatus"] = status
        state.setdefault("transitions", []).append({"status": status, "timeStamp": stamp})
        order.data["lastModified"] = stamp
        order.touched()
        self.histories.setdefault(order.id, []).append(status)

    def delete(self, order: StoredOrder) -> None:
        """Hard-delete the order; its history keeps a final ``deleted`` entry."""
        self._unindex(order)
        del self.orders[order.id]
        self.histories.setdefault(order.id, []).append("deleted")

    def scoped(self, merchant: str, channel: str) -> Iterable[StoredOrder]:
        """Iterate the orders of one merchant and channel."""
        return (o for o in self.orders.values() if o.merchant == merchant and o.channel == channel)


def _cart_reference(data: JsonObj) -> str | None:
    cart = data.get("cart")
    ref = cart.get("reference") if isinstance(cart, dict) else None
    return ref if isinstance(ref, str) and ref else None


def _walk_items(items: Iterable[Any]) -> Iterable[JsonObj]:
    for item in items:
        if isinstance(item, dict):
            yield item
            yield from _walk_items(item.get("items") or [])


def _sum_prices(prices: Iterable[Any]) -> JsonObj:
    incl = 0
    excl = 0
    for value in prices:
        if isinstance(value, dict):
            incl += round(float(value.get("includingVat") or 0) * 100)
            excl += round(float(value.get("excludingVat") or 0) * 100)
    return {"includingVat": money(incl), "excludingVat": money(excl)}
