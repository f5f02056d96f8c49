"""The simulator's notification routes (reference §5.12, §7.2), kept out of ``app.py``.

API: ``POST /api/v0/checkout/orders/{order_id}/notifications`` (200 with the stored
notification) and ``DELETE …/notifications/{notification_id}`` (200; 404
``notification-not-found``). Admin: ``POST /__admin/orders/{id}/state`` (a change by another
adapter, under the API's rules) and the ``/__admin/notification*`` and ``/__admin/adapters/*``
routes, answered by ``NotificationHub.admin``. See README "The Norce API simulator: order
notifications".
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from norce_simulator.config import ORDER_STATUSES
from norce_simulator.data import format_ts
from norce_simulator.model import NOTIFICATION, BodyError, parse_json
from norce_simulator.responses import Response, base_error, json_response, not_found, problem

if TYPE_CHECKING:
    from norce_simulator.app import SimulatorApp
    from norce_simulator.store import StoredOrder

LOWER_STATUSES = {s.lower(): s for s in ORDER_STATUSES}


def order_notifications(
    app: SimulatorApp, order_id: str, rest: list[str], merchant: str, channel: str, body: bytes
) -> Response:
    """POST ``…/{order_id}/notifications`` and DELETE ``…/notifications/{id}``."""
    order = app.store.get(order_id, merchant, channel)
    if rest:  # DELETE one
        if order is None:
            return not_found(order_id)
        listed = order.data.get("notifications")
        kept = [n for n in listed or [] if not (isinstance(n, dict) and n.get("id") == rest[0])]
        if not isinstance(listed, list) or len(kept) == len(listed):
            return base_error(
                404, "notification-not-found", f"Notification with id:{rest[0]} not found."
            )
        order.data["notifications"] = kept
        _touch(app, order)
        return Response(200)
    try:
        parsed = parse_json(body) if body.strip() else None
    except BodyError as exc:
        return problem(str(exc), {"$": [str(exc)]})
    if not isinstance(parsed, dict):
        return problem("The request body must be a JSON object.", {"$": ["Expected object."]})
    errors: dict[str, list[str]] = {}
    bound = NOTIFICATION(parsed, "", errors)
    if errors or not isinstance(bound, dict):
        return problem("The notification is not valid.", errors)
    if order is None:
        return not_found(order_id)
    listed = order.data.get("notifications")
    current = [n for n in listed if isinstance(n, dict)] if isinstance(listed, list) else []
    try:
        stored = app.notifications.prepare(bound, (str(n.get("id")) for n in current))
    except ValueError as exc:
        return base_error(400, "order-bad-request", str(exc))
    order.data["notifications"] = [*current, stored]
    _touch(app, order)
    return json_response(200, stored)


def _touch(app: SimulatorApp, order: StoredOrder) -> None:
    order.data["lastModified"] = format_ts(app.store.now())
    order.touched(state_only=False)


def admin_notifications(
    app: SimulatorApp, method: str, route: str, params: dict[str, list[str]], body: bytes
) -> Response:
    try:
        payload = json.loads(body) if body.strip() else None
    except ValueError:
        return base_error(400, "bad-request", "Body must be JSON.")
    try:
        answer = app.notifications.admin(method, route, params, payload)
    except (ValueError, TypeError) as exc:
        return base_error(400, "bad-request", str(exc))
    if answer is None:
        return base_error(404, "not-found", f"No admin route {method} {route}.")
    status, value = answer
    return Response(status) if value is None else json_response(status, value)


def admin_state(app: SimulatorApp, order_id: str, body: bytes) -> Response:
    """``POST /__admin/orders/{id}/state {"state", "adapterId"}``: another adapter's change."""
    try:
        payload = json.loads(body) if body.strip() else {}
    except ValueError:
        return base_error(400, "bad-request", "Body must be JSON.")
    if not isinstance(payload, dict) or set(payload) - {"state", "adapterId"}:
        return base_error(400, "bad-request", "Body must be {state, adapterId}.")
    raw, adapter = payload.get("state"), payload.get("adapterId", "other-adapter")
    status = LOWER_STATUSES.get(raw.lower()) if isinstance(raw, str) else None
    if status is None or not isinstance(adapter, str) or not adapter:
        return base_error(
            400,
            "bad-request",
            f"state must be one of {', '.join(ORDER_STATUSES)}; adapterId a non-empty string.",
        )
    order = app.store.orders.get(order_id)
    if order is None:
        return not_found(order_id)
    changed = order.status != status
    fired = app.change_status(order, status, adapter)
    if isinstance(fired, Response):
        return fired
    answer = {"changed": changed, "events": fired, "order": app.get_order(order_id)}
    return json_response(200, answer)
