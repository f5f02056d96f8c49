"""Prometheus metrics of the bridge: every collector on an injected registry, bounded labels.

The runtime, the processor's caller and the Norce client report what happened through the
intent-named methods of :class:`BridgeMetrics`; nothing else touches a collector. Label values are
normalised with :mod:`bridge.metric_labels` so that a bug elsewhere cannot explode cardinality:
closed sets (anything else becomes ``other`` or ``unknown``) are pre-created at zero, exactly
the values the code can emit; open-ended labels are checked against a pattern and capped.

The dashboard (``dashboards/norce-order-bridge.json``) and the alert rules
(``alerts/norce-order-bridge.rules.yaml``) use the metric names defined here; a test in
``tests/deploy`` fails when they reference a name this module does not export.
"""

from __future__ import annotations

import contextlib
import time
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from bridge.gc_metrics import GC_PAUSE_BUCKETS, GcPauses
from bridge.memory_limit import MemoryLimit
from bridge.metric_collectors import (
    API_DURATION_BUCKETS,
    COMMAND_DURATION_BUCKETS,
    E2E_LATENCY_BUCKETS,
    EVENT_LOOP_LAG_BUCKETS,
    NOTIFICATION_OUTCOMES,
    RELAY_OUTCOMES,
    register_collectors,
)
from bridge.metric_labels import (
    CIRCUIT_STATES,
    CODE_RE,
    COMMAND_LABELS,
    COMMAND_OUTCOMES,
    COMMAND_TYPES,
    DEAD_LETTER_REASONS,
    ENDPOINT_RE,
    HTTP_METHODS,
    MAX_DISTINCT_ENDPOINTS,
    MAX_DISTINCT_REASONS,
    MAX_DISTINCT_TOPICS,
    OTHER,
    PUBLISHED_TOPICS,
    RETRY_REASONS,
    TOPIC_RE,
    UNKNOWN_TYPE,
    BoundedLabel,
    status_class,
    template_endpoint,
)
from bridge.refresh_metrics import RefreshMetrics
from bridge.vocabulary import CircuitState

__all__ = [
    "API_DURATION_BUCKETS",
    "COMMAND_DURATION_BUCKETS",
    "COMMAND_LABELS",
    "COMMAND_OUTCOMES",
    "COMMAND_TYPES",
    "DEAD_LETTER_REASONS",
    "E2E_LATENCY_BUCKETS",
    "EVENT_LOOP_LAG_BUCKETS",
    "GC_PAUSE_BUCKETS",
    "MAX_DISTINCT_ENDPOINTS",
    "MAX_DISTINCT_REASONS",
    "OTHER",
    "PUBLISHED_TOPICS",
    "RETRY_REASONS",
    "BridgeMetrics",
    "CircuitState",
    "GcPauses",
    "status_class",
]

# Raw (method, endpoint, status) keys whose label children are kept (the labels are bounded by
# bridge.metric_labels; this bounds the cache of the raw values that map to them).
_MAX_CACHED_KEYS: Final = 1024


class BridgeMetrics:
    """All Prometheus collectors of one bridge process, registered on ``registry``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        processing_guarantee: str,
        ordering: str,
    ) -> None:
        self.registry = registry
        self._c = register_collectors(registry)
        self._c.build_info.labels(
            version=version, processing_guarantee=processing_guarantee, ordering=ordering
        ).set(1)

        self._lease_lost_seen = 0

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(MemoryLimit())

        self._endpoint = BoundedLabel(
            ENDPOINT_RE, MAX_DISTINCT_ENDPOINTS, normalise=template_endpoint
        )
        self._dead_letter_reason = BoundedLabel(
            CODE_RE, MAX_DISTINCT_REASONS, initial=DEAD_LETTER_REASONS
        )
        self._topic = BoundedLabel(TOPIC_RE, MAX_DISTINCT_TOPICS, initial=PUBLISHED_TOPICS)

        self.gc_pauses = GcPauses()
        registry.register(self.gc_pauses)
        self.refresh = RefreshMetrics(registry)  # RefreshOrder and the order state store

        # Pre-initialise exactly the label values that can occur, at zero, so rate() and the
        # alerts have a series from the start (tests/unit/test_vocabulary.py checks the sets).
        # The children are kept: a command's metrics are dict look-ups, not ``.labels(...)``
        # calls (each of which builds a tuple, validates it and takes the family's lock).
        c = self._c
        self._commands: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        durations = {t: c.command_duration.labels(type=t) for t in (*COMMAND_TYPES, UNKNOWN_TYPE)}
        for command_type, outcome in COMMAND_LABELS:
            self._commands[command_type, str(outcome)] = (
                c.commands.labels(type=command_type, outcome=outcome),
                durations[command_type],
            )
        self._dead_letters: dict[str, Counter] = {
            reason: c.dead_letters.labels(reason=reason) for reason in DEAD_LETTER_REASONS
        }
        self._published: dict[str, Counter] = {
            topic: c.records_published.labels(topic=topic) for topic in PUBLISHED_TOPICS
        }
        # Created on first use (never pre-created: tests/unit/test_vocabulary.py), then kept.
        self._api: dict[tuple[str, str, int | None], tuple[Counter, Histogram]] = {}
        self._retries: dict[tuple[str, str], Counter] = {}
        self._partition_gauges: dict[tuple[str, int], tuple[Gauge, Gauge]] = {}
        self._circuit_children = {
            state: c.circuit_state.labels(state=state) for state in CIRCUIT_STATES
        }
        self.set_circuit(CircuitState.CLOSED)
        self._notifications: dict[str, Counter] = {
            outcome: c.notifications_received.labels(outcome=outcome)
            for outcome in NOTIFICATION_OUTCOMES
        }
        self._relayed: dict[str, Counter] = {
            outcome: c.notifications_relayed.labels(outcome=outcome) for outcome in RELAY_OUTCOMES
        }

    # -- commands -------------------------------------------------------------------------------

    def command_finished(self, command_type: str, outcome: str, seconds: float) -> None:
        """Count one finished command and observe how long it took."""
        children = self._commands.get((command_type, outcome))
        if children is None:  # not a pair the code emits: bounded the slow way
            type_label = command_type if command_type in COMMAND_TYPES else UNKNOWN_TYPE
            outcome_label = outcome if outcome in COMMAND_OUTCOMES else OTHER
            children = (
                self._c.commands.labels(type=type_label, outcome=outcome_label),
                self._c.command_duration.labels(type=type_label),
            )
        children[0].inc()
        children[1].observe(seconds if seconds > 0.0 else 0.0)

    def e2e_latency(self, seconds: float) -> None:
        """Observe the time from a record's timestamp to its outputs being acknowledged."""
        self._c.e2e_latency_seconds.observe(max(seconds, 0.0))

    def command_succeeded_now(self) -> None:
        """Record that a command's outputs were acknowledged just now."""
        self._c.last_success.set(time.time())

    def dead_lettered(self, reason: str) -> None:
        """Count one record sent to the dead-letter topic."""
        child = self._dead_letters.get(reason)
        if child is None:
            child = self._c.dead_letters.labels(reason=self._dead_letter_reason(reason))
        child.inc()

    def published(self, topic: str, n: int = 1) -> None:
        """Count ``n`` records acknowledged by Kafka on ``topic``."""
        if n > 0:
            child = self._published.get(topic)
            if child is None:
                child = self._c.records_published.labels(topic=self._topic(topic))
            child.inc(n)

    # -- Norce API (also the client's ApiObserver) ----------------------------------------------

    def api_request(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        """Count one Norce API request (``status`` None when no response arrived) and time it."""
        key = (method, endpoint, status)
        children = self._api.get(key)
        if children is None:
            method_label = method.upper() if method.upper() in HTTP_METHODS else OTHER
            endpoint_label = self._endpoint(endpoint)
            children = (
                self._c.api_requests.labels(
                    method=method_label, endpoint=endpoint_label, status_class=status_class(status)
                ),
                self._c.api_request_duration.labels(method=method_label, endpoint=endpoint_label),
            )
            # Bounded: the labels are; the raw keys (a raw path, any status) are capped here.
            if len(self._api) < _MAX_CACHED_KEYS:
                self._api[key] = children
        children[0].inc()
        children[1].observe(seconds if seconds > 0.0 else 0.0)

    def on_request(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        """ApiObserver hook: same as :meth:`api_request`."""
        self.api_request(method, endpoint, status, seconds)

    def on_retry(self, endpoint: str, reason: str) -> None:
        """Count one retry of a Norce API request; reason is 429|5xx|timeout|connection."""
        child = self._retries.get((endpoint, reason))
        if child is None:
            reason_label = reason if reason in RETRY_REASONS else OTHER
            child = self._c.api_retries.labels(
                endpoint=self._endpoint(endpoint), reason=reason_label
            )
            if len(self._retries) < _MAX_CACHED_KEYS:
                self._retries[endpoint, reason] = child
        child.inc()

    def set_circuit(self, state: CircuitState | str) -> None:
        """Publish the circuit breaker state (a :class:`CircuitState` or its value)."""
        current = CircuitState(state)
        for candidate, child in self._circuit_children.items():
            child.set(1 if candidate == current else 0)
        self._c.circuit_open.set(1 if current == CircuitState.OPEN else 0)

    # -- runtime --------------------------------------------------------------------------------

    def set_in_flight(self, n: int) -> None:
        """Publish the number of commands being executed."""
        self._c.in_flight.set(n)

    def set_buffered(self, n: int) -> None:
        """Publish the number of fetched records waiting for execution."""
        self._c.buffered.set(n)

    def set_paused_partitions(self, n: int) -> None:
        """Publish the number of paused partitions."""
        self._c.paused_partitions.set(n)

    def _partition(self, topic: str, partition: int) -> tuple[Gauge, Gauge]:
        """The (lag, committed offset) children of one assigned partition, kept until revoked."""
        children = self._partition_gauges.get((topic, partition))
        if children is None:
            labels = {"topic": self._topic(topic), "partition": str(partition)}
            children = (
                self._c.consumer_lag.labels(**labels),
                self._c.committed_offset.labels(**labels),
            )
            self._partition_gauges[topic, partition] = children
        return children

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Publish the consumer lag of one assigned partition."""
        self._partition(topic, partition)[0].set(max(lag, 0))

    def set_committed(self, topic: str, partition: int, offset: int) -> None:
        """Publish the last committed offset of one assigned partition."""
        self._partition(topic, partition)[1].set(offset)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the per-partition series of a revoked partition."""
        self._partition_gauges.pop((topic, partition), None)
        labels = (self._topic(topic), str(partition))
        for gauge in (self._c.consumer_lag, self._c.committed_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def event_loop_lag(self, seconds: float) -> None:
        """Publish one event-loop lag measurement."""
        value = max(seconds, 0.0)
        self._c.event_loop_lag_latest.set(value)
        self._c.event_loop_lag_hist.observe(value)

    def rebalance(self) -> None:
        """Count one consumer group rebalance (new assignment)."""
        self._c.rebalances.inc()

    def set_ready(self, ready: bool) -> None:
        """Publish whether the bridge is ready."""
        self._c.ready.set(1 if ready else 0)

    # -- write fencing ------------------------------------------------------------------------

    def set_lease(self, age_s: float | None, lost_total: int) -> None:
        """Publish the lease age (-1 before the first heartbeat) and the total losses so far."""
        self._c.lease_age.set(-1.0 if age_s is None else max(0.0, age_s))
        if lost_total > self._lease_lost_seen:
            self._c.lease_lost.inc(lost_total - self._lease_lost_seen)
            self._lease_lost_seen = lost_total

    def command_abandoned(self) -> None:
        """Count one command abandoned because its partition was lost."""
        self._c.commands_abandoned.inc()

    # -- notification ingress and relay ---------------------------------------------------------

    def notification_received(self, outcome: str) -> None:
        """Count one delivery answered by the ingress (outcomes: ``NOTIFICATION_OUTCOMES``)."""
        child = self._notifications.get(outcome)
        if child is None:  # not an outcome the ingress emits: never a new series
            raise ValueError(f"unknown notification outcome {outcome!r}")
        child.inc()

    def notification_stored(self, seconds: float) -> None:
        """Observe request received -> Kafka acknowledged for one accepted delivery."""
        self._c.notification_ingress_seconds.observe(max(seconds, 0.0))

    def notification_relayed(self, outcome: str) -> None:
        """Count one stored notification handled by the relay (``relayed`` or ``invalid``)."""
        child = self._relayed.get(outcome)
        if child is None:
            raise ValueError(f"unknown relay outcome {outcome!r}")
        child.inc()
