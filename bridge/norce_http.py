"""The process-wide HTTP client for the Norce API and the transport it is built on.

:func:`build_http_client` builds the transport explicitly (httpx's own, or httpx-aiohttp's with
the write gate rechecked right before bytes leave) and passes it to ``httpx.AsyncClient``;
:class:`NorceHttpClient` keeps it public so that the API client sends prepared requests
straight to it. Its defaults are the settings' defaults (``bridge.config.NorceSettings``).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
import yarl
from aiohttp import ClientRequest, ClientSession, ClientTimeout, TCPConnector, TraceConfig
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

from bridge import __version__
from bridge.config import NorceSettings
from bridge.errors import ConfigError
from bridge.lease import recheck_before_send

__all__ = [
    "GatedAiohttpTransport",
    "NorceHttpClient",
    "build_http_client",
    "build_transport",
    "http_client_from_settings",
]

HttpBackend = Literal["httpx", "aiohttp"]
_DEFAULTS = NorceSettings()


async def _recheck(*_: object) -> None:
    await recheck_before_send()


def _lease_trace() -> TraceConfig:
    trace = TraceConfig()
    # Connection in hand, request not yet written: the last point to stop a stale write. Also
    # covers aiohttp's own re-send of an idempotent request on a dropped keep-alive connection.
    trace.on_connection_reuseconn.append(_recheck)
    trace.on_connection_create_end.append(_recheck)
    return trace


class _GatedClientRequest(ClientRequest):
    # On Python < 3.12 aiohttp writes a request body (and the headers it buffers with it) in a
    # task of its own, one loop iteration after the connection hooks above: check the gate
    # again in that task, right before the first byte.
    async def write_bytes(self, writer: Any, conn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await recheck_before_send()
        except Exception as exc:  # LeaseLost: fail the request, nothing was written
            if conn.protocol is not None:
                conn.protocol.set_exception(exc)
            conn.close()
            return
        await super().write_bytes(writer, conn, *args, **kwargs)


class GatedAiohttpTransport(AiohttpTransport):
    """httpx-aiohttp's transport with the write gate rechecked and the path sent as encoded.

    httpx-aiohttp hands aiohttp ``str(request.url)``; aiohttp (yarl) then re-quotes it and
    turns e.g. ``%3B`` back into ``;``, so the order id on the wire would differ from the one
    segment we encoded. This transport passes a ``yarl.URL(..., encoded=True)`` instead; the
    rest of :meth:`handle_async_request` is httpx-aiohttp 0.2's own (pinned below 0.3).
    """

    def get_client(self) -> ClientSession:
        connector = TCPConnector(
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            limit=self.limits.max_connections or 0,
        )
        return ClientSession(
            connector=connector,
            trace_configs=[_lease_trace()],
            request_class=_GatedClientRequest,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(self.client, ClientSession):
            self.client = self.get_client()
        timeout = request.extensions.get("timeout", {})
        data: bytes | None = request.content or None
        with map_aiohttp_exceptions():
            response = await self.client.request(
                method=request.method,
                url=yarl.URL(str(request.url), encoded=True),
                headers=request.headers,
                data=data,
                allow_redirects=False,
                auto_decompress=False,
                compress=False,
                timeout=ClientTimeout(
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                    connect=timeout.get("pool"),
                ),
            ).__aenter__()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=AiohttpResponseStream(response),
            request=request,
            extensions=extensions,
        )


def build_transport(backend: HttpBackend, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport for ``backend``; neither reads proxy or TLS settings from the environment.

    ``aiohttp`` honours ``max_connections`` and the timeouts (it has no keep-alive pool size).
    """
    if backend == "aiohttp":
        return GatedAiohttpTransport(limits=limits, trust_env=False)
    if backend == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    raise ConfigError(f"unknown http_backend {backend!r}")


_URL_CACHE_SIZE = 8192


class NorceHttpClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that names the one transport it was built with, and sends
    prepared requests straight to it (:meth:`send_direct`)."""

    def __init__(self, *, transport: httpx.AsyncBaseTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self.transport = transport
        base_path = self.base_url.raw_path
        self._base_raw_path = base_path if base_path.endswith(b"/") else base_path + b"/"
        self._default_headers = {k.lower(): v for k, v in self.headers.items()}
        self._urls: dict[str, httpx.URL] = {}  # parsed URLs of recent paths (GET and PUT reuse)

    def capped_timeout(self, remaining_s: float) -> httpx.Timeout:
        """The client's timeouts, each capped at the time left before a call's deadline."""
        base = self.timeout

        def cap(value: float | None) -> float:
            return remaining_s if value is None else min(value, remaining_s)

        return httpx.Timeout(
            connect=cap(base.connect),
            read=cap(base.read),
            write=cap(base.write),
            pool=cap(base.pool),
        )

    async def send_direct(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
        *,
        remaining_s: float,
    ) -> httpx.Response:
        """Send one request (``path`` relative to the base URL) straight to the transport.

        ``AsyncClient.request`` re-merges the base URL, default headers, cookies and auth on
        every call, which measured about 150 us of CPU per request (a third of the total with
        the aiohttp transport). The bridge needs none of it, so this builds the ``httpx.Request``
        itself and hands it to the transport the client was built with (same pool, same limits,
        the client's timeouts capped at ``remaining_s`` via the request's ``timeout`` extension).
        """
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self.base_url.copy_with(raw_path=self._base_raw_path + path.encode("ascii"))
            self._urls[path] = url
        request = httpx.Request(
            method,
            url,
            headers={**self._default_headers, **{k.lower(): v for k, v in headers.items()}},
            content=content,
            extensions={"timeout": self.capped_timeout(remaining_s).as_dict()},
        )
        response = await self.transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        response.request = request
        return response


def build_http_client(
    base_url: str,
    *,
    max_connections: int = _DEFAULTS.max_connections,
    max_keepalive: int | None = None,
    connect_timeout: float = _DEFAULTS.connect_timeout_s,
    read_timeout: float = _DEFAULTS.read_timeout_s,
    write_timeout: float = _DEFAULTS.write_timeout_s,
    pool_timeout: float = _DEFAULTS.pool_timeout_s,
    transport: httpx.AsyncBaseTransport | None = None,
    http_backend: HttpBackend = _DEFAULTS.http_backend,
) -> NorceHttpClient:
    """Build the process-wide HTTP client for the Norce API (its caller closes it).

    ``base_url`` may or may not end in ``/``; request paths are joined to it with exactly one
    slash. ``transport`` (e.g. ``httpx.MockTransport``) wins over ``http_backend``;
    ``max_keepalive`` defaults to ``max_connections``.
    """
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise ConfigError("the Norce base URL is not a valid URL (value not shown)") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            "the Norce base URL must be an absolute http(s) URL with a host (value not shown)"
        )
    normalised = str(url.copy_with(raw_path=url.raw_path.rstrip(b"/") + b"/"))
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections if max_keepalive is None else max_keepalive,
    )
    timeout = httpx.Timeout(
        connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout
    )
    if transport is None:
        transport = build_transport(http_backend, limits)
    return NorceHttpClient(
        base_url=normalised,
        limits=limits,
        timeout=timeout,
        transport=transport,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": f"norce-order-bridge/{__version__}"},
    )


def http_client_from_settings(settings: NorceSettings) -> NorceHttpClient:
    """:func:`build_http_client` configured by ``BRIDGE_NORCE__*``."""
    return build_http_client(
        settings.resolved_base_url(),
        max_connections=settings.max_connections,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        write_timeout=settings.write_timeout_s,
        pool_timeout=settings.pool_timeout_s,
        http_backend=settings.http_backend,
    )
