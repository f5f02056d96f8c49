"""The notification hub's scheduling without I/O: events, reorder hold, retries, duplicates."""

from __future__ import annotations

import json
import time
from typing import Any

from norce_simulator import SimulatorApp, SimulatorConfig
from norce_simulator.notifications import NotificationHub

HEADERS = {"authorization": "Bearer sim-api-key", "x-merchant": "norce", "x-channel": "1"}


def hub_with_channel(app: SimulatorApp, **faults: Any) -> NotificationHub:
    hub = app.notifications
    hub.admin("PUT", "/adapters/a", {}, {"internalUrl": "http://127.0.0.1:9"})
    hub.admin("PUT", "/notification-faults", {}, faults)
    hub.admin(
        "PUT",
        "/notifications",
        {},
        {
            "merchant": "norce",
            "channel": "1",
            "notifications": [
                {
                    "adapterId": "a",
                    "reference": "r",
                    "scope": "/state/currentStatus",
                    "schema": {"const": "processing"},
                    "invoke": "{configuration.adapter.internalUrl}/n/{order.id}",
                }
            ],
        },
    )
    return hub


def change(app: SimulatorApp, order_id: str) -> None:
    body = b'{"currentStatus":"processing"}'
    target = f"/api/v0/checkout/orders/{order_id}/state"
    headers = {**HEADERS, "content-type": "application/json"}
    assert app.handle_lowered("PUT", target, headers, body).status == 200


def test_reorder_window_holds_then_releases_newest_first_without_spinning() -> None:
    app = SimulatorApp(SimulatorConfig(orders=3))
    hub = hub_with_channel(app, reorder_window=3, reorder_hold_s=10.0)
    change(app, app.seeded_ids[0])
    now = time.monotonic() + 0.001
    taken, wait = hub.take_due(now)
    assert taken == []
    assert wait is not None
    assert 9.0 < wait <= 10.0  # sleeps until the hold ends, no busy loop
    change(app, app.seeded_ids[1])
    change(app, app.seeded_ids[2])
    taken, _ = hub.take_due(time.monotonic() + 0.001)
    assert [j.event.order_id for j in taken] == app.seeded_ids[2::-1]


def test_failed_attempts_are_retried_with_backoff_then_given_up() -> None:
    app = SimulatorApp(SimulatorConfig(orders=1))
    hub = hub_with_channel(app)
    hub.admin(
        "PUT",
        "/notification-settings",
        {},
        {"max_attempts": 2, "backoff_s": 5.0, "backoff_max_s": 10.0},
    )
    change(app, app.seeded_ids[0])
    (job,), _ = hub.take_due(time.monotonic() + 0.001)
    hub.finish_attempt(job, 503, None, 0.01)
    taken, wait = hub.take_due(time.monotonic())
    assert taken == []
    assert wait is not None
    assert 4.0 < wait <= 5.0
    (job,), _ = hub.take_due(time.monotonic() + 5.1)
    hub.finish_attempt(job, None, "ConnectError", 0.01)
    assert hub.stats()["pending"] == 0
    assert [e.status for e in hub.events.values()] == ["failed"]
    assert [a["attempt"] for a in hub.attempts] == [1, 2]


def test_duplicate_rate_one_queues_a_second_delivery_of_the_same_event() -> None:
    app = SimulatorApp(SimulatorConfig(orders=1))
    hub = hub_with_channel(app, duplicate_rate=1.0)
    change(app, app.seeded_ids[0])
    (job,), _ = hub.take_due(time.monotonic() + 0.001)
    hub.finish_attempt(job, 204, None, 0.01)
    (again,), _ = hub.take_due(time.monotonic() + 0.001)
    assert again.duplicate
    assert again.event is job.event
    hub.finish_attempt(again, 200, None, 0.01)
    assert hub.stats()["deliveries"] == 2
    assert hub.stats()["pending"] == 0


def admin(app: SimulatorApp, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = json.dumps(body).encode() if body is not None else b""
    response = app.handle(method, f"/__admin{path}", {}, raw)
    return response.status, response.json()


def test_admin_validates_settings_and_hides_adapter_header_values() -> None:
    app = SimulatorApp(SimulatorConfig(orders=1))
    assert admin(app, "PUT", "/notification-settings", {"max_attempts": 0})[0] == 400
    assert admin(app, "PUT", "/notification-settings", {"nope": 1})[0] == 400
    assert admin(app, "PUT", "/notification-faults", {"duplicate_rate": 2})[0] == 400
    assert admin(app, "PUT", "/notification-faults", {"receiver_down": "yes"})[0] == 400
    assert admin(app, "PUT", "/adapters/a", {"headers": {"X-A": "v\r\nX-B: w"}})[0] == 400
    status, adapter = admin(
        app, "PUT", "/adapters/a", {"internalUrl": "http://h", "headers": {"X-Secret": "s"}}
    )
    assert status == 200
    assert adapter == {"adapterId": "a", "internalUrl": "http://h", "headers": {"X-Secret": "***"}}
    assert admin(app, "GET", "/adapters/b")[0] == 404
    bad = {"merchant": "norce", "channel": "1", "notifications": [{"schema": {"type": 5}}]}
    assert admin(app, "PUT", "/notifications", bad)[0] == 400


def test_notifications_reset_forgets_registrations_queue_and_log() -> None:
    app = SimulatorApp(SimulatorConfig(orders=2))
    hub = hub_with_channel(app)
    change(app, app.seeded_ids[0])
    assert hub.stats()["pending"] == 1
    assert admin(app, "GET", "/notifications")[1]["channels"][0]["merchant"] == "norce"
    assert admin(app, "POST", "/notifications/reset") == (204, None)
    assert hub.stats()["pending"] == 0
    assert admin(app, "GET", "/notifications")[1] == {"channels": []}
    assert admin(app, "GET", "/notifications/events")[1] == {"events": []}
    change(app, app.seeded_ids[1])
    assert hub.stats()["events"] == 0
