"""Process tuning of ``order-bridge run`` (issue 13): the event loop, the garbage collector and a
warm HTTP connection pool before ``/readyz`` says ready (``BRIDGE_EVENT_LOOP``,
``BRIDGE_RUNTIME__*``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

import yarl
from aiohttp import ClientRequest, ClientTimeout

from bridge.config import BridgeSettings, RuntimeSettings
from bridge.errors import ConfigError
from bridge.metrics import BridgeMetrics
from bridge.norce_http import GatedAiohttpTransport, NorceHttpClient

__all__ = ["event_loop_factory", "tune_gc", "warm_http_pool"]

log = logging.getLogger("bridge.app")


def event_loop_factory(settings: BridgeSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory of ``BRIDGE_EVENT_LOOP`` (None: asyncio's default loop).

    uvloop is an optional extra (``norce-order-bridge[uvloop]``): asked for but not installed is
    a configuration error (exit code 2), not a silent fallback.
    """
    if settings.event_loop == "asyncio":
        return None
    try:
        import uvloop  # optional: imported only when asked for
    except ImportError:
        raise ConfigError(
            "BRIDGE_EVENT_LOOP=uvloop but uvloop is not installed "
            "(install norce-order-bridge[uvloop], or set BRIDGE_EVENT_LOOP=asyncio)"
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def tune_gc(settings: RuntimeSettings, metrics: BridgeMetrics) -> None:
    """Time every collection (metrics), raise the young threshold, freeze what start-up built.

    Measured (issue 13): with Python's defaults the collector cost ~200 us per command and full
    collections of ~50 ms each walked the start-up heap (modules, parsed schemas, pydantic
    models) again and again. ``gc.freeze()`` moves everything alive now to the permanent
    generation, which no collection walks; the first threshold sets how many allocations (net)
    trigger a young collection, i.e. how often per-command garbage is scanned.
    """
    if settings.gc_gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, gen1, gen2)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    # Timed from here on: the deliberate full collection above runs before the service is ready
    # and is not a pause of the running service (issue 13 counts those, and wants none > 10 ms).
    metrics.gc_pauses.install()
    log.info(
        "garbage collector tuned",
        extra={"gc_threshold": list(gc.get_threshold()), "gc_frozen": gc.get_freeze_count()},
    )


async def warm_http_pool(http: NorceHttpClient, n: int, deadline_s: float) -> int:
    """Open up to ``n`` keep-alive connections to the Norce API; return how many were opened.

    Connections only (TCP and TLS handshakes, the cold-start cost): no HTTP request is sent, so
    nothing happens at Norce, nothing counts as a command or an API request in the metrics, and
    no call log sees it. The connections go to the transport's pool under the same key as the
    requests' (host, port, TLS), idle until the first commands use them (they expire after the
    pool's keep-alive time, 5 s, if none come). Only the aiohttp transport (the default) is
    warmed. Failures and the deadline are logged, never raised: a slow API must not stop the
    bridge from starting.
    """
    transport = http.transport
    if not isinstance(transport, GatedAiohttpTransport):
        log.info("HTTP pool warm-up skipped: only the aiohttp transport is warmed")
        return 0
    session = transport.session()
    url = yarl.URL(str(http.base_url), encoded=True)
    loop = asyncio.get_running_loop()
    timeout = ClientTimeout(total=deadline_s, sock_connect=deadline_s)
    started = time.monotonic()

    async def one() -> None:
        request = ClientRequest("GET", url, loop=loop)  # the transport's requests use ssl=True
        connector = session.connector
        assert connector is not None
        connection = await connector.connect(request, [], timeout)
        connection.release()  # to the pool, as an idle keep-alive connection

    opened = 0
    error: str | None = None
    try:
        async with asyncio.timeout(deadline_s):
            results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        opened = sum(1 for r in results if r is None)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            error = type(failed[0]).__name__
    except Exception as exc:  # TimeoutError: the deadline; anything else: log and go on
        error = type(exc).__name__
    extra = {"connections": opened, "wanted": n, "ms": round((time.monotonic() - started) * 1e3)}
    if error is None:
        log.info("HTTP connection pool warmed", extra=extra)
    else:
        log.warning(
            "HTTP connection pool warm-up incomplete; starting anyway",
            extra={**extra, "error": error},
        )
    return opened
