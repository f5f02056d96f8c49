"""The process-wide HTTP client for the Norce API and the transport it is built on.

:func:`build_http_client` builds the transport explicitly (httpx's own, or httpx-aiohttp's with
the write gate rechecked right before bytes leave) and passes it to ``httpx.AsyncClient``;
:class:`NorceHttpClient` keeps it public so that the API client sends prepared requests
straight to it. Its defaults are the settings' defaults (``bridge.config.NorceSettings``).

**Hot path on the aiohttp transport.** With the ``aiohttp`` backend (the default),
:meth:`NorceHttpClient.send_direct` does not build ``httpx.Request``/``httpx.Response`` objects:
it sends on the transport's own ``aiohttp.ClientSession`` (same connector, limits and gated
request class, which rechecks the write gate right before bytes leave), with header dicts
prepared once per merchant and channel (:meth:`NorceHttpClient.prepare_headers`), cached URLs
and a prebuilt ``ClientTimeout`` while the call's deadline is further away than every timeout.
aiohttp's exceptions pass through httpx-aiohttp's own mapping (``map_aiohttp_exceptions``), so
callers see the same httpx exceptions as through the transport, and the answer is a
:class:`DirectResponse` with the attributes the error mapping reads (``status_code``,
``content``, ``text``, ``headers``). The httpx objects cost about as much CPU per request as
aiohttp itself (``bench/hotpath.py``).
Other transports (httpx's own, ``httpx.MockTransport`` in tests) go through ``httpx.Request``.
"""

from __future__ import annotations

import codecs
import contextlib
import email.message
from collections.abc import Mapping
from typing import Any, Literal

import httpx
import yarl
from aiohttp import ClientRequest, ClientSession, ClientTimeout, TCPConnector
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

from bridge import __version__
from bridge.config import NorceSettings
from bridge.errors import ConfigError
from bridge.lease import recheck_before_send

__all__ = [
    "DirectResponse",
    "GatedAiohttpTransport",
    "NorceHttpClient",
    "build_http_client",
    "build_transport",
    "http_client_from_settings",
]

HttpBackend = Literal["httpx", "aiohttp"]
_DEFAULTS = NorceSettings()


class _GatedClientRequest(ClientRequest):
    """aiohttp's request with the write gate rechecked right before its bytes are written.

    :meth:`send` runs with the connection in hand (from the pool or freshly connected) and the
    request not yet written: the last point to stop a stale write. aiohttp builds a new request
    and sends it again when it re-sends an idempotent request on a dropped keep-alive
    connection, so that is covered too. (These checks used to be trace hooks on connection
    reuse/creation; with any trace hook configured aiohttp builds and sends every trace signal
    of every request, ~25 us of CPU each, for checks that only ever act on writes.)
    """

    async def send(self, conn: Any) -> Any:
        await recheck_before_send()  # LeaseLost: aiohttp closes the connection, nothing written
        return await super().send(conn)

    # On Python < 3.12 aiohttp writes a request body (and the headers it buffers with it) in a
    # task of its own, one loop iteration after send(): check the gate again in that task,
    # right before the first byte.
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

    _closed = False

    def session(self) -> ClientSession:
        """The transport's ``ClientSession`` (created on first use, closed by ``aclose``).

        After ``aclose`` it raises ``RuntimeError`` (what aiohttp raises for a request on a
        closed session) instead of creating a session nobody would close: a request that
        arrives late, after a transport that had not been used yet was closed, must not leak
        one (and its connections) to the garbage collector."""
        if self._closed:
            raise RuntimeError("Session is closed")
        if not isinstance(self.client, ClientSession):
            self.client = self.get_client()
        return self.client

    async def aclose(self) -> None:
        self._closed = True
        await super().aclose()

    def get_client(self) -> ClientSession:
        connector = TCPConnector(
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
            limit=self.limits.max_connections or 0,
        )
        return ClientSession(connector=connector, request_class=_GatedClientRequest)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        data: bytes | None = request.content or None
        with map_aiohttp_exceptions():
            response = (
                await self.session()
                .request(
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
                )
                .__aenter__()
            )
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


class DirectResponse:
    """A complete answer of the aiohttp hot path: status, body (decoded as httpx would decode
    it: ``Content-Encoding`` undone) and headers (case-insensitive)."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, content: bytes, headers: Mapping[str, str]) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    @property
    def text(self) -> str:
        """The body as text, as ``httpx.Response.text``: the ``Content-Type`` charset if it
        names a known codec, else UTF-8, undecodable bytes replaced."""
        encoding = "utf-8"
        content_type = self.headers.get("Content-Type")
        if content_type:
            message = email.message.Message()
            message["content-type"] = content_type
            charset = message.get_content_charset()
            if charset:
                with contextlib.suppress(LookupError):
                    encoding = codecs.lookup(charset).name
        return self.content.decode(encoding, errors="replace")


def _client_timeout(timeout: httpx.Timeout, cap: float | None = None) -> ClientTimeout:
    """The aiohttp timeouts the transport derives from httpx's (``write`` has no equivalent),
    each capped at ``cap`` seconds if given."""

    def capped(value: float | None) -> float | None:
        if cap is None:
            return value
        return cap if value is None else min(value, cap)

    return ClientTimeout(
        sock_connect=capped(timeout.connect),
        sock_read=capped(timeout.read),
        connect=capped(timeout.pool),
    )


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
        self._aiohttp = transport if isinstance(transport, GatedAiohttpTransport) else None
        self._yarl_urls: dict[str, yarl.URL] = {}
        # Below this many seconds before a call's deadline the timeouts are capped; above it
        # the prebuilt ones apply as they are (None, unlimited, always needs the cap).
        limits = (self.timeout.connect, self.timeout.read, self.timeout.write, self.timeout.pool)
        self._cap_below_s = (
            float("inf") if any(t is None for t in limits) else max(t for t in limits if t)
        )
        self._timeout_dict = self.timeout.as_dict()
        self._client_timeout = _client_timeout(self.timeout)

    def prepare_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers of a request: the client's defaults overridden by ``headers``, names in
        lower case. Prepare once and pass the result to :meth:`send_direct` for every request
        with the same headers."""
        return {**self._default_headers, **{k.lower(): v for k, v in headers.items()}}

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

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self.base_url.copy_with(raw_path=self._base_raw_path + path.encode("ascii"))
            self._urls[path] = url
        return url

    async def send_direct(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
        *,
        remaining_s: float,
    ) -> httpx.Response | DirectResponse:
        """Send one request (``path`` relative to the base URL) straight to the transport.

        ``headers`` come from :meth:`prepare_headers`. ``AsyncClient.request`` re-merges the base
        URL, default headers, cookies and auth on every call, which measured about 150 us of CPU
        per request; the bridge needs none of it. With the aiohttp transport the request goes
        to its session directly (module docstring); otherwise this builds the ``httpx.Request``
        itself and hands it to the transport the client was built with. Either way: same pool,
        same limits, the client's timeouts capped at ``remaining_s``, the whole body read.
        """
        if self._aiohttp is not None:
            return await self._send_aiohttp(
                self._aiohttp, method, path, headers, content, remaining_s
            )
        url = self._url(path)
        timeout = (
            self._timeout_dict
            if remaining_s >= self._cap_below_s
            else self.capped_timeout(remaining_s).as_dict()
        )
        request = httpx.Request(
            method, url, headers=headers, content=content, extensions={"timeout": timeout}
        )
        response = await self.transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        response.request = request
        return response

    async def _send_aiohttp(
        self,
        transport: GatedAiohttpTransport,
        method: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
        remaining_s: float,
    ) -> DirectResponse:
        url = self._yarl_urls.get(path)
        if url is None:
            if len(self._yarl_urls) >= _URL_CACHE_SIZE:
                self._yarl_urls.clear()
            # As the transport does: the path exactly as encoded (yarl must not re-quote it).
            url = yarl.URL(str(self._url(path)), encoded=True)
            self._yarl_urls[path] = url
        timeout = (
            self._client_timeout
            if remaining_s >= self._cap_below_s
            else _client_timeout(self.timeout, remaining_s)
        )
        try:
            async with transport.session().request(
                method,
                url,
                headers=headers,
                data=content,
                allow_redirects=False,
                compress=False,
                auto_decompress=True,
                timeout=timeout,
            ) as response:
                body = await response.read()
        except Exception as exc:
            # httpx-aiohttp's own mapping, entered only on failure (a generator context manager
            # around every request costs more than the rest of this method)
            with map_aiohttp_exceptions():
                raise exc  # leaves as the mapped httpx exception, caused by exc
        return DirectResponse(response.status, body, response.headers)


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
