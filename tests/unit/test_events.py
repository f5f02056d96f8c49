"""Unit tests of bridge.events: lossless order snapshots, event and result builders."""

from __future__ import annotations

import copy
import json
import math
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.codec import HEADER_SIZE, AvroCodec
from bridge.events import (
    OUTCOMES,
    SNAPSHOT_SCHEMA_VERSION,
    SnapshotMappingError,
    command_result,
    event_id,
    format_rfc3339,
    latest_transition_at,
    order_deleted_event,
    order_from_snapshot,
    parse_rfc3339,
    snapshot_from_order,
    state_changed_event,
)
from bridge.snapshot import TaggedRecord, order_record_checked, tagged_snapshot_from_order

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
FIXTURE = ROOT / "tests" / "fixtures" / "order_full.json"
OPENAPI = ROOT / "tests" / "norce-order-api.openapi.json"
NOW = datetime(2026, 1, 12, 8, 21, 30, 123456, tzinfo=UTC)
MINIMAL = {"id": "o_x", "merchant": "norce", "channel": "1"}


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    """The codec over the project's schemas."""
    return AvroCodec.load(SCHEMAS)


@pytest.fixture
def order() -> dict[str, Any]:
    """A fresh copy of the full fixture order."""
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return loaded


def snap(order: Any) -> dict[str, Any]:
    """snapshot_from_order with fixed metadata."""
    return snapshot_from_order(order, fetched_at=NOW, command_id="cmd-1", correlation_id="corr-1")


def tagged_snap(order: Any) -> dict[str, Any]:
    """tagged_snapshot_from_order (what the bridge encodes) with fixed metadata."""
    return tagged_snapshot_from_order(
        order, fetched_at=NOW, command_id="cmd-1", correlation_id="corr-1"
    )


def through_avro(codec: AvroCodec, order: Any) -> dict[str, Any]:
    """Order JSON -> snapshot -> Avro bytes -> snapshot -> order JSON."""
    name, record = codec.decode(codec.encode("OrderSnapshot", snap(order)))
    assert name == "OrderSnapshot"
    return order_from_snapshot(record)


def assert_json_identical(actual: Any, expected: Any, path: str = "$") -> None:
    """Deep equality that also checks JSON types; only an int may come back as an equal float."""
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        assert type(actual) is type(expected), path
        assert actual == expected, path
    elif isinstance(expected, int | float):
        assert isinstance(actual, int | float), path
        assert not isinstance(actual, bool), path
        if isinstance(expected, float):
            assert isinstance(actual, float), path
        assert actual == expected, path
    elif isinstance(expected, list):
        assert isinstance(actual, list), path
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_json_identical(a, e, f"{path}[{i}]")
    else:
        assert isinstance(actual, dict), path
        assert set(actual) == set(expected), f"{path}: keys {set(actual) ^ set(expected)}"
        for key in expected:
            assert_json_identical(actual[key], expected[key], f"{path}.{key}")


# ----------------------------------------------------------------------------- round trips


def test_fixture_round_trips_through_avro(codec: AvroCodec, order: dict[str, Any]) -> None:
    """The full fixture survives order -> snapshot -> Avro -> snapshot -> order unchanged."""
    original = copy.deepcopy(order)
    rebuilt = through_avro(codec, order)
    assert rebuilt == original
    assert_json_identical(rebuilt, original)
    assert order == original  # the input is not mutated


def test_snapshot_record_round_trips_exactly(codec: AvroCodec, order: dict[str, Any]) -> None:
    """decode(encode(snapshot)) returns the very same snapshot record."""
    record = snap(order)
    assert codec.decode(codec.encode("OrderSnapshot", record)) == ("OrderSnapshot", record)


def test_int_fields_stay_ints_and_money_becomes_float(
    codec: AvroCodec, order: dict[str, Any]
) -> None:
    """Quantities and logistics come back as ints, integral money amounts as equal floats."""
    rebuilt = through_avro(codec, order)
    item = rebuilt["cart"]["items"][0]
    assert type(item["quantity"]) is int
    assert type(item["logistics"]["weight"]) is int
    assert order["cart"]["items"][0]["price"]["includingVat"] == 299
    assert type(item["price"]["includingVat"]) is float
    assert item["price"]["includingVat"] == 299.0
    assert type(rebuilt["payments"][1]["amount"]) is float


def test_minimal_order_round_trips(codec: AvroCodec) -> None:
    """An order with only id, merchant and channel maps to nulls and back."""
    record = snap(MINIMAL)
    assert record["cart"] is None
    assert record["shippings"] is None
    assert record["extra"] is None
    assert record["lastModifiedMillis"] is None
    assert through_avro(codec, MINIMAL) == MINIMAL


def test_absent_empty_and_null_stay_distinct(codec: AvroCodec) -> None:
    """Absent keys, empty arrays and explicit nulls come back exactly as they were."""
    order: dict[str, Any] = {
        **MINIMAL,
        "shippings": [],
        "payments": None,
        "cart": {"items": [{"id": "ci_1", "items": [], "discounts": None}], "attributes": {}},
    }
    record = snap(order)
    assert record["shippings"] == []
    assert record["payments"] is None
    assert json.loads(record["extra"]) == {"payments": None}
    assert json.loads(record["cart"]["items"][0]["extra"]) == {"discounts": None}
    assert record["cart"]["attributes"] == "{}"
    assert_json_identical(through_avro(codec, order), order)


def test_unknown_fields_are_kept_per_level(order: dict[str, Any]) -> None:
    """Unknown keys land in the extra field of the object that carried them."""
    record = snap(order)
    assert json.loads(record["extra"]) == {
        "archivedAt": None,
        "checkoutVersion": "2.3.0",
        "experimentalFlags": {"maxItems": 50, "splitShipments": False},
    }
    assert json.loads(record["state"]["extra"]) == {"stateVersion": 6}
    assert json.loads(record["state"]["transitions"][2]["extra"]) == {"reason": "payment-cancelled"}
    bundle = record["cart"]["items"][1]
    assert bundle["productType"] == "bundle"
    assert json.loads(bundle["items"][1]["extra"]) == {
        "componentSlot": 2,
        "nutrition": {"caffeine": "high", "per100g": {"kcal": 2.0}},
    }
    assert json.loads(bundle["discounts"][0]["extra"]) == {"reference": None}
    assert json.loads(bundle["discounts"][0]["value"]["extra"]) == {"currencyRate": 1.0}
    pickup = record["shippings"][0]["deliveryDetails"]["pickupLocation"]
    assert json.loads(pickup["address"]["extra"]) == {
        "coordinates": {"lat": 59.3326, "lng": 18.0649}
    }
    assert json.loads(record["customer"]["shipping"]["extra"]) == {"doorCode": "1234"}
    assert json.loads(record["payments"][0]["upsell"]["transactions"][0]["extra"]) == {"amount": 79}
    assert record["cart"]["items"][0]["extra"] == '{"warehouseId":"wh-sto-2"}'


def test_attributes_and_schema_are_compact_sorted_json(order: dict[str, Any]) -> None:
    """Free-form objects become compact, key-sorted, non-ASCII-escaped JSON text."""
    record = snap(order)
    assert record["cart"]["items"][0]["attributes"] == (
        '{"color":"oat","printOnDemand":false,"size":"XL"}'
    )
    assert record["attributes"] == (
        '{"campaign":"black-week","nested":{"a":[1,2.5,"x",null,true],"ü":"ünïcödé"},'
        '"source":"web","userAgent":"Mozilla/5.0 (simulated)"}'
    )
    assert record["notifications"][0]["schema"] == '{"const":"completed"}'
    assert record["notifications"][1]["schema"] == "true"


def test_enum_like_values_are_kept_verbatim(order: dict[str, Any]) -> None:
    """Statuses and types, including capitalised or unknown values, pass through as strings."""
    order["state"]["currentStatus"] = "archived"
    order["payments"][0]["state"] = "refunded"
    record = snap(order)
    assert record["state"]["currentStatus"] == "archived"
    assert record["payments"][0]["state"] == "refunded"
    assert record["payments"][1]["state"] == "Captured"
    assert record["customer"]["type"] == "Person"


def test_snapshot_metadata(order: dict[str, Any]) -> None:
    """The snapshot carries fetchedAt, command ids, schema version and lastModifiedMillis."""
    tz = timezone(timedelta(hours=2))
    record = snapshot_from_order(
        order, fetched_at=NOW.astimezone(tz), command_id=None, correlation_id=None
    )
    assert record["schemaVersion"] == SNAPSHOT_SCHEMA_VERSION == 1
    assert record["fetchedAt"] == "2026-01-12T08:21:30.123456Z"
    assert record["commandId"] is None
    assert record["correlationId"] is None
    expected = datetime(2026, 1, 12, 8, 21, 29, 512000, tzinfo=UTC)
    assert record["lastModifiedMillis"] == int(expected.timestamp() * 1000)


def test_unparseable_last_modified_gives_null_millis(codec: AvroCodec) -> None:
    """A lastModified that is not a date-time keeps its text and has null millis."""
    order = {**MINIMAL, "lastModified": "yesterday"}
    record = snap(order)
    assert record["lastModified"] == "yesterday"
    assert record["lastModifiedMillis"] is None
    assert through_avro(codec, order) == order


def test_naive_fetched_at_is_rejected() -> None:
    """A naive fetched_at raises ValueError."""
    with pytest.raises(ValueError, match="naive"):
        snapshot_from_order(
            MINIMAL, fetched_at=datetime(2026, 1, 1), command_id=None, correlation_id=None
        )


# ---------------------------------------------------------------------- schema completeness


def avro_records(schema: Any, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Collect every named record of a schema by short name."""
    if isinstance(schema, list):
        for branch in schema:
            avro_records(branch, found)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            found[schema["name"]] = schema
            for field in schema["fields"]:
                avro_records(field["type"], found)
        elif schema.get("type") == "array":
            avro_records(schema["items"], found)
    return found


def test_avro_records_cover_every_openapi_property() -> None:
    """Each modelled OpenAPI schema has exactly its documented properties plus extra in Avro."""
    snapshot_schema = json.loads((SCHEMAS / "OrderSnapshot.avsc").read_text(encoding="utf-8"))
    records = avro_records(snapshot_schema, {})
    components = json.loads(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]
    metadata = {"schemaVersion", "fetchedAt", "commandId", "correlationId", "lastModifiedMillis"}
    checked = 0
    for name, record in records.items():
        api_name = "Order" if name == "OrderSnapshot" else name
        fields = {f["name"] for f in record["fields"]} - {"extra"}
        if name == "OrderSnapshot":
            fields -= metadata
        assert fields == set(components[api_name]["properties"]), api_name
        assert "extra" in {f["name"] for f in record["fields"]}, api_name
        checked += 1
    assert checked == 25


def test_fixture_fills_every_snapshot_field(order: dict[str, Any]) -> None:
    """The fixture is complete: every field of every snapshot record is non-null somewhere."""
    snapshot_schema = json.loads((SCHEMAS / "OrderSnapshot.avsc").read_text(encoding="utf-8"))
    records = avro_records(snapshot_schema, {})
    seen: dict[str, set[str]] = {name: set() for name in records}

    def walk(value: Any, schema: Any) -> None:
        if isinstance(schema, list):
            if value is not None:
                walk(value, next(b for b in schema if b != "null"))
            return
        if isinstance(schema, str):
            schema = records.get(schema.rpartition(".")[2], schema)
        if isinstance(schema, dict) and schema["type"] == "record":
            for field in schema["fields"]:
                if value.get(field["name"]) is not None:
                    seen[schema["name"]].add(field["name"])
                walk(value.get(field["name"]), field["type"])
        elif isinstance(schema, dict) and schema["type"] == "array":
            for item in value:
                walk(item, schema["items"])

    walk(snap(order), snapshot_schema)
    for name, record in records.items():
        missing = {f["name"] for f in record["fields"]} - seen[name]
        assert not missing, f"{name}: never filled: {sorted(missing)}"


# --------------------------------------------------------------------------- mapping errors


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(order: dict[str, Any]) -> None:
        target: Any = order
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def change(order: dict[str, Any]) -> None:
        del order[key]

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            _set(["cart", "items", 1, "items", 0, "quantity"], "2"),
            r"order\.cart\.items\[1\]\.items\[0\]\.quantity: expected integer, got string",
        ),
        (_set(["cart", "items", 0, "quantity"], True), r"quantity: expected integer, got boolean"),
        (_set(["cart", "items", 0, "quantity"], 2.0), r"quantity: expected integer, got number"),
        (_set(["cart", "items", 0, "quantity"], 2**31), r"quantity: integer .* int32"),
        (_set(["cart", "items", 0, "vatRate"], "0.25"), r"items\[0\]\.vatRate: expected number"),
        (_set(["cart", "items", 0, "vatRate"], False), r"vatRate: expected number, got boolean"),
        (
            _set(["total", "includingVat"], math.inf),
            r"order\.total\.includingVat: expected a finite",
        ),
        (_set(["total", "includingVat"], math.nan), r"includingVat: expected a finite"),
        (_set(["total", "excludingVat"], 10**400), r"excludingVat: number .* too large"),
        (_set(["total", "excludingVat"], 2**53 + 1), r"excludingVat: integer .* not exact"),
        (
            _set(["cart", "attributes"], ["a"]),
            r"order\.cart\.attributes: expected object, got array",
        ),
        (_set(["cart", "items"], {"0": {}}), r"order\.cart\.items: expected array, got object"),
        (_set(["cart", "items", 2], "ci_1"), r"items\[2\]: expected Item object, got string"),
        (_set(["state"], "completed"), r"order\.state: expected State object, got string"),
        (_set(["consents", 0, "checked"], "yes"), r"consents\[0\]\.checked: expected boolean"),
        (
            _set(["cart", "items", 0, "logistics", "tags", 1], None),
            r"tags\[1\]: expected string, got null",
        ),
        (_set(["id"], 42), r"order\.id: expected string, got number"),
        (_set(["merchant"], None), r"order\.merchant: required"),
        (_delete("channel"), r"order\.channel: required"),
        (_set(["extraThing"], {1, 2}), r"order \(unknown fields\): not representable as JSON"),
        (_set(["attributes", "when"], NOW), r"order\.attributes: not representable as JSON"),
    ],
)
def test_wrong_types_raise_with_path(
    order: dict[str, Any], change: Callable[[dict[str, Any]], None], match: str
) -> None:
    """A wrong-typed value raises SnapshotMappingError naming its JSON path."""
    change(order)
    with pytest.raises(SnapshotMappingError, match=match):
        snap(order)


@pytest.mark.parametrize("value", [None, [], "order", 5])
def test_non_object_order_is_rejected(value: Any) -> None:
    """An order that is not a JSON object raises SnapshotMappingError."""
    with pytest.raises(SnapshotMappingError, match="expected Order object"):
        snap(value)


def test_mapping_error_is_a_value_error() -> None:
    """SnapshotMappingError is a ValueError."""
    assert issubclass(SnapshotMappingError, ValueError)


def test_order_from_snapshot_rejects_bad_json_text(order: dict[str, Any]) -> None:
    """Invalid JSON text in a snapshot raises SnapshotMappingError on rebuild."""
    record = snap(order)
    record["cart"]["attributes"] = "{oops"
    with pytest.raises(SnapshotMappingError, match=r"snapshot\.cart\.attributes: invalid JSON"):
        order_from_snapshot(record)
    record = snap(order)
    record["extra"] = "[1]"
    with pytest.raises(SnapshotMappingError, match=r"snapshot\.extra: expected JSON object"):
        order_from_snapshot(record)


def test_modelled_field_wins_over_stale_extra_copy() -> None:
    """When extra repeats a modelled key that has a value, the modelled value wins."""
    record = snap({**MINIMAL, "reference": "r1"})
    record["extra"] = '{"reference":"stale","new":1}'
    assert order_from_snapshot(record) == {**MINIMAL, "reference": "r1", "new": 1}


# ------------------------------------------------------------------------------ time helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-08-24T14:15:22Z", datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)),
        ("2019-08-24t14:15:22z", datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)),
        ("2019-08-24T14:15:22.1234567Z", datetime(2019, 8, 24, 14, 15, 22, 123456, tzinfo=UTC)),
        ("2019-08-24T16:15:22+02:00", datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)),
        ("2019-08-24T14:15:22", datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)),
        ("not a time", None),
        ("", None),
    ],
)
def test_parse_rfc3339(text: str, expected: datetime | None) -> None:
    """parse_rfc3339 accepts RFC 3339 variants, assumes UTC when no offset, else returns None."""
    assert parse_rfc3339(text) == expected


def test_format_rfc3339() -> None:
    """format_rfc3339 writes UTC with microseconds and Z, and rejects naive datetimes."""
    assert format_rfc3339(NOW) == "2026-01-12T08:21:30.123456Z"
    assert format_rfc3339(datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-01-01T00:00:00.000000Z"
    )
    with pytest.raises(ValueError, match="naive"):
        format_rfc3339(datetime(2026, 1, 1))


def _with_transitions(*transitions: Any) -> dict[str, Any]:
    return {**MINIMAL, "state": {"currentStatus": "x", "transitions": list(transitions)}}


def test_latest_transition_at_fixture(order: dict[str, Any]) -> None:
    """On the fixture, the newest matching transition is found for each status."""
    assert latest_transition_at(order, "completed") == "2026-01-12T09:21:29.512+01:00"
    assert latest_transition_at(order, "processing") == "2026-01-12T08:15:54.25Z"
    assert latest_transition_at(order, "checkout") == "2026-01-12T08:11:02Z"
    assert latest_transition_at(order, "COMPLETED") == "2026-01-12T09:21:29.512+01:00"
    assert latest_transition_at(order, "declined") is None


def test_latest_transition_at_orders_by_time_then_position() -> None:
    """The newest time wins regardless of list order; equal times go to the later entry."""
    order = _with_transitions(
        {"status": "accepted", "timeStamp": "2026-01-02T00:00:00Z"},
        {"status": "accepted", "timeStamp": "2026-01-01T00:00:00Z"},
    )
    assert latest_transition_at(order, "accepted") == "2026-01-02T00:00:00Z"
    order = _with_transitions(
        {"status": "accepted", "timeStamp": "2026-01-02T01:00:00+01:00"},
        {"status": "accepted", "timeStamp": "2026-01-02T00:00:00Z"},
    )
    assert latest_transition_at(order, "accepted") == "2026-01-02T00:00:00Z"


def test_latest_transition_at_falls_back_to_list_order() -> None:
    """With an unparseable matching time, the last match in list order wins."""
    order = _with_transitions(
        {"status": "accepted", "timeStamp": "2026-01-02T00:00:00Z"},
        {"status": "accepted", "timeStamp": "garbled"},
    )
    assert latest_transition_at(order, "accepted") == "garbled"


@pytest.mark.parametrize(
    "order",
    [
        MINIMAL,
        {**MINIMAL, "state": None},
        {**MINIMAL, "state": "accepted"},
        {**MINIMAL, "state": {"transitions": None}},
        _with_transitions(
            "accepted", None, {"status": "accepted"}, {"status": 1, "timeStamp": "t"}
        ),
    ],
)
def test_latest_transition_at_tolerates_malformed_orders(order: dict[str, Any]) -> None:
    """Missing or malformed state data gives None instead of raising."""
    assert latest_transition_at(order, "accepted") is None


# ---------------------------------------------------------------------------------- builders


def test_state_changed_event(codec: AvroCodec, order: dict[str, Any]) -> None:
    """state_changed_event builds a deterministic, encodable OrderStateChanged record."""
    kwargs: dict[str, Any] = {
        "command_id": "cmd-1",
        "order_id": order["id"],
        "merchant": "norce",
        "channel": "1",
        "previous_status": "accepted",
        "new_status": "completed",
        "transition_at": latest_transition_at(order, "completed"),
        "correlation_id": None,
        "occurred_at": NOW,
    }
    event = state_changed_event(**kwargs)
    assert event == {
        "eventId": "cmd-1:state-changed",
        "orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
        "merchant": "norce",
        "channel": "1",
        "previousStatus": "accepted",
        "newStatus": "completed",
        "transitionAt": "2026-01-12T09:21:29.512+01:00",
        "commandId": "cmd-1",
        "correlationId": None,
        "occurredAt": "2026-01-12T08:21:30.123456Z",
        "source": "bridge",
    }
    replay = state_changed_event(**{**kwargs, "occurred_at": NOW + timedelta(minutes=5)})
    assert replay["eventId"] == event["eventId"]
    assert codec.decode(codec.encode("OrderStateChanged", event)) == ("OrderStateChanged", event)


def test_order_deleted_event(codec: AvroCodec) -> None:
    """order_deleted_event builds a deterministic, encodable OrderDeleted record."""
    event = order_deleted_event(
        command_id="cmd-9",
        order_id="o_1",
        merchant="norce",
        channel="1",
        previous_status="checkout",
        already_deleted=False,
        correlation_id="corr",
        occurred_at=NOW,
    )
    assert event["eventId"] == event_id("cmd-9", "deleted") == "cmd-9:deleted"
    assert event["alreadyDeleted"] is False
    assert event["previousStatus"] == "checkout"
    assert codec.decode(codec.encode("OrderDeleted", event)) == ("OrderDeleted", event)


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_command_result(codec: AvroCodec, outcome: str) -> None:
    """command_result builds an encodable CommandResult for every allowed outcome."""
    result = command_result(
        command_id="cmd-1",
        command_type="SetOrderState",
        order_id="o_1",
        merchant="norce",
        channel="1",
        correlation_id=None,
        outcome=outcome,
        attempts=1,
        processed_at=NOW,
        source_topic="cmds",
        source_partition=0,
        source_offset=12,
    )
    assert result["outcome"] == outcome
    assert result["reason"] is None
    assert result["httpStatus"] is None
    assert result["source"] == {"topic": "cmds", "partition": 0, "offset": 12}
    assert result["processedAt"] == "2026-01-12T08:21:30.123456Z"
    assert codec.decode(codec.encode("CommandResult", result)) == ("CommandResult", result)


def test_command_result_validates() -> None:
    """An unknown outcome or negative attempts raises ValueError."""
    common: dict[str, Any] = {
        "command_id": "c",
        "command_type": "DeleteOrder",
        "order_id": "o",
        "merchant": "m",
        "channel": "1",
        "correlation_id": None,
        "processed_at": NOW,
        "source_topic": "t",
        "source_partition": 0,
        "source_offset": 0,
    }
    with pytest.raises(ValueError, match="outcome"):
        command_result(**common, outcome="done", attempts=1)
    with pytest.raises(ValueError, match="attempts"):
        command_result(**common, outcome="failed", attempts=-1)


# ------------------------------------------------------------------ simulator orders


def test_simulator_orders_round_trip(codec: AvroCodec) -> None:
    """Orders from the simulator's factory round-trip losslessly for every status."""
    from norce_simulator.data import OrderFactory

    factory = OrderFactory(random.Random(1234))
    statuses = ["checkout", "processing", "accepted", "completed", "declined", "removed"]
    for i in range(30):
        order = factory.build(
            order_id=factory.new_id("o_"),
            merchant="norce",
            channel="1",
            now=NOW,
            status=statuses[i % len(statuses)],
        )
        assert_json_identical(through_avro(codec, order), order)


# ----------------------------------------------------------------------- property-based test

DOCUMENTED_KEYS = frozenset(
    key
    for schema in json.loads(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"].values()
    for key in schema.get("properties", {})
)
"""Every property name of the API; random unknown keys avoid them all."""

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
texts = st.text(max_size=12)
money = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False) | st.integers(
    min_value=-(2**53), max_value=2**53
)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
attributes = st.dictionaries(st.text(max_size=6), json_values, max_size=3)
timestamps = st.datetimes(timezones=st.just(UTC)).map(format_rfc3339) | texts


def nullable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The strategy's values or an explicit JSON null."""
    return st.none() | strategy


def api_object(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An API object with any subset of ``fields`` (possibly null) plus random unknown keys."""
    unknown = st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k not in DOCUMENTED_KEYS),
        json_values,
        max_size=2,
    )
    known = st.fixed_dictionaries({}, optional={k: nullable(v) for k, v in fields.items()})
    return st.tuples(known, unknown).map(lambda kv: {**kv[1], **kv[0]})


prices = api_object({"includingVat": money, "excludingVat": money})
discounts = api_object({"type": texts, "name": texts, "code": texts, "value": prices})


def items(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Cart items, with bundles nesting child items ``depth`` levels deep."""
    fields: dict[str, st.SearchStrategy[Any]] = {
        "id": texts,
        "productType": st.sampled_from(["physical", "digital", "giftCard", "bundle", "new"]),
        "quantity": int32,
        "price": prices,
        "total": prices,
        "vatRate": money,
        "discounts": st.lists(discounts, max_size=2),
        "logistics": api_object({"weight": int32, "tags": st.lists(texts, max_size=2)}),
        "upsell": st.booleans(),
        "attributes": attributes,
    }
    if depth > 0:
        fields["items"] = st.lists(items(depth - 1), max_size=2)
    return api_object(fields)


orders = st.tuples(
    st.fixed_dictionaries({"id": texts, "merchant": texts, "channel": texts}),
    api_object(
        {
            "reference": texts,
            "created": timestamps,
            "lastModified": timestamps,
            "state": api_object(
                {
                    "currentStatus": texts,
                    "transitions": st.lists(
                        api_object({"status": texts, "timeStamp": timestamps}), max_size=3
                    ),
                }
            ),
            "cart": api_object(
                {
                    "reference": texts,
                    "items": st.lists(items(2), max_size=3),
                    "discounts": st.lists(discounts, max_size=2),
                    "total": prices,
                    "attributes": attributes,
                }
            ),
            "payments": st.lists(
                api_object(
                    {
                        "id": texts,
                        "amount": money,
                        "state": texts,
                        "attributes": attributes,
                        "upsell": api_object(
                            {
                                "eligible": st.booleans(),
                                "transactions": st.lists(
                                    api_object({"id": texts, "attributes": attributes}),
                                    max_size=2,
                                ),
                            }
                        ),
                    }
                ),
                max_size=2,
            ),
            "customer": api_object(
                {"billing": api_object({"givenName": texts, "email": texts}), "type": texts}
            ),
            "notifications": st.lists(
                api_object({"id": texts, "schema": json_values.filter(lambda v: v is not None)}),
                max_size=2,
            ),
            "total": prices,
            "attributes": attributes,
        }
    ).map(lambda d: {k: v for k, v in d.items() if k not in {"id", "merchant", "channel"}}),
).map(lambda parts: {**parts[1], **parts[0]})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=orders)
def test_random_orders_round_trip_losslessly(codec: AvroCodec, order: dict[str, Any]) -> None:
    """Random orders with random unknown keys and nulls survive the Avro round trip exactly."""
    assert_json_identical(through_avro(codec, order), order)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside a JSON value."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict | list):
        children = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in children:
            found.append((*prefix, key))
            found.extend(_paths(child, (*prefix, key)))
    return found


FIXTURE_PATHS = _paths(json.loads(FIXTURE.read_text(encoding="utf-8")))


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(FIXTURE_PATHS), value=json_values)
def test_any_value_anywhere_maps_losslessly_or_raises_mapping_error(
    codec: AvroCodec, path: tuple[Any, ...], value: Any
) -> None:
    """Random JSON at any position of the fixture round-trips or raises SnapshotMappingError."""
    order = json.loads(FIXTURE.read_text(encoding="utf-8"))
    _set(list(path), value)(order)
    try:
        record = snap(order)
    except SnapshotMappingError:
        with pytest.raises(SnapshotMappingError):
            tagged_snap(order)
        return
    data = codec.encode("OrderSnapshot", record)
    assert codec.encode("OrderSnapshot", tagged_snap(order)) == data
    _, decoded = codec.decode(data)
    assert_json_identical(order_from_snapshot(decoded), order)


def test_compiled_fast_path_equals_the_generic_walk() -> None:
    """The compiled snapshot mapping gives exactly the generic walk's record for real orders."""
    from norce_simulator import SimulatorApp, SimulatorConfig

    from bridge.snapshot import order_record_checked, order_record_fast

    app = SimulatorApp(SimulatorConfig(orders=0, seed=5))
    fixture = json.loads(
        (Path(__file__).resolve().parents[1] / "fixtures" / "order_full.json").read_text()
    )
    orders = [fixture] + [app.get_order(i) for i in app.seed(40)]
    for order in orders:
        assert order is not None
        fast = order_record_fast(order)
        assert fast is not None
        assert fast == order_record_checked(order)


def _simulator_orders() -> list[dict[str, Any]]:
    """The fixture and the simulator's orders as served (JSON), some with unknown keys and
    explicit nulls at several levels."""
    from norce_simulator import SimulatorApp, SimulatorConfig

    app = SimulatorApp(SimulatorConfig(orders=0, seed=9))
    served: list[dict[str, Any]] = [json.loads(FIXTURE.read_text(encoding="utf-8"))]
    for order_id in app.seed(60):
        order = app.get_order(order_id)
        assert order is not None
        served.append(json.loads(json.dumps(order)))
    for order in served[::3]:
        order["futureField"] = {"nested": [1, None]}
        if isinstance(order.get("cart"), dict):
            order["cart"]["total"] = None
            for item in order["cart"].get("items") or []:
                item["newKey"] = "x"
    return served


def test_one_pass_tagged_snapshot_writes_the_checked_paths_bytes(codec: AvroCodec) -> None:
    """For the simulator's orders, the snapshot tagged while mapping (what the bridge encodes)
    gives exactly the bytes of the generic, checked walk written by plain fastavro (which
    resolves every union itself), and of the untagged fast path tagged by the codec."""
    import io

    import fastavro

    parsed = codec.parsed_schema("OrderSnapshot")
    for order in _simulator_orders():
        tagged = tagged_snap(order)
        assert type(tagged) is TaggedRecord
        untagged = snap(order)
        checked = {**untagged, **order_record_checked(order)}  # the generic walk's Order part
        plain = io.BytesIO()
        fastavro.schemaless_writer(plain, parsed, checked)
        data = codec.encode("OrderSnapshot", tagged)
        assert data[HEADER_SIZE:] == plain.getvalue()
        assert data == codec.encode("OrderSnapshot", untagged)
        assert codec.decode(data) == ("OrderSnapshot", untagged)


def test_tagged_snapshot_defers_to_the_checked_walk_and_its_errors(codec: AvroCodec) -> None:
    """Where the compiled converters give up (a mapping that is not a dict, a wrong type), the
    tagged builder returns the generic walk's untagged record (the codec tags it) or raises
    the same SnapshotMappingError with the JSON path."""
    from types import MappingProxyType

    order = json.loads(FIXTURE.read_text(encoding="utf-8"))
    proxied = dict(order, cart=MappingProxyType(order["cart"]))
    record = tagged_snap(proxied)
    assert type(record) is dict
    assert codec.encode("OrderSnapshot", record) == codec.encode("OrderSnapshot", snap(order))
    order["cart"]["items"][1]["quantity"] = "2"
    with pytest.raises(SnapshotMappingError, match=r"order\.cart\.items\[1\]\.quantity"):
        tagged_snap(order)
    with pytest.raises(SnapshotMappingError, match=r"order\.id"):
        tagged_snap({"merchant": "norce", "channel": "1"})
