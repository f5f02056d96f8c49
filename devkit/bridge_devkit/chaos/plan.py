"""The chaos run's plan: its size (``Profile``) and, per order, the seeded records to produce.

Per order a valid sequence from ``checkout``: processing ⇄ checkout loops (with same-state
repeats), an ending (accepted → completed, declined, removed, ... or none), sometimes a
``DeleteOrder`` (sometimes repeated); some commands carry ``expectedState``. Poison records
(malformed JSON, unknown state, bad order ids, unknown type, empty value, ...) are mixed in,
keyed by an order (interleaved with its commands), by nothing or by a random key.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.commands import command_to_json
from bridge.order_model import OrderStatus
from bridge_devkit.harness import delete, set_state

MERCHANT, CHANNEL = "norce", "1"
GUARANTEES = ("exactly_once", "at_least_once")


# Endings after the checkout ⇄ processing loops (each starts from processing) and their weights.
ENDINGS: list[tuple[list[str], float]] = [
    (["accepted", "completed"], 0.35),
    (["accepted", "completed", "completed"], 0.05),
    (["accepted"], 0.12),
    (["accepted", "declined"], 0.06),
    (["declined"], 0.10),
    (["removed"], 0.08),
    (["processing"], 0.08),
    ([], 0.16),
]


@dataclass(frozen=True)
class Profile:
    """The size of a run."""

    name: str
    orders: int
    commands: int  # valid commands; poison records come on top
    poison: int
    partitions: int
    produce_s: float
    kills: int  # SIGKILLs in total, one of them while a restarted bridge replays
    two_instances: bool
    catchup_s: float
    pauses: int  # SIGSTOP of an owner with writes in retry backoff, past the session timeout
    expulsions: int  # an owner expelled during a long revoke (hanging write + a joiner)


FULL = Profile("full", 500, 5000, 40, 12, 90.0, 6, True, 480.0, 3, 2)
SHORT = Profile("short", 60, 900, 12, 6, 45.0, 2, True, 150.0, 1, 1)


@dataclass
class Spec:
    """One input record to produce."""

    cid: str
    kind: str  # set | delete | poison
    order_id: str | None
    key: bytes | None
    target: str | None = None  # set: target state
    expected: str | None = None  # expectedState, if any
    value: bytes | None = None  # poison: the raw value
    reason: str | None = None  # poison: the expected dead-letter reason
    has_result: bool = False  # poison: carries a commandId, so a failed result is expected

    def build(self, correlation: str) -> bytes | None:
        if self.kind == "poison" or self.order_id is None:
            return self.value
        extra: dict[str, Any] = {
            "command_id": self.cid,
            "expected_state": OrderStatus(self.expected) if self.expected else None,
            "correlation_id": correlation,
        }
        if self.kind == "delete":
            return command_to_json(delete(self.order_id, **extra))
        return command_to_json(set_state(self.order_id, str(self.target), **extra))

    def describe(self) -> str:
        if self.kind == "poison":
            return f"POISON[{self.reason}]"
        what = "DeleteOrder" if self.kind == "delete" else f"SetOrderState {self.target}"
        return what + (f" (expected {self.expected})" if self.expected else "")


def _has_command_id(value: bytes | None) -> bool:
    if not value:
        return False
    try:
        raw = json.loads(value)
    except ValueError:
        return False
    return isinstance(raw, dict) and isinstance(raw.get("commandId"), str)


def _poison(n: int, cid: str, order_id: str) -> tuple[bytes | None, str]:
    """The n-th kind of poison record: (value, expected dead-letter reason)."""
    base = {
        "type": "SetOrderState",
        "commandId": cid,
        "orderId": order_id,
        "merchant": MERCHANT,
        "channel": CHANNEL,
        "issuedAt": datetime.now(UTC).isoformat(),
        "state": "processing",
    }

    def js(**changes: Any) -> bytes:
        raw = {**base, **changes}
        return json.dumps({k: v for k, v in raw.items() if v is not None}).encode()

    kinds: list[tuple[bytes | None, str]] = [
        (js()[:-7] + b",", "invalid_json"),
        (js(state="shipped"), "unknown_state"),
        (js(orderId="../../etc/passwd"), "bad_order_id"),
        (js(orderId="o_1\r\nX-Injected: yes"), "bad_order_id"),
        (js(type="CancelOrder"), "unknown_type"),
        (b"", "empty_value"),
        (None, "empty_value"),
        (b"[1, 2, 3]", "not_an_object"),
        (b"\xff\xfe" + cid.encode(), "invalid_utf8"),
        (js(issuedAt=None), "missing_field"),
        (js(expectedStat="checkout"), "unknown_field"),
        (js(issuedAt="yesterday"), "bad_timestamp"),
    ]
    return kinds[n % len(kinds)]


def plan_order(rng: random.Random, length: int) -> list[tuple[str, str | None, str | None]]:
    """A valid command sequence for an order in checkout: (kind, target, expected) tuples."""
    ending = rng.choices([e for e, _ in ENDINGS], weights=[w for _, w in ENDINGS])[0]
    deletes = 0
    if rng.random() < 0.3:
        deletes = 2 if rng.random() < 0.35 else 1
    body_len = max(1, length - len(ending) - deletes)
    targets: list[str] = []
    state = "checkout"
    while len(targets) < body_len:
        if targets and rng.random() < 0.1:
            targets.append(state)  # same-state repeat: a no-op
        else:
            state = "processing" if state == "checkout" else "checkout"
            targets.append(state)
    if ending and state == "checkout" and ending[0] != "removed":
        targets.append("processing")
    targets += ending
    steps: list[tuple[str, str | None, str | None]] = []
    previous = "checkout"
    for target in targets:
        expected = previous if rng.random() < 0.2 else None
        steps.append(("set", target, expected))
        previous = target
    for i in range(deletes):
        expected = previous if i == 0 and rng.random() < 0.3 else None
        steps.append(("delete", None, expected))
    return steps


@dataclass
class Plan:
    orders: list[str]
    queues: dict[str, list[Spec]]  # per key (order id or a poison key), in send order
    specs: dict[str, Spec]

    @property
    def total(self) -> int:
        return len(self.specs)


def make_plan(rng: random.Random, profile: Profile, orders: list[str], prefix: str) -> Plan:
    mean = profile.commands / len(orders)
    lengths = [rng.randint(max(2, int(mean * 0.5)), max(3, int(mean * 1.5))) for _ in orders]
    # Nudge the lengths so they add up to the requested number of commands.
    i = 0
    while sum(lengths) != profile.commands:
        j = i % len(lengths)
        if sum(lengths) < profile.commands:
            lengths[j] += 1
        elif lengths[j] > 2:
            lengths[j] -= 1
        i += 1
    queues: dict[str, list[Spec]] = {}
    specs: dict[str, Spec] = {}
    n = 0
    for order_id, length in zip(orders, lengths, strict=True):
        queue: list[Spec] = []
        for kind, target, expected in plan_order(rng, length):
            n += 1
            cid = f"{prefix}-c{n:05d}"
            spec = Spec(cid, kind, order_id, order_id.encode(), target=target, expected=expected)
            queue.append(spec)
            specs[cid] = spec
        queues[order_id] = queue
    for p in range(profile.poison):
        cid = f"{prefix}-p{p:03d}"
        host = rng.choice(orders)
        value, reason = _poison(p, cid, host)
        mode = p % 3
        key = host.encode() if mode == 0 else None if mode == 1 else f"poison-{p}".encode()
        spec = Spec(
            cid, "poison", None, key, value=value, reason=reason, has_result=_has_command_id(value)
        )
        specs[cid] = spec
        if mode == 0:  # interleaved with the order's own commands (same partition)
            queue = queues[host]
            queue.insert(rng.randint(0, len(queue)), spec)
        else:
            queues[f"poison-{p}"] = [spec]
    return Plan(orders, queues, specs)
