"""Composition root: builds every part from the settings and runs the service until a signal.

Order of construction (torn down in reverse, failing closes logged, not masked): Avro schemas
(a bad schema fails at boot), secrets, metrics, topics (created or checked), HTTP client, Norce
client, processor, circuit breaker, runtime, health server. SIGTERM/SIGINT: stop fetching, drain
in-flight work within ``drain_deadline_s``, commit, close the producer last; a second signal exits
at once. One shutdown log line carries the counters.

``order-bridge run`` also tunes the process once it is built (``BRIDGE_RUNTIME__*``, issue 13):
the garbage collector, a warm HTTP connection pool before ``/readyz`` says ready, and the event
loop (:mod:`bridge.tuning`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stamina
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bridge import __version__
from bridge.circuit import CircuitBreaker
from bridge.codec import AvroCodec
from bridge.config import AvroEncoding, BridgeSettings
from bridge.errors import ConfigError, SchemaLoadError
from bridge.health import HealthServer, start_health_server
from bridge.kafka_clients import kafka_client_options
from bridge.metrics import BridgeMetrics
from bridge.norce import NorceClient
from bridge.norce_http import NorceHttpClient, http_client_from_settings
from bridge.notification import load_ingress_auth
from bridge.notify_relay import NotificationService, start_notifications
from bridge.processor import Processor, check_record_limits
from bridge.runtime import Runtime
from bridge.schema_registry import client_from_settings, confluent_codec
from bridge.secret_files import load_secret
from bridge.stackdump import exit_if_teardown_hangs, log_stack_dump
from bridge.startup import KafkaStartupError, wait_for_kafka
from bridge.state_store import check_partitions
from bridge.tracing import Tracing, build_tracing
from bridge.tuning import tune_gc, warm_http_pool

log = logging.getLogger("bridge.app")


def sasl_password(settings: BridgeSettings) -> Callable[[], str | None]:
    """Read the SASL password (env or mounted file) lazily: it is never kept in the settings."""

    def read() -> str | None:
        k = settings.kafka
        if not k.security_protocol.startswith("SASL"):
            return None
        return load_secret(
            k.sasl_password,
            k.sasl_password_file,
            variable="BRIDGE_KAFKA__SASL_PASSWORD",
            what="SASL password",
        ).get_secret_value()

    return read


def kafka_options(settings: BridgeSettings) -> dict[str, Any]:
    return kafka_client_options(settings, sasl_password(settings))


def topic_configs(
    settings: BridgeSettings, *, notifications: bool = True
) -> dict[str, dict[str, str]]:
    """The topics the bridge creates when missing -> their topic configuration (pure;
    ``bridge.asyncapi`` documents the same). The notifications topic only with
    ``notifications`` (the ingress or the relay on)."""
    t = settings.topics
    wanted: dict[str, dict[str, str]] = {
        t.commands: {},
        t.snapshots: {"cleanup.policy": "compact"},
        t.events: {},
        t.results: {},
        t.dlq: {"retention.ms": str(30 * 24 * 3600 * 1000)},
        t.order_state: {"cleanup.policy": "compact"},  # the order state store (internal)
    }
    if notifications:
        # Room for a body of max_body_bytes with its headers (Kafka's default is ~1 MiB).
        wanted[t.notifications] = {
            "max.message.bytes": str(max(1_048_588, settings.ingress.max_body_bytes + 64 * 1024))
        }
    return wanted


async def ensure_topics(settings: BridgeSettings, options: dict[str, Any]) -> list[str]:
    """Create missing topics (if allowed) or fail naming them. Returns the topics created."""
    t = settings.topics
    ingress = settings.ingress
    wanted = topic_configs(settings, notifications=ingress.enabled or ingress.relay_enabled())
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        client_id=f"{settings.kafka.client_id}-admin",
        **options,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            await _check_record_limits(admin, settings)
            await _check_state_partitions(admin, settings)
            return []
        if not t.create_missing:
            raise ConfigError(
                "missing Kafka topic(s): "
                + ", ".join(missing)
                + " (create them, or set BRIDGE_TOPICS__CREATE_MISSING=true)"
            )
        counts = await _partition_counts(admin, [t.commands])
        # The state store needs as many partitions as the commands topic (bridge.state_store).
        state_partitions = counts.get(t.commands) or t.partitions
        await admin.create_topics(
            [
                NewTopic(
                    name,
                    state_partitions if name == t.order_state else t.partitions,
                    t.replication_factor,
                    topic_configs=wanted[name],
                )
                for name in missing
            ]
        )
        log.info("created topics", extra={"topics": missing})
        await _check_record_limits(admin, settings)
        await _check_state_partitions(admin, settings)
        return missing
    finally:
        await admin.close()


PRODUCER_MAX_REQUEST_SIZE = 1_048_576  # aiokafka's default, which the bridge's producers use


async def _dlq_max_message_bytes(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    """The DLQ topic's ``max.message.bytes``, None when it cannot be read (e.g. no ACL)."""
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
    except Exception:
        return None
    for response in responses:
        for resource in getattr(response, "resources", []):
            for entry in resource[4]:
                if entry[0] == "max.message.bytes" and entry[1]:
                    with contextlib.suppress(ValueError):
                        return int(entry[1])
    return None


async def _partition_counts(
    admin: AIOKafkaAdminClient, names: list[str], *, wait_s: float = 10.0
) -> dict[str, int]:
    """Partitions per existing topic. A topic created a moment ago can show no partitions in
    the metadata yet: asked again (bounded by ``wait_s``); one still not shown is left out."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            described = await admin.describe_topics(names)
        except Exception:
            described = []
        counts = {
            d["topic"]: len(d["partitions"])
            for d in described
            if isinstance(d, dict) and not d.get("error_code") and d.get("partitions")
        }
        unknown = {
            d.get("topic") for d in described if isinstance(d, dict) and d.get("error_code") == 3
        }  # UNKNOWN_TOPIC_OR_PARTITION: it does not exist, nothing to wait for
        if set(names) <= set(counts) | unknown or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.2)  # metadata propagation after a create: re-ask, bounded


async def _check_state_partitions(admin: AIOKafkaAdminClient, settings: BridgeSettings) -> None:
    """Refuse an order state topic with fewer partitions than the commands topic."""
    t = settings.topics
    counts = await _partition_counts(admin, [t.commands, t.order_state])
    check_partitions(counts.get(t.order_state), counts.get(t.commands))


async def _check_record_limits(admin: AIOKafkaAdminClient, settings: BridgeSettings) -> None:
    """Refuse a ``max_record_bytes`` whose dead letters could not be written whole."""
    problems = check_record_limits(
        settings.processing.max_record_bytes,
        producer_max_request_size=PRODUCER_MAX_REQUEST_SIZE,
        topic_max_message_bytes=await _dlq_max_message_bytes(admin, settings.topics.dlq),
    )
    if problems:
        raise ConfigError("; ".join(problems))


class _Health:
    """Liveness and readiness; before the runtime exists, readiness says why the bridge waits."""

    def __init__(self, wedged_after_s: float) -> None:
        self.runtime: Runtime | None = None
        self.wedged_after_s = wedged_after_s
        self.starting = "starting"
        self.warming = False

    def is_alive(self) -> tuple[bool, str]:
        if self.runtime is None:
            return True, self.starting
        age = time.monotonic() - self.runtime.heartbeat
        if age > self.wedged_after_s:
            return False, f"event loop heartbeat is {age:.0f}s old"
        return True, "ok"

    def is_ready(self) -> tuple[bool, str]:
        if self.runtime is None:
            return False, self.starting
        if self.runtime.draining:
            return False, "draining"
        if not self.runtime.broker_ok:
            return False, "broker unreachable"
        if not self.runtime.ready:
            return False, "not yet a member of the consumer group"
        if self.warming:
            return False, "opening connections to the Norce API"
        return True, "ok"

    def waiting(self, reason: str) -> None:
        self.starting = f"starting: {reason}"


def _load_codec(settings: BridgeSettings) -> AvroCodec:
    try:
        return AvroCodec.load(settings.schemas_dir)
    except SchemaLoadError as exc:
        where = (
            "the schemas shipped in the package (reinstall the package)"
            if settings.schemas_dir is None
            else "BRIDGE_SCHEMAS_DIR"
        )
        raise ConfigError(f"Avro schemas from {where}: {exc}") from None


async def _start_health(
    registry: CollectorRegistry, state: _Health, settings: BridgeSettings
) -> HealthServer:
    h = settings.http
    try:
        return await start_health_server(registry, state, host=h.host, port=h.port)
    except OSError as exc:
        raise ConfigError(
            f"BRIDGE_HTTP__HOST/BRIDGE_HTTP__PORT: cannot listen on {h.host}:{h.port} "
            f"({exc.strerror or type(exc).__name__}); choose a free port"
        ) from None


@dataclass
class Service:
    """A built, not yet running, bridge (tests drive it directly)."""

    settings: BridgeSettings
    runtime: Runtime
    metrics: BridgeMetrics
    registry: CollectorRegistry
    health: HealthServer | None
    stack: contextlib.AsyncExitStack
    http: NorceHttpClient | None = None
    state: _Health | None = None
    notifications: NotificationService | None = None
    codec: AvroCodec | None = None  # what the outputs are encoded with (Confluent ids or not)

    async def aclose(self) -> None:
        await self.stack.aclose()

    async def warm_up(self) -> int:
        """Open the configured keep-alive connections (readiness waits for it); never raises."""
        r = self.settings.runtime
        n = min(r.warm_connections, self.settings.norce.max_connections)
        if self.http is None or n <= 0:
            return 0
        if self.state is not None:
            self.state.warming = True
        try:
            return await warm_http_pool(self.http, n, r.warm_deadline_s)
        finally:
            if self.state is not None:
                self.state.warming = False


async def build_service(
    settings: BridgeSettings,
    *,
    api_key: SecretStr | None = None,
    start_http: bool = True,
    tracing: Tracing | None = None,
) -> Service:
    """Build every part in an AsyncExitStack; the caller runs ``service.runtime.run()``.

    ``tracing`` None: as the settings and the ``OTEL_*`` variables say (:mod:`bridge.tracing`).
    """
    stack = contextlib.AsyncExitStack()
    try:
        codec = _load_codec(settings)
        key = api_key or load_secret(
            settings.norce.api_key, settings.norce.api_key_file, variable="BRIDGE_NORCE__API_KEY"
        )
        # Before connecting to anything: tracing asked for but not installed fails at once.
        if tracing is None:
            tracing = build_tracing(settings, os.environ)
            stack.callback(tracing.shutdown)  # flushes the spans still batched
        if tracing.enabled:
            log.info("tracing on: OpenTelemetry spans per command, context in every output")
        # Before connecting to anything: a bad webhook secret fails start-up at once.
        ingress_auth = load_ingress_auth(settings.ingress) if settings.ingress.enabled else None
        confluent = settings.avro_encoding == AvroEncoding.CONFLUENT
        schema_registry = client_from_settings(settings.schema_registry) if confluent else None
        if schema_registry is not None:
            stack.push_async_callback(schema_registry.aclose)
        registry = CollectorRegistry()
        p = settings.processing
        metrics = BridgeMetrics(
            registry,
            version=__version__,
            processing_guarantee=p.processing_guarantee.value,
            ordering=p.ordering.value,
        )
        options = kafka_options(settings)
        if "ssl_context" in options and not settings.kafka.ssl_check_hostname:
            log.warning(
                "TLS host name checking is off (BRIDGE_KAFKA__SSL_CHECK_HOSTNAME=false): any "
                "certificate signed by the configured CA is accepted for any broker address"
            )
        state = _Health(settings.http.wedged_after_s)
        health = None
        if start_http:
            health = await _start_health(registry, state, settings)
            stack.push_async_callback(health.aclose)
        k = settings.kafka
        await wait_for_kafka(
            k.bootstrap_servers,
            options,
            deadline_s=k.startup_deadline_s,
            attempt_timeout_s=min(k.request_timeout_ms / 1000, 10.0),
            on_waiting=state.waiting,
        )
        state.waiting("creating or checking topics")
        try:
            await ensure_topics(settings, options)
        except KafkaConnectionError as exc:
            raise KafkaStartupError(
                f"Kafka connection lost while checking the topics ({type(exc).__name__}); "
                "check that the brokers are up and BRIDGE_KAFKA__BOOTSTRAP_SERVERS",
                refused=False,
            ) from None
        except KafkaError as exc:
            raise KafkaStartupError(
                f"Kafka refused to list or create the topics ({type(exc).__name__}); grant the "
                "bridge's principal Describe/Create on its topics, or create them and set "
                "BRIDGE_TOPICS__CREATE_MISSING=false",
                refused=True,
            ) from None
        if schema_registry is not None:
            # Registered once here (retried while the registry is down: /readyz says why);
            # afterwards only an unknown command schema id calls the registry.
            state.waiting("registering the Avro schemas with the schema registry")
            codec = await confluent_codec(
                codec, schema_registry, settings, on_waiting=state.waiting
            )
        n = settings.norce
        http = http_client_from_settings(n)
        stack.push_async_callback(http.aclose)
        # The client reports retries to the metrics and logs them itself: no stamina defaults
        # (its own log line and a counter on the global registry).
        stamina.instrumentation.set_on_retry_hooks([])
        client = NorceClient(
            http,
            api_key=key,
            adapter_id=n.adapter_id,
            retry=n.retry,
            observer=metrics,
            tracing=tracing,
        )
        processor = Processor(
            client,
            max_command_age_s=p.max_command_age_s,
            read_before_write=p.write_guard == "lease+read",
        )
        circuit = CircuitBreaker(
            threshold=p.circuit_failure_threshold,
            open_s=p.circuit_open_s,
            max_open_s=p.circuit_max_open_s,
            on_change=metrics.set_circuit,
        )
        metrics.set_circuit("closed")
        runtime = Runtime(
            settings,
            codec=codec,
            processor=processor,
            metrics=metrics,
            kafka_options=options,
            circuit=circuit,
            tracing=tracing,
        )
        # The notification ingress and relay (BRIDGE_INGRESS__*): their own port, producer and
        # consumer group; closed before the runtime's clients (the stack unwinds in reverse).
        notifications = await start_notifications(settings, options, metrics, auth=ingress_auth)
        if notifications is not None:
            stack.push_async_callback(notifications.aclose)
        state.runtime = runtime
        return Service(
            settings,
            runtime,
            metrics,
            registry,
            health,
            stack,
            http=http,
            state=state,
            notifications=notifications,
            codec=codec,
        )
    except BaseException:
        await stack.aclose()
        raise


async def run_service(settings: BridgeSettings, *, teardown_s: float | None = None) -> int:
    """``order-bridge run``: serve until SIGTERM/SIGINT; exit code 0 on a clean drain.

    ``teardown_s`` (for a process that ends with the service): what follows the drain (closing
    the ingress and clients, then the loop and the interpreter) is bounded too, so the process
    never outlives its drain by more than that (see :func:`exit_if_teardown_hangs`)."""
    service = await build_service(settings)
    tune_gc(settings.runtime, service.metrics)
    loop = asyncio.get_running_loop()
    signals_seen = 0
    drains: list[asyncio.Task[None]] = []

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.error("second signal: exiting at once", extra={"signal": signame})
            os._exit(130)
        log.info("signal received: draining", extra={"signal": signame})
        service.runtime.stop()
        if service.notifications is not None:
            # Stop taking deliveries at once (running ones finish: stored, then answered).
            drains.append(asyncio.create_task(service.notifications.aclose()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    loop.add_signal_handler(signal.SIGUSR1, log_stack_dump)
    started = time.monotonic()
    code = 0
    try:
        log.info(
            "bridge started",
            extra={
                "version": __version__,
                "metrics_url": service.health.url if service.health else None,
                "ordering": settings.processing.ordering.value,
                "processing_guarantee": settings.processing.processing_guarantee.value,
                "event_loop": f"{type(loop).__module__}.{type(loop).__name__}",
            },
        )
        # Concurrently with joining the group: /readyz waits for both.
        warm = asyncio.create_task(service.warm_up(), name="warm-up")
        try:
            await service.runtime.run()
        finally:
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm
    except Exception:
        log.exception("bridge stopped on an error")
        code = 1
    finally:
        service.metrics.gc_pauses.uninstall()
        log.info(
            "bridge stopped",
            extra={
                "uptime_s": round(time.monotonic() - started, 1),
                **service.runtime.counters,
                **service.metrics.gc_pauses.summary(),
            },
        )
        if teardown_s is not None:
            exit_if_teardown_hangs(code, teardown_s)
        for drain in drains:
            with contextlib.suppress(Exception):
                await drain
        await service.aclose()
    return code
