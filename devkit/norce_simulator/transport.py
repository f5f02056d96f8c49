"""``httpx.MockTransport`` adapter for ``SimulatorApp`` (imported lazily: it needs httpx)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from norce_simulator.app import Response, SimulatorApp


def _read_timeout(request: httpx.Request) -> float | None:
    timeouts = request.extensions.get("timeout") or {}
    value = timeouts.get("read")
    return float(value) if value is not None else None


def _plan(request: httpx.Request, response: Response) -> tuple[float, type[Exception] | None]:
    """Return how long to wait and which exception (if any) to raise afterwards."""
    timeout = _read_timeout(request)
    wait = response.hang_s if response.hang_s is not None else response.delay_s
    if timeout is not None and wait >= timeout:
        return timeout, httpx.ReadTimeout
    if response.reset or response.hang_s is not None:
        return wait, httpx.RemoteProtocolError
    return wait, None


def _to_httpx(request: httpx.Request, response: Response) -> httpx.Response:
    return httpx.Response(
        response.status, headers=response.headers, content=response.body, request=request
    )


def _call(app: SimulatorApp, request: httpx.Request) -> Response:
    target = request.url.raw_path.decode("ascii")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers.raw}
    return app.handle_lowered(request.method.upper(), target, headers, request.content)


def _raise(error: type[Exception], request: httpx.Request) -> None:
    if error is httpx.ReadTimeout:
        raise httpx.ReadTimeout("Simulated read timeout.", request=request)
    raise httpx.RemoteProtocolError(
        "Server disconnected without sending a response.", request=request
    )


class SimulatorMockTransport(httpx.MockTransport):
    """Serves a ``SimulatorApp`` in-process, honouring its latency and connection faults."""

    def __init__(self, app: SimulatorApp) -> None:
        super().__init__(self._unused)
        self.app = app

    @staticmethod
    def _unused(request: httpx.Request) -> httpx.Response:  # pragma: no cover - never called
        raise NotImplementedError

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request of a synchronous ``httpx.Client``."""
        request.read()
        response = _call(self.app, request)
        wait, error = _plan(request, response)
        if wait > 0:
            time.sleep(wait)
        if error is not None:
            _raise(error, request)
        return _to_httpx(request, response)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request of an ``httpx.AsyncClient``."""
        await request.aread()
        response = _call(self.app, request)
        wait, error = _plan(request, response)
        if wait > 0:
            await asyncio.sleep(wait)
        if error is not None:
            _raise(error, request)
        return _to_httpx(request, response)


def make_mock_transport(app: SimulatorApp) -> httpx.MockTransport:
    """Build the mock transport for ``app``."""
    return SimulatorMockTransport(app)
