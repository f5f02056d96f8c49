"""Notification ingress throughput: deliveries/s to Kafka-acknowledged, latency p50/p99 (issue 14).

``python bench/ingress.py --deliveries 2000 --concurrency 8 16`` starts a local Kafka broker (or
uses ``KAFKA_BOOTSTRAP_SERVERS``), runs the ingress alone in a child process (the bridge's own
composition, ``start_notifications``, relay off: only the HTTP -> Kafka path is measured) and
drives it from this process with ``--concurrency`` parallel clients, each POST on a new
connection (the ingress closes every connection, like a webhook sender's single request). A
delivery counts once it is answered 200, i.e. after the broker acknowledged its record
(acks=all, idempotent producer). Each concurrency is run ``--rounds`` times, interleaved.
Prints one line per run: wall time, deliveries/s, latency percentiles, errors and the ingress
process's CPU per delivery. At the end it checks the topic holds every accepted delivery.
Nothing fails on the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp
from bridge_devkit.harness import notification_delivery

SECRET = "bench-webhook-secret-0123456789"  # noqa: S105 - a benchmark's own


def _delivery(nid: str, order_id: str, pad: int) -> bytes:
    return notification_delivery(nid, order_id, adapter_id="bench", attributes={"pad": "x" * pad})


# -- the server (child process) ------------------------------------------------------------------


async def _serve(bootstrap: str, topic: str, linger_ms: int) -> None:
    from prometheus_client import CollectorRegistry
    from pydantic import SecretStr

    from bridge.app import ensure_topics
    from bridge.config import BridgeSettings, IngressSettings, KafkaSettings, TopicSettings
    from bridge.metrics import BridgeMetrics
    from bridge.notify_relay import start_notifications

    settings = BridgeSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=f"{topic}-g"),
        topics=TopicSettings(
            commands=f"{topic}.commands",
            snapshots=f"{topic}.snapshots",
            events=f"{topic}.events",
            results=f"{topic}.results",
            dlq=f"{topic}.dlq",
            notifications=topic,
        ),
        ingress=IngressSettings(
            enabled=True,
            host="127.0.0.1",
            port=0,
            secret=SecretStr(SECRET),
            relay=False,
            linger_ms=linger_ms,
        ),
    )
    await ensure_topics(settings, {})
    metrics = BridgeMetrics(
        CollectorRegistry(), version="bench", processing_guarantee="at_least_once", ordering="key"
    )
    service = await start_notifications(settings, {}, metrics)
    assert service is not None
    assert service.server is not None
    print(f"PORT {service.server.port}", flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF
    finally:
        await service.aclose()


# -- the client ----------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(
    port: int, pid: int, deliveries: int, concurrency: int, pad: int, tag: str
) -> tuple[dict[str, Any], int]:
    rnd = random.Random(tag)
    bodies = [
        _delivery(f"{tag}-{i}", f"o_bench{rnd.randrange(500)}", pad) for i in range(deliveries)
    ]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    queue = iter(bodies)
    url = f"http://127.0.0.1:{port}/notifications"
    headers = {"X-Norce-Webhook-Secret": SECRET, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for body in queue:
                t0 = time.perf_counter()
                try:
                    async with http.post(url, data=body, headers=headers) as r:
                        await r.read()
                        status = str(r.status)
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                if status == "200":
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[status] = errors.get(status, 0) + 1

        cpu0 = _cpu_s(pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = _cpu_s(pid) - cpu0
    ms = [x * 1000 for x in latencies]
    row = {
        "concurrency": concurrency,
        "deliveries": deliveries,
        "accepted": len(latencies),
        "errors": errors,
        "wall_s": round(wall, 3),
        "per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(_pct(ms, 0.50), 2) if ms else None,
        "p90_ms": round(_pct(ms, 0.90), 2) if ms else None,
        "p99_ms": round(_pct(ms, 0.99), 2) if ms else None,
        "max_ms": round(max(ms), 2) if ms else None,
        "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
        "ingress_cpu_ms_per_delivery": round(cpu * 1000 / max(1, len(latencies)), 3),
    }
    return row, len(latencies)


async def _count(bootstrap: str, topic: str, partitions: int) -> int:
    from bridge_devkit.harness import end_offsets

    return sum((await end_offsets(bootstrap, topic, partitions)).values())


def _spawn(bootstrap: str, topic: str, linger_ms: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--serve", bootstrap, topic, str(linger_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _main(args: argparse.Namespace) -> int:
    from bridge_devkit.harness import broker, unique

    with broker(lambda text: print(f"[localkafka] {text}", file=sys.stderr)) as bootstrap:
        topic = unique("bench-ingress")
        child = await asyncio.to_thread(_spawn, bootstrap, topic, args.linger_ms)
        try:
            assert child.stdout is not None
            line = await asyncio.to_thread(child.stdout.readline)
            if not line.startswith("PORT "):
                print(f"the ingress did not start: {line!r}", file=sys.stderr)
                return 1
            port = int(line.split()[1])
            # Warm-up: connections, producer metadata for every partition.
            await _run(port, child.pid, 200, 4, args.pad, "warm")
            accepted = 200
            print(
                f"ingress benchmark: {args.deliveries} deliveries per run, body "
                f"{len(_delivery('x', 'o_x', args.pad))} bytes, rounds {args.rounds}, "
                f"linger_ms {args.linger_ms}, "
                f"load {os.getloadavg()[0]:.2f}"
            )
            for r in range(args.rounds):
                for c in args.concurrency:
                    row, n = await _run(port, child.pid, args.deliveries, c, args.pad, f"r{r}c{c}")
                    accepted += n
                    print(json.dumps(row), flush=True)
            stored = await _count(bootstrap, topic, 12)
            print(
                f"topic holds {stored} records for {accepted} accepted deliveries"
                f" (load {os.getloadavg()[0]:.2f})"
            )
            return 0 if stored >= accepted else 1
        finally:
            with contextlib.suppress(Exception):
                assert child.stdin is not None
                child.stdin.close()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        asyncio.run(_serve(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8, 32], help="clients (default 1 8 32)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--pad", type=int, default=1500, help="padding bytes in each order")
    parser.add_argument(
        "--linger-ms", type=int, default=0, help="BRIDGE_INGRESS__LINGER_MS (default 0)"
    )
    parser.add_argument("--quick", action="store_true", help="200 deliveries, concurrency 4")
    args = parser.parse_args()
    if args.quick:
        args.deliveries, args.concurrency, args.rounds = 200, [4], 1
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
