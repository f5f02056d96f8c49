"""The bridge's own Prometheus collectors: names, help texts, labels and buckets, declared once.

:func:`register_collectors` creates and registers them on one registry; only
:class:`bridge.metrics.BridgeMetrics` uses the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "API_DURATION_BUCKETS",
    "COMMAND_DURATION_BUCKETS",
    "E2E_LATENCY_BUCKETS",
    "EVENT_LOOP_LAG_BUCKETS",
    "NOTIFICATION_INGRESS_BUCKETS",
    "NOTIFICATION_OUTCOMES",
    "RELAY_OUTCOMES",
    "Collectors",
    "register_collectors",
]

# 5 ms .. 60 s: a Norce call takes tens of milliseconds, a command with retries up to a minute.
COMMAND_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
API_DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Record timestamp -> outputs acknowledged: includes time spent waiting in Kafka (lag).
E2E_LATENCY_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
)  # fmt: skip
EVENT_LOOP_LAG_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# 1 ms .. 30 s: a delivery is answered once Kafka acknowledged it (acks=all), bounded by
# BRIDGE_INGRESS__ACK_TIMEOUT_S (max 300 s).
NOTIFICATION_INGRESS_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
NOTIFICATION_OUTCOMES: Final = (
    "accepted", "unauthorized", "too_large", "malformed", "invalid", "timeout",
    "kafka_unavailable",
)  # fmt: skip
"""``outcome`` of ``norce_bridge_notifications_received_total`` (bridge.ingress)."""
RELAY_OUTCOMES: Final = ("relayed", "invalid")
"""``outcome`` of ``norce_bridge_notifications_relayed_total`` (bridge.notify_relay)."""
# 50 us .. 1 s: a young collection takes microseconds, a full one of a large heap tens of ms.


@dataclass(frozen=True, slots=True)
class Collectors:
    """The bridge's own collectors, registered once on one registry."""

    build_info: Gauge
    commands: Counter
    command_duration: Histogram
    e2e_latency_seconds: Histogram
    api_requests: Counter
    api_request_duration: Histogram
    api_retries: Counter
    dead_letters: Counter
    records_published: Counter
    in_flight: Gauge
    buffered: Gauge
    paused_partitions: Gauge
    consumer_lag: Gauge
    committed_offset: Gauge
    circuit_open: Gauge
    circuit_state: Gauge
    last_success: Gauge
    event_loop_lag_latest: Gauge
    event_loop_lag_hist: Histogram
    rebalances: Counter
    ready: Gauge
    lease_age: Gauge
    lease_lost: Counter
    commands_abandoned: Counter
    notifications_received: Counter
    notification_ingress_seconds: Histogram
    notifications_relayed: Counter


def register_collectors(registry: CollectorRegistry) -> Collectors:
    """Create and register every collector of the bridge on ``registry``."""
    ns = "norce_bridge"

    build_info = Gauge(
        f"{ns}_build_info",
        "Always 1; labels carry the bridge version and its processing mode.",
        ["version", "processing_guarantee", "ordering"],
        registry=registry,
    )

    commands = Counter(
        f"{ns}_commands",
        "Commands finished, by command type and outcome.",
        ["type", "outcome"],
        registry=registry,
    )
    command_duration = Histogram(
        f"{ns}_command_duration_seconds",
        "Time from starting a command to its outputs being acknowledged, by command type.",
        ["type"],
        buckets=COMMAND_DURATION_BUCKETS,
        registry=registry,
    )
    e2e_latency_seconds = Histogram(
        f"{ns}_command_e2e_latency_seconds",
        "Time from the command record's Kafka timestamp to its outputs being acknowledged.",
        buckets=E2E_LATENCY_BUCKETS,
        registry=registry,
    )
    api_requests = Counter(
        f"{ns}_api_requests",
        "Norce Order API requests, by method, endpoint template and status class.",
        ["method", "endpoint", "status_class"],
        registry=registry,
    )
    api_request_duration = Histogram(
        f"{ns}_api_request_duration_seconds",
        "Norce Order API request duration, by method and endpoint template.",
        ["method", "endpoint"],
        buckets=API_DURATION_BUCKETS,
        registry=registry,
    )
    api_retries = Counter(
        f"{ns}_api_retries",
        "Norce Order API request retries, by endpoint template and reason.",
        ["endpoint", "reason"],
        registry=registry,
    )
    dead_letters = Counter(
        f"{ns}_dead_letters",
        "Records sent to the dead-letter topic, by reason code.",
        ["reason"],
        registry=registry,
    )
    records_published = Counter(
        f"{ns}_records_published",
        "Records acknowledged by Kafka, by output topic.",
        ["topic"],
        registry=registry,
    )
    in_flight = Gauge(
        f"{ns}_in_flight_commands",
        "Commands currently being executed.",
        registry=registry,
    )
    buffered = Gauge(
        f"{ns}_buffered_records",
        "Records fetched from Kafka and waiting for execution.",
        registry=registry,
    )
    paused_partitions = Gauge(
        f"{ns}_paused_partitions",
        "Assigned partitions whose fetching is paused: their buffer is full, or they are held "
        "(a record the Kafka client cannot decode; see the log).",
        registry=registry,
    )
    consumer_lag = Gauge(
        f"{ns}_consumer_lag",
        "Records between the committed offset and the high watermark, per assigned partition.",
        ["topic", "partition"],
        registry=registry,
    )
    committed_offset = Gauge(
        f"{ns}_committed_offset",
        "Last offset committed by the consumer group, per assigned partition.",
        ["topic", "partition"],
        registry=registry,
    )
    circuit_open = Gauge(
        f"{ns}_circuit_open",
        "1 while the Norce API circuit breaker is open (calls are not attempted), else 0.",
        registry=registry,
    )
    circuit_state = Gauge(
        f"{ns}_circuit_state",
        "Norce API circuit breaker state: exactly one of closed/open/half_open is 1.",
        ["state"],
        registry=registry,
    )
    last_success = Gauge(
        f"{ns}_last_success_timestamp_seconds",
        "Unix time of the last command whose outputs were acknowledged.",
        registry=registry,
    )
    event_loop_lag_latest = Gauge(
        f"{ns}_event_loop_lag_seconds",
        "Latest measured asyncio event-loop lag (scheduling delay of a periodic probe).",
        registry=registry,
    )
    event_loop_lag_hist = Histogram(
        f"{ns}_event_loop_lag_histogram_seconds",
        "Distribution of measured asyncio event-loop lag.",
        buckets=EVENT_LOOP_LAG_BUCKETS,
        registry=registry,
    )
    rebalances = Counter(
        f"{ns}_rebalances",
        "Consumer group rebalances seen by this process (partition assignments).",
        registry=registry,
    )
    ready = Gauge(
        f"{ns}_ready",
        "1 while the bridge reports ready (group member, broker reachable, not draining), else 0.",
        registry=registry,
    )

    lease_age = Gauge(
        f"{ns}_lease_age_seconds",
        "Age of the group-membership lease: seconds since the last successful heartbeat was"
        " sent (writes to Norce stop when it nears the session timeout).",
        registry=registry,
    )
    lease_lost = Counter(
        f"{ns}_lease_lost",
        "Times the membership lease expired or was lost (a pause, an expulsion, an outage).",
        registry=registry,
    )
    commands_abandoned = Counter(
        f"{ns}_commands_abandoned",
        "Commands given up without a result because their partition was no longer ours"
        " (the partition's new owner runs them).",
        registry=registry,
    )
    notifications_received = Counter(
        f"{ns}_notifications_received",
        "Notification deliveries answered by the ingress, by outcome (accepted: stored in Kafka).",
        ["outcome"],
        registry=registry,
    )
    notification_ingress_seconds = Histogram(
        f"{ns}_notification_ingress_seconds",
        "Time from receiving an accepted notification delivery to Kafka's acknowledgement.",
        buckets=NOTIFICATION_INGRESS_BUCKETS,
        registry=registry,
    )
    notifications_relayed = Counter(
        f"{ns}_notifications_relayed",
        "Stored notifications handled by the relay: relayed as RefreshOrder, or invalid"
        " (dead-lettered).",
        ["outcome"],
        registry=registry,
    )
    return Collectors(
        build_info=build_info,
        commands=commands,
        command_duration=command_duration,
        e2e_latency_seconds=e2e_latency_seconds,
        api_requests=api_requests,
        api_request_duration=api_request_duration,
        api_retries=api_retries,
        dead_letters=dead_letters,
        records_published=records_published,
        in_flight=in_flight,
        buffered=buffered,
        paused_partitions=paused_partitions,
        consumer_lag=consumer_lag,
        committed_offset=committed_offset,
        circuit_open=circuit_open,
        circuit_state=circuit_state,
        last_success=last_success,
        event_loop_lag_latest=event_loop_lag_latest,
        event_loop_lag_hist=event_loop_lag_hist,
        rebalances=rebalances,
        ready=ready,
        lease_age=lease_age,
        lease_lost=lease_lost,
        commands_abandoned=commands_abandoned,
        notifications_received=notifications_received,
        notification_ingress_seconds=notification_ingress_seconds,
        notifications_relayed=notifications_relayed,
    )
