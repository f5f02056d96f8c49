"""CPU per request and per snapshot on the bridge's hot path, next to the libraries' floor.

Four rows, measured in one process and interleaved round by round (``--rounds``):

* **(a) bridge GET / PUT**: ``NorceClient.get_order_json`` and ``NorceClient.set_state`` through
  the bridge's HTTP client (``build_http_client(..., http_backend="aiohttp")``, default retry
  settings, an adapter id) against the Norce API simulator served in this process on loopback;
* **(b) aiohttp GET / PUT**: a plain ``aiohttp.ClientSession`` sending the same requests with the
  same headers (prebuilt once) to the same simulator, reading the body and, for GET, parsing it
  with orjson: the floor the libraries set;
* **(c) bridge snapshot**: ``tagged_snapshot_from_order`` (union tags built while mapping, what
  ``bridge.outputs.snapshot_output`` uses) + ``AvroCodec.encode("OrderSnapshot", ...)`` of the
  simulator's orders, as the bridge publishes them; **(c2)** the same with the untagged
  ``snapshot_from_order``, which the codec tags in a second pass (a copy) before fastavro; and
  the mapping alone both ways (``map only, one pass`` vs ``map + tagged copy``: fastavro's
  cost and noise left out, the difference is what the one pass saves);
* **(d) fastavro floor**: ``fastavro.schemaless_writer`` with the pre-parsed schema on an
  already tagged record (what is left when mapping and tagging cost nothing);
* **(e) tracing** (``--part tracing``, issue 15): the tracing hooks of one command exactly as the
  worker and the Norce client call them (:mod:`bridge.tracing`: the consumer span continuing a
  ``traceparent``, two client spans with their context injected into the request headers, the
  producer span(s) of four output records, published, ended): off (the no-op), on without an
  exporter, on with one producer span per record, and on with the OTLP exporter's encoding
  (``BatchSpanProcessor`` → protobuf ``ExportTraceServiceRequest`` serialised, then dropped: no
  network; flushed inside each round so its thread's CPU is counted).

Figures are CPU time of this process (``time.process_time``) per request or per snapshot. The
HTTP rows include the in-process simulator's own CPU for each request, the same in (a) and (b),
so the **difference** (a) - (b) is the bridge client's overhead per request. The snapshot rows
run twice: with the collector as it is, and after ``gc.freeze()`` (the service freezes its
start-up heap; objects alive then are no longer traversed by collections). Rows alternate
within every round; each prints the median, min and max over the rounds (the spread is the
noise; on a busy machine many short rounds and the minima compare best). Compare rows of one
run, not runs.

Usage::

    python bench/hotpath.py                       # defaults: 10 rounds x 500 requests/snapshots
    python bench/hotpath.py --part snapshots --rounds 40 --snapshots 100
    python bench/hotpath.py --part tracing --rounds 20 --commands 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import fastavro
import orjson
import yarl
from norce_simulator import SimulatorConfig, start_simulator
from pydantic import SecretStr

from bridge import __version__, snapshot
from bridge.codec import AvroCodec
from bridge.norce import NorceClient, order_path
from bridge.norce_http import build_http_client
from bridge.snapshot import snapshot_from_order

# What bridge.outputs.snapshot_output builds; before issue 13 that was snapshot_from_order (kept
# so that this benchmark also runs on the earlier code, for before/after tables).
tagged_snapshot_from_order = getattr(snapshot, "tagged_snapshot_from_order", snapshot_from_order)

API_KEY = "sim-api-key"
ADAPTER_ID = "hotpath-bench"
MERCHANT = "norce"
CHANNEL = "1"
STATUSES = ("processing", "checkout")

Op = Callable[[int], Awaitable[object]]


def cpu_us_per_call(fn: Callable[[int], object], calls: int) -> float:
    """CPU microseconds per call of a synchronous ``fn(i)``."""
    started = time.process_time()
    for i in range(calls):
        fn(i)
    return (time.process_time() - started) / calls * 1e6


async def async_cpu_us_per_call(op: Op, calls: int) -> float:
    """CPU microseconds per awaited ``op(i)`` (sequential: one request in flight)."""
    started = time.process_time()
    for i in range(calls):
        await op(i)
    return (time.process_time() - started) / calls * 1e6


def line(
    name: str, samples: list[float], floor: list[float] | None = None, ref: str = "the floor"
) -> str:
    """One printed row: median, min and max over the rounds; against the floor, the differences
    of the medians and of the minima (the least disturbed rounds on a shared machine)."""
    med, low = statistics.median(samples), min(samples)
    text = f"  {name:38s} median {med:7.1f}  min {low:7.1f}  max {max(samples):7.1f} us"
    if floor is not None:
        f_med, f_low = statistics.median(floor), min(floor)
        text += f"   over {ref}: {med - f_med:+6.1f} (min {low - f_low:+6.1f}) us"
    return text


async def http_rows(rounds: int, requests: int, orders: int) -> list[str]:
    """Rows (a) and (b): the bridge client and plain aiohttp against the simulator."""
    config = SimulatorConfig(
        api_keys=(API_KEY,),
        seed=7,
        orders=0,
        enforce_transitions=False,
        enforce_required_consents=False,
    )
    sim = await start_simulator(config, host="127.0.0.1", port=0)
    try:
        get_ids = sim.app.seed(orders, MERCHANT, CHANNEL, status="processing")
        put_ids = sim.app.seed(orders, MERCHANT, CHANNEL, status="processing")
        base = sim.url.rstrip("/") + "/"
        common = {
            "User-Agent": f"norce-order-bridge/{__version__}",
            "Authorization": f"Bearer {API_KEY}",
            "x-merchant": MERCHANT,
            "x-channel": CHANNEL,
            "Accept": "application/json",
            "x-adapterid": ADAPTER_ID,
        }
        put_headers = {**common, "Content-Type": "application/json"}
        get_urls = [yarl.URL(base + order_path(o), encoded=True) for o in get_ids]
        put_urls = [yarl.URL(base + order_path(o, "/state"), encoded=True) for o in put_ids]
        bodies = [orjson.dumps({"currentStatus": s}) for s in STATUSES]
        timeout = aiohttp.ClientTimeout(sock_connect=5.0, sock_read=10.0, connect=5.0)

        async with (
            build_http_client(sim.url, http_backend="aiohttp") as http,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), timeout=timeout
            ) as session,
        ):
            client = NorceClient(http, api_key=SecretStr(API_KEY), adapter_id=ADAPTER_ID)

            async def bridge_get(i: int) -> object:
                result = await client.get_order_json(
                    get_ids[i % orders], merchant=MERCHANT, channel=CHANNEL
                )
                return result.value

            async def bridge_put(i: int) -> object:
                return await client.set_state(
                    put_ids[i % orders],
                    STATUSES[(i // orders) % 2],
                    merchant=MERCHANT,
                    channel=CHANNEL,
                )

            async def floor_get(i: int) -> object:
                async with session.get(get_urls[i % orders], headers=common) as response:
                    body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET answered {response.status}")
                return orjson.loads(body)

            async def floor_put(i: int) -> object:
                body = bodies[(i // orders) % 2]
                async with session.put(put_urls[i % orders], headers=put_headers, data=body) as r:
                    await r.read()
                if r.status >= 300:
                    raise RuntimeError(f"PUT answered {r.status}")
                return None

            ops: dict[str, Op] = {
                "(a) bridge GET": bridge_get,
                "(b) aiohttp GET": floor_get,
                "(a) bridge PUT": bridge_put,
                "(b) aiohttp PUT": floor_put,
            }
            # The bridge and the floor alternate on the PUT orders: each flips every order's
            # status once per pass over them, so both see the same store.
            for op in ops.values():
                for i in range(min(requests, 2 * orders)):  # warm up: connections, caches
                    await op(i)
            samples: dict[str, list[float]] = {name: [] for name in ops}
            for _ in range(rounds):
                for name, op in ops.items():
                    samples[name].append(await async_cpu_us_per_call(op, requests))
    finally:
        await sim.aclose()
    a_get, b_get = samples["(a) bridge GET"], samples["(b) aiohttp GET"]
    a_put, b_put = samples["(a) bridge PUT"], samples["(b) aiohttp PUT"]
    return [
        line("(a) bridge GET (get_order_json)", a_get, b_get),
        line("(b) aiohttp GET (floor)", b_get),
        line("(a) bridge PUT (set_state)", a_put, b_put),
        line("(b) aiohttp PUT (floor)", b_put),
    ]


async def fetch_orders(count: int) -> list[dict[str, Any]]:
    """``count`` of the simulator's orders as the API serves them."""
    config = SimulatorConfig(api_keys=(API_KEY,), seed=11, orders=0)
    sim = await start_simulator(config, host="127.0.0.1", port=0)
    try:
        async with build_http_client(sim.url) as http:
            client = NorceClient(http, api_key=SecretStr(API_KEY))
            orders = []
            for order_id in sim.app.seed(count, MERCHANT, CHANNEL):
                result = await client.get_order_json(order_id, merchant=MERCHANT, channel=CHANNEL)
                orders.append(result.value)
            return orders
    finally:
        await sim.aclose()


def snapshot_rows(orders: list[dict[str, Any]], rounds: int, snapshots: int) -> list[str]:
    """Rows (c) and (d), first with the collector as it is, then after ``gc.freeze()``."""
    codec = AvroCodec.load()
    parsed = codec.parsed_schema("OrderSnapshot")
    now = datetime.now(UTC)
    n = len(orders)

    def bridge(i: int) -> bytes:
        snap = tagged_snapshot_from_order(
            orders[i % n], fetched_at=now, command_id="c-0", correlation_id=None
        )
        return codec.encode("OrderSnapshot", snap)

    def two_pass(i: int) -> bytes:
        snap = snapshot_from_order(
            orders[i % n], fetched_at=now, command_id="c-0", correlation_id=None
        )
        return codec.encode("OrderSnapshot", snap)

    tagged = [
        codec.tagged(
            "OrderSnapshot",
            snapshot_from_order(o, fetched_at=now, command_id="c-0", correlation_id=None),
        )
        for o in orders
    ]

    def map_one_pass(i: int) -> object:
        return tagged_snapshot_from_order(
            orders[i % n], fetched_at=now, command_id="c-0", correlation_id=None
        )

    def map_two_pass(i: int) -> object:
        snap = snapshot_from_order(
            orders[i % n], fetched_at=now, command_id="c-0", correlation_id=None
        )
        return codec.tagged("OrderSnapshot", snap)

    def floor(i: int) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, tagged[i % n])
        return buf.getvalue()

    if any(bridge(i)[10:] != floor(i) or two_pass(i)[10:] != floor(i) for i in range(n)):
        raise AssertionError("the snapshot rows do not write the same bytes")
    size = statistics.mean(len(bridge(i)) for i in range(n))
    rows = [
        f"  snapshots: {n} simulator orders, {size:.0f} bytes encoded on average "
        f"(same bytes in every row); {len(gc.get_objects())} objects tracked by gc"
    ]
    for frozen in (False, True):
        if frozen:
            gc.collect()
            gc.freeze()
        fns = {"c": bridge, "c2": two_pass, "d": floor, "m": map_one_pass, "m2": map_two_pass}
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        for fn in fns.values():
            cpu_us_per_call(fn, min(snapshots, 200))
        for _ in range(rounds):
            for name, fn in fns.items():
                cpu[name].append(cpu_us_per_call(fn, snapshots))
        label = "gc.freeze()" if frozen else "gc as is"
        rows.append(line(f"(c) one pass map+encode [{label}]", cpu["c"], cpu["d"]))
        rows.append(line(f"(c2) two pass map+encode [{label}]", cpu["c2"], cpu["d"]))
        rows.append(line(f"(d) fastavro pre-tagged [{label}]", cpu["d"]))
        rows.append(line(f"    map only, one pass [{label}]", cpu["m"]))
        rows.append(line(f"    map + tagged copy [{label}]", cpu["m2"], cpu["m"], "one pass"))
    gc.unfreeze()
    return rows


def tracing_rows(rounds: int, commands: int) -> list[str]:
    """Rows (e): CPU per command of the tracing hooks, each variant alternating per round."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from bridge.commands import SetOrderState
    from bridge.outputs import SourceRecord
    from bridge.settle import EncodedRecord
    from bridge.tracing import NO_TRACING, Tracing
    from bridge.tracing_otel import OtelTracing

    class EncodeOnly(SpanExporter):
        """The OTLP exporter's CPU without its network: encode, serialise, drop."""

        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    base = "http://127.0.0.1:8089/"
    order_id = "o_yClTSySjyAuuBjmiBlHCjuEcTf"
    cmd = SetOrderState.model_validate(
        {
            "type": "SetOrderState",
            "commandId": "c-42",
            "orderId": order_id,
            "merchant": "norce",
            "channel": "1",
            "issuedAt": "2026-11-27T10:00:00Z",
            "state": "accepted",
            "correlationId": "checkout-7",
        }
    )
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    src = SourceRecord(
        "norce.order.commands",
        3,
        1234,
        order_id.encode(),
        b"x" * 300,
        (("content-type", b"application/json"), ("traceparent", parent)),
        0,
    )
    topics = ("norce.order.snapshots", "norce.order.events", "norce.order.command-results")
    roles = dict(zip(topics, ("snapshot", "event", "result"), strict=True))
    headers = {"authorization": "Bearer x", "x-merchant": "norce", "x-channel": "1"}
    path = f"api/v0/checkout/orders/{order_id}"

    def outputs() -> list[EncodedRecord]:
        out: list[EncodedRecord] = [
            (t, order_id.encode(), b"v" * 500, [("norce.command.id", b"c-42")], None)
            for t in topics
        ]
        out.append(("norce.order.bridge-state", order_id.encode(), b"{}", [], 3))
        return out

    def provider(encode: bool) -> TracerProvider:
        p = TracerProvider()
        if encode:
            p.add_span_processor(BatchSpanProcessor(EncodeOnly(), max_queue_size=1 << 20))
        return p

    variants: dict[str, tuple[Tracing, TracerProvider | None]] = {"off": (NO_TRACING, None)}
    for name, encode, per in (
        ("on, no exporter", False, "command"),
        ("on, span per record", False, "record"),
        ("on, OTLP encoding", True, "command"),
    ):
        made = provider(encode)
        otel = OtelTracing(made, group_id="g", norce_base_url=base, producer_spans=per)
        variants[name] = (otel, made)
    calls = (("PUT", "set_state", path + "/state"), ("GET", "get_order", path))

    def one(tracing: Tracing) -> None:
        trace = tracing.consume(src, cmd)
        for method, endpoint, at in calls:
            span = tracing.client(method, endpoint, at, 0)
            span.inject(headers)
            span.succeeded(200)
        trace.produce(outputs(), roles)
        trace.published(True)
        trace.end()

    def round_of(tracing: Tracing, prov: TracerProvider | None) -> float:
        started = time.process_time()
        for _ in range(commands):
            one(tracing)
        if prov is not None:
            prov.force_flush()
        return (time.process_time() - started) / commands * 1e6

    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for hooks, prov in variants.values():
        round_of(hooks, prov)  # warm-up
    for _ in range(rounds):
        for name, (hooks, prov) in variants.items():
            cpu[name].append(round_of(hooks, prov))
    for _, prov in variants.values():
        if prov is not None:
            prov.shutdown()
    rows = ["  one command: consumer span, 2 client spans, 4 output records"]
    for name in variants:
        rows.append(line(f"(e) tracing {name}", cpu[name], cpu["off"], "off"))
    return rows


async def main(args: argparse.Namespace) -> None:
    """Measure and print."""
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.part in ("all", "http"):
        print(
            f"HTTP: {args.rounds} rounds x {args.requests} sequential requests per row "
            f"(CPU us per request, simulator in process)"
        )
        for row in await http_rows(args.rounds, args.requests, args.orders):
            print(row)
    if args.part in ("all", "snapshots"):
        orders = await fetch_orders(args.orders)
        print(f"Snapshots: {args.rounds} rounds x {args.snapshots} per row (CPU us per snapshot)")
        for row in snapshot_rows(orders, args.rounds, args.snapshots):
            print(row)
    if args.part in ("all", "tracing"):
        print(f"Tracing: {args.rounds} rounds x {args.commands} commands per row (CPU us/command)")
        for row in tracing_rows(args.rounds, args.commands):
            print(row)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--snapshots", type=int, default=500)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--commands", type=int, default=1000, help="per tracing row and round")
    parser.add_argument("--part", choices=("all", "http", "snapshots", "tracing"), default="all")
    asyncio.run(main(parser.parse_args()))
