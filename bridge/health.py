"""The bridge's small HTTP server: ``/metrics``, ``/healthz`` and ``/readyz``.

A minimal HTTP/1.1 handler over asyncio streams (one request per connection, ``Connection:
close``), so it needs no web framework and shares the bridge's event loop. ``/healthz`` answers
whether the process is alive (loop not wedged), ``/readyz`` whether it should receive traffic
(a member of the consumer group, broker reachable, not draining); both delegate to a
:class:`HealthState` the runtime implements. The reason strings come from the runtime and
never carry configuration: this server exposes no configuration value at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HealthServer", "HealthState", "start_health_server"]

_log = logging.getLogger(__name__)

_MAX_REQUEST_LINE = 8 * 1024
_MAX_HEADER_BYTES = 16 * 1024
_READ_TIMEOUT_S = 10.0
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HealthState(Protocol):
    """What the health endpoints ask the runtime; each answer is (ok, reason)."""

    def is_alive(self) -> tuple[bool, str]:
        """Whether the event loop is alive and not wedged (e.g. a recent heartbeat)."""
        ...

    def is_ready(self) -> tuple[bool, str]:
        """Whether the bridge is a group member, the broker is reachable and no drain is running."""
        ...


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class HealthServer:
    """A running health/metrics server; close it with :meth:`aclose` or ``async with``."""

    def __init__(
        self, server: asyncio.Server, handlers: set[asyncio.Task[None]], url: str, port: int
    ) -> None:
        self._server = server
        self._handlers = handlers
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
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

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


async def start_health_server(
    registry: CollectorRegistry, state: HealthState, *, host: str, port: int
) -> HealthServer:
    """Start serving ``/metrics``, ``/healthz`` and ``/readyz``; ``port=0`` picks a free port."""
    handlers: set[asyncio.Task[None]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        try:
            await _serve_one(reader, writer, registry, state)
        except asyncio.CancelledError:
            pass
        except Exception:  # a broken connection must not take the server down
            _log.debug("health connection failed", exc_info=True)
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                handlers.discard(task)

    server = await asyncio.start_server(
        on_connection, host=host, port=port, limit=_MAX_REQUEST_LINE + _MAX_HEADER_BYTES
    )
    bound_port = int(server.sockets[0].getsockname()[1])
    url = f"http://{_url_host(host)}:{bound_port}"
    _log.info("health server listening on port %d", bound_port)
    return HealthServer(server, handlers, url, bound_port)


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str]:
    """Read the request line and headers; return (method, path without query)."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest(431) from exc
    except asyncio.IncompleteReadError as exc:
        raise _BadRequest(400) from exc
    if len(line) > _MAX_REQUEST_LINE:
        raise _BadRequest(431)
    parts = line.decode("latin-1").strip().split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise _BadRequest(400)
    method, target, _version = parts
    total = 0
    while True:
        try:
            header = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise _BadRequest(431) from exc
        except asyncio.IncompleteReadError as exc:
            raise _BadRequest(400) from exc
        total += len(header)
        if total > _MAX_HEADER_BYTES:
            raise _BadRequest(431)
        if header in (b"\r\n", b"\n"):
            break
    path = target.split("?", 1)[0]
    return method, path


def _json_body(payload: dict[str, str]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _respond_health(result: tuple[bool, str]) -> tuple[int, str, bytes]:
    ok, reason = result
    if ok:
        return 200, _JSON, _json_body({"status": "ok"})
    return 503, _JSON, _json_body({"status": "unavailable", "reason": reason})


def _check(probe_name: str, probe: Callable[[], tuple[bool, str]]) -> tuple[int, str, bytes]:
    try:
        ok, reason = probe()
        return _respond_health((bool(ok), str(reason)))
    except Exception:
        _log.exception("%s probe raised", probe_name)
        return _respond_health((False, f"{probe_name} check raised an error"))


async def _serve_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    registry: CollectorRegistry,
    state: HealthState,
) -> None:
    extra_headers: dict[str, str] = {}
    head_only = False
    try:
        method, path = await asyncio.wait_for(_read_head(reader), _READ_TIMEOUT_S)
    except _BadRequest as bad:
        status, ctype, body = bad.status, _TEXT, f"{_REASONS[bad.status]}\n".encode()
    except TimeoutError:
        status, ctype, body = 408, _TEXT, b"Request Timeout\n"
    else:
        head_only = method == "HEAD"
        if path not in ("/metrics", "/healthz", "/readyz"):
            status, ctype, body = 404, _JSON, _json_body({"status": "not_found"})
        elif method not in ("GET", "HEAD"):
            status, ctype, body = 405, _JSON, _json_body({"status": "method_not_allowed"})
            extra_headers["Allow"] = "GET, HEAD"
        elif path == "/metrics":
            try:
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(registry)
            except Exception:
                _log.exception("collecting metrics failed")
                status, ctype, body = 500, _TEXT, b"Internal Server Error\n"
        elif path == "/healthz":
            status, ctype, body = _check("liveness", state.is_alive)
        else:
            status, ctype, body = _check("readiness", state.is_ready)

    headers = {
        "Content-Type": ctype,
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Connection": "close",
        **extra_headers,
    }
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()
    )
    writer.write(head.encode("latin-1") + b"\r\n" + (b"" if head_only else body))
    await writer.drain()
