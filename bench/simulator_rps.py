"""Throughput benchmark of the Norce Order API simulator.

Starts the simulator CLI (``python -m norce_simulator``) in a subprocess, seeds orders through
``POST /__admin/seed`` and drives it for ``--seconds`` with ``--connections`` keep-alive
connections spread over ``--clients`` client processes. The client is a minimal HTTP/1.1
client on ``asyncio.Protocol`` so that it costs less CPU than the server it measures. The mix
is GET order and PUT state (each connection toggles its own orders between ``checkout`` and
``processing``, so every PUT is a legal transition and answers 200).

Usage::

    python bench/simulator_rps.py --seconds 10 --connections 64 --clients 1 --put-ratio 0.3
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
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bridge_devkit.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sim-api-key"


class _Client(asyncio.Protocol):
    """One keep-alive connection answering one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        marker = head.find(b"content-length:")
        if marker >= 0:
            stop = head.find(b"\r\n", marker)
            length = int(head[marker + 15 : stop if stop >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        del self.buffer[: end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(status)

    async def request(self, payload: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


def _requests(host: str, ids: list[str]) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    common = (
        f"host: {host}\r\nauthorization: Bearer {API_KEY}\r\nx-merchant: norce\r\n"
        "x-channel: 1\r\nx-adapterid: bench\r\n"
    )
    gets = [f"GET /api/v0/checkout/orders/{oid} HTTP/1.1\r\n{common}\r\n".encode() for oid in ids]
    puts = []
    for oid in ids:
        pair = []
        for status in ("processing", "checkout"):
            body = json.dumps({"currentStatus": status}).encode()
            pair.append(
                f"PUT /api/v0/checkout/orders/{oid}/state HTTP/1.1\r\n{common}"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
                + body
            )
        puts.append((pair[0], pair[1]))
    return gets, puts


async def _drive(
    host: str, port: int, ids: list[str], connections: int, seconds: float, put_ratio: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        nonlocal errors
        mine = ids[index::connections] or ids
        gets, puts = _requests(host, mine)
        toggled = [False] * len(mine)
        rng = random.Random(index)
        _, client = await loop.create_connection(_Client, host, port)
        try:
            while True:
                start = time.perf_counter()
                if start >= deadline:
                    return
                slot = rng.randrange(len(mine))
                if rng.random() < put_ratio:
                    payload = puts[slot][1 if toggled[slot] else 0]
                    toggled[slot] = not toggled[slot]
                else:
                    payload = gets[slot]
                try:
                    status = await client.request(payload)
                except ConnectionError:
                    errors += 1
                    return
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            if client.transport is not None:
                client.transport.close()
            await client.lost

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    return {
        "latencies": latencies,
        "statuses": statuses,
        "errors": errors,
        "elapsed": time.perf_counter() - started,
    }


def run_client(
    host: str, port: int, ids: list[str], connections: int, seconds: float, put_ratio: float
) -> dict[str, Any]:
    """Drive the server from this process and return raw measurements."""
    return asyncio.run(_drive(host, port, ids, connections, seconds, put_ratio))


def _admin(url: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - fixed http URL of our own subprocess
        url + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        raw = response.read()
        return json.loads(raw) if raw else None


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64, help="total keep-alive conns")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--put-ratio", type=float, default=0.3)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="server latency")
    parser.add_argument("--no-call-log", action="store_true", help="disable the server call log")
    args = parser.parse_args(argv)

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "norce_simulator",
        "--port",
        str(port),
        "--orders",
        "0",
        "--latency-ms",
        str(args.latency_ms),
    ]
    if args.no_call_log:
        command.append("--no-call-log")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert server.stdout is not None
        started = json.loads(server.stdout.readline())
        url = started["url"]
        ids: list[str] = _admin(url, "POST", "/__admin/seed", {"count": args.orders})["ids"]
        _admin(url, "POST", "/__admin/reset-log")
        per_client = max(1, args.connections // args.clients)
        if args.clients == 1:
            results = [run_client("127.0.0.1", port, ids, per_client, args.seconds, args.put_ratio)]
        else:
            chunks = [ids[i :: args.clients] for i in range(args.clients)]
            with ProcessPoolExecutor(args.clients) as pool:
                futures = [
                    pool.submit(
                        run_client,
                        "127.0.0.1",
                        port,
                        chunk,
                        per_client,
                        args.seconds,
                        args.put_ratio,
                    )
                    for chunk in chunks
                ]
                results = [f.result() for f in futures]
        server_stats = _admin(url, "GET", "/__admin/stats")
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
        if server.poll() is None:
            server.kill()
            server.wait()

    latencies = sorted(lat for r in results for lat in r["latencies"])
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    errors = sum(r["errors"] for r in results) + sum(
        count for status, count in statuses.items() if status >= 400
    )
    elapsed = max(r["elapsed"] for r in results)
    total = len(latencies)
    print(
        f"simulator benchmark: {args.seconds:g} s, {args.clients} client process(es), "
        f"{per_client * args.clients} connections, put ratio {args.put_ratio:g}, "
        f"server latency {args.latency_ms:g} ms, call log {'off' if args.no_call_log else 'on'}"
    )
    print(f"  requests      {total}")
    print(f"  throughput    {total / elapsed:,.0f} req/s")
    print(
        f"  latency ms    p50 {_percentile(latencies, 0.5) * 1000:.2f}  "
        f"p90 {_percentile(latencies, 0.9) * 1000:.2f}  "
        f"p99 {_percentile(latencies, 0.99) * 1000:.2f}  "
        f"max {(latencies[-1] if latencies else float('nan')) * 1000:.2f}  "
        f"mean {(statistics.fmean(latencies) if latencies else float('nan')) * 1000:.2f}"
    )
    print(f"  statuses      {dict(sorted(statuses.items()))}")
    print(f"  errors        {errors}")
    print(f"  server stats  {server_stats['by_status']} ({server_stats['requests']} requests)")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
