"""Running one benchmark run: fresh topics and orders, a fresh process, measured.

For a ``RunSpec`` it seeds orders, pre-produces the workload to a fresh 12-partition topic (or
produces it paced while the process runs), starts a ``bridge run`` process (or, for
``pipeline="reference"``, the lean reference pipeline ``bridge_devkit.throughput.reference``
with the same ``BRIDGE_*`` environment), samples its CPU until every command has a result (or
``stop_after_s``), stops it with SIGTERM and hands over to the verifier. The bridge of a run is
configured by ``COMPARISONS``: one entry per comparison (``--event-loops``, ``--tracing``,
``--encodings``), each variant's variables and services.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer

from bridge.codec import AvroCodec
from bridge.config import (
    DEFAULT_SCHEMAS_DIR,
    BridgeSettings,
    SchemaRegistrySettings,
    TopicSettings,
)
from bridge.schema_registry import SchemaRegistryClient, confluent_codec
from bridge_devkit.harness import (
    JSON_HEADERS,
    BridgeProcess,
    SimulatorProcess,
    command_producer,
    committed_offsets,
    create_topics,
    delete_topics,
    deployment_env,
    end_offsets,
    fresh_topics,
    read_topic,
    scrape_metric,
)
from bridge_devkit.harness.kafka import all_partitions
from bridge_devkit.localregistry import APICURIO_VERSION, LocalRegistry, external_registry
from bridge_devkit.throughput.runs import PARTITIONS, RunResult, RunSpec, proc_cpu_s, proc_hwm_mb
from bridge_devkit.throughput.verify import RunOutputs, measure_and_verify
from bridge_devkit.throughput.workload import Planned, Sent, build_workload

API_KEY = "bench-api-key-0123456789"
SAMPLE_EVERY_S = 0.05
CHECK_EVERY_S = 0.5
PROGRESS_EVERY_S = 2.0
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


def say(text: str = "") -> None:
    print(text, flush=True)


REFERENCE_MODULE = "bridge_devkit.throughput.reference"
STOPPED_LINES = ("bridge stopped", "reference stopped")  # their int fields: the counters
OWN_LOGGERS = ("bridge", "reference")  # ERROR lines of these fail a run


class ReferenceProcess(BridgeProcess):
    """The reference pipeline as a process, handled like a ``bridge run`` process (same
    environment, JSON log on stderr, SIGTERM to stop)."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, argv: Sequence[str] = ()) -> None:
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*(argv or [sys.executable]), "-m", REFERENCE_MODULE],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.log_path = log_path
        self.started = time.monotonic()


@dataclass(frozen=True)
class Service:
    """What a variant's runs talk to: its URL, and a line to print after the runs."""

    url: str
    after_runs: Callable[[], str] | None = None


Starter = Callable[[], AbstractAsyncContextManager[Service]]


@dataclass(frozen=True)
class Comparison:
    """Key-mode runs at ``--<dimension>-latency`` with each of the variants in ``option``,
    alternately, ``--repeat`` times each, and the bridge configured the variant's way."""

    dimension: str  # RunSpec.kind of its runs (RunSpec.variant: the value)
    option: str
    help: str
    title: str  # "L of the <title> comparison"; the summary's "<title> <value> (key mode...)"
    # value -> its variables ("{url}": its service's); the first's are every other run's
    variants: Mapping[str, Mapping[str, str]]
    label: str = "{}"  # a run's label: "<label with the value> <mode> L=..."
    services: Mapping[str, Starter] = field(default_factory=dict)  # value -> its service

    def values(self, args: argparse.Namespace) -> list[str]:
        """The variants asked for (``--option a,b``); an unknown one stops the benchmark."""
        text = getattr(args, self.option[2:].replace("-", "_"))
        values = [x.strip() for x in text.split(",") if x.strip()]
        if unknown := [v for v in values if v not in self.variants]:
            known = ", ".join(self.variants)
            raise SystemExit(f"{self.option}: unknown {', '.join(unknown)} (known: {known})")
        return values

    def env(self, value: str, service: Service | None) -> dict[str, str]:
        variables = self.variants[value]
        if service is None and any("{url}" in v for v in variables.values()):
            raise RuntimeError(f"a {value} run needs its service started first")
        return {k: v.replace("{url}", service.url if service else "") for k, v in variables.items()}

    @contextlib.asynccontextmanager
    async def started(self, values: list[str]) -> AsyncIterator[dict[str, Service]]:
        """The services of ``values``, started for the comparison's runs; their after-run lines
        printed when the runs are over."""
        async with contextlib.AsyncExitStack() as stack:
            wanted = [v for v in values if v in self.services]
            services = {v: await stack.enter_async_context(self.services[v]()) for v in wanted}
            yield services
            for service in services.values():
                if service.after_runs is not None:
                    say(service.after_runs())


@contextlib.asynccontextmanager
async def otlp_sink() -> AsyncIterator[Service]:
    """An OTLP/HTTP trace receiver that accepts every export and discards it (runs with
    ``tracing=otlp`` export to it: the bridge pays for encoding and sending, not a collector)."""
    got = [0, 0]  # exports, bytes

    async def accept(request: web.Request) -> web.Response:
        got[0] += 1
        got[1] += len(await request.read())
        # An empty ExportTraceServiceResponse: everything accepted.
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield Service(  # its after-runs line: the exported spans really arrived
            f"http://{host}:{port}",
            lambda: f"  OTLP sink received {got[0]:,} exports, {got[1]:,} bytes",
        )
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def bench_registry() -> AsyncIterator[Service]:
    """``SCHEMA_REGISTRY_URL``, or a local Apicurio Registry for the runs (its start time
    printed: a figure of issue 15)."""
    external = external_registry()
    if external:
        say(f"schema registry: {external} (SCHEMA_REGISTRY_URL)")
        yield Service(external)
        return
    registry = LocalRegistry()
    await asyncio.to_thread(registry.start)
    say(
        f"schema registry: Apicurio Registry {APICURIO_VERSION} at {registry.url}, started in "
        f"{registry.cold_start_s:.1f}s"
    )
    try:
        yield Service(registry.url)
    finally:
        await asyncio.to_thread(registry.cleanup)


COMPARISONS = (
    Comparison(
        "loop",
        "--event-loops",
        "BRIDGE_EVENT_LOOP values compared in key mode at --loop-latency, run alternately "
        "--repeat times each (e.g. asyncio,uvloop; '' skips)",
        "event-loop",
        {loop: {"BRIDGE_EVENT_LOOP": loop} for loop in ("asyncio", "uvloop")},
    ),
    Comparison(
        "tracing",
        "--tracing",
        "tracing variants compared in key mode at --tracing-latency, run alternately "
        "--repeat times each: off, on (OpenTelemetry spans, no exporter), otlp (exported over "
        "OTLP/HTTP to a local sink); e.g. off,on,otlp ('' skips)",
        "tracing",
        {
            # off overrides the bench's own OTEL_* so that it really is off
            "off": {"BRIDGE_OTEL__ENABLED": "false"},
            "on": {"BRIDGE_OTEL__ENABLED": "true", "OTEL_TRACES_EXPORTER": "none"},
            "otlp": {
                "BRIDGE_OTEL__ENABLED": "true",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{url}/v1/traces",
            },
        },
        label="tracing={}",
        services={"otlp": otlp_sink},
    ),
    Comparison(
        "encoding",
        "--encodings",
        "BRIDGE_AVRO__ENCODING values compared in key mode at --encoding-latency, run "
        "alternately --repeat times each (e.g. single-object,confluent; confluent starts a local "
        "Apicurio Registry, or uses SCHEMA_REGISTRY_URL; '' skips)",
        "encoding",
        {
            "single-object": {},
            "confluent": {
                "BRIDGE_SCHEMA_REGISTRY__URL": "{url}",
                "BRIDGE_AVRO__ENCODING": "confluent",
            },
        },
        services={"confluent": bench_registry},
    ),
)


def variant_env(spec: RunSpec, services: Mapping[str, Service]) -> dict[str, str]:
    """A run's variables of every comparison: in its own (``spec.kind``) its variant's, with
    the comparison's ``services``; in the others (or outside the comparisons) the first's."""
    env: dict[str, str] = {}
    for c in COMPARISONS:
        own = spec.variant if c.dimension == spec.kind else None
        env |= c.env(own or next(iter(c.variants)), services.get(own) if own else None)
    return env


class Bench:
    """Shared clients: a producer of commands, a probe of end offsets, the simulator, the codec."""

    def __init__(
        self,
        bootstrap: str,
        sim: SimulatorProcess,
        workdir: Path,
        *,
        seed: int,
        stall_s: float,
        wrapper: Sequence[str],
        all_bytes: bool = False,
        extra_env: Mapping[str, str] | None = None,
        keep_logs: bool = False,
    ) -> None:
        self.keep_logs = keep_logs  # --keep-logs: passed runs' logs too
        self.bootstrap = bootstrap
        self.extra_env = dict(extra_env or {})  # --env: every bridge and reference run
        self.sim = sim
        self.workdir = workdir
        self.stall_s = stall_s
        self.wrapper = list(wrapper)
        self.all_bytes = all_bytes  # compare every order's snapshot bytes (else a sample)
        self.codec = AvroCodec.load(DEFAULT_SCHEMAS_DIR)
        self.rng = random.Random(seed)
        self.services: dict[str, Service] = {}  # of the comparison running (its {url})
        self.producer = command_producer(bootstrap, linger_ms=5, max_batch_size=256 * 1024)
        self.probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def start(self) -> None:
        await self.producer.start()
        await self.probe.start()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.probe.stop()

    async def produce(
        self, topic: str, commands: Sequence[Planned], rate: float | None = None
    ) -> dict[str, Sent]:
        """Send the commands (at ``rate`` per second if given); CreateTime = time of send."""
        pending: list[tuple[Planned, asyncio.Future[Any], int]] = []
        start = time.monotonic()
        for i, cmd in enumerate(commands):
            if rate is not None:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            ts = int(time.time() * 1000)
            fut = await self.producer.send(
                topic, cmd.value, key=cmd.order_id.encode(), headers=JSON_HEADERS, timestamp_ms=ts
            )
            pending.append((cmd, fut, ts))
        sent: dict[str, Sent] = {}
        for cmd, fut, ts in pending:
            md = await fut
            sent[cmd.command_id] = Sent(md.partition, md.offset, ts)
        return sent

    async def count(self, topic: str) -> int:
        ends = await self.probe.end_offsets(all_partitions(topic, PARTITIONS))
        return int(sum(ends.values()))

    def bridge_env(self, spec: RunSpec, topics: TopicSettings) -> dict[str, str]:
        return (
            deployment_env(
                self.bootstrap,
                f"bench-{uuid.uuid4().hex[:10]}",
                topics,
                self.sim.url,
                API_KEY,
                topics__partitions=PARTITIONS,
                norce__http_backend=spec.http_backend,
                norce__max_connections=max(256, spec.max_in_flight),
                processing__ordering=spec.mode,
                processing__max_in_flight=spec.max_in_flight,
                processing__write_guard=spec.write_guard,
                log_level="INFO",  # a handful of lines per run: port, assignment, stop
            )
            | variant_env(spec, self.services)
            | self.extra_env
        )

    async def reading_codec(self, env: Mapping[str, str], topics: TopicSettings) -> AvroCodec:
        """The codec the outputs of a bridge with ``env`` are read and compared with: if it
        writes Confluent framing, framed with the ids it registered (registering the same
        schemas again is idempotent: the registry answers the same ids)."""
        url = env.get("BRIDGE_SCHEMA_REGISTRY__URL")
        if env.get("BRIDGE_AVRO__ENCODING") != "confluent" or not url:
            return self.codec
        settings = BridgeSettings(topics=topics, schema_registry=SchemaRegistrySettings(url=url))
        async with SchemaRegistryClient(url) as client:
            return await confluent_codec(self.codec, client, settings)

    async def _outputs(self, topics: TopicSettings, codec: AvroCodec) -> RunOutputs:
        return RunOutputs(
            calls=await self.sim.calls(),
            results=await read_topic(self.bootstrap, topics.results, codec, PARTITIONS),
            snapshots=await read_topic(self.bootstrap, topics.snapshots, codec, PARTITIONS),
            dead_letters=await self.count(topics.dlq),
            states=await read_topic(
                self.bootstrap, topics.order_state, codec, PARTITIONS, raw=True
            ),
        )

    async def run(self, spec: RunSpec) -> RunResult:
        result = RunResult(spec)
        started = time.monotonic()
        say(f"--- {spec.label}: {spec.commands:,} commands over {spec.orders:,} orders")
        await self.sim.set_faults(latency_ms=spec.latency_ms, jitter_ms=0)
        order_ids = await self.sim.seed(spec.orders)
        tag = uuid.uuid4().hex[:6]
        workload = build_workload(order_ids, spec.commands, self.rng, tag)
        topics = fresh_topics("bench", PARTITIONS)
        await create_topics(
            self.bootstrap, topics, {"snapshots": APPEND_TIME, "results": APPEND_TIME}
        )
        sent: dict[str, Sent] = {}
        if spec.rate is None:
            t = time.monotonic()
            sent = await self.produce(topics.commands, workload.commands)
            say(f"  pre-produced {len(sent):,} commands in {time.monotonic() - t:.1f}s")
        await self.sim.admin("POST", "/reset-log")
        log_path = self.workdir / f"{spec.pipeline}-{tag}.log"
        spawned = time.time()
        process = ReferenceProcess if spec.pipeline == "reference" else BridgeProcess
        env = self.bridge_env(spec, topics)
        bridge = process(env, log_path, argv=self.wrapper)
        result.pid = bridge.pid
        samples: list[tuple[float, float]] = []
        producer_task: asyncio.Task[dict[str, Sent]] | None = None
        try:
            if spec.rate is not None:
                await bridge.wait_for_log("partitions assigned", 60)
                producer_task = asyncio.create_task(
                    self.produce(topics.commands, workload.commands, spec.rate)
                )
            port = await bridge.metrics_port() if spec.scrape else None
            result.peak_buffered = await self._monitor(spec, topics, bridge, samples, port)
            if producer_task is not None:
                sent = await producer_task
            result.peak_rss_mb = proc_hwm_mb(bridge.pid) or math.nan
        except Exception as exc:
            result.failures.append(f"run aborted: {exc}")
        finally:
            if producer_task is not None and not producer_task.done():
                producer_task.cancel()
                with contextlib.suppress(BaseException):
                    await producer_task
            code = await bridge.stop()
        if code != 0:
            result.failures.append(f"bridge exit code {code}:\n{bridge.log_tail()}")
        self._read_log(result, bridge)
        if not result.failures and spec.stop_after_s is None:
            await self._check_committed(result, env["BRIDGE_KAFKA__GROUP_ID"], topics.commands)
        if not result.failures:
            t = time.monotonic()
            codec = await self.reading_codec(env, topics)
            outputs = await self._outputs(topics, codec)
            await measure_and_verify(
                result,
                self.sim,
                workload,
                sent,
                outputs,
                samples,
                spawned,
                codec,
                all_bytes=self.all_bytes,
            )
            result.verify_s = time.monotonic() - t
        if not result.failures:  # later runs do not pay for them (a failed run keeps its own)
            await delete_topics(self.bootstrap, topics)
        result.passed = not result.failures
        result.wall_s = time.monotonic() - started
        if result.passed and not self.keep_logs:
            with contextlib.suppress(OSError):
                log_path.unlink()
        return result

    async def _check_committed(self, result: RunResult, group: str, topic: str) -> None:
        """After a complete run and SIGTERM, the group has committed every command record."""
        committed = await committed_offsets(self.bootstrap, group, topic)
        ends = await end_offsets(self.bootstrap, topic, PARTITIONS)
        behind = {
            p: (committed.get(p, 0), end) for p, end in ends.items() if committed.get(p, 0) != end
        }
        if behind:
            result.failures.append(f"committed offsets behind the end (committed, end): {behind}")

    @staticmethod
    def _read_log(result: RunResult, bridge: BridgeProcess) -> None:
        """The counters and full-collection pauses of its "bridge stopped" (or "reference
        stopped") line; warnings; its errors fail the run."""
        records = bridge.log_records()
        stopped = [r for r in records if r.get("msg") in STOPPED_LINES]
        if stopped:
            result.bridge_counters = {
                k: v for k, v in stopped[-1].items() if isinstance(v, int) and k != "uptime_s"
            }
            collections, longest = (
                stopped[-1].get("gc_collections"),
                stopped[-1].get("gc_pause_max_ms"),
            )
            if isinstance(collections, list) and isinstance(longest, list) and len(longest) == 3:
                result.gen2_collections = int(collections[2])
                result.gen2_max_ms = float(longest[2])
                result.young_max_ms = float(max(longest[0], longest[1]))
        result.bridge_warnings = sum(1 for r in records if r.get("level") in ("WARNING", "ERROR"))
        errors = [
            r
            for r in records
            if r.get("level") in ("ERROR", "CRITICAL")
            and str(r.get("logger")).startswith(OWN_LOGGERS)
        ]
        if errors:
            result.failures.append(f"{len(errors)} ERROR log lines, first: {errors[0].get('msg')}")

    async def _monitor(
        self,
        spec: RunSpec,
        topics: TopicSettings,
        bridge: BridgeProcess,
        samples: list[tuple[float, float]],
        metrics_port: int | None,
    ) -> int | None:
        """Sample the bridge's CPU until every command has a result; print progress."""
        t_start = time.monotonic()
        last_check = last_print = last_change = t_start
        last_count = printed_count = 0
        first_result: float | None = None
        peak_buffered: int | None = None
        while True:
            cpu = proc_cpu_s(bridge.pid)
            if cpu is not None:
                samples.append((time.time(), cpu))
            if bridge.exited:
                raise RuntimeError(f"bridge exited during the run:\n{bridge.log_tail()}")
            now = time.monotonic()
            if metrics_port is not None:
                buffered = await scrape_metric(metrics_port, "norce_bridge_buffered_records")
                if buffered is not None:
                    peak_buffered = max(peak_buffered or 0, int(buffered))
            if now - last_check >= CHECK_EVERY_S:
                last_check = now
                count = await self.count(topics.results)
                if count != last_count:
                    last_change = now
                    last_count = count
                if count and first_result is None:
                    first_result = now
                if count >= spec.commands:
                    say(f"  {count:,}/{spec.commands:,} results after {now - t_start:.1f}s")
                    return peak_buffered
                stop = spec.stop_after_s
                if stop is not None and first_result is not None and now - first_result > stop:
                    say(
                        f"  stopping the bridge (SIGTERM) at {count:,}/{spec.commands:,} "
                        f"results, peak buffered {peak_buffered or 0:,}"
                    )
                    return peak_buffered
                if now - last_change > self.stall_s:
                    raise RuntimeError(
                        f"no progress for {self.stall_s:.0f}s at "
                        f"{count:,}/{spec.commands:,} results"
                    )
                if now - last_print >= PROGRESS_EVERY_S:
                    rate = (count - printed_count) / (now - last_print)
                    last_print, printed_count = now, count
                    say(
                        f"  [{spec.label}] {count:,}/{spec.commands:,} results, "
                        f"{rate:,.0f}/s, t={now - t_start:.1f}s"
                    )
            await asyncio.sleep(SAMPLE_EVERY_S)
