"""Contract test: simulator responses validate against tests/norce-order-api.openapi.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from norce_simulator import ORDER_STATUSES, Response, SimulatorApp, SimulatorConfig
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC = json.loads((Path(__file__).parents[1] / "norce-order-api.openapi.json").read_text())
URN = "urn:norce-order-api"
REGISTRY: Registry[Any] = Registry().with_resource(
    URN, Resource.from_contents(SPEC, default_specification=DRAFT4)
)
BASE = "/api/v0/checkout/orders"
HEADERS = {
    "Authorization": "Bearer sim-api-key",
    "x-merchant": "norce",
    "x-channel": "1",
    "content-type": "application/json",
}
ORDER_PATH = "/api/v0/checkout/orders/{order_id}"
STATE_PATH = "/api/v0/checkout/orders/{order_id}/state"
LIST_PATH = "/api/v0/checkout/orders"


def absolute_refs(schema: Any) -> Any:
    """Rewrite local '#/...' refs so they resolve against the registered OpenAPI document."""
    if isinstance(schema, dict):
        return {
            k: (URN + v if k == "$ref" and v.startswith("#/") else absolute_refs(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [absolute_refs(v) for v in schema]
    return schema


def validate(instance: Any, schema: dict[str, Any]) -> None:
    validator = OAS30ReadValidator(
        absolute_refs(schema), registry=REGISTRY, format_checker=oas30_format_checker
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert errors == []


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def documented_response(template: str, method: str, status: int) -> dict[str, Any]:
    responses = SPEC["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template} does not document {status}"
    entry = responses[str(status)]
    if "$ref" in entry:
        entry = SPEC["components"]["responses"][entry["$ref"].rsplit("/", 1)[1]]
    result: dict[str, Any] = entry
    return result


def check_contract(response: Response, template: str, method: str) -> None:
    """Validate status, content type and body of ``response`` against the OpenAPI document."""
    documented = documented_response(template, method, response.status)
    content = documented.get("content")
    if not content:
        assert response.body == b""
        return
    media = (response.header("content-type") or "").split(";")[0].strip()
    body = json.loads(response.body)
    if media == "application/problem+json":
        # The documented 400 media type is application/json with BaseError; the reference
        # allows framework-level RFC 7807 problems instead (see docs/norce-order-api.md §3.1).
        assert response.status == 400
        validate(body, component("ProblemDetails"))
        assert {"type", "title", "status", "detail"} <= set(body)
        schema = content["application/json"]["schema"]
    else:
        assert media in content, f"undocumented media type {media}"
        schema = content[media]["schema"]
    validate(body, schema)
    if schema == component("BaseError") and media != "application/problem+json":
        assert set(body) == {"code", "message"}
        assert all(isinstance(v, str) and v for v in body.values())


def undocumented_fields(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Return keys present in ``value`` but not documented (free-form objects excepted)."""
    schemas = SPEC["components"]["schemas"]
    while "$ref" in schema or ("allOf" in schema and "properties" not in schema):
        schema = (
            schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema["allOf"][0]
        )
    extra: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                extra.append(f"{path}.{key}")
            else:
                extra += undocumented_fields(sub, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, element in enumerate(value):
            extra += undocumented_fields(element, schema["items"], f"{path}[{index}]")
    return extra


@pytest.fixture
def app() -> SimulatorApp:
    return SimulatorApp(
        SimulatorConfig(
            seed=11,
            orders=40,
            seed_statuses=ORDER_STATUSES,
            clock=lambda: datetime(2026, 1, 12, 8, 21, 29, tzinfo=UTC),
        )
    )


def req(
    app: SimulatorApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> Response:
    return app.handle(method, path, HEADERS if headers is None else headers, body)


def state_body(status: str) -> bytes:
    return json.dumps({"currentStatus": status}).encode()


def test_every_seeded_order_matches_the_order_schema(app: SimulatorApp) -> None:
    """GET 200 bodies of orders in every state validate against Order with no extra fields."""
    for oid in app.seeded_ids:
        response = req(app, "GET", f"{BASE}/{oid}")
        check_contract(response, ORDER_PATH, "GET")
        assert undocumented_fields(response.json(), component("Order")) == []


def test_created_orders_match_the_order_schema(app: SimulatorApp) -> None:
    """Orders created through POST validate too, and the 201 body is a JSON string."""
    created = req(app, "POST", BASE, b"{}")
    check_contract(created, LIST_PATH, "POST")
    response = req(app, "GET", f"{BASE}/{created.json()}")
    check_contract(response, ORDER_PATH, "GET")
    assert undocumented_fields(response.json(), component("Order")) == []


SCENARIOS: dict[str, Callable[[SimulatorApp, str], tuple[Response, str, str]]] = {
    "get-200": lambda a, o: (req(a, "GET", f"{BASE}/{o}"), ORDER_PATH, "GET"),
    "get-400-header": lambda a, o: (
        req(a, "GET", f"{BASE}/{o}", headers={**HEADERS, "x-channel": ""}),
        ORDER_PATH,
        "GET",
    ),
    "get-401": lambda a, o: (req(a, "GET", f"{BASE}/{o}", headers={}), ORDER_PATH, "GET"),
    "get-404": lambda a, o: (req(a, "GET", f"{BASE}/o_nope"), ORDER_PATH, "GET"),
    "get-404-scope": lambda a, o: (
        req(a, "GET", f"{BASE}/{o}", headers={**HEADERS, "x-merchant": "x"}),
        ORDER_PATH,
        "GET",
    ),
    "put-200": lambda a, o: (
        req(a, "PUT", f"{BASE}/{o}/state", state_body("processing")),
        STATE_PATH,
        "PUT",
    ),
    "put-200-noop": lambda a, o: (
        req(a, "PUT", f"{BASE}/{o}/state", state_body("checkout")),
        STATE_PATH,
        "PUT",
    ),
    "put-400-enum": lambda a, o: (
        req(a, "PUT", f"{BASE}/{o}/state", state_body("shipped")),
        STATE_PATH,
        "PUT",
    ),
    "put-400-json": lambda a, o: (req(a, "PUT", f"{BASE}/{o}/state", b"{"), STATE_PATH, "PUT"),
    "put-400-transition": lambda a, o: (
        req(a, "PUT", f"{BASE}/{o}/state", state_body("completed")),
        STATE_PATH,
        "PUT",
    ),
    "put-400-header": lambda a, o: (
        req(
            a,
            "PUT",
            f"{BASE}/{o}/state",
            state_body("processing"),
            headers={**HEADERS, "x-merchant": ""},
        ),
        STATE_PATH,
        "PUT",
    ),
    "put-401": lambda a, o: (
        req(
            a, "PUT", f"{BASE}/{o}/state", state_body("processing"), headers={"Authorization": "x"}
        ),
        STATE_PATH,
        "PUT",
    ),
    "put-404": lambda a, o: (
        req(a, "PUT", f"{BASE}/o_nope/state", state_body("processing")),
        STATE_PATH,
        "PUT",
    ),
    "delete-204": lambda a, o: (req(a, "DELETE", f"{BASE}/{o}"), ORDER_PATH, "DELETE"),
    "delete-401": lambda a, o: (req(a, "DELETE", f"{BASE}/{o}", headers={}), ORDER_PATH, "DELETE"),
    "delete-404": lambda a, o: (req(a, "DELETE", f"{BASE}/o_nope"), ORDER_PATH, "DELETE"),
    "list-200": lambda a, o: (req(a, "GET", f"{BASE}?limit=5"), LIST_PATH, "GET"),
    "list-401": lambda a, o: (req(a, "GET", BASE, headers={}), LIST_PATH, "GET"),
    "create-201": lambda a, o: (req(a, "POST", BASE, b""), LIST_PATH, "POST"),
    "create-400": lambda a, o: (req(a, "POST", BASE, b'{"currency": 1}'), LIST_PATH, "POST"),
    "create-401": lambda a, o: (req(a, "POST", BASE, b"{}", headers={}), LIST_PATH, "POST"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_response_matches_contract(app: SimulatorApp, name: str) -> None:
    """Each status the simulator produces on the primary endpoints is documented and valid."""
    checkout_order = next(oid for oid in app.seeded_ids if app.history(oid)[-1] == "checkout")
    response, template, method = SCENARIOS[name](app, checkout_order)
    assert response.status == int(name.split("-")[1])
    check_contract(response, template, method)


def test_delete_after_delete_matches_contract(app: SimulatorApp) -> None:
    """The 404 of a second DELETE is the documented BaseError."""
    oid = app.seeded_ids[0]
    check_contract(req(app, "DELETE", f"{BASE}/{oid}"), ORDER_PATH, "DELETE")
    check_contract(req(app, "DELETE", f"{BASE}/{oid}"), ORDER_PATH, "DELETE")


def test_create_conflict_matches_contract(app: SimulatorApp) -> None:
    """A duplicate cart reference is the documented 409 BaseError."""
    body = b'{"cart": {"reference": "dup"}}'
    check_contract(req(app, "POST", BASE, body), LIST_PATH, "POST")
    response = req(app, "POST", BASE, body)
    assert response.status == 409
    check_contract(response, LIST_PATH, "POST")


def test_undocumented_delete_400_is_still_a_base_error(app: SimulatorApp) -> None:
    """DELETE without x-merchant is a 400 (undocumented for DELETE) with a BaseError body."""
    response = req(
        app, "DELETE", f"{BASE}/{app.seeded_ids[0]}", headers={**HEADERS, "x-merchant": ""}
    )
    assert response.status == 400
    validate(response.json(), component("BaseError"))
    assert set(response.json()) == {"code", "message"}


@pytest.mark.parametrize(("method", "template"), [("GET", ORDER_PATH), ("PUT", STATE_PATH)])
def test_injected_500_matches_contract(app: SimulatorApp, method: str, template: str) -> None:
    """An injected 500 on GET/PUT is the documented BaseError."""
    app.set_faults(error_statuses=[500], error_rate=1.0)
    oid = app.seeded_ids[0]
    path = f"{BASE}/{oid}/state" if method == "PUT" else f"{BASE}/{oid}"
    response = req(app, method, path, state_body("processing") if method == "PUT" else b"")
    assert response.status == 500
    check_contract(response, template, method)
