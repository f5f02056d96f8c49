"""Prometheus metrics of the bridge: every collector on an injected registry, bounded labels.

The runtime, the processor's caller and the Norce client report what happened through the
intent-named methods of :class:`BridgeMetrics`; nothing else touches a collector. Label values are
normalised here so that a bug elsewhere cannot explode cardinality: command types, outcomes, status
classes, retry reasons and HTTP methods come from closed sets (anything else becomes ``other`` or
``unknown``), and the open-ended labels (endpoint, dead-letter reason, topic) are checked against a
pattern and capped in how many distinct values they may take. Order ids never become label values.

The dashboard (``dashboards/norce-order-bridge.json``) and the alert rules
(``alerts/norce-order-bridge.rules.yaml``) use the metric names defined here; a test in
``tests/deploy`` fails when they reference a name this module does not export.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable
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

from bridge.vocabulary import TOPIC_ROLES, CircuitState, DeadLetterReason, Outcome

__all__ = [
    "API_DURATION_BUCKETS",
    "COMMAND_DURATION_BUCKETS",
    "COMMAND_LABELS",
    "COMMAND_OUTCOMES",
    "COMMAND_TYPES",
    "DEAD_LETTER_REASONS",
    "E2E_LATENCY_BUCKETS",
    "EVENT_LOOP_LAG_BUCKETS",
    "OTHER",
    "PUBLISHED_TOPICS",
    "RETRY_REASONS",
    "BridgeMetrics",
    "CircuitState",
    "status_class",
]

OTHER: Final = "other"
UNKNOWN_TYPE: Final = "unknown"

COMMAND_TYPES: Final[tuple[str, ...]] = ("SetOrderState", "DeleteOrder")
# One outcome per handled record (a dead-lettered command is ``failed``; dead letters are
# counted by reason in their own counter, so the outcomes sum to the records handled).
COMMAND_OUTCOMES: Final[tuple[Outcome, ...]] = tuple(Outcome)
# (type, outcome) pairs that can occur: a valid command of either type ends in any outcome; a
# record whose type cannot be read (``unknown``) is always dead-lettered, so only ``failed``.
COMMAND_LABELS: Final[tuple[tuple[str, Outcome], ...]] = (
    *((t, o) for t in COMMAND_TYPES for o in Outcome),
    (UNKNOWN_TYPE, Outcome.FAILED),
)
RETRY_REASONS: Final[tuple[str, ...]] = ("429", "5xx", "timeout", "connection")
STATUS_CLASSES: Final[tuple[str, ...]] = ("2xx", "3xx", "4xx", "5xx", "error")
CIRCUIT_STATES: Final[tuple[CircuitState, ...]] = tuple(CircuitState)
HTTP_METHODS: Final[frozenset[str]] = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
)
# Dead-letter reasons: the bridge's one vocabulary, pre-initialised at zero so rate() and the
# alerts have a series before the first dead letter. Other short codes are accepted too.
DEAD_LETTER_REASONS: Final[tuple[DeadLetterReason, ...]] = tuple(DeadLetterReason)
# Output topics by role (the ``topic`` label: never a configured topic name).
PUBLISHED_TOPICS: Final[tuple[str, ...]] = tuple(TOPIC_ROLES.values())

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

# Open-ended labels: a short code / path template, and at most this many distinct values each.
_CODE_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_ENDPOINT_RE: Final = re.compile(r"^[A-Za-z0-9_./{}:-]{1,120}$")
# A path segment that looks like an identifier: digits, a uuid, or a long token with a digit.
_ID_SEGMENT_RE: Final = re.compile(
    r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?=[^/]*\d)[A-Za-z0-9_.~-]{8,})$"
)
# Norce Order API collections: the segment after one of these is an identifier.
_COLLECTIONS: Final[frozenset[str]] = frozenset(
    {
        "orders",
        "consents",
        "validations",
        "hooks",
        "notifications",
        "payments",
        "actions",
        "transactions",
        "shippings",
    }
)
MAX_DISTINCT_ENDPOINTS: Final = 32
MAX_DISTINCT_REASONS: Final = 32
MAX_DISTINCT_TOPICS: Final = 16


def status_class(status: int | None) -> str:
    """Map an HTTP status (``None`` when no response arrived) to 2xx|3xx|4xx|5xx|error."""
    if status is None or not 200 <= status <= 599:
        return "error"
    return f"{status // 100}xx"


def _template_endpoint(endpoint: str) -> str:
    """Replace identifier-looking path segments by ``{id}`` so a raw URL cannot leak an order id."""
    segments = endpoint.split("?", 1)[0].split("/")
    out: list[str] = []
    for i, seg in enumerate(segments):
        is_id = bool(seg) and not seg.startswith("{")
        is_id = is_id and (
            (i > 0 and segments[i - 1] in _COLLECTIONS) or _ID_SEGMENT_RE.match(seg) is not None
        )
        out.append("{id}" if is_id else seg)
    return "/".join(out)


class _BoundedLabel:
    """Admits values matching a pattern, up to ``limit`` distinct ones; everything else is other."""

    def __init__(
        self,
        pattern: re.Pattern[str],
        limit: int,
        initial: Iterable[str] = (),
        normalise: Callable[[str], str] | None = None,
    ) -> None:
        self._pattern = pattern
        self._limit = limit
        self._normalise = normalise
        self._seen: set[str] = set(initial)
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if self._normalise is not None:
            value = self._normalise(value)
        if value in self._seen:
            return value
        if not self._pattern.match(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self._limit:
                return OTHER
            self._seen.add(value)
        return value


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
        ns = "norce_bridge"

        self.build_info = Gauge(
            f"{ns}_build_info",
            "Always 1; labels carry the bridge version and its processing mode.",
            ["version", "processing_guarantee", "ordering"],
            registry=registry,
        )
        self.build_info.labels(
            version=version, processing_guarantee=processing_guarantee, ordering=ordering
        ).set(1)

        self.commands = Counter(
            f"{ns}_commands",
            "Commands finished, by command type and outcome.",
            ["type", "outcome"],
            registry=registry,
        )
        self.command_duration = Histogram(
            f"{ns}_command_duration_seconds",
            "Time from starting a command to its outputs being acknowledged, by command type.",
            ["type"],
            buckets=COMMAND_DURATION_BUCKETS,
            registry=registry,
        )
        self.e2e_latency_seconds = Histogram(
            f"{ns}_command_e2e_latency_seconds",
            "Time from the command record's Kafka timestamp to its outputs being acknowledged.",
            buckets=E2E_LATENCY_BUCKETS,
            registry=registry,
        )
        self.api_requests = Counter(
            f"{ns}_api_requests",
            "Norce Order API requests, by method, endpoint template and status class.",
            ["method", "endpoint", "status_class"],
            registry=registry,
        )
        self.api_request_duration = Histogram(
            f"{ns}_api_request_duration_seconds",
            "Norce Order API request duration, by method and endpoint template.",
            ["method", "endpoint"],
            buckets=API_DURATION_BUCKETS,
            registry=registry,
        )
        self.api_retries = Counter(
            f"{ns}_api_retries",
            "Norce Order API request retries, by endpoint template and reason.",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.dead_letters = Counter(
            f"{ns}_dead_letters",
            "Records sent to the dead-letter topic, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.records_published = Counter(
            f"{ns}_records_published",
            "Records acknowledged by Kafka, by output topic.",
            ["topic"],
            registry=registry,
        )
        self.in_flight = Gauge(
            f"{ns}_in_flight_commands",
            "Commands currently being executed.",
            registry=registry,
        )
        self.buffered = Gauge(
            f"{ns}_buffered_records",
            "Records fetched from Kafka and waiting for execution.",
            registry=registry,
        )
        self.paused_partitions = Gauge(
            f"{ns}_paused_partitions",
            "Assigned partitions whose fetching is paused because their buffer is full.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{ns}_consumer_lag",
            "Records between the committed offset and the high watermark, per assigned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.committed_offset = Gauge(
            f"{ns}_committed_offset",
            "Last offset committed by the consumer group, per assigned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            f"{ns}_circuit_open",
            "1 while the Norce API circuit breaker is open (calls are not attempted), else 0.",
            registry=registry,
        )
        self.circuit_state = Gauge(
            f"{ns}_circuit_state",
            "Norce API circuit breaker state: exactly one of closed/open/half_open is 1.",
            ["state"],
            registry=registry,
        )
        self.last_success = Gauge(
            f"{ns}_last_success_timestamp_seconds",
            "Unix time of the last command whose outputs were acknowledged.",
            registry=registry,
        )
        self.event_loop_lag_latest = Gauge(
            f"{ns}_event_loop_lag_seconds",
            "Latest measured asyncio event-loop lag (scheduling delay of a periodic probe).",
            registry=registry,
        )
        self.event_loop_lag_hist = Histogram(
            f"{ns}_event_loop_lag_histogram_seconds",
            "Distribution of measured asyncio event-loop lag.",
            buckets=EVENT_LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self.rebalances = Counter(
            f"{ns}_rebalances",
            "Consumer group rebalances seen by this process (partition assignments).",
            registry=registry,
        )
        self.ready = Gauge(
            f"{ns}_ready",
            "1 while the bridge reports ready (group member, broker reachable, not draining),"
            " else 0.",
            registry=registry,
        )

        self.lease_age = Gauge(
            f"{ns}_lease_age_seconds",
            "Age of the group-membership lease: seconds since the last successful heartbeat was"
            " sent (writes to Norce stop when it nears the session timeout).",
            registry=registry,
        )
        self.lease_lost = Counter(
            f"{ns}_lease_lost",
            "Times the membership lease expired or was lost (a pause, an expulsion, an outage).",
            registry=registry,
        )
        self.commands_abandoned = Counter(
            f"{ns}_commands_abandoned",
            "Commands given up without a result because their partition was no longer ours"
            " (the partition's new owner runs them).",
            registry=registry,
        )

        self._lease_lost_seen = 0

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

        self._endpoint = _BoundedLabel(
            _ENDPOINT_RE, MAX_DISTINCT_ENDPOINTS, normalise=_template_endpoint
        )
        self._dead_letter_reason = _BoundedLabel(
            _CODE_RE, MAX_DISTINCT_REASONS, initial=DEAD_LETTER_REASONS
        )
        self._topic = _BoundedLabel(_TOPIC_RE, MAX_DISTINCT_TOPICS, initial=PUBLISHED_TOPICS)

        # Pre-initialise exactly the label values that can occur, at zero, so rate() and the
        # alerts have a series from the start (tests/unit/test_vocabulary.py checks the sets).
        for command_type, outcome in COMMAND_LABELS:
            self.commands.labels(type=command_type, outcome=outcome)
        for command_type in (*COMMAND_TYPES, UNKNOWN_TYPE):
            self.command_duration.labels(type=command_type)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        for topic in PUBLISHED_TOPICS:
            self.records_published.labels(topic=topic)
        self.set_circuit(CircuitState.CLOSED)

    # -- commands -------------------------------------------------------------------------------

    def command_finished(self, command_type: str, outcome: str, seconds: float) -> None:
        """Count one finished command and observe how long it took."""
        type_label = command_type if command_type in COMMAND_TYPES else UNKNOWN_TYPE
        outcome_label = outcome if outcome in COMMAND_OUTCOMES else OTHER
        self.commands.labels(type=type_label, outcome=outcome_label).inc()
        self.command_duration.labels(type=type_label).observe(max(seconds, 0.0))

    def e2e_latency(self, seconds: float) -> None:
        """Observe the time from a record's timestamp to its outputs being acknowledged."""
        self.e2e_latency_seconds.observe(max(seconds, 0.0))

    def command_succeeded_now(self) -> None:
        """Record that a command's outputs were acknowledged just now."""
        self.last_success.set(time.time())

    def dead_lettered(self, reason: str) -> None:
        """Count one record sent to the dead-letter topic."""
        self.dead_letters.labels(reason=self._dead_letter_reason(reason)).inc()

    def published(self, topic: str, n: int = 1) -> None:
        """Count ``n`` records acknowledged by Kafka on ``topic``."""
        if n > 0:
            self.records_published.labels(topic=self._topic(topic)).inc(n)

    # -- Norce API (also the client's ApiObserver) ----------------------------------------------

    def api_request(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        """Count one Norce API request (``status`` None when no response arrived) and time it."""
        method_label = method.upper() if method.upper() in HTTP_METHODS else OTHER
        endpoint_label = self._endpoint(endpoint)
        self.api_requests.labels(
            method=method_label, endpoint=endpoint_label, status_class=status_class(status)
        ).inc()
        self.api_request_duration.labels(method=method_label, endpoint=endpoint_label).observe(
            max(seconds, 0.0)
        )

    def on_request(self, method: str, endpoint: str, status: int | None, seconds: float) -> None:
        """ApiObserver hook: same as :meth:`api_request`."""
        self.api_request(method, endpoint, status, seconds)

    def on_retry(self, endpoint: str, reason: str) -> None:
        """Count one retry of a Norce API request; reason is 429|5xx|timeout|connection."""
        reason_label = reason if reason in RETRY_REASONS else OTHER
        self.api_retries.labels(endpoint=self._endpoint(endpoint), reason=reason_label).inc()

    def set_circuit(self, state: CircuitState | str) -> None:
        """Publish the circuit breaker state (a :class:`CircuitState` or its value)."""
        current = CircuitState(state)
        for candidate in CIRCUIT_STATES:
            self.circuit_state.labels(state=candidate).set(1 if candidate == current else 0)
        self.circuit_open.set(1 if current == CircuitState.OPEN else 0)

    # -- runtime --------------------------------------------------------------------------------

    def set_in_flight(self, n: int) -> None:
        """Publish the number of commands being executed."""
        self.in_flight.set(n)

    def set_buffered(self, n: int) -> None:
        """Publish the number of fetched records waiting for execution."""
        self.buffered.set(n)

    def set_paused_partitions(self, n: int) -> None:
        """Publish the number of paused partitions."""
        self.paused_partitions.set(n)

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Publish the consumer lag of one assigned partition."""
        self.consumer_lag.labels(topic=self._topic(topic), partition=str(partition)).set(
            max(lag, 0)
        )

    def set_committed(self, topic: str, partition: int, offset: int) -> None:
        """Publish the last committed offset of one assigned partition."""
        self.committed_offset.labels(topic=self._topic(topic), partition=str(partition)).set(offset)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop the per-partition series of a revoked partition."""
        labels = (self._topic(topic), str(partition))
        for gauge in (self.consumer_lag, self.committed_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def event_loop_lag(self, seconds: float) -> None:
        """Publish one event-loop lag measurement."""
        value = max(seconds, 0.0)
        self.event_loop_lag_latest.set(value)
        self.event_loop_lag_hist.observe(value)

    def rebalance(self) -> None:
        """Count one consumer group rebalance (new assignment)."""
        self.rebalances.inc()

    def set_ready(self, ready: bool) -> None:
        """Publish whether the bridge is ready."""
        self.ready.set(1 if ready else 0)

    # -- write fencing ------------------------------------------------------------------------

    def set_lease(self, age_s: float | None, lost_total: int) -> None:
        """Publish the lease age (-1 before the first heartbeat) and the total losses so far."""
        self.lease_age.set(-1.0 if age_s is None else max(0.0, age_s))
        if lost_total > self._lease_lost_seen:
            self.lease_lost.inc(lost_total - self._lease_lost_seen)
            self._lease_lost_seen = lost_total

    def command_abandoned(self) -> None:
        """Count one command abandoned because its partition was lost."""
        self.commands_abandoned.inc()
