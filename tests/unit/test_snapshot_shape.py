"""One description of the Order: the pydantic model, the snapshot mapping and the Avro schema agree.

``bridge.snapshot_spec.ORDER_SPEC`` is derived from the pydantic ``Order``; these tests check
that derivation against the model and ``OrderSnapshot.avsc`` against the derived spec, field
by field, type by type, optionality and nesting, in both directions. The checker is also run
on broken copies of the schema to show that it catches each kind of drift.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bridge import order_model
from bridge.snapshot_spec import (
    ORDER_REQUIRED,
    ORDER_SPEC,
    ArraySpec,
    Kind,
    ObjectSpec,
    derive_spec,
)

ROOT = Path(__file__).resolve().parents[2]
AVSC = ROOT / "bridge" / "schemas" / "OrderSnapshot.avsc"
AVRO_OF_SCALAR = {
    "string": "string",
    "int": "int",
    "double": "double",
    "boolean": "boolean",
    "attributes": "string",
    "json": "string",
}
SNAPSHOT_ONLY = {
    "schemaVersion": "int",
    "fetchedAt": "string",
    "commandId": ["null", "string"],
    "correlationId": ["null", "string"],
    "lastModifiedMillis": ["null", "long"],
}
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def load_avsc() -> dict[str, Any]:
    """The shipped OrderSnapshot schema as JSON."""
    schema: dict[str, Any] = json.loads(AVSC.read_text(encoding="utf-8"))
    return schema


def all_specs(root: ObjectSpec) -> dict[str, ObjectSpec]:
    """Every ObjectSpec reachable from ``root``, by name."""
    found: dict[str, ObjectSpec] = {}

    def walk(kind: Kind) -> None:
        if isinstance(kind, ArraySpec):
            walk(kind.items)
        elif isinstance(kind, ObjectSpec) and kind.name not in found:
            found[kind.name] = kind
            for sub in kind.fields.values():
                walk(sub)

    walk(root)
    return found


def records_by_name(schema: Any) -> dict[str, dict[str, Any]]:
    """Every record defined anywhere in ``schema``, by short name."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "record":
                found.setdefault(node["name"], node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


class Checker:
    """Compares an Avro schema with a snapshot spec and lists every difference."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.problems: list[str] = []
        self.named = records_by_name(schema)
        self.checked: set[str] = set()

    def resolve(self, avro: Any) -> Any:
        """Follow a reference to a named type (defined anywhere in the schema)."""
        if isinstance(avro, str) and avro not in PRIMITIVES:
            return self.named.get(avro.rsplit(".", 1)[-1], avro)
        return avro

    def kind(self, where: str, kind: Kind, avro: Any) -> None:
        """``avro`` (non-null) must be the Avro type of ``kind``."""
        avro = self.resolve(avro)
        if isinstance(kind, ArraySpec):
            if not (isinstance(avro, dict) and avro.get("type") == "array"):
                self.problems.append(f"{where}: expected an array, schema has {avro!r}")
                return
            self.kind(f"{where}[]", kind.items, avro["items"])
        elif isinstance(kind, ObjectSpec):
            if not (isinstance(avro, dict) and avro.get("type") == "record"):
                self.problems.append(f"{where}: expected record {kind.name}, schema has {avro!r}")
                return
            if avro["name"] != kind.name:
                self.problems.append(f"{where}: record {avro['name']} should be {kind.name}")
            self.record(kind, avro, exclude={})
        elif avro != AVRO_OF_SCALAR[kind]:
            self.problems.append(f"{where}: {kind} should be {AVRO_OF_SCALAR[kind]!r}: {avro!r}")

    def record(self, spec: ObjectSpec, avro: dict[str, Any], exclude: dict[str, Any]) -> None:
        """Every spec field is an Avro field of the right type, and nothing else is."""
        if avro["name"] in self.checked:
            return
        self.checked.add(avro["name"])
        fields = {f["name"]: f for f in avro["fields"] if f["name"] not in exclude}
        name = avro["name"]
        for key in spec.fields.keys() - fields.keys() - {"extra"}:
            self.problems.append(f"{name}.{key}: in the model, missing from the schema")
        for key in fields.keys() - spec.fields.keys() - {"extra"}:
            self.problems.append(f"{name}.{key}: in the schema, not in the model")
        extra = fields.get("extra")
        if extra is None or extra["type"] != ["null", "string"] or extra.get("default", 0):
            self.problems.append(f"{name}.extra: must be an optional string defaulting to null")
        for key in [k for k in fields if k in spec.fields]:
            field = fields[key]
            required = spec is ORDER_SPEC and key in ORDER_REQUIRED
            avro_type = field["type"]
            if required:
                if isinstance(avro_type, list):
                    self.problems.append(f"{name}.{key}: required, but the schema allows null")
                    continue
                self.kind(f"{name}.{key}", spec.fields[key], avro_type)
            elif (
                not isinstance(avro_type, list)
                or len(avro_type) != 2
                or avro_type[0] != "null"
                or "default" not in field
                or field["default"] is not None
            ):
                self.problems.append(f"{name}.{key}: optional, must be [null, T] default null")
            else:
                self.kind(f"{name}.{key}", spec.fields[key], avro_type[1])


def mismatches(avsc: dict[str, Any]) -> list[str]:
    """Every difference between the OrderSnapshot schema and ORDER_SPEC."""
    checker = Checker(avsc)
    fields = {f["name"]: f for f in avsc["fields"]}
    for key, avro_type in SNAPSHOT_ONLY.items():
        if key not in fields or fields[key]["type"] != avro_type:
            checker.problems.append(f"OrderSnapshot.{key}: snapshot metadata must be {avro_type}")
    top = dict(avsc, name=ORDER_SPEC.name)
    checker.record(ORDER_SPEC, top, exclude=SNAPSHOT_ONLY)
    return checker.problems


# --------------------------------------------------------------------------------------------
# model -> spec


def model_classes() -> dict[str, type[BaseModel]]:
    """Every Norce model class that bridge.order_model exports."""
    return {
        name: cls
        for name, cls in inspect.getmembers(order_model, inspect.isclass)
        if issubclass(cls, order_model.NorceModel) and cls is not order_model.NorceModel
    }


def test_the_spec_covers_every_model_class_and_no_other() -> None:
    """Each Norce model class is one ObjectSpec of the same name, and each spec is a class."""
    assert set(all_specs(ORDER_SPEC)) == set(model_classes())


def test_every_spec_has_exactly_its_models_json_keys() -> None:
    """Field names are the model's camelCase aliases (class, schema too), both directions."""
    classes = model_classes()
    for name, spec in all_specs(ORDER_SPEC).items():
        aliases = {f.alias or n for n, f in classes[name].model_fields.items()}
        assert set(spec.fields) == aliases, name
    delivery = all_specs(ORDER_SPEC)["DeliveryDetails"]
    assert "class" in delivery.fields
    assert all_specs(ORDER_SPEC)["Notification"].fields["schema"] == "json"


def test_kinds_follow_the_model_types() -> None:
    """Spot checks of each kind: numbers, ints, booleans, enums, attributes, arrays, recursion."""
    specs = all_specs(ORDER_SPEC)
    assert specs["Price"].fields == {"includingVat": "double", "excludingVat": "double"}
    assert specs["Item"].fields["quantity"] == "int"
    assert specs["Item"].fields["upsell"] == "boolean"
    assert specs["State"].fields["currentStatus"] == "string"
    assert specs["Order"].fields["attributes"] == "attributes"
    assert specs["Logistics"].fields["tags"] == ArraySpec("string")
    assert specs["Item"].fields["items"] == ArraySpec(specs["Item"])


def test_a_field_added_to_the_model_reaches_the_spec() -> None:
    """Deriving from a model with one more field gives a spec with that field."""

    class PriceWithTax(order_model.Price):
        tax_rate: order_model.Number | None = None

    assert derive_spec(PriceWithTax).fields["taxRate"] == "double"


def test_a_type_without_a_snapshot_kind_is_refused() -> None:
    """The derivation raises rather than guess for a type it has no kind for."""

    class Odd(order_model.NorceModel):
        codes: set[str] | None = None

    with pytest.raises(TypeError, match=r"Odd\.codes"):
        derive_spec(Odd)


# --------------------------------------------------------------------------------------------
# spec <-> OrderSnapshot.avsc


def test_the_shipped_schema_matches_the_model_exactly() -> None:
    """No difference at all between OrderSnapshot.avsc and the spec derived from the model."""
    assert mismatches(load_avsc()) == []


def _record(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The definition of record ``name`` inside ``schema`` (mutable: part of ``schema``)."""
    return schema if name == "OrderSnapshot" else records_by_name(schema)[name]


def _field(schema: dict[str, Any], record: str, field: str) -> dict[str, Any]:
    fields: list[dict[str, Any]] = _record(schema, record)["fields"]
    (found,) = [f for f in fields if f["name"] == field]
    return found


def _drop(record: str, field: str) -> Any:
    def change(schema: dict[str, Any]) -> None:
        rec = _record(schema, record)
        rec["fields"] = [f for f in rec["fields"] if f["name"] != field]

    return change


def _add(record: str, field: str) -> Any:
    def change(schema: dict[str, Any]) -> None:
        _record(schema, record)["fields"].append(
            {"name": field, "type": ["null", "string"], "default": None}
        )

    return change


def _retype(record: str, field: str, avro_type: Any) -> Any:
    def change(schema: dict[str, Any]) -> None:
        _field(schema, record, field)["type"] = avro_type

    return change


def _rename_record(record: str, new: str) -> Any:
    def change(schema: dict[str, Any]) -> None:
        _record(schema, record)["name"] = new

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_drop("Price", "excludingVat"), "Price.excludingVat: in the model, missing"),
        (_drop("Item", "extra"), "Item.extra: must be an optional string"),
        (_add("Consent", "tick"), "Consent.tick: in the schema, not in the model"),
        (_retype("Item", "quantity", ["null", "long"]), "Item.quantity: int should be 'int'"),
        (_retype("Upsell", "eligible", ["null", "string"]), "Upsell.eligible: boolean"),
        (_retype("Logistics", "tags", ["null", "string"]), "Logistics.tags: expected an array"),
        (_retype("Cart", "reference", "string"), "Cart.reference: optional, must be [null, T]"),
        (_retype("OrderSnapshot", "merchant", ["null", "string"]), "Order.merchant: required"),
        (_retype("OrderSnapshot", "total", ["null", "string"]), "Order.total: expected record"),
        (_rename_record("PickupLocation", "Pickup"), "record Pickup should be PickupLocation"),
        (_retype("OrderSnapshot", "fetchedAt", ["null", "string"]), "OrderSnapshot.fetchedAt"),
    ],
)
def test_the_checker_catches_each_kind_of_drift(change: Any, expected: str) -> None:
    """A schema that lost, gained, retyped or renamed anything is reported, naming the place."""
    schema = copy.deepcopy(load_avsc())
    change(schema)
    problems = mismatches(schema)
    assert any(expected in p for p in problems), problems
