"""Simulator of the Norce Checkout Order Management API (v0) for tests, benchmarks and demos.

It imports nothing from the rest of ``bridge`` so that drift between the client and the
simulator shows up in tests. The behaviour follows ``docs/norce-order-api.md``; where the reference
leaves a decision open, the simulator decides as follows (most choices are configurable in
``SimulatorConfig``/``FaultConfig``):

Routes (an optional leading ``/checkout/order`` segment is accepted, see ``base_paths``):
``GET/DELETE /api/v0/checkout/orders/{order_id}``, ``PUT .../{order_id}/state``,
``POST /api/v0/checkout/orders`` (201, bare JSON string id) and ``GET /api/v0/checkout/orders``
(``offset``/``limit``, default 10, max 100, plus ``order_by``, ``order_by_direction``,
``status``, ``reference``, ``cart_reference``, ``payment_id``, ``search``), and the order
notification routes (below). The order id is one percent-decoded path segment. Other
documented order sub-routes answer 501 ``not-implemented``; unknown paths 404 ``not-found``; a
wrong method 405 with ``Allow``.

Checks run in this order: injected faults, route/method, ``Authorization`` (401
``{"code":"unauthorized"}``; ``Bearer <key>`` or the bare key), ``x-merchant``/``x-channel``
(400), request media type (415), request body (400), order lookup (404), business rules (400).

Media type: a POST/PUT body needs a JSON ``Content-Type`` -- ``application/json``,
``text/json`` or ``application/*+json``, any case, parameters such as ``; charset=utf-8``
allowed (what ASP.NET's JSON input formatter accepts); otherwise 415
``{"code":"unsupported-media-type"}``. A request without a body may omit the header, but a
non-JSON ``Content-Type`` is 415 even without a body. Unknown query parameters are ignored.

Bodies are bound strictly (``norce_simulator.model``): strict JSON (no NaN/Infinity, no
number beyond a double, no lone surrogates, depth <= 64), every nested type of the writeable
``Order`` members, no ``null`` in typed members, int32 ranges, money within +-1e13, enums
case-insensitive and stored in documented spelling, read-only and unknown members dropped.
Only the bound copy is stored, so everything stored can be served back; readers of stored
data are defensive anyway, and a create is stored only once it is complete.

Error shapes: header problems and business-rule failures use the documented ``BaseError``
``{"code","message"}`` as ``application/json`` (``order-bad-request`` for headers, illegal
transitions, bad ``offset``/``limit`` ranges; ``order-validation`` for an unchecked required
consent on the way to ``processing``; ``order-conflict`` 409 for a duplicate cart reference on
create). Body and query *binding* failures (invalid JSON, not an object, missing
``currentStatus``, unknown enum value, non-integer paging values) use RFC 7807
``application/problem+json`` ``{"type","title","status","detail","errors"}``, as ASP.NET
model binding does; these also carry the ``BaseError`` members ``code``
(``order-bad-request``) and ``message`` (the detail plus every field error), so *every*
error body has ``{code, message}``. Enum values are matched case-insensitively (as .NET does)
and stored in their documented form. A simulator bug is caught per request and answered 500
``{"code":"internal-server-error","message":...}``; every answer, including those 500s and the
HTTP server's own 400/413/431/501 for unparseable requests, is counted in ``stats()``.

Event loop: the server runs on plain asyncio or uvloop; ``simulate --event-loop
asyncio|uvloop`` chooses (default asyncio, never implicitly uvloop).

State rules: the transition graph is ``SimulatorConfig.transitions`` (default: checkout ->
processing|removed; processing -> checkout|accepted|declined|removed; accepted ->
completed|declined; completed, declined, removed terminal), enforced unless
``enforce_transitions`` is off. An order under another merchant or channel is 404. A PUT of
the current status is a 200 no-op (no transition, ``lastModified`` unchanged); every real
write appends a UTC transition (oldest first) and updates ``lastModified``. DELETE is a hard
delete in any state (204, then 404 for everything, including a second DELETE); the status
history (``/__admin/history``) ends with ``"deleted"``.

Faults apply only to API routes (never ``/__admin``) and are decided BEFORE the request
touches the store, so a faulted PUT changes nothing: first ``down`` (every request gets
``down_status``, 503), then the first matching ``script`` entry, then one random draw against
``reset_rate``, ``hang_rate``, ``rate_limit_rate`` (429 + ``Retry-After``), ``error_rate``
(500/503) and ``fault_after_apply_rate`` -- the only exception: the write IS applied and a 500
is returned. Latency (``latency_ms`` + uniform ``jitter_ms``) is added to every API answer after
the request was processed, so a client that times out on a slow answer may still have changed
the order (as with a real slow network).

The call log never stores the ``Authorization`` header.

Order notifications (reference §5.12, §7.2): ``POST .../{order_id}/notifications`` (200 with
the stored notification) and ``DELETE .../notifications/{notification_id}``, per-channel
registrations and adapter configuration through ``/__admin``, a state change "by another
adapter" (``POST /__admin/orders/{id}/state``), asynchronous delivery with retries, an attempt
log and delivery faults (duplicates, delay, reordering, receiver down). The decisions and the
admin routes are in README.md, "The Norce API simulator: order notifications";
``SimulatorAdmin`` is an async client of them.
"""

from norce_simulator.admin_client import SimulatorAdmin, SimulatorAdminError
from norce_simulator.app import Response, SimulatorApp
from norce_simulator.config import (
    DEFAULT_TRANSITIONS,
    ORDER_STATUSES,
    FaultConfig,
    ScriptedResponse,
    SimulatorConfig,
)
from norce_simulator.server import SimulatorHandle, start_simulator

__all__ = [
    "DEFAULT_TRANSITIONS",
    "ORDER_STATUSES",
    "FaultConfig",
    "Response",
    "ScriptedResponse",
    "SimulatorAdmin",
    "SimulatorAdminError",
    "SimulatorApp",
    "SimulatorConfig",
    "SimulatorHandle",
    "start_simulator",
]
