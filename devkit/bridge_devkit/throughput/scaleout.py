"""Scale-out runs: n bridge processes in one consumer group, API-bound (issue 13).

``python bench/throughput.py --instances 1,2,4`` (``--only scaleout`` skips the other runs). For
each n: fresh topics (12 partitions) and group, n ``bridge run`` processes with
``max_in_flight = --scale-in-flight`` at API latency ``--scale-latency`` (so each instance is
bound by the API at about max_in_flight / (2 L), not by CPU). The instances are started first
and the commands are produced only once the group is **stable** (every instance logged its
``partitions assigned``, none revoked since, the shares cover the 12 partitions exactly once),
so the measured window (first API request -> last result) contains no rebalance; a rebalance
during it fails the run. The back-log is N = n x (bound x 0.9 x --scale-seconds) commands, over
orders chosen so that every partition gets the same number of orders (the same work per
instance: key skew would otherwise measure the hash, not the bridge). Verified like every other
run: exactly one result per command, histories, snapshots (``measure_and_verify``).

Then the **join run**: one instance, N sized for 2 x --scale-seconds of it alone; when
``--join-at`` of the results are in, a second instance is started in the same group. The
outputs are read by the harness's ``OutputCollector`` while it runs; verified at least once
(``scaleverify``): nothing lost, histories exact, duplicates and replays counted and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiokafka.partitioner import murmur2

from bridge.config import TopicSettings
from bridge_devkit.harness import (
    OutputCollector,
    SimulatorProcess,
    create_topics,
    fresh_topics,
    poll_until,
    read_topic,
)
from bridge_devkit.throughput.bench import APPEND_TIME, Bench, say
from bridge_devkit.throughput.fleet import Fleet, summed
from bridge_devkit.throughput.planner import floats
from bridge_devkit.throughput.runs import PARTITIONS, RunResult, RunSpec
from bridge_devkit.throughput.scalereport import ScaleResult
from bridge_devkit.throughput.scaleverify import (
    check_counters_at_least_once,
    check_orders,
    check_results_at_least_once,
)
from bridge_devkit.throughput.verify import RunOutputs, first_call, measure_and_verify
from bridge_devkit.throughput.workload import Sent, Workload, build_workload

COMMANDS_PER_ORDER = 10
EXPECTED_OF_BOUND = 0.9  # the first command of each order needs an extra GET (2.1 req/cmd)
SETTLE_TIMEOUT_S = 90.0
CHECK_EVERY_S = 0.5
PROGRESS_EVERY_S = 2.0
SAMPLE_EVERY_S = 0.05


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scale-out (issue 13; bench/README.md, 'Scale-out')")
    g.add_argument(
        "--instances", default="", help="bridge instances per scale-out run, e.g. 1,2,4 (off)"
    )
    g.add_argument("--scale-latency", type=float, default=100.0, help="API latency L in ms")
    g.add_argument("--scale-in-flight", type=int, default=16, help="max_in_flight of each instance")
    g.add_argument(
        "--scale-seconds", type=float, default=17.0, help="target length of each scale-out run"
    )
    g.add_argument(
        "--scale-commands",
        type=int,
        default=0,
        help="commands per instance (0: bound x 0.9 x --scale-seconds)",
    )
    g.add_argument(
        "--scale-rounds",
        type=int,
        default=1,
        help="repeat the --instances sequence, interleaved (each run is compared with the "
        "1-instance run of its own round; the target uses the median)",
    )
    g.add_argument(
        "--join-at", type=float, default=0.5, help="join run: fraction of results at the join"
    )
    g.add_argument("--skip-join", action="store_true", help="no join run")
    g.add_argument("--only", default="", choices=("", "scaleout"), help="run only these runs")


def apply_only(args: argparse.Namespace) -> None:
    """``--only scaleout``: no throughput, paced, memory or HTTP runs (--instances 1,2,4)."""
    if args.only == "scaleout":
        args.latencies = ""
        args.skip_paced = args.skip_memory = args.skip_http = True
        args.instances = args.instances or "1,2,4"


def instance_counts(text: str) -> list[int]:
    return [int(x) for x in floats(text)]


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def partition_of(order_id: str, partitions: int = PARTITIONS) -> int:
    """The partition the producer's default partitioner picks for this key (murmur2)."""
    return int((murmur2(order_id.encode()) & 0x7FFFFFFF) % partitions)


async def balanced_orders(bench: Bench, per_partition: int) -> list[str]:
    """Fresh simulator orders, exactly ``per_partition`` of them on each partition."""
    buckets: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    while True:
        need = sum(max(0, per_partition - len(b)) for b in buckets.values())
        if not need:
            return [o for b in buckets.values() for o in b]
        for order_id in await bench.sim.seed(max(24, 2 * need)):
            bucket = buckets[partition_of(order_id)]
            if len(bucket) < per_partition:
                bucket.append(order_id)


class ScaleOut:
    """The scale-out runs of one invocation, on the benchmark's shared clients."""

    def __init__(self, bench: Bench, args: argparse.Namespace) -> None:
        self.bench = bench
        self.args = args
        self.latency_ms = float(args.scale_latency)
        self.in_flight = int(args.scale_in_flight)
        if self.latency_ms <= 0 and not args.scale_commands:
            raise SystemExit("--scale-latency 0 is CPU-bound: give --scale-commands")

    def per_instance(self) -> int:
        if self.args.scale_commands:
            return int(self.args.scale_commands)
        bound = self.in_flight / (2 * self.latency_ms / 1000)
        return max(
            COMMANDS_PER_ORDER * PARTITIONS,
            round(bound * EXPECTED_OF_BOUND * float(self.args.scale_seconds)),
        )

    def spec(self, kind: str, label: str, commands: int) -> RunSpec:
        return RunSpec(
            label=label,
            kind=kind,
            mode="key",
            latency_ms=self.latency_ms,
            commands=commands,
            orders=commands // COMMANDS_PER_ORDER,
            max_in_flight=self.in_flight,
            http_backend=self.args.http_backend,
            write_guard=self.args.write_guard,
        )

    def sized(self, kind: str, label: str, instance_shares: float) -> RunSpec:
        """A spec whose orders are a multiple of the partitions (the same work on each)."""
        orders = instance_shares * self.per_instance() / COMMANDS_PER_ORDER
        per_partition = max(1, math.ceil(orders / PARTITIONS))
        return self.spec(kind, label, per_partition * PARTITIONS * COMMANDS_PER_ORDER)

    async def prepare(self, spec: RunSpec) -> tuple[Workload, TopicSettings, dict[str, str]]:
        bench = self.bench
        await bench.sim.set_faults(latency_ms=spec.latency_ms, jitter_ms=0)
        order_ids = await balanced_orders(bench, spec.orders // PARTITIONS)
        workload = build_workload(order_ids, spec.commands, bench.rng, uuid.uuid4().hex[:6])
        topics = fresh_topics("scale", PARTITIONS)
        await create_topics(
            bench.bootstrap, topics, {"snapshots": APPEND_TIME, "results": APPEND_TIME}
        )
        env = bench.bridge_env(spec, topics)  # one group for every instance of the run
        env["BRIDGE_PROCESSING__PROCESSING_GUARANTEE"] = "at_least_once"
        await bench.sim.admin("POST", "/reset-log")
        return workload, topics, env

    async def monitor(
        self,
        spec: RunSpec,
        topics: TopicSettings,
        fleet: Fleet,
        on_check: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """Sample every instance's CPU until the results topic holds N records; progress."""
        t_start = time.monotonic()
        last_check = last_print = last_change = t_start
        last_count = printed = 0
        while True:
            fleet.sample()
            now = time.monotonic()
            if now - last_check >= CHECK_EVERY_S:
                last_check = now
                count = await self.bench.count(topics.results)
                if count != last_count:
                    last_change, last_count = now, count
                if on_check is not None:
                    await on_check(count)
                if count >= spec.commands:
                    say(f"  {count:,}/{spec.commands:,} results after {now - t_start:.1f}s")
                    return
                if now - last_change > self.bench.stall_s:
                    raise RuntimeError(f"no progress for {self.bench.stall_s:.0f}s at {count:,}")
                if now - last_print >= PROGRESS_EVERY_S:
                    rate = (count - printed) / (now - last_print)
                    last_print, printed = now, count
                    say(
                        f"  [{spec.label}] {count:,}/{spec.commands:,} results, {rate:,.0f}/s, "
                        f"t={now - t_start:.1f}s"
                    )
            await asyncio.sleep(SAMPLE_EVERY_S)

    def fleet(self, env: dict[str, str], prefix: str) -> Fleet:
        b = self.bench
        sim_pid = b.sim.proc.pid if isinstance(b.sim, SimulatorProcess) else None
        return Fleet(env, b.workdir, prefix=prefix, wrapper=b.wrapper, sim_pid=sim_pid)

    async def finish(self, result: ScaleResult, fleet: Fleet) -> list[dict[str, int]]:
        """Stop every instance (SIGTERM at once); exit codes and ERROR lines fail the run."""
        codes = await fleet.stop()
        for inst, code in zip(fleet.instances, codes, strict=True):
            if code != 0:
                result.failures.append(f"{inst.name} exit code {code}:\n{inst.process.log_tail()}")
        counters, errors = fleet.read_logs()
        if errors:
            result.failures.append(f"{len(errors)} ERROR log lines, first: {errors[0]}")
        return counters

    @staticmethod
    def per_instance_figures(
        result: ScaleResult,
        fleet: Fleet,
        calls: list[dict[str, Any]],
        t0: float,
        t1: float,
        result_times: list[float],
    ) -> None:
        """CPU per instance, of the simulator and the machine; requests per instance; the
        steady-state rate (20th to 80th percentile of the result times)."""
        window = t1 - t0
        result.sim_cpu_pct = fleet.observer.sim_cpu_pct(t0, t1)
        result.machine_busy_pct = fleet.observer.machine_busy_pct(t0, t1)
        times = sorted(result_times)
        lo, hi = round(0.2 * (len(times) - 1)), round(0.8 * (len(times) - 1))
        if hi > lo and times[hi] > times[lo]:
            result.steady_throughput = (hi - lo) / (times[hi] - times[lo])
        cpu = [inst.cpu_between(t0, t1) for inst in fleet.instances]
        result.cpu_s_per_instance = cpu
        result.cpu_pct_per_instance = [100 * c / window for c in cpu]
        result.cpu_s = sum(cpu)
        names = [inst.name for inst in fleet.instances]
        adapters = [str((c.get("headers") or {}).get("x-adapterid")) for c in calls]
        result.requests_per_instance = [adapters.count(n) for n in names]

    # -- n instances, stable group -------------------------------------------------------------

    async def run_stable(self, n: int, round_no: int = 1) -> ScaleResult:
        label = f"scale-out x{n} L={self.latency_ms:g}ms"
        if self.args.scale_rounds > 1:
            label += f" #{round_no}"
        spec = self.sized("scaleout", label, n)
        result = ScaleResult(spec, instances=n, load=load_average(), round=round_no)
        started = time.monotonic()
        say(
            f"--- {spec.label}: {spec.commands:,} commands over {spec.orders:,} orders, {n} "
            f"instance(s) of max_in_flight {spec.max_in_flight} (load {result.load})"
        )
        workload, topics, env = await self.prepare(spec)
        fleet = self.fleet(env, f"x{n}-{uuid.uuid4().hex[:4]}")
        sent: dict[str, Sent] = {}
        spawned = time.time()
        try:
            for _ in range(n):
                fleet.spawn()
            result.shares = await fleet.wait_stable(PARTITIONS, SETTLE_TIMEOUT_S)
            result.settle_s = time.time() - spawned
            say(f"  group stable after {result.settle_s:.1f}s: {result.shares}; producing")
            assignments = fleet.assignment_counts()
            sent = await self.bench.produce(topics.commands, workload.commands)
            await self.monitor(spec, topics, fleet)
            if fleet.assignment_counts() != assignments:
                result.failures.append("the group rebalanced during the measurement")
        except Exception as exc:
            result.failures.append(f"run aborted: {exc}")
        finally:
            counters = await self.finish(result, fleet)
        result.bridge_counters = summed(counters)
        if not result.failures:
            t = time.monotonic()
            outputs = await self.outputs(topics)
            await measure_and_verify(
                result, self.bench.sim, workload, sent, outputs, [], spawned, self.bench.codec
            )
            if outputs.results and outputs.calls:
                t0 = min(datetime.fromisoformat(c["ts"]).timestamp() for c in outputs.calls)
                t1 = max(r.timestamp_ms for r in outputs.results) / 1000
                stamps = [r.timestamp_ms / 1000 for r in outputs.results]
                self.per_instance_figures(result, fleet, outputs.calls, t0, t1, stamps)
            result.verify_s = time.monotonic() - t
        return self.done(result, fleet, started)

    async def outputs(self, topics: TopicSettings) -> RunOutputs:
        b = self.bench
        return RunOutputs(
            calls=await b.sim.calls(),
            results=await read_topic(b.bootstrap, topics.results, b.codec, PARTITIONS),
            snapshots=await read_topic(b.bootstrap, topics.snapshots, b.codec, PARTITIONS),
            dead_letters=await b.count(topics.dlq),
        )

    @staticmethod
    def done(result: ScaleResult, fleet: Fleet, started: float) -> ScaleResult:
        result.passed = not result.failures
        result.wall_s = time.monotonic() - started
        if result.passed:
            for path in fleet.logs():
                with contextlib.suppress(OSError):
                    path.unlink()
        cpu = " ".join(f"{c:.0f}%" for c in result.cpu_pct_per_instance)
        say(
            f"{'PASS' if result.passed else 'FAIL'} {result.spec.label}: "
            f"{result.throughput:,.0f} cmd/s, CPU per instance {cpu or '-'} of a core "
            f"(run {result.wall_s:.0f}s, verify {result.verify_s:.1f}s)"
        )
        for f in result.failures[:5]:
            say(f"     - {f[:400]}")
        return result

    # -- one instance, a second one joins mid-run ----------------------------------------------

    async def run_join(self) -> ScaleResult:
        spec = self.sized("join", f"join 1+1 L={self.latency_ms:g}ms", 2)
        result = ScaleResult(spec, instances=2, load=load_average())
        started = time.monotonic()
        join_at = max(1, round(self.args.join_at * spec.commands))
        say(
            f"--- {spec.label}: {spec.commands:,} commands over {spec.orders:,} orders, one "
            f"instance, a second one started at {join_at:,} results (load {result.load})"
        )
        workload, topics, env = await self.prepare(spec)
        fleet = self.fleet(env, f"join-{uuid.uuid4().hex[:4]}")
        collector = OutputCollector(self.bench.bootstrap, topics, self.bench.codec)
        sent: dict[str, Sent] = {}
        joined: list[float] = []  # time.time() of the joiner's spawn, then of the settled group

        async def on_check(count: int) -> None:
            if not joined and count >= join_at:
                fleet.spawn()
                joined.append(time.time())
                result.join_results_at_spawn = count
                say(f"  second instance started at {count:,} results")
            elif len(joined) == 1:
                shares = fleet.assignment(PARTITIONS)
                if shares is not None and all(shares):
                    joined.append(time.time())
                    result.join_results_at_settled = count
                    result.shares = shares
                    say(f"  group settled with both at {count:,} results: {shares}")

        spawned = time.time()
        wanted = set(workload.by_id)
        try:
            await collector.__aenter__()
            collector.start()
            fleet.spawn()
            await fleet.wait_stable(PARTITIONS, SETTLE_TIMEOUT_S)
            result.settle_s = time.time() - spawned
            sent = await self.bench.produce(topics.commands, workload.commands)
            await self.monitor(spec, topics, fleet, on_check)

            # the results topic may hold duplicates: wait for every command's first result
            def all_answered() -> bool:
                fleet.sample()  # raises if an instance died
                return wanted <= set(collector.outputs.results_by_command())

            await poll_until(all_answered, self.bench.stall_s, "a result of every command")
        except Exception as exc:
            result.failures.append(f"run aborted: {exc}")
        finally:
            counters = await self.finish(result, fleet)
        try:
            if not await collector.drain(60.0):
                result.failures.append("could not read the outputs to their end")
        finally:
            await collector.stop()
        if len(joined) < 2:
            result.failures.append("the joiner owned no partitions before the back-log was done")
        if not result.failures:
            t = time.monotonic()
            await self.verify_join(result, fleet, workload, sent, collector, counters, joined)
            result.verify_s = time.monotonic() - t
        return self.done(result, fleet, started)

    async def verify_join(
        self,
        result: ScaleResult,
        fleet: Fleet,
        workload: Workload,
        sent: dict[str, Sent],
        collector: OutputCollector,
        counters: list[dict[str, int]],
        joined: list[float],
    ) -> None:
        sim = self.bench.sim
        calls = await sim.calls()
        t0 = first_call(result, calls)
        records = [r for r in collector.reader.records if r.topic == collector.topics.results]
        if t0 is None or not records:
            result.failures.append("no API requests or no results")
            return
        t1 = max(r.timestamp_ms for r in records) / 1000
        result.window_s = t1 - t0
        result.processed = len(collector.outputs.results_by_command())
        result.throughput = result.processed / result.window_s
        stamps = [r.timestamp_ms / 1000 for r in records]
        t_join, t_settled = joined
        result.join_settle_s = t_settled - t_join
        result.rate_before_join = sum(s < t_join for s in stamps) / (t_join - t0)
        result.rate_after_join = sum(s >= t_settled for s in stamps) / max(1e-3, t1 - t_settled)
        self.per_instance_figures(result, fleet, calls, t0, t1, stamps)
        result.bridge_counters = summed(counters)
        check_results_at_least_once(result, workload, sent, collector.outputs)
        check_counters_at_least_once(result, counters, joiner=1)
        await sim.set_faults(latency_ms=0, jitter_ms=0)
        await check_orders(result, sim, workload, collector.outputs, self.bench.codec)


async def run_scaleout(bench: Bench, args: argparse.Namespace) -> list[RunResult]:
    """Every ``--instances`` count (stable group), ``--scale-rounds`` times interleaved, then
    the join run unless ``--skip-join``."""
    scale = ScaleOut(bench, args)
    results: list[RunResult] = []
    for round_no in range(1, max(1, args.scale_rounds) + 1):
        for n in instance_counts(args.instances):
            results.append(await scale.run_stable(n, round_no))
    if not args.skip_join:
        results.append(await scale.run_join())
    return results
