"""The simulator's request handling as a pure function: ``SimulatorApp.handle``.

``handle(method, target, headers, body) -> Response`` never blocks and never sleeps. Latency,
hangs and connection resets are *described* on the returned ``Response`` (``delay_s``,
``hang_s``, ``reset``) and carried out by the transport: the asyncio HTTP server in
``norce_simulator.server`` or the ``httpx.MockTransport`` from ``SimulatorApp.mock_transport``.
See the package docstring for the error-shape and fault-ordering decisions.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from norce_simulator.config import (
    ORDER_STATUSES,
    FaultConfig,
    ScriptedResponse,
    SimulatorConfig,
)
from norce_simulator.data import format_ts
from norce_simulator.model import BodyError, bind_order, parse_json
from norce_simulator.notification_routes import (
    admin_notifications,
    admin_state,
    order_notifications,
)
from norce_simulator.notifications import NotificationHub
from norce_simulator.responses import (
    JSON,
    Response,
    base_error,
    internal_error,
    is_json_media_type,
    json_response,
    not_found,
    problem,
)
from norce_simulator.store import ConflictError, OrderStore, StoredOrder, dump_json

__all__ = [
    "Response",
    "SimulatorApp",
    "base_error",
    "internal_error",
    "is_json_media_type",
    "not_found",
    "problem",
]

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("norce_simulator")

API_PREFIX = "/api/v0/checkout/orders"
ADMIN_PREFIX = "/__admin"
ORDER_BY = ("created", "billingEmail", "billingName", "cartTotal")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_INT32_TEXT = re.compile(r"^[+-]?[0-9]{1,10}$")
_LOWER_STATUSES = {s.lower(): s for s in ORDER_STATUSES}

_SETTABLE_CONFIG = ("latency_ms", "jitter_ms", "enforce_transitions", "enforce_required_consents")


def _error_code(status: int) -> str:
    if status == 500:
        return "internal-server-error"
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return "error"


class SimulatorApp:
    """Stateful simulator of the Norce Checkout Order Management API (v0)."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.config.validate()
        seed = self.config.seed
        self.store = OrderStore(random.Random(seed), self.config.clock)
        self._fault_rng = random.Random(f"faults-{seed}")
        self._latency_rng = random.Random(f"latency-{seed}")
        self._lock = threading.RLock()
        self._seq = 0
        # Call records are flat tuples of immutable values (cheap, and ignored by the cyclic GC);
        # calls() turns them into dicts.
        self._log: deque[_CallRecord] = deque(maxlen=self.config.max_log_entries)
        self._calls: dict[str, deque[_CallRecord]] = {}
        self._by_status: Counter[str] = Counter()
        self._by_fault: Counter[str] = Counter()
        self._requests = 0
        self._started = time.monotonic()
        self.notifications = NotificationHub(
            self._lock, self.config.clock, seed, self.config.max_log_entries
        )
        self.seeded_ids: list[str] = self.seed(
            self.config.orders, self.config.merchant, self.config.channel
        )

    # -- in-process API -----------------------------------------------------------------------

    def seed(
        self,
        n: int,
        merchant: str | None = None,
        channel: str | None = None,
        status: str | None = None,
    ) -> list[str]:
        """Add ``n`` generated orders (default merchant/channel/statuses from the config)."""
        if status is not None and status not in ORDER_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        statuses = (status,) if status is not None else self.config.seed_statuses
        with self._lock:
            ids = self.store.seed(
                n, merchant or self.config.merchant, channel or self.config.channel, statuses
            )
        if self.config.freeze_after_seed:
            gc.freeze()
        return ids

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        """Return a copy of the order exactly as GET serves it, or ``None`` if absent."""
        with self._lock:
            order = self.store.orders.get(order_id)
            if order is None:
                return None
            value: dict[str, Any] = json.loads(order.json_bytes())
            return value

    def history(self, order_id: str) -> list[str]:
        """Return every status the order went through, ending in ``deleted`` if deleted."""
        with self._lock:
            return list(self.store.histories.get(order_id, ()))

    def calls(self, order_id: str | None = None) -> list[dict[str, Any]]:
        """Return the API call log of one order (or of all requests), oldest first."""
        with self._lock:
            records = list(self._log if order_id is None else self._calls.get(order_id, ()))
        return [_call_entry(record) for record in records]

    def stats(self) -> dict[str, Any]:
        """Return API request counts by status and by injected fault."""
        with self._lock:
            return {
                "requests": self._requests,
                "by_status": dict(sorted(self._by_status.items())),
                "by_fault": dict(sorted(self._by_fault.items())),
                "orders": len(self.store),
                "uptime_s": round(time.monotonic() - self._started, 3),
                "notifications": self.notifications.stats(),
                "gc_frozen": gc.get_freeze_count(),
            }

    def count_unparsed(self, status: int) -> None:
        """Count an answer the HTTP server gave to a request it could not parse (431, 413...)."""
        with self._lock:
            self._requests += 1
            self._by_status[str(status)] += 1

    def reset_log(self) -> None:
        """Forget the call log, the request statistics and the notification attempt log.

        Orders, histories and queued notification deliveries are kept.
        """
        with self._lock:
            self.notifications.reset_log()
            self._log.clear()
            self._calls.clear()
            self._by_status.clear()
            self._by_fault.clear()
            self._requests = 0

    def set_faults(self, **changes: Any) -> FaultConfig:
        """Partially update the fault settings (and ``latency_ms``/``jitter_ms``/enforcement).

        ``script`` entries may be ``ScriptedResponse`` objects or their JSON dicts. Raises
        ``ValueError`` (nothing changed) on unknown fields or out-of-range values.
        """
        fault_fields = {f.name for f in dataclasses.fields(FaultConfig)}
        unknown = set(changes) - fault_fields - set(_SETTABLE_CONFIG)
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        with self._lock:
            fault_changes = {k: v for k, v in changes.items() if k in fault_fields}
            current = self.config.faults
            script = fault_changes.get("script", current.script)
            if not isinstance(script, list):
                raise ValueError("script must be a list")
            fault_changes["script"] = [_script_entry(entry) for entry in script]
            if "error_statuses" in fault_changes:
                statuses = fault_changes["error_statuses"]
                if not isinstance(statuses, list | tuple):
                    raise ValueError("error_statuses must be a list")
                fault_changes["error_statuses"] = tuple(statuses)
            new = dataclasses.replace(current, **fault_changes)
            new.validate()
            config_changes = {k: v for k, v in changes.items() if k in _SETTABLE_CONFIG}
            for name in ("latency_ms", "jitter_ms"):
                if name in config_changes:
                    value = config_changes[name]
                    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                        raise ValueError(f"{name} must be a non-negative number")
            for name in ("enforce_transitions", "enforce_required_consents"):
                if name in config_changes and not isinstance(config_changes[name], bool):
                    raise ValueError(f"{name} must be a boolean")
            self.config.faults = new
            for name, value in config_changes.items():
                setattr(self.config, name, value)
            log.info("simulator faults updated: %s", sorted(changes))
            return new

    def faults_json(self) -> dict[str, Any]:
        """Return the fault settings plus latency and enforcement flags as JSON."""
        with self._lock:
            payload = self.config.faults.to_json()
            for name in _SETTABLE_CONFIG:
                payload[name] = getattr(self.config, name)
            return payload

    # -- request handling ---------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes = b""
    ) -> Response:
        """Answer one HTTP request (header names are matched case-insensitively)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        return self.handle_lowered(method.upper(), target, lowered, body)

    def handle_lowered(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Response:
        """``handle`` for callers that already upper-cased the method and lower-cased names."""
        path, _, query = target.partition("?")
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            with self._lock:
                try:
                    return self._admin(method, path, query, body)
                except Exception:
                    log.exception("simulator failed to handle admin %s %s", method, path)
                    return internal_error()
        with self._lock:
            return self._api(method, target, path, query, headers, body)

    def _api(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        segments = self._route(path)
        order_id = segments[0] if segments else None
        try:
            faulted, after_apply = self._draw_fault(method, path)
            if faulted is not None and not after_apply:
                response = faulted
            else:
                response = self._dispatch(method, segments, query, headers, body)
                if response.status == 201 and segments == [] and response.body:
                    order_id = json.loads(response.body)
                if faulted is not None:
                    response = faulted
        except Exception:
            # A simulator bug: answer (and count) a documented 500 rather than drop the request.
            log.exception("simulator failed to handle %s %s", method, path)
            response = internal_error()
        cfg = self.config
        if cfg.latency_ms or cfg.jitter_ms:
            jitter = self._latency_rng.uniform(0.0, cfg.jitter_ms) if cfg.jitter_ms else 0.0
            response.delay_s = (cfg.latency_ms + jitter) / 1000.0
        self._record(method, target, headers, body, response, order_id)
        return response

    def _record(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        response: Response,
        order_id: str | None,
    ) -> None:
        self._requests += 1
        no_answer = response.reset or response.hang_s is not None
        if not no_answer:
            self._by_status[str(response.status)] += 1
        if response.fault is not None:
            self._by_fault[response.fault] += 1
        if not self.config.log_calls:
            return
        self._seq += 1
        entry: _CallRecord = (
            self._seq,
            self.config.clock(),
            time.monotonic(),
            method,
            target,
            order_id,
            None if no_answer else response.status,
            response.fault,
            headers.get("x-merchant"),
            headers.get("x-channel"),
            headers.get("x-adapterid"),
            body,
            headers.get("traceparent"),
        )
        self._log.append(entry)
        if order_id is not None:
            per_order = self._calls.get(order_id)
            if per_order is None:
                per_order = self._calls[order_id] = deque(maxlen=self.config.max_log_entries)
            per_order.append(entry)

    def _route(self, path: str) -> list[str] | None:
        """Return the percent-decoded segments after the orders collection, or ``None``."""
        for base in self.config.base_paths:
            if base and path.startswith(base + "/"):
                path = path[len(base) :]
                break
        if path == API_PREFIX or path == API_PREFIX + "/":
            return []
        if not path.startswith(API_PREFIX + "/"):
            return None
        segments = path[len(API_PREFIX) + 1 :].split("/")
        if len(segments) > 1 and segments[-1] == "":
            segments.pop()  # tolerate one trailing slash
        return [unquote(segment) for segment in segments]

    def _draw_fault(self, method: str, path: str) -> tuple[Response | None, bool]:
        """Pick the injected fault for this request, if any; also say if it is after-apply."""
        faults = self.config.faults
        if faults.down:
            response = base_error(
                faults.down_status,
                _error_code(faults.down_status),
                "The simulated Order API is down.",
            )
            response.fault = "down"
            return response, False
        for index, entry in enumerate(faults.script):
            if entry.matches(method, path):
                entry.count -= 1
                if entry.count <= 0:
                    del faults.script[index]
                return self._scripted(entry), entry.after_apply
        draw_needed = (
            faults.reset_rate
            or faults.hang_rate
            or faults.rate_limit_rate
            or faults.error_rate
            or faults.fault_after_apply_rate
        )
        if not draw_needed:
            return None, False
        r = self._fault_rng.random()
        edge = faults.reset_rate
        if r < edge:
            return Response(0, fault="reset", reset=True), False
        edge += faults.hang_rate
        if r < edge:
            return Response(0, fault="hang", hang_s=faults.hang_s), False
        edge += faults.rate_limit_rate
        if r < edge:
            seconds = f"{faults.retry_after_s:g}"
            response = base_error(
                429,
                "too-many-requests",
                f"Rate limit exceeded. Retry after {seconds} s.",
                retry_after=seconds,
            )
            response.fault = "rate_limit"
            return response, False
        edge += faults.error_rate
        if r < edge:
            status = self._fault_rng.choice(faults.error_statuses)
            response = base_error(status, _error_code(status), "Simulated server error.")
            response.fault = "error"
            return response, False
        edge += faults.fault_after_apply_rate
        if r < edge:
            response = base_error(500, "internal-server-error", "Simulated error after write.")
            response.fault = "after_apply"
            return response, True
        return None, False

    def _scripted(self, entry: ScriptedResponse) -> Response:
        if entry.fault == "reset":
            return Response(0, fault="script:reset", reset=True)
        if entry.fault == "hang":
            return Response(0, fault="script:hang", hang_s=self.config.faults.hang_s)
        headers = list(entry.headers.items())
        content_type = next(
            (v for k, v in entry.headers.items() if k.lower() == "content-type"), None
        )
        if entry.body is None:
            body = b""
        elif isinstance(entry.body, str) and content_type and "json" not in content_type:
            body = entry.body.encode()
        else:
            body = dump_json(entry.body)
            if content_type is None:
                headers.insert(0, ("content-type", JSON))
        return Response(entry.status, headers, body, fault="script")

    # -- API dispatch -------------------------------------------------------------------------

    def _dispatch(
        self,
        method: str,
        segments: list[str] | None,
        query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        if segments is None:
            return base_error(404, "not-found", "No API route matches this path.")
        allowed = _allowed_methods(segments)
        if allowed is None:
            return base_error(501, "not-implemented", "This Order API route is not simulated.")
        if method not in allowed:
            response = base_error(405, "method-not-allowed", f"{method} is not allowed here.")
            response.headers.append(("allow", ", ".join(allowed)))
            return response
        denied = self._authenticate(headers)
        if denied is not None:
            return denied
        merchant = headers.get("x-merchant", "").strip()
        channel = headers.get("x-channel", "").strip()
        for name, value in (("x-merchant", merchant), ("x-channel", channel)):
            if not value:
                return base_error(
                    400,
                    "order-bad-request",
                    f"The {name} header is required and must not be empty.",
                )
        if method in ("POST", "PUT"):
            unsupported = _unsupported_media_type(headers, body)
            if unsupported is not None:
                return unsupported
        if not segments:
            if method == "GET":
                return self._list(merchant, channel, query)
            return self._create(merchant, channel, body)
        order_id = segments[0]
        if len(segments) >= 2 and segments[1] == "notifications":
            return order_notifications(self, order_id, segments[2:], merchant, channel, body)
        if len(segments) == 2:
            return self._put_state(order_id, merchant, channel, body)
        order = self.store.get(order_id, merchant, channel)
        if order is None:
            return not_found(order_id)
        if method == "GET":
            return Response(200, [("content-type", JSON)], order.json_bytes())
        self.store.delete(order)
        return Response(204)

    def _authenticate(self, headers: dict[str, str]) -> Response | None:
        raw = headers.get("authorization", "").strip()
        scheme, _, rest = raw.partition(" ")
        key = rest.strip() if scheme.lower() == "bearer" else raw
        if key and key in self.config.api_keys:
            return None
        return base_error(
            401,
            "unauthorized",
            "Missing or invalid API key." if raw else "Missing Authorization header.",
            www_authenticate="Bearer",
        )

    def _put_state(self, order_id: str, merchant: str, channel: str, body: bytes) -> Response:
        if not body.strip():
            return problem("A non-empty request body is required.", {"$": ["Body is required."]})
        try:
            parsed = parse_json(body)
        except BodyError as exc:
            return problem(str(exc), {"$": [str(exc)]})
        if not isinstance(parsed, dict):
            return problem("The request body must be a JSON object.", {"$": ["Expected object."]})
        raw_status = parsed.get("currentStatus")
        if raw_status is None:
            return problem(
                "The currentStatus field is required.",
                {"currentStatus": ["The currentStatus field is required."]},
            )
        status = _LOWER_STATUSES.get(raw_status.lower()) if isinstance(raw_status, str) else None
        if status is None:
            return problem(
                f"The value {json.dumps(raw_status)} is not a valid order status.",
                {"currentStatus": [f"Allowed values: {', '.join(ORDER_STATUSES)}."]},
            )
        order = self.store.get(order_id, merchant, channel)
        if order is None:
            return not_found(order_id)
        refused = self.change_status(order, status, "api")
        return refused if isinstance(refused, Response) else Response(200)

    def change_status(self, order: StoredOrder, status: str, source: str) -> Response | list[str]:
        """Apply a status change under the API's rules: the ids of fired events, or the 400.

        The same status again is a no-op. A real change appends a transition and fires the
        order's notifications (``source`` says who changed it: ``api`` or an adapter id).
        """
        order_id = order.id
        current = order.status
        if status == current:
            return []
        if self.config.enforce_transitions and status not in self.config.transitions.get(
            current, frozenset()
        ):
            return base_error(
                400,
                "order-bad-request",
                f"Order with id:{order_id} cannot transition from '{current}' to '{status}'.",
            )
        if status == "processing" and self.config.enforce_required_consents:
            for consent in order.data.get("consents") or []:
                if (
                    isinstance(consent, dict)
                    and consent.get("required")
                    and not consent.get("checked")
                ):
                    return base_error(
                        400,
                        "order-validation",
                        f"Required consent '{consent.get('id')}' must be checked before "
                        "the order can move to processing.",
                    )
        hub = self.notifications
        captured = hub.capture(order.data, order.merchant, order.channel)
        self.store.set_status(order, status)
        if not captured:
            return []
        return hub.fire(
            captured, order.data, order.json_bytes, order.merchant, order.channel, source
        )

    def _create(self, merchant: str, channel: str, body: bytes) -> Response:
        parsed: Any = {}
        if body:  # a body of only whitespace is not JSON (and not "no body")
            try:
                parsed = parse_json(body)
            except BodyError as exc:
                return problem(str(exc), {"$": [str(exc)]})
        if not isinstance(parsed, dict):
            return problem("The request body must be a JSON object.", {"$": ["Expected object."]})
        bound, errors = bind_order(parsed)
        if errors:
            return problem("The order is not valid.", errors)
        hub = self.notifications
        try:
            for entry in bound.get("notifications") or []:
                hub.prepare(entry)
        except ValueError as exc:
            return problem("The order is not valid.", {"notifications": [str(exc)]})
        try:
            order_id = self.store.create(merchant, channel, bound)
        except ConflictError as exc:
            return base_error(409, "order-conflict", str(exc))
        order = self.store.orders[order_id]
        captured = hub.capture(order.data, merchant, channel, new=True)
        if captured:
            hub.fire(captured, order.data, order.json_bytes, merchant, channel, "api")
        return json_response(201, order_id)

    def _list(self, merchant: str, channel: str, query: str) -> Response:
        params = parse_qs(query, keep_blank_values=True)
        values: dict[str, int] = {}
        for name, default in (("offset", 0), ("limit", self.config.default_limit)):
            if name not in params:
                values[name] = default
                continue
            raw = params[name][-1]
            if not _INT32_TEXT.match(raw) or not INT32_MIN <= int(raw) <= INT32_MAX:
                shown = raw[:40]
                return problem(
                    f"The value '{shown}' is not valid for {name}.",
                    {name: [f"The value '{shown}' is not a valid int32."]},
                )
            values[name] = int(raw)
        offset, limit = values["offset"], values["limit"]
        if offset < 0:
            return base_error(400, "order-bad-request", "offset must be zero or positive.")
        if not 1 <= limit <= self.config.max_limit:
            return base_error(
                400, "order-bad-request", f"limit must be between 1 and {self.config.max_limit}."
            )
        order_by = params.get("order_by", ["created"])[-1]
        direction = params.get("order_by_direction", ["desc"])[-1]
        if order_by not in ORDER_BY:
            return problem(f"Unknown order_by '{order_by[:40]}'.", {"order_by": list(ORDER_BY)})
        if direction not in ("asc", "desc"):
            return problem(
                f"Unknown order_by_direction '{direction[:40]}'.",
                {"order_by_direction": ["asc", "desc"]},
            )
        statuses = {s for raw in params.get("status", []) for s in raw.split(",")}
        if statuses - set(ORDER_STATUSES):
            return problem("Unknown status filter.", {"status": list(ORDER_STATUSES)})
        scoped = list(self.store.scoped(merchant, channel))
        matched = [o for o in scoped if _matches(o, params, statuses)]
        matched.sort(key=lambda o: (_sort_key(o, order_by), o.id), reverse=direction == "desc")
        page = matched[offset : offset + limit]
        value_sum = round(sum(_minor(_price_incl(o.data.get("total"))) for o in matched) / 100, 2)
        pagination = dump_json(
            {
                "offset": offset,
                "limit": limit,
                "size": len(matched),
                "valueSum": value_sum,
                "totalSize": len(scoped),
            }
        )
        body = b'{"data":[' + b",".join(o.json_bytes() for o in page) + b'],"pagination":'
        return Response(200, [("content-type", JSON)], body + pagination + b"}")

    # -- admin --------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: str, body: bytes) -> Response:
        route = path[len(ADMIN_PREFIX) :].rstrip("/")
        params = parse_qs(query)
        order_id = params.get("order_id", [None])[-1]
        key = (method, route)
        if key == ("GET", "/health"):
            return json_response(200, {"status": "ok", "orders": len(self.store)})
        if key == ("GET", "/faults"):
            return json_response(200, self.faults_json())
        if key == ("GET", "/stats"):
            return json_response(200, self.stats())
        if key == ("GET", "/calls"):
            return json_response(200, {"order_id": order_id, "calls": self.calls(order_id)})
        if key == ("GET", "/history"):
            if order_id is None:
                return base_error(400, "bad-request", "order_id query parameter is required.")
            return json_response(200, {"order_id": order_id, "history": self.history(order_id)})
        if key == ("POST", "/reset-log"):
            self.reset_log()
            return Response(204)
        if method == "POST" and route.startswith("/orders/") and route.endswith("/state"):
            return admin_state(self, unquote(route[len("/orders/") : -len("/state")]), body)
        if route.startswith(("/notification", "/adapters/")):
            return admin_notifications(self, method, route, params, body)
        if method == "GET" and route.startswith("/orders/"):
            wanted = unquote(route[len("/orders/") :])
            order = self.get_order(wanted)
            return json_response(200, order) if order is not None else not_found(wanted)
        if key in (("PUT", "/faults"), ("POST", "/seed")):
            try:
                payload = json.loads(body) if body.strip() else {}
            except ValueError:
                return base_error(400, "bad-request", "Body must be JSON.")
            if not isinstance(payload, dict):
                return base_error(400, "bad-request", "Body must be a JSON object.")
            try:
                if key == ("PUT", "/faults"):
                    self.set_faults(**payload)
                    return json_response(200, self.faults_json())
                return self._admin_seed(payload)
            except (ValueError, TypeError) as exc:
                return base_error(400, "bad-request", str(exc))
        return base_error(404, "not-found", f"No admin route {method} {route or '/'}.")

    def _admin_seed(self, payload: dict[str, Any]) -> Response:
        unknown = set(payload) - {"count", "merchant", "channel", "status"}
        if unknown:
            raise ValueError(f"unknown seed fields: {sorted(unknown)}")
        count = payload.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1_000_000:
            raise ValueError("count must be an integer within 0..1000000")
        merchant = payload.get("merchant")
        channel = payload.get("channel")
        status = payload.get("status")
        for name, value in (("merchant", merchant), ("channel", channel), ("status", status)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string")
        ids = self.seed(count, merchant, channel, status)
        return json_response(200, {"ids": ids})

    # -- httpx --------------------------------------------------------------------------------

    def mock_transport(self) -> httpx.MockTransport:
        """Return an ``httpx.MockTransport`` serving this app in-process.

        Latency is slept (``asyncio.sleep`` in async clients, ``time.sleep`` in sync ones) but
        bounded by the request's read timeout, after which ``httpx.ReadTimeout`` is raised;
        a hang does the same (or raises ``RemoteProtocolError`` if it ends before the timeout),
        and a reset raises ``httpx.RemoteProtocolError``.
        """
        from norce_simulator.transport import make_mock_transport

        return make_mock_transport(self)


_CallRecord = tuple[
    int,  # seq
    datetime,  # ts
    float,  # monotonic
    str,  # method
    str,  # path (request target as received)
    str | None,  # order id
    int | None,  # status (None: no answer was sent)
    str | None,  # fault kind
    str | None,  # x-merchant
    str | None,  # x-channel
    str | None,  # x-adapterid
    bytes,  # raw request body
    str | None,  # traceparent (W3C trace context), listed in the headers only when sent
]


def _allowed_methods(segments: list[str]) -> tuple[str, ...] | None:
    """The methods of a simulated route below the orders collection (``None``: not simulated)."""
    if not segments:
        return ("GET", "POST")
    if len(segments) == 1:
        return ("GET", "DELETE")
    if len(segments) == 2 and segments[1] == "state":
        return ("PUT",)
    if len(segments) == 2 and segments[1] == "notifications":
        return ("POST",)
    if len(segments) == 3 and segments[1] == "notifications":
        return ("DELETE",)
    return None


def _call_entry(record: _CallRecord) -> dict[str, Any]:
    seq, ts, mono, method, path, order_id, status, fault, merchant, channel, adapter, body, tp = (
        record
    )
    parsed: Any = None
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    return {
        "seq": seq,
        "ts": format_ts(ts),
        "monotonic": mono,
        "method": method,
        "path": path,
        "order_id": order_id,
        "status": status,
        "fault": fault,
        "headers": {"x-merchant": merchant, "x-channel": channel, "x-adapterid": adapter}
        | ({} if tp is None else {"traceparent": tp}),
        "body": parsed,
    }


def _script_entry(entry: Any) -> ScriptedResponse:
    if isinstance(entry, ScriptedResponse):
        return dataclasses.replace(entry, headers=dict(entry.headers))
    if isinstance(entry, Mapping):
        return ScriptedResponse.from_json(entry)
    raise ValueError("script entries must be objects")


def _unsupported_media_type(headers: Mapping[str, str], body: bytes) -> Response | None:
    """Return the 415 for a POST/PUT whose body is not declared JSON, else ``None``.

    A body needs a JSON ``Content-Type``; a request without a body may omit the header, but a
    non-JSON ``Content-Type`` is refused even on an empty body (it says the client meant to
    send something else).
    """
    content_type = headers.get("content-type")
    if content_type is None:
        if not body:
            return None
        message = "A request body needs Content-Type: application/json."
    elif is_json_media_type(content_type):
        return None
    else:
        shown = content_type.split(";", 1)[0].strip()[:80]
        message = f"Content-Type '{shown}' is not supported; use application/json."
    return base_error(415, "unsupported-media-type", message)


def _obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (stored data is read defensively)."""
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _price_incl(price: Any) -> float:
    value = _obj(price).get("includingVat")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            as_float = float(value)
        except OverflowError:
            return 0.0
        return as_float if math.isfinite(as_float) else 0.0
    return 0.0


def _minor(amount: float) -> int:
    return round(amount * 100) if math.isfinite(amount * 100) else 0


def _matches(order: StoredOrder, params: dict[str, list[str]], statuses: set[str]) -> bool:
    data = order.data
    if statuses and order.status not in statuses:
        return False
    reference = params.get("reference", [""])[-1]
    if reference and data.get("reference") != reference:
        return False
    cart_reference = params.get("cart_reference", [""])[-1]
    if cart_reference and _obj(data.get("cart")).get("reference") != cart_reference:
        return False
    payment_id = params.get("payment_id", [""])[-1]
    payments = data.get("payments")
    if payment_id and not any(
        _obj(p).get("id") == payment_id for p in (payments if isinstance(payments, list) else [])
    ):
        return False
    search = params.get("search", [""])[-1].lower()
    if search:
        billing = _obj(_obj(data.get("customer")).get("billing"))
        haystack = " ".join(
            _text(v)
            for v in (
                data.get("id"),
                data.get("reference"),
                _obj(data.get("cart")).get("reference"),
                billing.get("email"),
                billing.get("givenName"),
                billing.get("familyName"),
            )
        ).lower()
        if search not in haystack:
            return False
    return True


def _sort_key(order: StoredOrder, order_by: str) -> Any:
    data = order.data
    billing = _obj(_obj(data.get("customer")).get("billing"))
    if order_by == "billingEmail":
        return _text(billing.get("email"))
    if order_by == "billingName":
        return f"{_text(billing.get('givenName'))} {_text(billing.get('familyName'))}"
    if order_by == "cartTotal":
        return _price_incl(_obj(data.get("cart")).get("total"))
    return _text(data.get("created"))
