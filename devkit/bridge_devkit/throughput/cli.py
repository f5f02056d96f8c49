"""The throughput benchmark's command line: ``python bench/throughput.py [--quick] ...``.

It starts a local Kafka broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``) and the Norce API simulator
in its own process, then runs the throughput, paced, memory and HTTP-transport runs, prints the
table and exits 1 unless every run passed its verification (see ``bench/README.md``). In key
mode the bridge and the lean reference pipeline (``bridge_devkit.throughput.reference``) run
alternately at each L, on the same N, orders and partitions (B, R, B, R with ``--repeat 2``),
back-log and paced.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge_devkit.harness import SimulatorProcess, async_broker
from bridge_devkit.throughput.bench import API_KEY, COMPARISONS, Bench, say
from bridge_devkit.throughput.planner import Planner, bridge_default_backend, floats, words
from bridge_devkit.throughput.report import report, targets
from bridge_devkit.throughput.runs import RunResult, RunSpec
from bridge_devkit.throughput.scaleout import add_arguments, apply_only, run_scaleout


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
    for c in COMPARISONS:  # --event-loops, --tracing, --encodings and their L
        p.add_argument(c.option, default="", help=c.help)
        latency_help = f"L of the {c.title} comparison"
        p.add_argument(f"--{c.dimension}-latency", type=float, default=0.0, help=latency_help)
    p.add_argument("--http-latency", type=float, default=20.0, help="L of the comparison")
    p.add_argument("--paced-latencies", default="20,100", help="L of the paced runs")
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument(
        "--paced-warmup-seconds",
        type=float,
        default=5.0,
        help="an unreported paced bridge run this long before the first paced pair (0: none)",
    )
    p.add_argument(
        "--paced-rate",
        type=float,
        default=0.0,
        help="commands/s of the paced runs (0: half the capacity the back-log runs measured)",
    )
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
    p.add_argument(
        "--repeat", type=int, default=1, help="key-mode runs per L and pipeline (B, R, B, R, ...)"
    )
    p.add_argument(
        "--reference-latencies",
        default="",
        help="L at which the reference pipeline runs too ('' = every --latencies L, 'none')",
    )
    p.add_argument(
        "--warmup-commands",
        type=int,
        default=1_000,
        help="an unreported bridge run of this many commands first, to warm the broker (0: none)",
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
        help="command that runs the bridge (and the reference) instead of this python, e.g. "
        "'env PYTHONPATH=/extra python' (the bridge must keep the wrapper's pid)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="BRIDGE_X=V",
        help="a variable for every bridge and reference run (repeatable), e.g. "
        "BRIDGE_KAFKA__LINGER_MS=0: compare settings across invocations",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the logs of passed runs")
    add_arguments(p)  # --instances, --scale-*, --join-at, --skip-join, --only scaleout
    return p


QUICK = {
    "latencies": "0,20",
    "reference_latencies": "0",
    "commands": 600,
    "orders": 60,
    "paced_latencies": "20",
    "paced_seconds": 4.0,  # past the 3 s warm-up: the steady-state split is exercised too
    "partition_seconds": 5.0,
    "skip_memory": True,
    "skip_http": True,
    "stall_s": 30.0,
    "warmup_commands": 200,  # exercised, small
    "paced_warmup_seconds": 1.0,
}


SECRET_WORDS = ("KEY", "PASSWORD", "TOKEN", "SECRET")


def parse_env(item: str) -> tuple[str, str]:
    """``--env NAME=VALUE``: only the bridge's own variables (and OTEL_*), never a secret's (the
    benchmark prints them)."""
    name, sep, value = item.partition("=")
    if not sep or not name.startswith(("BRIDGE_", "OTEL_")):
        raise SystemExit(f"--env {name!r}: expected BRIDGE_NAME=VALUE")
    if any(word in name.upper() for word in SECRET_WORDS):
        raise SystemExit(f"--env {name}: not for secrets (the benchmark prints these)")
    return name, value


def apply_quick(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--quick: a small run for CI; options given explicitly on the command line still win."""
    for name, value in QUICK.items():
        if getattr(args, name) == parser.get_default(name):
            setattr(args, name, value)


async def run_all(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list[RunResult]:
    sim = SimulatorProcess(
        workdir / "simulator.log", api_key=API_KEY, seed=7, args=["--log-level", "WARNING"]
    )
    wrapper = shlex.split(args.bridge_wrapper) if args.bridge_wrapper else [sys.executable]
    bench = Bench(
        bootstrap,
        sim,
        workdir,
        seed=args.seed,
        stall_s=args.stall_s,
        wrapper=wrapper,
        all_bytes=args.quick,
        extra_env=dict(parse_env(item) for item in args.env),
        keep_logs=args.keep_logs,
    )
    say(f"simulator at {sim.url} (own process), broker at {bootstrap}, logs in {workdir}")
    say(
        f"HTTP backend of the main runs: {args.http_backend} (the bridge's default: "
        f"{bridge_default_backend()})"
    )
    if bench.extra_env:
        say("every run also with: " + " ".join(f"{k}={v}" for k, v in bench.extra_env.items()))
    plan = Planner(args)
    results: list[RunResult] = []

    async def run(spec: RunSpec) -> RunResult:
        r = await bench.run(spec)
        results.append(r)
        plan.learn(r)
        buffered = f", peak buffered {r.peak_buffered:,}" if r.peak_buffered is not None else ""
        if spec.rate is not None:
            steady = "-" if math.isnan(r.steady_p99_ms) else f"{r.steady_p99_ms:,.0f} ms"
            buffered += (
                f", warm-up p99 {r.warmup_p99_ms:,.0f} ms ({r.warmup_samples} cmds), "
                f"steady p99 {steady} (p99 to work start {r.steady_p99_to_start_ms:,.0f} ms, "
                f"work start to snapshot {r.steady_p99_start_to_snapshot_ms:,.0f} ms)"
            )
        if r.paced_seconds:
            buffered += ", p99 ms per second sent: " + " ".join(
                f"{p99:,.0f}" for _, _, _, p99, _ in r.paced_seconds
            )
        if r.bytes_checked:
            buffered += f", snapshot bytes = bridge codec's for {r.bytes_checked} orders"
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

    async def pair(
        with_ref: bool, i: int, spec: Callable[..., RunSpec]
    ) -> tuple[RunResult, RunResult | None]:
        """The bridge's run and (``with_ref``) the reference's, in alternating order (B, R, then
        R, B), so that neither pipeline always runs first, i.e. right after a different kind of
        run or on a broker that has just warmed up."""
        if not with_ref:
            return await run(spec(pipeline="bridge")), None
        if i % 2 == 0:
            b = await run(spec(pipeline="bridge"))
            return b, await run(spec(pipeline="reference"))
        r = await run(spec(pipeline="reference"))
        return await run(spec(pipeline="bridge")), r

    async def warm_up(spec: RunSpec) -> None:
        """An unreported bridge run (verified: a failure fails the benchmark)."""
        spec = dataclasses.replace(spec, label=f"warm-up (not reported) {spec.label}")
        warm = await bench.run(spec)
        say(f"{'PASS' if warm.passed else 'FAIL'} {spec.label}: {warm.throughput:,.0f} cmd/s")
        if not warm.passed:
            results.append(warm)

    try:
        await bench.start()
        if args.warmup_commands:
            # The broker (a JVM) and the simulator are cold at first: the first run of an
            # invocation measured slower whichever pipeline it was. One unreported run warms them.
            await warm_up(plan.spec("throughput", "key", 0.0, args.warmup_commands))
        latencies = floats(args.latencies)
        with_reference = reference_latencies(args)
        modes = words(args.modes)
        key_runs: dict[float, list[RunResult]] = {}
        ref_runs: dict[float, list[RunResult]] = {}
        for latency in latencies:
            for mode in modes:
                n = plan.commands(mode, latency, args.http_backend)
                if mode != "key":
                    await run(plan.spec("throughput", mode, latency, n))
                    continue
                for i in range(max(1, args.repeat)):  # same N for B and R: B, R, R, B ...
                    b, r = await pair(
                        latency in with_reference,
                        i,
                        functools.partial(plan.spec, "throughput", mode, latency, n, repetition=i),
                    )
                    key_runs.setdefault(latency, []).append(b)
                    if r is not None:
                        ref_runs.setdefault(latency, []).append(r)
        if not args.skip_paced:
            paced_warm = args.paced_warmup_seconds <= 0
            for latency in floats(args.paced_latencies):
                rate = args.paced_rate or paced_rate(
                    key_runs.get(latency, []), ref_runs.get(latency, [])
                )
                if rate is None:
                    continue
                if not paced_warm:
                    # The first paced run after the back-log runs measured slower whichever
                    # pipeline it was (steady p99 93-148 ms against 64-100 for the runs after
                    # it, bench/README.md): one unreported paced run first.
                    paced_warm = True
                    m = max(30, round(rate * args.paced_warmup_seconds))
                    await warm_up(plan.spec("paced", "key", latency, m, rate=rate))
                n = max(30, round(rate * args.paced_seconds))
                for i in range(max(1, args.repeat)):
                    await pair(
                        latency in with_reference,
                        i,
                        functools.partial(
                            plan.spec, "paced", "key", latency, n, rate=rate, repetition=i
                        ),
                    )
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
        backends = words(args.http_backends)
        if not args.skip_http and len(backends) > 1:
            for backend in backends:
                n = plan.commands("key", args.http_latency, backend)
                await run(plan.spec("http", "key", args.http_latency, n, backend=backend))
        for c in COMPARISONS:  # each variant alternately, --repeat times each
            values, latency = c.values(args), getattr(args, f"{c.dimension}_latency")
            n = plan.commands("key", latency, args.http_backend)
            async with c.started(values) as bench.services:
                for rep, value in itertools.product(range(max(1, args.repeat)), values):
                    spec = plan.spec(c.dimension, "key", latency, n, repetition=rep, variant=value)
                    await run(spec)
            bench.services = {}
        if args.instances:
            results.extend(await run_scaleout(bench, args))
    finally:
        await bench.aclose()
        await sim.aclose()
    return results


def reference_latencies(args: argparse.Namespace) -> set[float]:
    """The L at which the reference runs next to the bridge (key mode, back-log and paced)."""
    text = str(args.reference_latencies).strip()
    if text == "none" or "key" not in words(args.modes):
        return set()
    return set(floats(text or args.latencies))


def paced_rate(bridge: list[RunResult], reference: list[RunResult]) -> float | None:
    """Half the measured capacity at one L: of the slower pipeline (mean of its passed back-log
    runs), so both paced runs get the same rate and neither is past half of its capacity."""
    capacities = []
    for runs in (bridge, reference):
        ok = [r.throughput for r in runs if r.passed]
        if ok:
            capacities.append(sum(ok) / len(ok))
    if not [r for r in bridge if r.passed]:
        return None
    return min(capacities) / 2


async def amain(args: argparse.Namespace) -> int:
    if not args.http_backend:
        args.http_backend = bridge_default_backend()
    workdir = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    env: dict[str, Any] = {"load_before": _load()}
    started = time.monotonic()
    async with async_broker(say) as bootstrap:
        results = await run_all(args, bootstrap, workdir)
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
    apply_only(args)
    for c in COMPARISONS:  # an unknown variant stops the benchmark before its first run
        c.values(args)
    try:
        return asyncio.run(amain_cancellable(args))
    except asyncio.CancelledError:
        say("interrupted: bridge, simulator and broker stopped")
        return 130
