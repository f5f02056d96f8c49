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

import bisect
import contextlib
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

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
# 50 us .. 1 s: a young collection takes microseconds, a full one of a large heap tens of ms.
GC_PAUSE_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
)  # fmt: skip
_GENERATIONS: Final = 3
# Raw (method, endpoint, status) keys whose label children are kept (the labels are bounded by
# bridge.metric_labels; this bounds the cache of the raw values that map to them).
_MAX_CACHED_KEYS: Final = 1024


class GcPauses:
    """Times every garbage collection per generation (``gc.callbacks``) and exports the pauses.

    ``norce_bridge_gc_pause_seconds{generation}`` (histogram) and
    ``norce_bridge_gc_pause_max_seconds{generation}`` (the longest pause since start), series
    appearing with a generation's first timed collection. The callback only does arithmetic on
    plain lists (no lock: it runs inside the collector, which may interrupt any code, including
    a metric update holding its lock); the families are built when ``/metrics`` is scraped.
    """

    def __init__(self, buckets: tuple[float, ...] = GC_PAUSE_BUCKETS) -> None:
        self._bounds = buckets
        self._started = 0.0
        self._started_cpu = 0.0
        self._max_cpu = [0.0] * _GENERATIONS
        self._sum_cpu = [0.0] * _GENERATIONS
        self._counts = [[0] * (len(buckets) + 1) for _ in range(_GENERATIONS)]
        self._sums = [0.0] * _GENERATIONS
        self._max = [0.0] * _GENERATIONS
        self._installed = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._started_cpu = time.thread_time()
            return
        pause = time.perf_counter() - self._started
        cpu = time.thread_time() - self._started_cpu
        generation = info.get("generation", 0)
        if not 0 <= generation < _GENERATIONS:
            return
        self._sum_cpu[generation] += cpu
        if cpu > self._max_cpu[generation]:
            self._max_cpu[generation] = cpu
        self._counts[generation][bisect.bisect_left(self._bounds, pause)] += 1
        self._sums[generation] += pause
        if pause > self._max[generation]:
            self._max[generation] = pause

    def install(self) -> None:
        """Start timing collections (idempotent)."""
        if not self._installed:
            gc.callbacks.append(self)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self)
            self._installed = False

    def longest(self, generation: int) -> float:
        """The longest pause of ``generation`` seen so far, in seconds (0 before the first)."""
        return self._max[generation]

    def summary(self) -> dict[str, list[float] | list[int]]:
        """Collections and longest pause (ms) per generation, for the shutdown log line.

        ``gc_cpu_max_ms`` / ``gc_cpu_total_ms``: the longest and the total collection time in CPU
        time of the collecting thread (on a busy machine the wall-time pause also counts the time
        the process was not scheduled).
        """
        return {
            "gc_collections": [sum(c) for c in self._counts],
            "gc_pause_max_ms": [round(m * 1000, 3) for m in self._max],
            "gc_cpu_max_ms": [round(m * 1000, 3) for m in self._max_cpu],
            "gc_cpu_total_ms": [round(m * 1000, 1) for m in self._sum_cpu],
        }

    def describe(self) -> list[Metric]:
        return [
            HistogramMetricFamily(
                "norce_bridge_gc_pause_seconds",
                "Garbage-collector pauses of this process, by generation (2 = full collection).",
                labels=["generation"],
            ),
            GaugeMetricFamily(
                "norce_bridge_gc_pause_max_seconds",
                "Longest garbage-collector pause since the process started, by generation.",
                labels=["generation"],
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        hist, longest = self.describe()
        assert isinstance(hist, HistogramMetricFamily)
        assert isinstance(longest, GaugeMetricFamily)
        for generation in range(_GENERATIONS):
            counts = list(self._counts[generation])
            if not any(counts):
                continue
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            label = [str(generation)]
            hist.add_metric(label, buckets, self._sums[generation])
            longest.add_metric(label, self._max[generation])
        yield hist
        yield longest


@dataclass(frozen=True, slots=True)
class _Collectors:
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


def _register(registry: CollectorRegistry) -> _Collectors:
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
        "Assigned partitions whose fetching is paused because their buffer is full.",
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
    return _Collectors(
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
    )


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
        self._c = _register(registry)
        self._c.build_info.labels(
            version=version, processing_guarantee=processing_guarantee, ordering=ordering
        ).set(1)

        self._lease_lost_seen = 0

        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)

        self._endpoint = BoundedLabel(
            ENDPOINT_RE, MAX_DISTINCT_ENDPOINTS, normalise=template_endpoint
        )
        self._dead_letter_reason = BoundedLabel(
            CODE_RE, MAX_DISTINCT_REASONS, initial=DEAD_LETTER_REASONS
        )
        self._topic = BoundedLabel(TOPIC_RE, MAX_DISTINCT_TOPICS, initial=PUBLISHED_TOPICS)

        self.gc_pauses = GcPauses()
        registry.register(self.gc_pauses)

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
