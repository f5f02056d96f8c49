"""The pure notification rules of the simulator: JSON pointer scopes, schemas, invoke URLs."""

from __future__ import annotations

from typing import Any

import pytest
from norce_simulator.notify_rules import (
    MISSING,
    SchemaMatcher,
    UnresolvedPlaceholderError,
    check_schema,
    resolve_invoke,
    resolve_pointer,
    same_json,
)

ORDER = {"id": "o_1", "state": {"currentStatus": "processing"}, "a/b": {"~x": 1}, "items": [1]}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/state/currentStatus", "processing"),
        ("/state", {"currentStatus": "processing"}),
        ("/a~1b/~0x", 1),
        ("/missing", MISSING),
        ("/items/0", MISSING),  # scopes inside arrays are not supported (reference §5.12)
        ("state", MISSING),
        (None, MISSING),
    ],
)
def test_resolve_pointer(pointer: Any, expected: Any) -> None:
    assert resolve_pointer(ORDER, pointer) == expected


def test_same_json_is_json_equality() -> None:
    assert same_json("a", "a")
    assert same_json({"x": [1]}, {"x": [1]})
    assert not same_json(1, True)
    assert not same_json(1, 1.0)
    assert not same_json(MISSING, None)
    assert same_json(MISSING, MISSING)


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        ({"const": "completed"}, "completed", True),
        ({"const": "completed"}, "accepted", False),
        ({"enum": ["accepted", "completed"]}, "accepted", True),
        ({"not": {"const": "checkout"}}, "checkout", False),
        ({"not": {"const": "checkout"}}, "processing", True),
        ({"anyOf": [{"type": "integer"}, {"const": "x"}]}, "x", True),
        ({"type": "string", "pattern": "^acc"}, "accepted", True),
        ({}, "anything", True),
        (None, "anything", True),
        ({"const": 1}, True, False),
        ({"$ref": "https://example.invalid/schema.json"}, "x", False),
        ({"const": "x"}, MISSING, False),
    ],
)
def test_schema_matcher(schema: Any, value: Any, expected: bool) -> None:
    assert SchemaMatcher().matches(schema, value) is expected


def test_check_schema_refuses_invalid_schemas() -> None:
    check_schema({"const": "completed"})
    with pytest.raises(ValueError, match="2020-12"):
        check_schema({"type": 5})
    with pytest.raises(ValueError, match="JSON object"):
        check_schema([1])


def test_resolve_invoke() -> None:
    config = {"internalUrl": "http://127.0.0.1:8081/"}
    url = resolve_invoke(
        "{configuration.adapter.internalUrl}/cb/{order.id}/{order_id}", "o/1 x", config
    )
    assert url == "http://127.0.0.1:8081/cb/o%2F1%20x/o%2F1%20x"
    with pytest.raises(UnresolvedPlaceholderError, match="internalUrl"):
        resolve_invoke("{configuration.adapter.internalUrl}/cb", "o_1", None)
    with pytest.raises(UnresolvedPlaceholderError):
        resolve_invoke("{order.reference}/x", "o_1", config)
    with pytest.raises(UnresolvedPlaceholderError):
        resolve_invoke("file:///etc/passwd", "o_1", config)
