"""Fault and latency injection, admin endpoints and stats of the simulator (in-process)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from norce_simulator import FaultConfig, Response, ScriptedResponse, SimulatorApp, SimulatorConfig

BASE = "/api/v0/checkout/orders"
HEADERS = {
    "Authorization": "Bearer sim-api-key",
    "x-merchant": "norce",
    "x-channel": "1",
    "content-type": "application/json",
}
FIXED = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)


def make_app(**kw: Any) -> SimulatorApp:
    kw.setdefault("orders", 3)
    return SimulatorApp(SimulatorConfig(clock=lambda: FIXED, **kw))


def put_state(app: SimulatorApp, oid: str, status: str) -> Response:
    body = json.dumps({"currentStatus": status}).encode()
    return app.handle("PUT", f"{BASE}/{oid}/state", HEADERS, body)


def get(app: SimulatorApp, oid: str) -> Response:
    return app.handle("GET", f"{BASE}/{oid}", HEADERS)


def admin(app: SimulatorApp, method: str, path: str, body: Any = None) -> Response:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    return app.handle(method, f"/__admin{path}", {}, raw)


def status_of(app: SimulatorApp, oid: str) -> str:
    order = app.get_order(oid)
    assert order is not None
    value: str = order["state"]["currentStatus"]
    return value


def test_down_mode_answers_503_and_changes_nothing() -> None:
    """With down=True every API request is a 503 and no write is applied."""
    app = make_app()
    oid = app.seeded_ids[0]
    app.set_faults(down=True)
    for response in (get(app, oid), put_state(app, oid, "processing")):
        assert response.status == 503
        assert response.fault == "down"
        assert response.json()["code"] == "service-unavailable"
    assert app.handle("GET", f"{BASE}/{oid}", {}).status == 503  # before auth
    assert status_of(app, oid) == "checkout"
    app.set_faults(down=False)
    assert put_state(app, oid, "processing").status == 200


@pytest.mark.parametrize("rate_field", ["error_rate", "rate_limit_rate", "hang_rate", "reset_rate"])
def test_faulted_put_does_not_change_state(rate_field: str) -> None:
    """Faults are decided before the store is touched: a faulted PUT leaves the order as it was."""
    app = make_app()
    oid = app.seeded_ids[0]
    before = app.get_order(oid)
    app.set_faults(**{rate_field: 1.0})
    response = put_state(app, oid, "processing")
    assert response.fault is not None
    assert app.get_order(oid) == before
    assert app.history(oid) == ["checkout"]


def test_error_rate_gives_500_or_503() -> None:
    """error_rate draws 500 or 503 BaseError answers."""
    app = make_app(faults=FaultConfig(error_rate=1.0))
    statuses = {get(app, app.seeded_ids[0]).status for _ in range(50)}
    assert statuses == {500, 503}


def test_rate_limit_has_retry_after() -> None:
    """rate_limit_rate answers 429 with a Retry-After header in seconds."""
    app = make_app(faults=FaultConfig(rate_limit_rate=1.0, retry_after_s=7))
    response = get(app, app.seeded_ids[0])
    assert response.status == 429
    assert response.header("retry-after") == "7"
    assert response.json()["code"] == "too-many-requests"


def test_hang_and_reset_are_described_on_the_response() -> None:
    """Hangs and resets carry no answer, only instructions for the transport."""
    app = make_app(faults=FaultConfig(hang_rate=1.0, hang_s=3.5))
    hung = get(app, app.seeded_ids[0])
    assert (hung.hang_s, hung.reset, hung.fault) == (3.5, False, "hang")
    app.set_faults(hang_rate=0.0, reset_rate=1.0)
    reset = get(app, app.seeded_ids[0])
    assert (reset.reset, reset.fault) == (True, "reset")
    calls = app.calls(app.seeded_ids[0])
    assert [(c["status"], c["fault"]) for c in calls] == [(None, "hang"), (None, "reset")]


def test_fault_rates_are_seeded_and_roughly_right() -> None:
    """The same seed gives the same fault sequence and the observed rate matches."""

    def sequence(seed: int) -> list[int]:
        app = make_app(seed=seed, faults=FaultConfig(error_rate=0.2, rate_limit_rate=0.1))
        return [get(app, app.seeded_ids[0]).status for _ in range(2000)]

    first = sequence(5)
    assert first == sequence(5)
    assert first != sequence(6)
    errors = sum(s in (500, 503) for s in first) / len(first)
    limited = sum(s == 429 for s in first) / len(first)
    assert 0.16 < errors < 0.24
    assert 0.07 < limited < 0.13


def test_fault_after_apply_applies_the_write_then_fails() -> None:
    """fault_after_apply_rate applies the PUT and still answers 500 (ambiguous outcome)."""
    app = make_app(faults=FaultConfig(fault_after_apply_rate=1.0))
    oid = app.seeded_ids[0]
    response = put_state(app, oid, "processing")
    assert response.status == 500
    assert response.fault == "after_apply"
    assert status_of(app, oid) == "processing"


def test_script_is_consumed_before_rates() -> None:
    """Scripted answers match on method and path suffix, count down, then normal service resumes."""
    app = make_app(faults=FaultConfig(error_rate=0.0))
    oid = app.seeded_ids[0]
    app.set_faults(
        script=[
            {"method": "PUT", "path_suffix": "/state", "status": 503, "count": 2},
            {
                "method": "GET",
                "status": 502,
                "body": "<html>bad gateway</html>",
                "headers": {"content-type": "text/html"},
            },
        ]
    )
    assert get(app, oid).body == b"<html>bad gateway</html>"
    assert get(app, oid).status == 200
    first = put_state(app, oid, "processing")
    second = put_state(app, oid, "processing")
    assert (first.status, second.status, first.fault) == (503, 503, "script")
    assert first.body == b""
    assert status_of(app, oid) == "checkout"
    assert put_state(app, oid, "processing").status == 200
    assert app.config.faults.script == []


def test_script_body_and_headers() -> None:
    """A scripted body is sent as JSON unless a non-JSON content type is scripted."""
    app = make_app()
    app.set_faults(
        script=[
            ScriptedResponse(status=500, body={"code": "x", "message": "y"}),
            ScriptedResponse(status=502, body="<html/>", headers={"content-type": "text/html"}),
            ScriptedResponse(status=429, headers={"Retry-After": "0"}),
        ]
    )
    first = get(app, app.seeded_ids[0])
    assert (first.status, first.json()) == (500, {"code": "x", "message": "y"})
    second = get(app, app.seeded_ids[0])
    assert (second.status, second.body, second.header("content-type")) == (
        502,
        b"<html/>",
        "text/html",
    )
    third = get(app, app.seeded_ids[0])
    assert (third.status, third.header("retry-after"), third.body) == (429, "0", b"")


def test_script_after_apply_and_connection_faults() -> None:
    """Script entries can apply the write first, or reset/hang instead of answering."""
    app = make_app()
    oid = app.seeded_ids[0]
    app.set_faults(
        script=[
            {"path_suffix": "/state", "status": 500, "after_apply": True},
            {"fault": "reset"},
            {"fault": "hang"},
        ]
    )
    assert put_state(app, oid, "processing").status == 500
    assert status_of(app, oid) == "processing"
    reset = put_state(app, oid, "accepted")
    assert reset.reset
    hang = put_state(app, oid, "accepted")
    assert hang.hang_s == app.config.faults.hang_s
    assert status_of(app, oid) == "processing"


def test_down_takes_precedence_over_script() -> None:
    """down answers before any scripted entry is consumed."""
    app = make_app()
    app.set_faults(down=True, script=[{"status": 418}])
    assert get(app, app.seeded_ids[0]).status == 503
    app.set_faults(down=False)
    assert get(app, app.seeded_ids[0]).status == 418


def test_faults_never_touch_admin_endpoints() -> None:
    """Admin endpoints work while the API is down or faulting."""
    app = make_app(faults=FaultConfig(down=True, error_rate=1.0))
    assert admin(app, "GET", "/health").status == 200
    assert admin(app, "GET", "/faults").json()["down"] is True
    assert admin(app, "GET", "/stats").json()["requests"] == 0


def test_latency_and_jitter_are_drawn_per_request() -> None:
    """delay_s is latency_ms plus a uniform jitter, deterministic per seed."""
    app = make_app(latency_ms=50.0, jitter_ms=20.0)
    delays = [get(app, app.seeded_ids[0]).delay_s for _ in range(200)]
    assert all(0.05 <= d <= 0.07 for d in delays)
    assert len(set(delays)) > 100
    again = make_app(latency_ms=50.0, jitter_ms=20.0)
    assert delays == [get(again, again.seeded_ids[0]).delay_s for _ in range(200)]
    assert admin(app, "GET", "/health").delay_s == 0.0


@pytest.mark.parametrize(
    "changes",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"error_rate": 0.6, "reset_rate": 0.6},
        {"hang_s": -1},
        {"unknown": 1},
        {"latency_ms": -5},
        {"enforce_transitions": "yes"},
        {"script": [{"status": 99}]},
        {"script": [{"status": 500, "count": 0}]},
        {"script": [{"bogus": 1}]},
        {"error_statuses": []},
    ],
)
def test_set_faults_rejects_bad_values(changes: dict[str, Any]) -> None:
    """Invalid fault settings raise ValueError and leave the settings unchanged."""
    app = make_app()
    before = app.faults_json()
    with pytest.raises(ValueError, match=r"."):
        app.set_faults(**changes)
    assert app.faults_json() == before
    assert admin(app, "PUT", "/faults", changes).status == 400


def test_admin_faults_partial_update() -> None:
    """PUT /__admin/faults changes only the given fields, GET shows all of them."""
    app = make_app()
    response = admin(app, "PUT", "/faults", {"error_rate": 0.25, "latency_ms": 12})
    assert response.status == 200
    current = admin(app, "GET", "/faults").json()
    assert current["error_rate"] == 0.25
    assert current["latency_ms"] == 12
    assert current["rate_limit_rate"] == 0.0
    assert app.config.latency_ms == 12
    admin(app, "PUT", "/faults", {"rate_limit_rate": 0.5})
    current = admin(app, "GET", "/faults").json()
    assert (current["error_rate"], current["rate_limit_rate"]) == (0.25, 0.5)
    admin(app, "PUT", "/faults", {"enforce_transitions": False})
    assert app.config.enforce_transitions is False
    assert admin(app, "PUT", "/faults", {"script": [{"status": 500, "count": 2}]}).status == 200
    assert admin(app, "GET", "/faults").json()["script"][0]["count"] == 2


def test_admin_seed() -> None:
    """POST /__admin/seed adds orders under a merchant/channel and returns their ids."""
    app = make_app(orders=0)
    response = admin(app, "POST", "/seed", {"count": 4, "merchant": "m", "channel": "c"})
    ids = response.json()["ids"]
    assert len(ids) == 4
    scoped = {**HEADERS, "x-merchant": "m", "x-channel": "c"}
    assert all(app.handle("GET", f"{BASE}/{i}", scoped).status == 200 for i in ids)
    processing = admin(app, "POST", "/seed", {"count": 1, "status": "processing"}).json()["ids"]
    assert status_of(app, processing[0]) == "processing"
    assert admin(app, "POST", "/seed", {"count": "x"}).status == 400
    assert admin(app, "POST", "/seed", {"count": 1, "status": "bogus"}).status == 400
    assert admin(app, "POST", "/seed", {"count": 1, "extra": 1}).status == 400
    assert admin(app, "POST", "/seed", b"nope").status == 400


def test_admin_calls_history_stats_and_reset() -> None:
    """Admin endpoints expose per-order calls, status history, stats, and reset the log."""
    app = make_app()
    oid = app.seeded_ids[0]
    put_state(app, oid, "processing")
    put_state(app, oid, "accepted")
    app.handle("DELETE", f"{BASE}/{oid}", HEADERS)
    get(app, oid)
    calls = admin(app, "GET", f"/calls?order_id={oid}").json()
    assert calls["order_id"] == oid
    assert [(c["method"], c["status"]) for c in calls["calls"]] == [
        ("PUT", 200),
        ("PUT", 200),
        ("DELETE", 204),
        ("GET", 404),
    ]
    history = admin(app, "GET", f"/history?order_id={oid}").json()["history"]
    assert history == ["checkout", "processing", "accepted", "deleted"]
    assert admin(app, "GET", "/history").status == 400
    stats = admin(app, "GET", "/stats").json()
    assert stats["requests"] == 4
    assert stats["by_status"] == {"200": 2, "204": 1, "404": 1}
    assert len(admin(app, "GET", "/calls").json()["calls"]) == 4
    assert admin(app, "POST", "/reset-log").status == 204
    assert app.calls(oid) == []
    assert app.stats()["requests"] == 0
    assert app.history(oid) == history


def test_admin_order_view_and_unknown_route() -> None:
    """GET /__admin/orders/{id} shows any order regardless of merchant; unknown admin paths 404."""
    app = make_app()
    oid = app.seeded_ids[1]
    assert admin(app, "GET", f"/orders/{oid}").json() == app.get_order(oid)
    assert admin(app, "GET", "/orders/o_missing").status == 404
    assert admin(app, "GET", "/nothing").status == 404


def test_stats_count_faults() -> None:
    """Stats count injected faults by kind."""
    app = make_app(faults=FaultConfig(reset_rate=1.0))
    get(app, app.seeded_ids[0])
    app.set_faults(reset_rate=0.0, rate_limit_rate=1.0)
    get(app, app.seeded_ids[0])
    stats = app.stats()
    assert stats["by_fault"] == {"rate_limit": 1, "reset": 1}
    assert stats["by_status"] == {"429": 1}


def test_call_log_can_be_disabled() -> None:
    """With log_calls=False nothing is logged but stats still count."""
    app = make_app(log_calls=False)
    get(app, app.seeded_ids[0])
    assert app.calls() == []
    assert app.stats()["requests"] == 1


async def test_mock_transport_latency_and_read_timeout() -> None:
    """The mock transport sleeps the latency and raises ReadTimeout past the read timeout."""
    app = make_app(latency_ms=150.0)
    async with httpx.AsyncClient(
        transport=app.mock_transport(), base_url="http://sim", headers=HEADERS
    ) as client:
        started = time.monotonic()
        response = await client.get(f"{BASE}/{app.seeded_ids[0]}")
        assert response.status_code == 200
        assert time.monotonic() - started >= 0.14
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{BASE}/{app.seeded_ids[0]}", timeout=0.05)


async def test_mock_transport_hang_and_reset() -> None:
    """A hang times out the client; a reset is a RemoteProtocolError; 429 passes through."""
    app = make_app(faults=FaultConfig(hang_rate=1.0, hang_s=30.0))
    async with httpx.AsyncClient(
        transport=app.mock_transport(), base_url="http://sim", headers=HEADERS
    ) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{BASE}/{app.seeded_ids[0]}", timeout=0.05)
        app.set_faults(hang_rate=0.0, reset_rate=1.0)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{BASE}/{app.seeded_ids[0]}")
        app.set_faults(reset_rate=0.0, rate_limit_rate=1.0, retry_after_s=2)
        limited = await client.get(f"{BASE}/{app.seeded_ids[0]}")
        assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")


def test_sync_mock_transport_reset() -> None:
    """The sync mock transport raises RemoteProtocolError on a reset."""
    app = make_app(faults=FaultConfig(reset_rate=1.0))
    with (
        httpx.Client(transport=app.mock_transport(), base_url="http://sim") as client,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        client.get(f"{BASE}/{app.seeded_ids[0]}")
