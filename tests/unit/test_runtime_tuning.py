"""Process tuning of ``order-bridge run`` (issue 13): GC and its pauses, event loop, warm pool."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
from collections.abc import Iterator

import pytest
from bridge_devkit.harness import simulator
from prometheus_client import CollectorRegistry

from bridge.config import BridgeSettings, RuntimeSettings, load_settings
from bridge.errors import ConfigError
from bridge.metrics import BridgeMetrics
from bridge.norce_http import build_http_client
from bridge.tuning import event_loop_factory, tune_gc, warm_http_pool


def _metrics() -> tuple[CollectorRegistry, BridgeMetrics]:
    registry = CollectorRegistry()
    metrics = BridgeMetrics(
        registry, version="t", processing_guarantee="at_least_once", ordering="key"
    )
    return registry, metrics


@pytest.fixture
def gc_state() -> Iterator[None]:
    """Restore the collector's thresholds, frozen set and callbacks after a test."""
    threshold = gc.get_threshold()
    callbacks = list(gc.callbacks)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        gc.callbacks[:] = callbacks


# -- settings -------------------------------------------------------------------------------------


def test_tuning_is_on_by_default() -> None:
    s = BridgeSettings()
    assert s.event_loop == "asyncio"
    assert s.runtime.gc_freeze is True
    assert s.runtime.gc_gen0_threshold == 10_000
    assert s.runtime.warm_connections == 4


def test_tuning_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_EVENT_LOOP", "uvloop")
    monkeypatch.setenv("BRIDGE_RUNTIME__GC_FREEZE", "false")
    monkeypatch.setenv("BRIDGE_RUNTIME__GC_GEN0_THRESHOLD", "0")
    monkeypatch.setenv("BRIDGE_RUNTIME__WARM_CONNECTIONS", "0")
    s = load_settings()
    assert s.event_loop == "uvloop"
    assert s.runtime == RuntimeSettings(gc_freeze=False, gc_gen0_threshold=0, warm_connections=0)


def test_an_unknown_event_loop_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="BRIDGE_EVENT_LOOP"):
        load_settings()


# -- event loop -----------------------------------------------------------------------------------


def test_asyncio_is_the_default_loop() -> None:
    assert event_loop_factory(BridgeSettings()) is None


def test_uvloop_runs_when_asked_for() -> None:
    factory = event_loop_factory(BridgeSettings(event_loop="uvloop"))
    assert factory is not None

    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(loop_type()).startswith("uvloop")


def test_uvloop_asked_for_but_missing_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    with pytest.raises(
        ConfigError, match=r"BRIDGE_EVENT_LOOP=uvloop.*norce-order-bridge\[uvloop\]"
    ):
        event_loop_factory(BridgeSettings(event_loop="uvloop"))


# -- garbage collector ----------------------------------------------------------------------------


def test_gc_pauses_are_exported_per_generation_once_timed(gc_state: None) -> None:
    registry, metrics = _metrics()
    gc.collect()
    # Not installed: nothing timed, no series (a fresh registry pre-creates none).
    assert (
        registry.get_sample_value("norce_bridge_gc_pause_seconds_count", {"generation": "2"})
        is None
    )
    metrics.gc_pauses.install()
    metrics.gc_pauses.install()  # idempotent: one callback
    # Installed: every generation's series is there at zero before its first collection.
    assert (
        registry.get_sample_value("norce_bridge_gc_pause_seconds_count", {"generation": "2"}) == 0
    )
    assert registry.get_sample_value("norce_bridge_gc_pause_max_seconds", {"generation": "2"}) == 0
    gc.collect(0)
    gc.collect(2)
    metrics.gc_pauses.uninstall()
    count = registry.get_sample_value("norce_bridge_gc_pause_seconds_count", {"generation": "2"})
    assert count == 1
    inf = registry.get_sample_value(
        "norce_bridge_gc_pause_seconds_bucket", {"generation": "2", "le": "+Inf"}
    )
    assert inf == 1
    longest = registry.get_sample_value("norce_bridge_gc_pause_max_seconds", {"generation": "2"})
    assert longest is not None
    assert longest > 0
    assert longest == metrics.gc_pauses.longest(2)
    total = registry.get_sample_value("norce_bridge_gc_pause_seconds_sum", {"generation": "2"})
    assert total == pytest.approx(longest)
    assert (
        registry.get_sample_value("norce_bridge_gc_pause_seconds_count", {"generation": "0"}) or 0
    ) >= 1
    summary = metrics.gc_pauses.summary()
    assert summary["gc_collections"][2] == 1
    gc.collect(2)  # uninstalled: not timed any more
    assert (
        registry.get_sample_value("norce_bridge_gc_pause_seconds_count", {"generation": "2"}) == 1
    )


def test_tune_gc_freezes_the_start_up_heap_and_raises_gen0(gc_state: None) -> None:
    _, metrics = _metrics()
    before = gc.get_threshold()
    tune_gc(RuntimeSettings(gc_gen0_threshold=12_345), metrics)
    assert gc.get_threshold() == (12_345, before[1], before[2])
    assert gc.get_freeze_count() > 0
    assert metrics.gc_pauses in gc.callbacks
    # The start-up collection before the freeze is not a pause of the running service.
    assert metrics.gc_pauses.summary()["gc_collections"][2] == 0


def test_tune_gc_can_leave_the_collector_alone(gc_state: None) -> None:
    _, metrics = _metrics()
    gc.unfreeze()
    before = gc.get_threshold()
    tune_gc(RuntimeSettings(gc_freeze=False, gc_gen0_threshold=0), metrics)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert metrics.gc_pauses in gc.callbacks  # pauses are still measured


# -- warm connection pool -------------------------------------------------------------------------


async def test_warm_up_opens_keep_alive_connections_without_a_request() -> None:
    async with simulator() as sim:
        http = build_http_client(sim.url)
        try:
            assert await warm_http_pool(http, 3, 5.0) == 3
            assert sim.app.stats()["requests"] == 0
            assert sim.app.calls() == []
            assert sim.connections_accepted == 3  # seen from the server: three TCP connections
            # The first request uses a warm connection: still three, not four.
            await http.get("api/v0/checkout/orders")
            assert sim.connections_accepted == 3
            assert sim.app.stats()["requests"] == 1
        finally:
            await http.aclose()


async def test_an_unreachable_api_does_not_fail_the_warm_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = build_http_client(f"http://127.0.0.1:{port}")
    try:
        with caplog.at_level(logging.WARNING, logger="bridge.app"):
            assert await warm_http_pool(http, 2, 2.0) == 0
    finally:
        await http.aclose()
    assert any("warm-up incomplete" in r.getMessage() for r in caplog.records)


async def test_only_the_aiohttp_transport_is_warmed() -> None:
    http = build_http_client("http://127.0.0.1:9", http_backend="httpx")
    try:
        assert await warm_http_pool(http, 2, 1.0) == 0
    finally:
        await http.aclose()
