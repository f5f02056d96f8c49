"""The benchmark's lean reference pipeline maps and encodes snapshots exactly like the bridge.

``bridge_devkit.throughput.reference_avro`` is the reference's own code (not ``bridge.snapshot``
or ``bridge.codec``); the benchmark compares its published bytes with the bridge codec's after
every reference run. This checks the same property on the simulator's order generator, with the
cases a generated order does not have (unknown keys, explicit nulls, no correlation id), so a
divergence shows up here first, without a broker.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from bridge_devkit.throughput.reference_avro import (
    Encoder,
    SnapshotMapper,
    UnmappableOrder,
    rfc3339_now,
)
from norce_simulator.data import OrderFactory

from bridge.codec import AvroCodec
from bridge.events import parse_rfc3339, snapshot_from_order

CODEC = AvroCodec.load()
SNAPSHOT = Encoder("OrderSnapshot")
MAPPER = SnapshotMapper(SNAPSHOT.parsed)


def orders(count: int, seed: int) -> list[dict[str, Any]]:
    factory = OrderFactory(random.Random(seed))
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        built = factory.build(order_id=f"o_ref{i:04d}", merchant="norce", channel="1", now=now)
        out.append(orjson.loads(orjson.dumps(built)))  # JSON as the API serves it
    return out


def bridge_bytes(order: dict[str, Any], fetched_at: str, cid: str, corr: str | None) -> bytes:
    moment = parse_rfc3339(fetched_at)
    assert moment is not None
    record = snapshot_from_order(order, fetched_at=moment, command_id=cid, correlation_id=corr)
    return CODEC.encode("OrderSnapshot", record)


def reference_bytes(order: dict[str, Any], fetched_at: str, cid: str, corr: str | None) -> bytes:
    return SNAPSHOT.encode(MAPPER(order, fetched_at, cid, corr))


def test_same_fingerprints_as_the_bridge_codec() -> None:
    for name in ("OrderSnapshot", "OrderStateChanged", "CommandResult"):
        encoder = Encoder(name)
        assert encoder.header[2:] == CODEC.fingerprint(name)
        assert encoder.full_name == CODEC.schema_full_name(name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_orders_encode_to_the_bridges_bytes(seed: int) -> None:
    for i, order in enumerate(orders(40, seed)):
        fetched_at = rfc3339_now()
        corr = None if i % 3 == 0 else f"corr-{i}"
        ours = reference_bytes(order, fetched_at, f"c-{i}", corr)
        assert ours == bridge_bytes(order, fetched_at, f"c-{i}", corr), order["id"]


def test_unknown_keys_and_explicit_nulls_go_to_extra_like_the_bridge() -> None:
    order = orders(1, 9)[0]
    order["addedLater"] = {"b": [1, None], "a": "x"}
    order["reference"] = None
    order["state"]["transitions"][0]["by"] = "someone"
    if order.get("cart"):
        order["cart"]["note"] = 5
        order["cart"]["attributes"] = {"z": 1, "a": {"y": 2, "b": 3}}
    fetched_at = rfc3339_now()
    ours = reference_bytes(order, fetched_at, "c-x", "k")
    assert ours == bridge_bytes(order, fetched_at, "c-x", "k")


def test_a_value_of_the_wrong_type_is_not_mapped() -> None:
    order = orders(1, 4)[0]
    order["state"]["currentStatus"] = 7
    with pytest.raises(UnmappableOrder):
        MAPPER(order, rfc3339_now(), "c", None)
