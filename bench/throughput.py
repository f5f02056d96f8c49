"""Throughput benchmark of the bridge: key-ordered vs partition-ordered processing (issue 4).

One command (see ``bench/README.md``)::

    python bench/throughput.py            # full run, < 5 minutes on 2 cores
    python bench/throughput.py --quick    # CI smoke test: correctness only

It starts a local Kafka broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``) and the Norce API simulator
in its own process, then for every API latency L and ordering mode it pre-produces N commands to a
fresh 12-partition topic, starts a fresh ``python -m bridge run`` process (fresh group) and waits
until every command has a result. Each order gets a valid state sequence
(checkout -> processing [-> checkout -> processing]* -> accepted -> completed, and every tenth
order a repeated ``completed`` that must come back ``already_applied``).

Definitions (also printed with the table):

* commands/s = N / (t_last - t_first), where t_first is the first Norce API request of the run as
  logged by the simulator (the bridge issues it right after consuming the first command) and
  t_last is the broker's log-append time of the last command result (the results topic uses
  ``message.timestamp.type=LogAppendTime``, so it is when the last output was acknowledged).
* bridge CPU = utime+stime of the bridge process (``/proc/<pid>/stat``, sampled every 50 ms)
  interpolated at t_first and t_last, so interpreter start-up is excluded.
* latency = snapshot log-append time - command CreateTime (set by our producer at send), per
  command that produced a snapshot. In the back-log runs it is mostly queueing; the paced runs
  (commands produced at 50 % of the measured capacity while the bridge runs) give the real figure.
* peak RSS = ``VmHWM`` of the bridge process at the end of the run.

Every run is verified while it is measured: exactly one result per command with the expected
outcome and source offset (the memory run, stopped with SIGTERM mid-way: at most one, and per
order the commands with a result are a prefix of its sequence), no dead letters, per-order
simulator history equal to the commands' target sequence, snapshots per order in command order
and one per applied command, and the last snapshot of every order equal to the order the
simulator serves. Any failure prints ``FAIL`` and the exit code is 1.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import math
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from bridge_devkit.localkafka import LocalKafka, external_bootstrap

from bridge.codec import AvroCodec
from bridge.commands import SetOrderState, command_to_json
from bridge.config import DEFAULT_SCHEMAS_DIR, NorceSettings
from bridge.events import order_from_snapshot
from bridge.order_model import OrderStatus

API_KEY = "bench-api-key-0123456789"
MERCHANT = "norce"
CHANNEL = "1"
PARTITIONS = 12
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY_S = 0.05
CHECK_EVERY_S = 0.5
PROGRESS_EVERY_S = 2.0
COMMANDS_PER_ORDER = 10
DEFAULT_COMMANDS = {0.0: 10_000, 20.0: 10_000, 100.0: 6_000}
FALLBACK_COMMANDS = 10_000
MEMORY_TARGET_BUFFERED = 10_000
JSON_HEADERS = [("content-type", b"application/json")]


def say(text: str = "") -> None:
    print(text, flush=True)


# -- workload ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    """One command to produce, with what the bridge must answer."""

    command_id: str
    order_id: str
    index: int  # position in its order's sequence
    state: str
    expect: str  # applied | already_applied
    value: bytes


@dataclass(frozen=True, slots=True)
class Sent:
    partition: int
    offset: int
    timestamp_ms: int


@dataclass
class Workload:
    commands: list[Planned]  # in production order
    per_order: dict[str, list[Planned]]  # each order's commands in sequence order
    by_id: dict[str, Planned]

    def history(self, order_id: str, done: int) -> list[str]:
        """The simulator history once the first ``done`` commands of the order are applied."""
        history = ["checkout"]
        for cmd in self.per_order[order_id][:done]:
            if cmd.expect == "applied":
                history.append(cmd.state)
        return history


def build_workload(order_ids: Sequence[str], n: int, rng: random.Random, tag: str) -> Workload:
    """N commands over the orders: valid sequences, interleaved round-robin across orders."""
    m = len(order_ids)
    extra = n - 3 * m
    if m < 1 or extra < 0:
        raise ValueError(f"{n} commands cannot cover {m} orders (at least 3 commands per order)")
    dups = min(extra, m, max(1, m // 10)) if extra else 0
    if (extra - dups) % 2:
        dups += 1 if dups < min(m, extra) else -1
    loops = (extra - dups) // 2
    shuffled = list(order_ids)
    rng.shuffle(shuffled)
    with_dup = set(rng.sample(shuffled, dups))
    sequences: dict[str, list[str]] = {}
    for i, order_id in enumerate(shuffled):
        k = loops // m + (1 if i < loops % m else 0)
        seq = ["processing", *(["checkout", "processing"] * k), "accepted", "completed"]
        if order_id in with_dup:
            seq.append("completed")
        sequences[order_id] = seq
    now = datetime.now(UTC)
    commands: list[Planned] = []
    per_order: dict[str, list[Planned]] = {}
    for order_id, seq in sequences.items():
        history = ["checkout"]
        planned: list[Planned] = []
        for index, state in enumerate(seq):
            expect = "already_applied" if state == history[-1] else "applied"
            if expect == "applied":
                history.append(state)
            command_id = f"{tag}-{order_id}-{index:03d}"
            cmd = SetOrderState(
                command_id=command_id,
                order_id=order_id,
                merchant=MERCHANT,
                channel=CHANNEL,
                issued_at=now,
                state=OrderStatus(state),
            )
            planned.append(
                Planned(command_id, order_id, index, state, expect, command_to_json(cmd))
            )
        per_order[order_id] = planned
    longest = max(len(s) for s in sequences.values())
    for step in range(longest):
        for order_id in shuffled:
            if step < len(per_order[order_id]):
                commands.append(per_order[order_id][step])
    assert len(commands) == n
    return Workload(commands, per_order, {c.command_id: c for c in commands})


# -- runs and their results -------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    label: str
    kind: str  # throughput | paced | memory | http
    mode: str  # key | partition
    latency_ms: float
    commands: int
    orders: int
    max_in_flight: int
    http_backend: str
    rate: float | None = None  # commands/s produced while the bridge runs (paced runs)
    scrape: bool = False  # poll the bridge's /metrics for the buffered-records gauge
    stop_after_s: float | None = None  # SIGTERM the bridge this long after the first result
    write_guard: str = "lease"  # BRIDGE_PROCESSING__WRITE_GUARD

    @property
    def width(self) -> int:
        return self.max_in_flight if self.mode == "key" else PARTITIONS

    @property
    def bound(self) -> float | None:
        """Commands/s when every slot is always busy with two API round trips of L."""
        if self.latency_ms <= 0:
            return None
        return self.width / (2 * self.latency_ms / 1000)


@dataclass
class RunResult:
    spec: RunSpec
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    processed: int = 0  # commands with a result (N unless the run was stopped early)
    window_s: float = math.nan
    throughput: float = math.nan
    cpu_s: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    latency_samples: int = 0
    peak_rss_mb: float = math.nan
    peak_buffered: int | None = None
    api_requests: int = 0
    wall_s: float = math.nan
    startup_s: float = math.nan  # bridge spawned -> first API request
    verify_s: float = math.nan
    bridge_warnings: int = 0
    bridge_counters: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_ms_per_command(self) -> float:
        return self.cpu_s / self.processed * 1000 if self.processed else math.nan

    @property
    def pct_of_bound(self) -> float:
        bound = self.spec.bound
        return math.nan if bound is None else 100 * self.throughput / bound

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"]["bound"] = self.spec.bound
        data["cpu_s_per_1000"] = self.cpu_ms_per_command
        data["pct_of_bound"] = self.pct_of_bound
        data["api_requests_per_command"] = self.api_requests / max(1, self.processed)
        clean: dict[str, Any] = _nan_to_none(data)
        return clean


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- /proc ------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process in seconds (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a process in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def interpolate(samples: Sequence[tuple[float, float]], at: float) -> float:
    """Linear interpolation of (time, value) samples sorted by time."""
    times = [t for t, _ in samples]
    i = bisect.bisect_left(times, at)
    if i <= 0:
        return samples[0][1]
    if i >= len(samples):
        return samples[-1][1]
    (t1, v1), (t2, v2) = samples[i - 1], samples[i]
    return v1 if t2 <= t1 else v1 + (v2 - v1) * (at - t1) / (t2 - t1)


# -- processes --------------------------------------------------------------------------------


class SimulatorProcess:
    """``python -m norce_simulator`` in its own process (so it does not share the bridge's CPU)."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> None:
        stderr = (self._workdir / "simulator.log").open("wb")
        argv = [sys.executable, "-m", "norce_simulator", "--host", "127.0.0.1", "--port", "0"]
        argv += ["--orders", "0", "--seed", "7", "--api-key", API_KEY, "--log-level", "WARNING"]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, stdin=asyncio.subprocess.DEVNULL
        )
        stderr.close()
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the simulator exited before announcing its URL (simulator.log)")
        self.url = json.loads(line)["url"]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class BridgeProcess:
    """One ``python -m bridge run`` with its configuration in ``BRIDGE_*`` variables."""

    def __init__(self, env: dict[str, str], log_path: Path, wrapper: Sequence[str]) -> None:
        self._env = env
        self.log_path = log_path
        self._wrapper = list(wrapper)
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def exited(self) -> bool:
        return self.proc is None or self.proc.returncode is not None

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self._wrapper,
            "-m",
            "bridge",
            "run",
            env=self._env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        log.close()

    def log_records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                line = line.strip()
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        records.append(rec)
        return records

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    async def wait_for_log(self, want: str, timeout_s: float) -> dict[str, Any]:
        """Poll the bridge's log (with a deadline) for the first record whose msg starts so."""
        deadline = time.monotonic() + timeout_s
        while True:
            for rec in self.log_records():
                if str(rec.get("msg", "")).startswith(want):
                    return rec
            if self.exited:
                raise RuntimeError(f"bridge exited before logging {want!r}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge did not log {want!r} within {timeout_s}s")
            await asyncio.sleep(0.05)

    async def stop(self, timeout_s: float = 60) -> int:
        proc = self.proc
        assert proc is not None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return -9
        assert proc.returncode is not None
        return proc.returncode


# -- the bench --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    commands: str
    snapshots: str
    events: str
    results: str
    dlq: str


@dataclass(frozen=True, slots=True)
class OutRecord:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class Bench:
    """Shared clients: Kafka admin/producer, the simulator's HTTP API, the Avro codec."""

    def __init__(self, bootstrap: str, sim_url: str, workdir: Path, args: argparse.Namespace):
        self.bootstrap = bootstrap
        self.sim_url = sim_url
        self.workdir = workdir
        self.args = args
        self.codec = AvroCodec.load(DEFAULT_SCHEMAS_DIR)
        self.rng = random.Random(args.seed)
        self.http = httpx.AsyncClient(
            base_url=sim_url, timeout=60, limits=httpx.Limits(max_connections=32)
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        self.probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.wrapper = shlex.split(args.bridge_wrapper) if args.bridge_wrapper else [sys.executable]

    async def start(self) -> None:
        await self.producer.start()
        await self.probe.start()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.producer.stop()
        with contextlib.suppress(Exception):
            await self.probe.stop()
        await self.http.aclose()

    # -- simulator --

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, f"/__admin{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def seed(self, count: int) -> list[str]:
        ids: list[str] = (
            await self.admin(
                "POST", "/seed", {"count": count, "merchant": MERCHANT, "channel": CHANNEL}
            )
        )["ids"]
        return ids

    async def set_latency(self, latency_ms: float) -> None:
        await self.admin("PUT", "/faults", {"latency_ms": latency_ms, "jitter_ms": 0})

    # -- kafka --

    async def create_topics(self) -> Topics:
        prefix = f"bench-{uuid.uuid4().hex[:10]}"
        topics = Topics(
            commands=f"{prefix}.commands",
            snapshots=f"{prefix}.snapshots",
            events=f"{prefix}.events",
            results=f"{prefix}.results",
            dlq=f"{prefix}.dlq",
        )
        append_time = {"message.timestamp.type": "LogAppendTime"}
        configs = {
            topics.commands: {},
            topics.snapshots: {"cleanup.policy": "compact", **append_time},
            topics.events: {},
            topics.results: append_time,
            topics.dlq: {},
        }
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(name, PARTITIONS, 1, topic_configs=cfg) for name, cfg in configs.items()]
            )
        finally:
            await admin.close()
        await self._wait_for_leaders(topics)
        return topics

    async def _wait_for_leaders(self, topics: Topics) -> None:
        """Poll (with a deadline) until every partition of the new topics has a leader."""
        names = [topics.commands, topics.snapshots, topics.events, topics.results, topics.dlq]
        tps = [TopicPartition(n, p) for n in names for p in range(PARTITIONS)]
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.probe.end_offsets(tps)
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

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
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await self.probe.end_offsets(tps)
        return int(sum(ends.values()))

    async def read_topic(self, topic: str) -> list[OutRecord]:
        """Everything in ``topic`` now (the bridge has stopped), in partition-offset order."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # also what assign() resets to: no race with the seek
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[OutRecord] = []
            pending = {tp for tp in tps if ends[tp] > 0}
            deadline = time.monotonic() + 120
            while pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not read {topic} to its end")
                batch = await consumer.getmany(*pending, timeout_ms=500, max_records=20_000)
                for tp, msgs in batch.items():
                    out.extend(
                        OutRecord(tp.partition, m.offset, m.timestamp, m.key, m.value) for m in msgs
                    )
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
            out.sort(key=lambda r: (r.partition, r.offset))
            return out
        finally:
            await consumer.stop()

    # -- bridge --

    def bridge_env(self, spec: RunSpec, topics: Topics) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        env.update(
            {
                "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "BRIDGE_KAFKA__GROUP_ID": f"bench-{uuid.uuid4().hex[:10]}",
                "BRIDGE_TOPICS__COMMANDS": topics.commands,
                "BRIDGE_TOPICS__SNAPSHOTS": topics.snapshots,
                "BRIDGE_TOPICS__EVENTS": topics.events,
                "BRIDGE_TOPICS__RESULTS": topics.results,
                "BRIDGE_TOPICS__DLQ": topics.dlq,
                "BRIDGE_TOPICS__PARTITIONS": str(PARTITIONS),
                "BRIDGE_TOPICS__CREATE_MISSING": "false",
                "BRIDGE_NORCE__BASE_URL": self.sim_url,
                "BRIDGE_NORCE__API_KEY": API_KEY,
                "BRIDGE_NORCE__HTTP_BACKEND": spec.http_backend,
                "BRIDGE_NORCE__MAX_CONNECTIONS": str(max(256, spec.max_in_flight)),
                "BRIDGE_PROCESSING__ORDERING": spec.mode,
                "BRIDGE_PROCESSING__MAX_IN_FLIGHT": str(spec.max_in_flight),
                "BRIDGE_PROCESSING__WRITE_GUARD": spec.write_guard,
                "BRIDGE_HTTP__HOST": "127.0.0.1",
                "BRIDGE_HTTP__PORT": "0",
                "BRIDGE_LOG_LEVEL": "INFO",  # a handful of lines per run: port, assignment, stop
            }
        )
        return env

    async def run(self, spec: RunSpec) -> RunResult:
        result = RunResult(spec)
        started = time.monotonic()
        say(f"--- {spec.label}: {spec.commands:,} commands over {spec.orders:,} orders")
        await self.set_latency(spec.latency_ms)
        order_ids = await self.seed(spec.orders)
        tag = uuid.uuid4().hex[:6]
        workload = build_workload(order_ids, spec.commands, self.rng, tag)
        topics = await self.create_topics()
        sent: dict[str, Sent] = {}
        if spec.rate is None:
            t = time.monotonic()
            sent = await self.produce(topics.commands, workload.commands)
            say(f"  pre-produced {len(sent):,} commands in {time.monotonic() - t:.1f}s")
        await self.admin("POST", "/reset-log")
        log_path = self.workdir / f"bridge-{tag}.log"
        bridge = BridgeProcess(self.bridge_env(spec, topics), log_path, self.wrapper)
        spawned = time.time()
        await bridge.start()
        samples: list[tuple[float, float]] = []
        producer_task: asyncio.Task[dict[str, Sent]] | None = None
        try:
            if spec.rate is not None:
                await bridge.wait_for_log("partitions assigned", 60)
                producer_task = asyncio.create_task(
                    self.produce(topics.commands, workload.commands, spec.rate)
                )
            port: int | None = None
            if spec.scrape:
                rec = await bridge.wait_for_log("health server listening", 60)
                port = int(str(rec["msg"]).rsplit(" ", 1)[1])
            peak_buffered = await self._monitor(spec, topics, bridge, samples, port)
            result.peak_buffered = peak_buffered
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
        records = bridge.log_records()
        stopped = [r for r in records if r.get("msg") == "bridge stopped"]
        if stopped:
            result.bridge_counters = {
                k: v for k, v in stopped[-1].items() if isinstance(v, int) and k != "uptime_s"
            }
        result.bridge_warnings = sum(1 for r in records if r.get("level") in ("WARNING", "ERROR"))
        errors = [
            r
            for r in records
            if r.get("level") in ("ERROR", "CRITICAL") and str(r.get("logger")).startswith("bridge")
        ]
        if errors:
            result.failures.append(f"{len(errors)} ERROR log lines, first: {errors[0].get('msg')}")
        if not result.failures:
            t = time.monotonic()
            await self._measure_and_verify(result, workload, sent, topics, samples, spawned)
            result.verify_s = time.monotonic() - t
        result.passed = not result.failures
        result.wall_s = time.monotonic() - started
        if result.passed:
            with contextlib.suppress(OSError):
                log_path.unlink()
        return result

    async def _monitor(
        self,
        spec: RunSpec,
        topics: Topics,
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
        metrics = (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}", timeout=5)
            if metrics_port
            else None
        )
        try:
            while True:
                cpu = proc_cpu_s(bridge.pid)
                if cpu is not None:
                    samples.append((time.time(), cpu))
                if bridge.exited:
                    raise RuntimeError(f"bridge exited during the run:\n{bridge.log_tail()}")
                now = time.monotonic()
                if metrics is not None:
                    buffered = await _scrape_buffered(metrics)
                    if buffered is not None:
                        peak_buffered = max(peak_buffered or 0, buffered)
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
                    if now - last_change > self.args.stall_s:
                        raise RuntimeError(
                            f"no progress for {self.args.stall_s:.0f}s at "
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
        finally:
            if metrics is not None:
                await metrics.aclose()

    async def _measure_and_verify(
        self,
        result: RunResult,
        workload: Workload,
        sent: dict[str, Sent],
        topics: Topics,
        samples: list[tuple[float, float]],
        spawned: float,
    ) -> None:
        spec = result.spec
        fail = result.failures.append
        calls = (await self.admin("GET", "/calls"))["calls"]
        result.api_requests = len(calls)
        bad_calls = Counter(str(c["status"]) for c in calls if (c["status"] or 0) >= 300)
        if bad_calls:
            fail(f"simulator answered non-2xx: {dict(bad_calls)}")
        if not calls:
            fail("the simulator saw no API request")
            return
        t_first = min(datetime.fromisoformat(c["ts"]).timestamp() for c in calls)
        result.startup_s = t_first - spawned

        results = await self.read_topic(topics.results)
        snapshots = await self.read_topic(topics.snapshots)
        dlq = await self.count(topics.dlq)
        if dlq:
            fail(f"{dlq} dead letters")
        if not results:
            fail(f"no results (topic holds {await self.count(topics.results)})")
            return
        t_last = max(r.timestamp_ms for r in results) / 1000
        result.window_s = t_last - t_first
        if samples:
            result.cpu_s = interpolate(samples, t_last) - interpolate(samples, t_first)

        # Results: at most one per command (exactly one unless the run was stopped early), the
        # expected outcome, the right source record.
        seen: Counter[str] = Counter()
        for rec in results:
            assert rec.value is not None
            _, r = self.codec.decode(rec.value)
            cid = r["commandId"]
            seen[cid] += 1
            planned = workload.by_id.get(cid)
            if planned is None:
                fail(f"result for an unknown command {cid}")
                continue
            if r["outcome"] != planned.expect:
                fail(f"{cid} ({planned.state}): outcome {r['outcome']} ({r.get('reason')})")
            src = sent[cid]
            if (r["source"]["partition"], r["source"]["offset"]) != (src.partition, src.offset):
                fail(f"{cid}: result names source {r['source']}, sent to {src}")
        result.processed = len(seen)
        result.throughput = result.processed / result.window_s
        missing = [c.command_id for c in workload.commands if seen[c.command_id] == 0]
        dupes = [cid for cid, n in seen.items() if n > 1]
        if missing and spec.stop_after_s is None:
            fail(f"{len(missing)} commands without a result, e.g. {missing[:3]}")
        if dupes:
            fail(f"{len(dupes)} commands with more than one result, e.g. {dupes[:3]}")
        # Per order, the commands with a result are a prefix of its sequence (nothing skipped or
        # reordered, also when the bridge was stopped mid-run).
        done: dict[str, int] = {}
        for order_id, seq in workload.per_order.items():
            k = 0
            while k < len(seq) and seen[seq[k].command_id]:
                k += 1
            done[order_id] = k
            later = [c.index for c in seq[k:] if seen[c.command_id]]
            if later:
                fail(f"{order_id}: commands {later[:3]} have results but #{k} has none")

        # Snapshots: one per applied command, in command order per order; latency per command.
        last: dict[str, dict[str, Any]] = {}
        last_index: dict[str, int] = {}
        snapped: set[str] = set()
        latencies: list[float] = []
        for rec in snapshots:
            order_id = rec.key.decode() if rec.key else ""
            if rec.value is None:
                fail(f"unexpected tombstone for {order_id}")
                continue
            _, snap = self.codec.decode(rec.value)
            cid = snap["commandId"]
            planned = workload.by_id.get(cid)
            if planned is None or planned.order_id != order_id or snap["id"] != order_id:
                fail(f"snapshot keyed {order_id} carries foreign command {cid}")
                continue
            if not seen[cid]:
                fail(f"{cid}: snapshot published but no result")
            if planned.index <= last_index.get(order_id, -1):
                fail(f"{order_id}: snapshot of command #{planned.index} after a later one")
            last_index[order_id] = planned.index
            last[order_id] = snap
            if cid in snapped:
                fail(f"{cid}: more than one snapshot")
            snapped.add(cid)
            latencies.append(rec.timestamp_ms - sent[cid].timestamp_ms)
        # Every applied command publishes a snapshot; an already_applied one may (a re-fetch).
        applied = {
            c.command_id for c in workload.commands if c.expect == "applied" and seen[c.command_id]
        }
        if applied - snapped:
            fail(f"{len(applied - snapped):,} applied commands without a snapshot")
        result.latency_samples = len(latencies)
        result.p50_ms = percentile(latencies, 50)
        result.p99_ms = percentile(latencies, 99)

        # Simulator: per-order history and the final order against the last snapshot.
        await self.set_latency(0)
        gate = asyncio.Semaphore(16)
        problems: list[str] = []

        async def check(order_id: str) -> None:
            async with gate:
                history = (await self.admin("GET", f"/history?order_id={order_id}"))["history"]
                response = await self.http.get(
                    f"/api/v0/checkout/orders/{order_id}",
                    headers={
                        "Authorization": f"Bearer {API_KEY}",
                        "x-merchant": MERCHANT,
                        "x-channel": CHANNEL,
                    },
                )
            want = workload.history(order_id, done[order_id])
            if history != want:
                problems.append(f"{order_id}: history {history} != {want}")
            if response.status_code != 200:
                problems.append(f"{order_id}: GET answered {response.status_code}")
            elif order_id not in last:
                if done[order_id]:
                    problems.append(f"{order_id}: no snapshot")
            elif order_from_snapshot(last[order_id]) != response.json():
                problems.append(f"{order_id}: last snapshot differs from the simulator's order")

        await asyncio.gather(*(check(o) for o in workload.per_order))
        if problems:
            fail(f"{len(problems)} orders wrong, e.g. " + "; ".join(problems[:3]))

        counters = result.bridge_counters
        want = Counter(c.expect for c in workload.commands if seen[c.command_id])
        for name in ("applied", "already_applied"):
            if counters and counters.get(name) != want[name]:
                fail(f"bridge counted {name}={counters.get(name)}, expected {want[name]}")
        for name in ("failed", "dead_lettered", "rejected", "expired"):
            if counters.get(name):
                fail(f"bridge counted {name}={counters[name]}")


async def _scrape_buffered(client: httpx.AsyncClient) -> int | None:
    with contextlib.suppress(httpx.HTTPError):
        text = (await client.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith("norce_bridge_buffered_records "):
                return int(float(line.split()[1]))
    return None


# -- plan -------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def bridge_default_backend() -> str:
    """The HTTP backend the bridge uses when nothing is configured."""
    return str(NorceSettings.model_fields["http_backend"].default)


class Planner:
    """Sizes runs: N from --commands, else from the throughput measured so far in this invocation.

    Throughput does not depend on N (the window excludes start-up), so each run is sized to last
    about --run-seconds (partition mode at L > 0: --partition-seconds) at the rate expected from
    the last key-mode run, capped at 10,000 commands (6,000 at L=100 ms).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rates: dict[str, float] = {}  # backend -> last measured key-mode commands/s

    def learn(self, result: RunResult) -> None:
        s = result.spec
        if result.passed and s.mode == "key" and s.rate is None:
            self.rates[s.http_backend] = result.throughput

    def commands(self, mode: str, latency_ms: float, backend: str) -> int:
        a = self.args
        bound = None if latency_ms <= 0 else PARTITIONS / (2 * latency_ms / 1000)
        if mode == "key" and bound is not None:
            bound *= a.max_in_flight / PARTITIONS
        slow_partition = mode == "partition" and bound is not None
        seconds = a.partition_seconds if slow_partition else a.run_seconds
        if a.commands:
            n = int(a.commands)
            if slow_partition:
                assert bound is not None
                n = min(n, max(36, round(bound * seconds)))
            return n
        rate = self.rates.get(backend) or (max(self.rates.values()) if self.rates else None)
        if rate is None:
            return int(a.first_commands)
        expected = rate if bound is None else min(rate, bound * (0.5 if slow_partition else 0.8))
        cap = DEFAULT_COMMANDS.get(latency_ms, FALLBACK_COMMANDS)
        return int(max(min(a.min_commands, cap), min(cap, round(expected * seconds))))

    def orders(self, n: int) -> int:
        a = self.args
        per_order = a.commands / a.orders if a.commands and a.orders else COMMANDS_PER_ORDER
        return max(1, min(n // 3, round(n / per_order)))

    def spec(
        self,
        kind: str,
        mode: str,
        latency_ms: float,
        n: int,
        *,
        backend: str | None = None,
        rate: float | None = None,
        scrape: bool = False,
        stop_after_s: float | None = None,
    ) -> RunSpec:
        backend = backend or self.args.http_backend
        label = f"{mode} L={latency_ms:g}ms"
        if kind == "paced":
            label = f"paced {label} @{rate:,.0f}/s"
        elif kind == "http":
            label = f"{backend} {label}"
        elif kind == "memory":
            label = f"memory {label}"
        if self.args.write_guard != "lease":
            label = f"{label} guard={self.args.write_guard}"
        return RunSpec(
            label=label,
            kind=kind,
            mode=mode,
            latency_ms=latency_ms,
            commands=n,
            orders=self.orders(n),
            max_in_flight=self.args.max_in_flight,
            http_backend=backend,
            rate=rate,
            scrape=scrape,
            stop_after_s=stop_after_s,
            write_guard=self.args.write_guard,
        )


# -- report -----------------------------------------------------------------------------------


def _f(value: float | None, fmt: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return format(value, fmt).rjust(width)


HEADER = (
    f"{'run':<30} {'N':>6} {'cmd/s':>7} {'bound':>7} {'%bound':>6} {'CPU s/1k':>8} "
    f"{'cmd/CPU-s':>9} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>6} {'req/cmd':>7}  verify"
)


def row(r: RunResult) -> str:
    s = r.spec
    n = r.processed or s.commands
    per_cpu = n / r.cpu_s if r.cpu_s and not math.isnan(r.cpu_s) else math.nan
    return (
        f"{s.label:<30} {n:>6} {_f(r.throughput, ',.0f', 7)} {_f(s.bound, ',.0f', 7)} "
        f"{_f(r.pct_of_bound, '.0f', 6)} {_f(r.cpu_ms_per_command, '.3f', 8)} "
        f"{_f(per_cpu, ',.0f', 9)} {_f(r.p50_ms, ',.0f', 7)} {_f(r.p99_ms, ',.0f', 7)} "
        f"{_f(r.peak_rss_mb, '.0f', 6)} {_f(r.api_requests / n, '.2f', 7)}  "
        f"{'PASS' if r.passed else 'FAIL'}"
    )


def targets(results: list[RunResult], args: argparse.Namespace) -> list[str]:
    """Issue 4's targets against this invocation's figures (informational, not pass/fail)."""

    def find(kind: str, mode: str, latency: float) -> RunResult | None:
        for r in results:
            s = r.spec
            if (s.kind, s.mode, s.latency_ms) == (kind, mode, latency) and r.passed:
                return r
        return None

    def verdict(ok: bool, text: str) -> str:
        return f"  {'met   ' if ok else 'MISSED'}  {text}"

    lines: list[str] = []
    key100, part100 = find("throughput", "key", 100), find("throughput", "partition", 100)
    if key100 is not None and key100.spec.bound is not None:
        pct = key100.pct_of_bound
        lines.append(
            verdict(
                pct >= 80,
                f"L=100: key {key100.throughput:,.0f} cmd/s = {pct:.0f}% of the bound "
                f"{key100.spec.bound:,.0f} (target >= 80%)",
            )
        )
        if part100 is not None:
            ratio = key100.throughput / part100.throughput
            lines.append(
                verdict(ratio >= 15, f"L=100: key/partition = {ratio:.1f}x (target >= 15x)")
            )
    key20, part20 = find("throughput", "key", 20), find("throughput", "partition", 20)
    if key20 is not None and part20 is not None:
        ratio = key20.throughput / part20.throughput
        lines.append(verdict(ratio >= 5, f"L=20: key/partition = {ratio:.1f}x (target >= 5x)"))
    key0 = find("throughput", "key", 0)
    if key0 is not None:
        us = key0.cpu_ms_per_command * 1000
        lines.append(
            verdict(
                us <= 500,
                f"L=0: {us:,.0f} us bridge CPU per command = {1e6 / us:,.0f} cmd/CPU-s "
                "(target <= 500 us, >= 2,000 cmd/CPU-s)",
            )
        )
    for r in results:
        if r.spec.scrape and r.passed:
            buffered = r.peak_buffered or 0
            lines.append(
                verdict(
                    r.peak_rss_mb <= 250 and buffered >= MEMORY_TARGET_BUFFERED,
                    f"peak RSS {r.peak_rss_mb:.0f} MB with up to {buffered:,} commands buffered "
                    f"({r.spec.label}) (target <= 250 MB with 10,000 buffered)",
                )
            )
    for r in results:
        if r.spec.kind == "paced" and r.passed:
            limit = 3 * 2 * r.spec.latency_ms + 50
            lines.append(
                verdict(
                    r.p99_ms <= limit,
                    f"L={r.spec.latency_ms:g}: p99 {r.p99_ms:,.0f} ms at {r.spec.rate:,.0f}/s "
                    f"(half capacity) (target <= {limit:,.0f} ms)",
                )
            )
    return lines


def report(results: list[RunResult], args: argparse.Namespace, env: dict[str, Any]) -> None:
    say()
    say("=" * len(HEADER))
    say(
        f"bridge throughput benchmark  (max_in_flight={args.max_in_flight}, {PARTITIONS} "
        f"partitions, {os.cpu_count()} CPUs, load avg {env['load_before']} -> {env['load_after']})"
    )
    say("=" * len(HEADER))
    say(HEADER)
    for kind in ("throughput", "paced", "memory", "http"):
        rows = [r for r in results if r.spec.kind == kind]
        if rows:
            say(f"-- {kind}")
            for r in rows:
                say(row(r))
    ratios = []
    for latency in sorted({r.spec.latency_ms for r in results}):
        k = [r for r in results if r.spec.kind == "throughput" and r.spec.mode == "key"]
        p = [r for r in results if r.spec.kind == "throughput" and r.spec.mode == "partition"]
        kk = [r for r in k if r.spec.latency_ms == latency and r.passed]
        pp = [r for r in p if r.spec.latency_ms == latency and r.passed]
        if kk and pp:
            ratios.append(f"L={latency:g}ms: {kk[0].throughput / pp[0].throughput:.1f}x")
    if ratios:
        say("key/partition throughput: " + ", ".join(ratios))
    http = [r for r in results if r.spec.kind == "http" and r.passed]
    if len(http) > 1:
        say(
            "HTTP transport (key mode): "
            + ", ".join(
                f"{r.spec.http_backend} {r.throughput:,.0f} cmd/s, "
                f"{r.cpu_ms_per_command:.3f} CPU s/1k"
                for r in http
            )
        )
    say()
    say("cmd/s: N / (first Norce API request of the run -> log-append time of the last result)")
    say("bound: max_in_flight (key) or partitions (partition) / (2 x L); req/cmd: API requests")
    say("CPU s/1k: bridge utime+stime per 1,000 commands over the same window (/proc, 50 ms)")
    say("p50/p99: command CreateTime -> snapshot log-append time (back-log runs: mostly queueing)")
    say("RSS: bridge VmHWM. Figures are noisy: 2 shared cores (broker, simulator, bench, others).")
    lines = targets(results, args)
    if lines and not args.quick:
        say()
        say("issue 4 targets:")
        for line in lines:
            say(line)
    say()
    for r in results:
        if r.passed:
            say(f"PASS {r.spec.label}")
        else:
            say(f"FAIL {r.spec.label}")
            for f in r.failures[:10]:
                say(f"     - {f[:400]}")


# -- main -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Throughput benchmark of the bridge (key vs partition ordering).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--latencies", default="0,20,100", help="API latencies L in ms")
    p.add_argument("--modes", default="key,partition", help="ordering modes")
    p.add_argument(
        "--commands",
        type=int,
        default=0,
        help="N per run (0: sized from the measured rate to last --run-seconds, <= 10,000)",
    )
    p.add_argument("--orders", type=int, default=0, help="M orders per run (0: N/10)")
    p.add_argument("--max-in-flight", type=int, default=256)
    p.add_argument("--run-seconds", type=float, default=12.0, help="target length of a run")
    p.add_argument(
        "--partition-seconds", type=float, default=20.0, help="target length of partition runs"
    )
    p.add_argument("--first-commands", type=int, default=3_000, help="N before a rate is known")
    p.add_argument("--min-commands", type=int, default=1_000)
    p.add_argument("--http-backend", default="", help="backend of the main runs (bridge default)")
    p.add_argument(
        "--write-guard",
        default="lease",
        choices=("lease", "lease+read"),
        help="BRIDGE_PROCESSING__WRITE_GUARD of every run (measures the read guard's cost)",
    )
    p.add_argument("--http-backends", default="httpx,aiohttp", help="backends compared in key mode")
    p.add_argument("--http-latency", type=float, default=20.0, help="L of the comparison")
    p.add_argument("--paced-latencies", default="20,100", help="L of the paced runs")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument(
        "--memory-commands",
        type=int,
        default=10_400,
        help="commands pre-produced for the memory run",
    )
    p.add_argument("--memory-latency", type=float, default=100.0)
    p.add_argument(
        "--memory-seconds", type=float, default=6.0, help="memory run: stop the bridge after"
    )
    p.add_argument("--quick", action="store_true", help="small CI run: correctness only")
    p.add_argument("--skip-paced", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--stall-s", type=float, default=60.0, help="fail a run without progress")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument(
        "--bridge-wrapper",
        default="",
        help="command that runs the bridge instead of this python, e.g. "
        "'env PYTHONPATH=/extra python' (the bridge must keep the wrapper's pid)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the logs of passed runs")
    return p


QUICK = {
    "latencies": "0,20",
    "commands": 600,
    "orders": 60,
    "paced_latencies": "20",
    "paced_seconds": 2.0,
    "partition_seconds": 5.0,
    "skip_memory": True,
    "skip_http": True,
    "stall_s": 30.0,
}


def apply_quick(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--quick: a small run for CI; options given explicitly on the command line still win."""
    for name, value in QUICK.items():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


async def run_all(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[RunResult]:
    sim = SimulatorProcess(workdir)
    try:
        await sim.start()
        bench = Bench(bootstrap, sim.url, workdir, args)
    except BaseException:
        await sim.stop()
        raise
    say(f"simulator at {sim.url} (own process), broker at {bootstrap}, logs in {workdir}")
    say(
        f"HTTP backend of the main runs: {args.http_backend} (the bridge's default: "
        f"{bridge_default_backend()})"
    )
    plan = Planner(args)
    results: list[RunResult] = []

    async def run(spec: RunSpec) -> RunResult:
        r = await bench.run(spec)
        results.append(r)
        plan.learn(r)
        buffered = f", peak buffered {r.peak_buffered:,}" if r.peak_buffered is not None else ""
        say(
            f"{'PASS' if r.passed else 'FAIL'} {spec.label}: {r.throughput:,.0f} cmd/s, "
            f"{r.cpu_ms_per_command:.3f} CPU s/1k, p50 {r.p50_ms:,.0f} ms, "
            f"p99 {r.p99_ms:,.0f} ms, RSS {r.peak_rss_mb:.0f} MB{buffered}, "
            f"{r.api_requests / max(1, r.processed):.2f} API req/cmd "
            f"(run {r.wall_s:.0f}s: bridge start {r.startup_s:.1f}s, verify {r.verify_s:.1f}s)"
        )
        for f in r.failures[:5]:
            say(f"     - {f[:400]}")
        return r

    try:
        await bench.start()
        latencies = _floats(args.latencies)
        modes = _words(args.modes)
        key_runs: dict[float, RunResult] = {}
        for latency in latencies:
            for mode in modes:
                n = plan.commands(mode, latency, args.http_backend)
                r = await run(plan.spec("throughput", mode, latency, n))
                if mode == "key":
                    key_runs[latency] = r
        if not args.skip_paced:
            for latency in _floats(args.paced_latencies):
                base = key_runs.get(latency)
                if base is None or not base.passed:
                    continue
                rate = base.throughput / 2
                n = max(30, round(rate * args.paced_seconds))
                await run(plan.spec("paced", "key", latency, n, rate=rate))
        if not args.skip_memory:
            # >= 10,000 commands wait in the bridge's buffers; it is stopped (SIGTERM) after
            # --memory-seconds and what it did by then is verified like a complete run.
            n = args.memory_commands
            await run(
                plan.spec(
                    "memory",
                    "key",
                    args.memory_latency,
                    n,
                    scrape=True,
                    stop_after_s=args.memory_seconds,
                )
            )
        backends = _words(args.http_backends)
        if not args.skip_http and len(backends) > 1:
            for backend in backends:
                n = plan.commands("key", args.http_latency, backend)
                await run(plan.spec("http", "key", args.http_latency, n, backend=backend))
    finally:
        await bench.aclose()
        await sim.stop()
    return results


async def amain(args: argparse.Namespace) -> int:
    if not args.http_backend:
        args.http_backend = bridge_default_backend()
    workdir = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    env: dict[str, Any] = {"load_before": _load()}
    started = time.monotonic()
    broker: LocalKafka | None = None
    bootstrap = external_bootstrap()
    if bootstrap is None:
        say("starting a local Kafka broker (set KAFKA_BOOTSTRAP_SERVERS to use another) ...")
        broker = LocalKafka()
        await asyncio.to_thread(broker.start)
        bootstrap = broker.bootstrap_servers
        say(f"broker ready in {broker.cold_start_s:.1f}s")
    try:
        results = await run_all(args, bootstrap, workdir)
    finally:
        if broker is not None:
            await asyncio.to_thread(broker.cleanup)
    env["load_after"] = _load()
    env["total_s"] = round(time.monotonic() - started, 1)
    report(results, args, env)
    ok = bool(results) and all(r.passed for r in results)
    say()
    if ok:
        say(f"ALL {len(results)} RUNS PASSED in {env['total_s']:.0f}s")
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"FAILED: see above; bridge logs kept in {workdir}")
    if args.json is not None:
        payload = {
            "environment": env | {"cpus": os.cpu_count(), "argv": sys.argv[1:]},
            "runs": [r.to_json() for r in results],
            "targets": targets(results, args),
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0 if ok else 1


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


async def amain_cancellable(args: argparse.Namespace) -> int:
    """``amain`` that SIGINT/SIGTERM cancel, so the bridge, simulator and broker are stopped."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await amain(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # aiokafka logs transient metadata retries (a topic just created) as warnings; errors remain.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    if args.quick:
        apply_quick(args, parser)
    try:
        return asyncio.run(amain_cancellable(args))
    except asyncio.CancelledError:
        say("interrupted: bridge, simulator and broker stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
