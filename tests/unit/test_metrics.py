"""Unit tests of bridge.metrics: names, labels, bounded cardinality."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bridge.metrics import (
    COMMAND_OUTCOMES,
    MAX_DISTINCT_ENDPOINTS,
    MAX_DISTINCT_REASONS,
    BridgeMetrics,
    status_class,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A fresh registry per test."""
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> BridgeMetrics:
    """Metrics on the fresh registry."""
    return BridgeMetrics(
        registry, version="1.2.3", processing_guarantee="at_least_once", ordering="key"
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """Read one sample from the registry."""
    return registry.get_sample_value(name, labels)


def label_values(registry: CollectorRegistry, sample_name: str, label: str) -> set[str]:
    """Every value a label takes across the samples of one name."""
    return {
        s.labels[label]
        for fam in registry.collect()
        for s in fam.samples
        if s.name == sample_name and label in s.labels
    }


def test_build_info_carries_version_and_mode(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Exports build_info = 1 with version, processing guarantee and ordering labels."""
    assert (
        value(
            registry,
            "norce_bridge_build_info",
            version="1.2.3",
            processing_guarantee="at_least_once",
            ordering="key",
        )
        == 1
    )


def test_collectors_use_the_injected_registry_only() -> None:
    """Two instances on two registries do not clash (nothing lands on the default registry)."""
    a, b = CollectorRegistry(), CollectorRegistry()
    BridgeMetrics(a, version="x", processing_guarantee="exactly_once", ordering="partition")
    BridgeMetrics(b, version="x", processing_guarantee="exactly_once", ordering="partition")
    assert value(a, "norce_bridge_ready") == 0


def test_command_finished_counts_and_times(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Counts a finished command by type and outcome and observes its duration."""
    metrics.command_finished("SetOrderState", "applied", 0.02)
    metrics.command_finished("SetOrderState", "applied", 0.03)
    metrics.command_finished("DeleteOrder", "already_applied", 0.5)
    assert (
        value(registry, "norce_bridge_commands_total", type="SetOrderState", outcome="applied") == 2
    )
    assert (
        value(
            registry, "norce_bridge_commands_total", type="DeleteOrder", outcome="already_applied"
        )
        == 1
    )
    assert value(registry, "norce_bridge_command_duration_seconds_count", type="SetOrderState") == 2
    assert value(
        registry, "norce_bridge_command_duration_seconds_sum", type="SetOrderState"
    ) == pytest.approx(0.05)


def test_command_labels_are_pre_initialised(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Every known type x outcome exists at zero before the first command."""
    for outcome in COMMAND_OUTCOMES:
        assert (
            value(registry, "norce_bridge_commands_total", type="DeleteOrder", outcome=outcome) == 0
        )


def test_unknown_type_and_outcome_are_bounded(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Maps an unknown command type to unknown and an unknown outcome to other."""
    metrics.command_finished("order-4711", "exploded-4711", 1.0)
    assert value(registry, "norce_bridge_commands_total", type="unknown", outcome="other") == 1
    assert "order-4711" not in generate_latest(registry).decode()


def test_command_duration_buckets_span_5ms_to_60s(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """The command duration histogram has buckets from 5 ms to 60 s."""
    metrics.command_finished("SetOrderState", "applied", 0.001)
    bounds = label_values(registry, "norce_bridge_command_duration_seconds_bucket", "le")
    finite = sorted(float(b) for b in bounds if b != "+Inf")
    assert finite[0] == 0.005
    assert finite[-1] == 60.0


@pytest.mark.parametrize(
    ("status", "expected"),
    [(200, "2xx"), (204, "2xx"), (304, "3xx"), (404, "4xx"), (429, "4xx"), (503, "5xx"),
     (None, "error"), (99, "error"), (700, "error")],
)  # fmt: skip
def test_status_class(status: int | None, expected: str) -> None:
    """Maps HTTP statuses to their class and no response to error."""
    assert status_class(status) == expected


def test_api_request_counts_by_status_class(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Counts API requests by method, endpoint and status class, and times them."""
    ep = "/api/v0/checkout/orders/{order_id}/state"
    metrics.api_request("PUT", ep, 200, 0.01)
    metrics.on_request("put", ep, 503, 0.2)
    metrics.api_request("PUT", ep, None, 5.0)
    for cls in ("2xx", "5xx", "error"):
        assert (
            value(
                registry,
                "norce_bridge_api_requests_total",
                method="PUT",
                endpoint=ep,
                status_class=cls,
            )
            == 1
        )
    assert (
        value(
            registry, "norce_bridge_api_request_duration_seconds_count", method="PUT", endpoint=ep
        )
        == 3
    )


def test_raw_order_ids_in_endpoints_are_templated(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """A raw URL with an order id is reduced to a template, so the id never becomes a label."""
    metrics.api_request("GET", "/api/v0/checkout/orders/ord-secret-77/state?x=1", 200, 0.01)
    metrics.on_retry("/api/v0/checkout/orders/1234567", "5xx")
    text = generate_latest(registry).decode()
    assert "ord-secret-77" not in text
    assert "1234567" not in text
    assert (
        value(
            registry,
            "norce_bridge_api_requests_total",
            method="GET",
            endpoint="/api/v0/checkout/orders/{id}/state",
            status_class="2xx",
        )
        == 1
    )


def test_endpoint_cardinality_is_capped(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Beyond the cap, new endpoints are counted as other."""
    for i in range(MAX_DISTINCT_ENDPOINTS + 10):
        metrics.api_request("GET", f"endpoint_{chr(97 + i % 26)}{'x' * (i // 26)}", 200, 0.01)
    endpoints = label_values(registry, "norce_bridge_api_requests_total", "endpoint")
    assert len(endpoints) == MAX_DISTINCT_ENDPOINTS + 1
    assert "other" in endpoints


def test_unknown_http_method_is_other(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """An unexpected HTTP method becomes other."""
    metrics.api_request("BREW", "get_order", 200, 0.01)
    assert label_values(registry, "norce_bridge_api_requests_total", "method") == {"other"}


def test_retries_bounded_reasons(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """Counts retries by reason; unknown reasons become other."""
    metrics.on_retry("set_state", "429")
    metrics.on_retry("set_state", "timeout")
    metrics.on_retry("set_state", "gremlins")
    assert (
        value(registry, "norce_bridge_api_retries_total", endpoint="set_state", reason="429") == 1
    )
    assert (
        value(registry, "norce_bridge_api_retries_total", endpoint="set_state", reason="other") == 1
    )


def test_dead_letters_by_reason(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """Counts dead letters by short reason codes; malformed codes become other."""
    metrics.dead_lettered("invalid_json")
    metrics.dead_lettered("schema_mismatch")
    metrics.dead_lettered("Order 42 is broken!")
    assert value(registry, "norce_bridge_dead_letters_total", reason="invalid_json") == 1
    assert value(registry, "norce_bridge_dead_letters_total", reason="schema_mismatch") == 1
    assert value(registry, "norce_bridge_dead_letters_total", reason="other") == 1
    assert value(registry, "norce_bridge_dead_letters_total", reason="oversize") == 0


def test_dead_letter_reasons_are_capped(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Never more than the cap of distinct dead-letter reasons (plus other)."""
    for i in range(MAX_DISTINCT_REASONS * 2):
        metrics.dead_lettered(f"reason_{i}")
    assert len(label_values(registry, "norce_bridge_dead_letters_total", "reason")) <= (
        MAX_DISTINCT_REASONS + 1
    )


def test_published_counts_per_topic(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """Counts acknowledged records per output topic."""
    metrics.published("norce.order.snapshots")
    metrics.published("norce.order.snapshots", 3)
    metrics.published("norce.order.events", 0)
    assert (
        value(registry, "norce_bridge_records_published_total", topic="norce.order.snapshots") == 4
    )
    assert (
        value(registry, "norce_bridge_records_published_total", topic="norce.order.events") is None
    )


def test_runtime_gauges(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """In-flight, buffered, paused, ready and rebalances reflect the last call."""
    metrics.set_in_flight(7)
    metrics.set_buffered(120)
    metrics.set_paused_partitions(2)
    metrics.set_ready(True)
    metrics.rebalance()
    metrics.rebalance()
    assert value(registry, "norce_bridge_in_flight_commands") == 7
    assert value(registry, "norce_bridge_buffered_records") == 120
    assert value(registry, "norce_bridge_paused_partitions") == 2
    assert value(registry, "norce_bridge_ready") == 1
    assert value(registry, "norce_bridge_rebalances_total") == 2
    metrics.set_ready(False)
    assert value(registry, "norce_bridge_ready") == 0


def test_partition_series_are_forgotten_on_revoke(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Lag and committed offset series of a revoked partition disappear."""
    metrics.set_lag("cmds", 0, 12)
    metrics.set_committed("cmds", 0, 100)
    metrics.set_lag("cmds", 1, 3)
    assert value(registry, "norce_bridge_consumer_lag", topic="cmds", partition="0") == 12
    assert value(registry, "norce_bridge_committed_offset", topic="cmds", partition="0") == 100
    metrics.forget_partition("cmds", 0)
    metrics.forget_partition("cmds", 9)  # never seen: no error
    assert value(registry, "norce_bridge_consumer_lag", topic="cmds", partition="0") is None
    assert value(registry, "norce_bridge_committed_offset", topic="cmds", partition="0") is None
    assert value(registry, "norce_bridge_consumer_lag", topic="cmds", partition="1") == 3


def test_negative_lag_is_clamped(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """A transiently negative lag (stale high watermark) is reported as zero."""
    metrics.set_lag("cmds", 0, -5)
    assert value(registry, "norce_bridge_consumer_lag", topic="cmds", partition="0") == 0


@pytest.mark.parametrize("state", ["closed", "open", "half_open"])
def test_circuit_state_is_one_hot(
    registry: CollectorRegistry, metrics: BridgeMetrics, state: str
) -> None:
    """Exactly one circuit state is 1 and circuit_open agrees."""
    metrics.set_circuit(state)
    states = {
        s: value(registry, "norce_bridge_circuit_state", state=s)
        for s in ("closed", "open", "half_open")
    }
    assert states == {s: (1.0 if s == state else 0.0) for s in states}
    assert value(registry, "norce_bridge_circuit_open") == (1 if state == "open" else 0)


def test_circuit_starts_closed(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """A new instance reports a closed circuit."""
    assert value(registry, "norce_bridge_circuit_state", state="closed") == 1
    assert value(registry, "norce_bridge_circuit_open") == 0


def test_last_success_timestamp(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """Records the wall-clock time of the last success."""
    before = time.time()
    metrics.command_succeeded_now()
    stamp = value(registry, "norce_bridge_last_success_timestamp_seconds")
    assert stamp is not None
    assert before <= stamp <= time.time()


def test_latencies(registry: CollectorRegistry, metrics: BridgeMetrics) -> None:
    """Observes end-to-end latency and event-loop lag (latest gauge and histogram)."""
    metrics.e2e_latency(1.5)
    metrics.event_loop_lag(0.03)
    metrics.event_loop_lag(0.002)
    assert value(registry, "norce_bridge_command_e2e_latency_seconds_count") == 1
    assert value(registry, "norce_bridge_event_loop_lag_seconds") == 0.002
    assert value(registry, "norce_bridge_event_loop_lag_histogram_seconds_count") == 2


def test_process_collectors_are_registered(
    registry: CollectorRegistry, metrics: BridgeMetrics
) -> None:
    """Process, platform and GC collectors are on the same registry."""
    text = generate_latest(registry).decode()
    assert "process_start_time_seconds" in text
    assert "python_info" in text
    assert "python_gc_objects_collected_total" in text
