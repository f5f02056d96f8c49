"""A small, fast HTTP/1.1 server on ``asyncio.Protocol`` serving a ``SimulatorApp``.

Supports keep-alive, ``Content-Length`` request bodies and ``Connection: close``; requests on
one connection are answered in order (a pipelined request waits for the previous answer).
Chunked request bodies are refused with 501. Responses that need no delay are written
synchronously from ``data_received``; latency, hangs and resets run in a per-connection task
so a slow answer never blocks other connections.

It runs on any event loop that implements the asyncio protocol API, including uvloop: the
transport is used only through the ``asyncio.Transport`` methods (uvloop's ``TCPTransport``
implements them without subclassing ``asyncio.Transport``), and a reset sets ``SO_LINGER`` on
the socket object the loop exposes (a real ``socket.socket`` or uvloop's pseudo-socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import cast

from norce_simulator.app import Response, SimulatorApp, internal_error
from norce_simulator.config import SimulatorConfig
from norce_simulator.delivery import Deliverer

log = logging.getLogger("norce_simulator")

MAX_HEADER_BYTES = 64 * 1024
SERVER_NAME = "norce-order-simulator"
_STATUS_LINES: dict[int, bytes] = {}
_date_cache: tuple[int, bytes] = (0, b"")


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


def _date_header() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        stamp = formatdate(now, usegmt=True)
        _date_cache = (now, f"date: {stamp}\r\nserver: {SERVER_NAME}\r\n".encode())
    return _date_cache[1]


class _ServerState:
    """Open connections and a count of accepted ones."""

    def __init__(self) -> None:
        self.connections: set[_HttpProtocol] = set()
        self.accepted = 0


class _HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, app: SimulatorApp, state: _ServerState) -> None:
        self.app = app
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    # -- asyncio callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's TCPTransport is no asyncio.Transport subclass.
        self.transport = cast(asyncio.Transport, transport)
        self.state.connections.add(self)
        self.state.accepted += 1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._process()

    # -- request processing -------------------------------------------------------------------

    def _process(self) -> None:
        while not self.busy and not self.closed:
            request = self._parse()
            if request is None:
                return
            method, target, headers, body, keep_alive = request
            try:
                response = self.app.handle_lowered(method, target, headers, body)
            except Exception:  # pragma: no cover - the app answers its own bugs with a 500
                log.exception("simulator failed to handle %s %s", method, target)
                response = internal_error()
            if response.delay_s > 0 or response.reset or response.hang_s is not None:
                self.busy = True
                self.task = asyncio.get_running_loop().create_task(
                    self._deferred(response, keep_alive)
                )
                return
            self._send(response, keep_alive)

    async def _deferred(self, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            if response.delay_s > 0:
                await asyncio.sleep(response.delay_s)
            if response.reset:
                self._abort_with_rst(transport)
                return
            if response.hang_s is not None:
                await asyncio.sleep(response.hang_s)
                transport.close()
                return
        except asyncio.CancelledError:
            return
        self.task = None
        if self.closed:
            return
        self._send(response, keep_alive)
        self.busy = False
        if not self.closed:
            self._process()

    def _abort_with_rst(self, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _send(self, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        parts = [_status_line(response.status), _date_header()]
        for name, value in response.headers:
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if response.status != 204 and response.status >= 200:
            parts.append(b"content-length: %d\r\n" % len(response.body))
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if response.body and response.status != 204:
            parts.append(response.body)
        transport.write(b"".join(parts))
        if not keep_alive:
            self.closed = True
            transport.close()

    def _fail(self, status: int, message: str) -> None:
        self.app.count_unparsed(status)
        code = HTTPStatus(status).phrase.lower().replace(" ", "-")
        body = json.dumps({"code": code, "message": message}).encode()
        self._send(Response(status, [("content-type", "application/json")], body), False)

    def _parse(self) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        buffer = self.buffer
        if not buffer:
            return None
        while buffer.startswith(b"\r\n"):
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEADER_BYTES:
                self._fail(431, "Request header fields too large.")
            return None
        head = bytes(buffer[:end]).decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail(400, "Malformed request line.")
            return None
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._fail(400, "Malformed header line.")
                return None
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._fail(501, "Chunked request bodies are not supported.")
            return None
        length_text = headers.get("content-length", "0")
        try:
            length = int(length_text)
        except ValueError:
            self._fail(400, "Invalid Content-Length.")
            return None
        if length < 0 or length > self.app.config.max_body_bytes:
            self._fail(413, "Request body too large.")
            return None
        start = end + 4
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        return method.upper(), target, headers, body, keep_alive

    def abort(self) -> None:
        """Drop the connection immediately (used on shutdown)."""
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()


class SimulatorHandle:
    """A running simulator: ``url``, ``app``, and ``aclose()`` (also an async context manager)."""

    def __init__(
        self,
        app: SimulatorApp,
        server: asyncio.Server,
        state: _ServerState,
        host: str,
        port: int,
        deliverer: Deliverer | None = None,
    ) -> None:
        self.app = app
        self._deliverer = deliverer
        self.host = host
        self.port = port
        self._server = server
        self._state = state
        self._closed = False

    @property
    def connections_accepted(self) -> int:
        """How many TCP connections the server has accepted so far."""
        return self._state.accepted

    @property
    def open_connections(self) -> int:
        """How many client connections are open right now."""
        return len(self._state.connections)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8089`` (clients append ``/api/v0/...``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def aclose(self) -> None:
        """Stop listening and drop every open connection; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._deliverer is not None:
            await self._deliverer.aclose()
        self._server.close()
        for connection in list(self._state.connections):
            connection.abort()
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let connection_lost callbacks run
        log.info("simulator at %s stopped", self.url)

    async def __aenter__(self) -> SimulatorHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def start_simulator(
    config: SimulatorConfig | SimulatorApp | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> SimulatorHandle:
    """Seed a simulator (or reuse the given app) and serve it on ``host:port`` (0 = free port).

    Also starts the delivery of notification events on the running loop (unless another
    server of the same app already delivers them); ``aclose`` stops it.
    """
    app = config if isinstance(config, SimulatorApp) else SimulatorApp(config)
    state = _ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _HttpProtocol(app, state), host, port, backlog=2048, reuse_address=True
    )
    bound = server.sockets[0].getsockname()
    url_host = bound[0] if host in ("", "localhost") else host
    deliverer: Deliverer | None = None
    if app.notifications.wakeup is None:  # one deliverer per app, on the first server's loop
        deliverer = Deliverer(app.notifications)
        deliverer.start()
    handle = SimulatorHandle(app, server, state, url_host, bound[1], deliverer)
    log.info("simulator listening on %s with %d orders", handle.url, len(app.store))
    return handle
