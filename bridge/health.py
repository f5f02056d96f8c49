"""The bridge's small HTTP server: ``/metrics``, ``/healthz`` and ``/readyz`` on ``aiohttp.web``.

``/healthz`` answers whether the process is alive (loop not wedged), ``/readyz`` whether it
should receive traffic (a member of the consumer group, broker reachable, not draining); both
delegate to a :class:`HealthState` the runtime implements. ``/metrics`` is
``prometheus_client``'s own aiohttp handler. Every response closes its connection (probes and
scrapes open one per request) and carries ``no-store``/``nosniff``; unknown paths and methods
answer JSON 404/405. The reason strings come from the runtime and never carry configuration:
this server exposes no configuration value at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, MutableMapping
from types import TracebackType
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

__all__ = ["HealthServer", "HealthState", "QuietProtocolErrors", "start_health_server"]

_log = logging.getLogger(__name__)

_SHUTDOWN_TIMEOUT_S = 1.0
_MAX_FIELD_SIZE = 8 * 1024
_ALLOWED = "GET, HEAD"


class HealthState(Protocol):
    """What the health endpoints ask the runtime; each answer is (ok, reason)."""

    def is_alive(self) -> tuple[bool, str]:
        """Whether the event loop is alive and not wedged (e.g. a recent heartbeat)."""
        ...

    def is_ready(self) -> tuple[bool, str]:
        """Whether the bridge is a group member, the broker is reachable and no drain is running."""
        ...


class QuietProtocolErrors(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's protocol logger: malformed requests at DEBUG, without the request's bytes.

    aiohttp logs a request it cannot parse at ERROR (or DEBUG) with a traceback that quotes
    the bytes received. A scanner or a broken probe is not the bridge's error, and what it
    sent does not belong in the log. Handler errors never get here: the middleware logs them.
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs.pop("exc_info", None)
        return msg, kwargs

    def exception(
        self,
        msg: object,
        *args: object,
        exc_info: Any = True,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
        **kwargs: Any,
    ) -> None:
        self.debug(msg, *args)


class HealthServer:
    """A running health/metrics server; close it with :meth:`aclose` or ``async with``."""

    def __init__(self, runner: web.AppRunner, url: str, port: int) -> None:
        self._runner = runner
        self.url = url
        self.port = port
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    async def aclose(self) -> None:
        """Stop listening and end open connections; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        await self._runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host:
        return f"[{host}]"
    return host


def _json(payload: dict[str, str], status: int = 200) -> web.Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return web.Response(body=body, status=status, content_type="application/json")


def _probe(name: str, probe: Callable[[], tuple[bool, str]]) -> Handler:
    async def handle(_request: web.Request) -> web.StreamResponse:
        try:
            ok, reason = probe()
        except Exception:
            _log.exception("%s probe raised", name)
            ok, reason = False, f"{name} check raised an error"
        if ok:
            return _json({"status": "ok"})
        return _json({"status": "unavailable", "reason": str(reason)}, 503)

    return handle


@web.middleware
async def _hardened(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON 404/405 instead of aiohttp's HTML, fixed headers, one request per connection."""
    try:
        response = await handler(request)
    except web.HTTPNotFound:
        response = _json({"status": "not_found"}, 404)
    except web.HTTPMethodNotAllowed:
        response = _json({"status": "method_not_allowed"}, 405)
        response.headers["Allow"] = _ALLOWED
    except Exception:
        _log.exception("health endpoint %s failed", request.path)
        response = web.Response(status=500, text="Internal Server Error\n")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.force_close()
    return response


async def start_health_server(
    registry: CollectorRegistry, state: HealthState, *, host: str, port: int
) -> HealthServer:
    """Start serving ``/metrics``, ``/healthz`` and ``/readyz``; ``port=0`` picks a free port."""
    app = web.Application(middlewares=[_hardened], handler_args={"max_field_size": _MAX_FIELD_SIZE})
    app.router.add_get("/metrics", make_aiohttp_handler(registry, disable_compression=True))
    app.router.add_get("/healthz", _probe("liveness", state.is_alive))
    app.router.add_get("/readyz", _probe("readiness", state.is_ready))
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
        logger=QuietProtocolErrors(_log, {}),
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    _log.info("health server listening on port %d", bound_port)
    return HealthServer(runner, f"http://{_url_host(host)}:{bound_port}", bound_port)
