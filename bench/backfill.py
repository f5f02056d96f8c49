"""Backfill benchmark (issue 14): ``order-bridge refresh --all`` into an empty snapshots topic.

``python bench/backfill.py`` (10,000 orders) or ``--orders 500`` for a short run.

Starts a local Kafka broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``), the Norce API simulator in
its own process with N seeded orders (admin seed, merchant ``norce``, channel ``1``), fresh
topics and a ``python -m bridge run`` process configured by ``BRIDGE_*`` variables; then runs
``order-bridge refresh --all`` as a subprocess exactly as the README documents it (configured by
the same variables) and prints:

* run 1: the refresh command's own time and rate (listing + enqueue, every ack awaited), and the
  time from its start until N snapshots (N distinct order keys) are on the snapshots topic;
* run 2 (the same command again): how many snapshot records it added, how many events, and its
  results by outcome (a refresh of an unchanged order publishes no event; whether it
  re-publishes the snapshot is the bridge's RefreshOrder choice, which this run shows).

Without RefreshOrder support in ``bridge.commands`` (it is built by another part of issue 14),
or with ``--enqueue-only``, only the enqueue part runs (no bridge process): the refresh
command's figures and a check that the commands topic holds N RefreshOrder records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bridge_devkit.harness import (
    API_KEY,
    BridgeProcess,
    SimulatorProcess,
    TopicReader,
    async_broker,
    clean_env,
    console_script,
    create_topics,
    deployment_env,
    fresh_topics,
    unique,
)

from bridge import commands as bridge_commands
from bridge.codec import AvroCodec
from bridge.config import TopicSettings

PARTITIONS = 12


def _say(text: str) -> None:
    print(text, flush=True)


def _refresh_supported() -> bool:
    return hasattr(bridge_commands, "RefreshOrder")


def _cli_env(bootstrap: str, topics: TopicSettings, sim_url: str) -> dict[str, str]:
    return clean_env(
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        BRIDGE_TOPICS__COMMANDS=topics.commands,
        BRIDGE_NORCE__BASE_URL=sim_url,
        BRIDGE_NORCE__API_KEY=API_KEY,
    )


async def _run_refresh(env: dict[str, str], log: Path) -> tuple[dict[str, Any], float]:
    """``order-bridge refresh --all``: its JSON summary and wall time (stderr to ``log``)."""
    started = time.monotonic()
    with log.open("ab") as err:
        proc = await asyncio.to_thread(
            subprocess.run,
            [console_script(), "refresh", "--all"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=1800,
            check=False,
        )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"order-bridge refresh exited {proc.returncode}; see {log}")
    summary: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return summary, wall


class _Topics:
    """Reads the run's output topics as they grow (snapshots and commands raw)."""

    def __init__(self, bootstrap: str, topics: TopicSettings, codec: AvroCodec) -> None:
        self.reader = TopicReader(
            bootstrap,
            [topics.commands, topics.snapshots, topics.events, topics.results, topics.dlq],
            codec,
            partitions=PARTITIONS,
            raw_topics=[topics.commands, topics.snapshots, topics.dlq],
        )
        self.topics = topics

    def count(self, topic: str) -> int:
        return sum(1 for r in self.reader.records if r.topic == topic)

    def snapshot_keys(self) -> int:
        return len({r.key for r in self.reader.records if r.topic == self.topics.snapshots})

    def outcomes(self, skip: int = 0) -> Counter[str]:
        results = [r for r in self.reader.records if r.topic == self.topics.results][skip:]
        return Counter(str((r.value or {}).get("outcome")) for r in results)

    async def until(self, done: Any, timeout_s: float, what: str) -> float:
        """Poll until ``done()``; the time it took."""
        started = time.monotonic()
        while not done():
            if time.monotonic() - started > timeout_s:
                raise SystemExit(f"timed out after {timeout_s:.0f}s waiting for {what}")
            dead = [r for r in self.reader.records if r.topic == self.topics.dlq]
            if dead:
                reasons = Counter(r.header_map().get("__connect.errors.reason") for r in dead)
                raise SystemExit(f"the bridge dead-lettered commands: {dict(reasons)}")
            await self.reader.poll(500)
        return time.monotonic() - started


async def bench(args: argparse.Namespace) -> int:
    n = args.orders
    full = _refresh_supported() and not args.enqueue_only
    workdir = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    _say(f"backfill benchmark: {n} orders, {PARTITIONS} partitions, logs in {workdir}")
    _say(f"load average at start: {os.getloadavg()}")
    if not full:
        _say(
            "enqueue part only: "
            + (
                "--enqueue-only"
                if args.enqueue_only
                else "this bridge has no RefreshOrder support yet (bridge.commands)"
            )
        )
    async with async_broker(_say) as bootstrap:
        sim = SimulatorProcess(workdir / "simulator.log", api_key=API_KEY, seed=7)
        try:
            started = time.monotonic()
            seeded = 0
            while seeded < n:
                batch = {"count": min(5000, n - seeded), "merchant": "norce", "channel": "1"}
                seeded += len((await sim.admin("POST", "/seed", batch))["ids"])
            _say(f"seeded {seeded} orders in {time.monotonic() - started:.1f}s")
            topics = fresh_topics("bench-backfill", PARTITIONS)
            await create_topics(bootstrap, topics)
            env = _cli_env(bootstrap, topics, sim.url)
            codec = AvroCodec.load(None)
            out = _Topics(bootstrap, topics, codec)
            async with out.reader:
                if not full:
                    summary, wall = await _run_refresh(env, workdir / "refresh-1.log")
                    _report_refresh(1, summary, wall)
                    waited = await out.until(
                        lambda: out.count(topics.commands) >= n, 120, "the commands"
                    )
                    _say(f"commands topic: {out.count(topics.commands)} records ({waited:.1f}s)")
                    return 0 if out.count(topics.commands) == n else 1
                bridge = BridgeProcess(
                    deployment_env(
                        bootstrap,
                        unique("bench-backfill"),
                        topics,
                        sim.url,
                        API_KEY,
                        processing__max_in_flight=args.max_in_flight,
                        # topics beyond the harness's five (a state topic) are the bridge's own
                        topics__create_missing="true",
                        log_level="INFO",
                    ),
                    workdir / "bridge.log",
                )
                try:
                    await bridge.wait_for_log("partitions assigned", 120)
                    return await _two_runs(args, env, out, topics, workdir)
                finally:
                    await bridge.stop()
        finally:
            await sim.aclose()


def _report_refresh(run: int, summary: dict[str, Any], wall: float) -> None:
    _say(
        f"run {run}: order-bridge refresh --all: listed {summary['listed']}, enqueued "
        f"{summary['enqueued']} in {summary['pages']} pages; command {summary['duration_s']:.2f}s "
        f"({summary['rate_per_s']:.0f}/s), process wall {wall:.2f}s"
    )


async def _two_runs(
    args: argparse.Namespace,
    env: dict[str, str],
    out: _Topics,
    topics: TopicSettings,
    workdir: Path,
) -> int:
    n = args.orders
    started = time.monotonic()
    refresh = asyncio.create_task(_run_refresh(env, workdir / "refresh-1.log"))
    await out.until(lambda: out.snapshot_keys() >= n, args.timeout, f"{n} snapshots")
    to_snapshots = time.monotonic() - started
    summary, wall = await refresh
    _report_refresh(1, summary, wall)
    _say(
        f"run 1: {n} snapshots on the empty topic {to_snapshots:.2f}s after the refresh started "
        f"({n / to_snapshots:.0f} orders/s end to end)"
    )
    await out.until(lambda: sum(out.outcomes().values()) >= n, args.timeout, "run 1's results")
    snapshots_1, events_1 = out.count(topics.snapshots), out.count(topics.events)
    results_1 = sum(out.outcomes().values())
    _say(f"run 1: results {dict(out.outcomes())}, events {events_1}")

    started = time.monotonic()
    summary, wall = await _run_refresh(env, workdir / "refresh-2.log")
    _report_refresh(2, summary, wall)
    await out.until(
        lambda: sum(out.outcomes().values()) >= results_1 + n, args.timeout, "run 2's results"
    )
    took = time.monotonic() - started
    _say(
        f"run 2: +{out.count(topics.snapshots) - snapshots_1} snapshot records, "
        f"+{out.count(topics.events) - events_1} events, results {dict(out.outcomes(results_1))} "
        f"({took:.2f}s until all {n} results)"
    )
    dead = out.count(topics.dlq)
    if dead:
        _say(f"WARNING: {dead} dead letters")
    _say(f"load average at end: {os.getloadavg()}")
    return 0 if not dead else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000, help="orders to seed (10000)")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per wait (900)")
    parser.add_argument(
        "--enqueue-only", action="store_true", help="no bridge: only the refresh command"
    )
    args = parser.parse_args()
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
