"""The lean reference pipeline of the throughput benchmark (issue 13).

``python -m bridge_devkit.throughput.reference`` does the bridge's per-command work for
``SetOrderState`` with the same libraries and nothing else, so that ``bench/throughput.py`` can
measure the bridge against it in the same invocation:

* consume the commands topic (aiokafka, manual commits, ``read_committed``), decode with orjson;
* per command: ``GET`` the order the first time it sees it, ``PUT .../state``, ``GET`` the order
  (aiohttp directly: prebuilt URLs and headers, ``Authorization``, ``x-merchant``, ``x-channel``,
  ``x-adapterid``); a ``GET`` that shows the target already there (first sight) or a ``PUT`` that
  added no transition is ``already_applied``, like the bridge;
* map the order to the ``OrderSnapshot`` record (its own mapper, tagged unions built while mapping,
  ``reference_avro``), encode the snapshot, the ``OrderStateChanged`` event and the
  ``CommandResult`` with fastavro in Avro single-object encoding (the bridge's ``.avsc`` files);
* the order's state record, as the bridge writes it to its order state store with every
  snapshot (issue 14, :mod:`bridge.order_state`: status, number of transitions, the SHA-256 of
  the order JSON with sorted keys, ``at``, ``commandId``; small JSON, not Avro) to the state topic's
  partition of the command's source partition, with the ``norce.command.id`` header: the bridge
  publishes four records per command, so the reference does too;
* produce them keyed by order id with the bridge's headers, idempotent, ``acks=all``; a record
  is done when its four outputs are acknowledged; per partition the highest contiguous done
  offset + 1 is committed every ``commit_interval_s`` and at shutdown.

Concurrency: per order id, like the bridge's ``ordering=key``: ``max_in_flight`` worker tasks
take orders from one ready queue; an order is in the queue at most once, so its commands run one
after the other in offset order, different orders concurrently. No safety features: no replay
metadata, lease, circuit, dead letters, metrics or validation beyond what the work needs; ``5xx``
and ``429`` are retried in a plain loop. ``DeleteOrder`` and anything else is not handled (counted
as ``unsupported``, committed without outputs). Configured by the bridge's ``BRIDGE_*``
variables (the ones below) or by flags; logs JSON lines on stderr (``partitions assigned``,
``reference stopped`` with its counters and garbage-collector pauses, timed by the bridge's own
``bridge.gc_metrics.GcPauses``), like the bridge's, for the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import os
import signal
import sys
import urllib.parse
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
import yarl
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from bridge.gc_metrics import GcPauses
from bridge_devkit.throughput.reference_avro import (
    Encoder,
    SnapshotMapper,
    rfc3339,
    rfc3339_now,
)
from bridge_devkit.throughput.reference_base import (
    ORDERS_PATH,
    RETRY_STATUSES,
    Command,
    Headers,
    HttpError,
    Offsets,
    log,
    parse_args,
)


class Reference(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.snapshot = Encoder("OrderSnapshot")
        self.event = Encoder("OrderStateChanged")
        self.result = Encoder("CommandResult")
        self.mapper = SnapshotMapper(self.snapshot.parsed)
        self.base = args.base_url.rstrip("/") + "/" + ORDERS_PATH
        self.stopping = asyncio.Event()
        self.ready: asyncio.Queue[str] = asyncio.Queue()
        self.queues: dict[str, deque[Command]] = {}  # orders with commands waiting or running
        self.views: dict[str, tuple[str | None, int]] = {}  # order -> (status, transitions)
        self.urls: dict[str, tuple[yarl.URL, yarl.URL]] = {}
        self.headers: dict[tuple[str, str], tuple[dict[str, str], dict[str, str]]] = {}
        self.offsets: dict[TopicPartition, Offsets] = {}
        self.buffered = 0
        self.running = 0  # commands being processed
        self.idle = asyncio.Event()  # set when ``running`` drops to 0
        self.room = asyncio.Event()
        self.counters = {
            "applied": 0,
            "already_applied": 0,
            "unsupported": 0,
            "errors": 0,
            "commits": 0,
        }
        self.schema_headers = {
            e: [("norce.schema", e.full_name.encode()), ("content-type", b"application/avro")]
            for e in (self.snapshot, self.event, self.result)
        }
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap,
            group_id=args.group_id,
            client_id="norce-order-bridge-reference",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self.producer = AIOKafkaProducer(
            bootstrap_servers=args.bootstrap,
            client_id="norce-order-bridge-reference-producer",
            enable_idempotence=True,
            acks="all",
            linger_ms=args.linger_ms,
        )
        self.http: aiohttp.ClientSession | None = None
        self.gc_pauses = GcPauses()

    # -- rebalance (one member in the benchmark: log, commit what is done) ---------------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.commit()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.offsets.setdefault(tp, Offsets())
        log("partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    # -- main loops ----------------------------------------------------------------------------

    async def run(self) -> None:
        a = self.args
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=a.max_connections),
            timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=10),
        )
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe([a.commands], listener=self)
        self.gc_pauses.install()  # the bridge's own timer, so both pay the same for it
        if not a.no_gc_freeze:
            gc.freeze()  # start-up objects out of the collector's way
        workers = [asyncio.create_task(self.worker()) for _ in range(a.max_in_flight)]
        committer = asyncio.create_task(self.commit_loop())
        try:
            await self.fetch_loop()
            await self.drain()
        finally:
            for task in [*workers, committer]:
                task.cancel()
            await asyncio.gather(*workers, committer, return_exceptions=True)
            await self.commit()
            await self.consumer.stop()
            await self.producer.stop()
            await self.http.close()
            self.gc_pauses.uninstall()
            log("reference stopped", "INFO", **self.counters, **self.gc_pauses.summary())

    async def fetch_loop(self) -> None:
        while not self.stopping.is_set():
            if self.buffered >= self.args.max_buffered:
                self.room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.room.wait(), 0.1)
                continue
            batch = await self.consumer.getmany(timeout_ms=100)
            for tp, messages in batch.items():
                offsets = self.offsets.setdefault(tp, Offsets())
                for m in messages:
                    offsets.pending.append(m.offset)
                    self.accept(tp, m.offset, m.value, offsets)

    def accept(self, tp: TopicPartition, offset: int, raw: bytes | None, part: Offsets) -> None:
        try:
            value = orjson.loads(raw or b"null")
            if value.get("type") != "SetOrderState":
                raise ValueError("not a SetOrderState")
            cmd = Command(tp, offset, value)
        except (ValueError, AttributeError, KeyError):
            self.counters["unsupported"] += 1
            part.finish(offset)
            return
        self.buffered += 1
        queue = self.queues.get(cmd.order_id)
        if queue is None:
            self.queues[cmd.order_id] = deque((cmd,))
            self.ready.put_nowait(cmd.order_id)
        else:
            queue.append(cmd)

    async def worker(self) -> None:
        while True:
            order_id = await self.ready.get()
            if self.stopping.is_set():
                self.ready.put_nowait(order_id)  # left for the next owner (not committed)
                return
            queue = self.queues[order_id]
            cmd = queue[0]
            self.running += 1
            self.idle.clear()
            try:
                await self.process(cmd)
            except Exception as exc:  # HttpError, UnmappableOrder, aiohttp/aiokafka errors...
                self.counters["errors"] += 1
                log("command failed", "ERROR", command_id=cmd.command_id, error=repr(exc))
            finally:
                self.running -= 1
                if not self.running:
                    self.idle.set()
            self.offsets[cmd.tp].finish(cmd.offset)
            self.buffered -= 1
            self.room.set()
            queue.popleft()
            if queue:
                self.ready.put_nowait(order_id)  # behind the orders already waiting: fair
            else:
                del self.queues[order_id]

    async def drain(self, deadline_s: float = 30.0) -> None:
        """Let the commands already started finish; those not started stay uncommitted."""
        if self.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), deadline_s)

    async def commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.args.commit_interval_s)
            await self.commit()

    async def commit(self) -> None:
        due = {
            tp: o.committable
            for tp, o in self.offsets.items()
            if o.committable > o.committed and tp in self.consumer.assignment()
        }
        if not due:
            return
        try:
            await self.consumer.commit(due)
        except Exception as exc:  # retried at the next interval with the offsets of then
            log("commit failed", "WARNING", error=repr(exc))
            return
        self.counters["commits"] += 1
        for tp, offset in due.items():
            self.offsets[tp].committed = offset

    # -- one command -----------------------------------------------------------------------------

    async def process(self, cmd: Command) -> None:
        v = cmd.value
        target: str = v["state"]
        get_url, put_url = self.order_urls(cmd.order_id)
        get_headers, put_headers = self.api_headers(v["merchant"], v["channel"])
        started = rfc3339_now()
        attempts = 0
        view = self.views.get(cmd.order_id)
        order: dict[str, Any] | None = None
        if view is None:
            body, n = await self.call("GET", get_url, get_headers)
            attempts += n
            order = orjson.loads(body)
            view = order_view(order)
        if order is not None and view[0] == target:
            outcome, reason, event = "already_applied", f"order is already {target}", None
        else:
            _, n = await self.call("PUT", put_url, put_headers, _state_body(target))
            body, m = await self.call("GET", get_url, get_headers)
            attempts += n + m
            order = orjson.loads(body)
            before, view = view, order_view(order)
            if view[1] == before[1] and view[0] == target:
                outcome, reason, event = "already_applied", f"order is already {target}", None
            else:
                outcome, reason = "applied", None
                event = self.state_event(cmd, order, before[0], view)
        self.views[cmd.order_id] = view
        assert order is not None
        snapshot = self.mapper(order, started, cmd.command_id, cmd.correlation_id)
        state = state_record(order, view, started, cmd.command_id)
        result = {
            "commandId": cmd.command_id,
            "commandType": "SetOrderState",
            "orderId": cmd.order_id,
            "merchant": v["merchant"],
            "channel": v["channel"],
            "correlationId": cmd.correlation_id,
            "outcome": outcome,
            "reason": reason,
            "currentStatus": view[0],
            "attempts": attempts,
            "processedAt": rfc3339_now(),
            "source": {"topic": cmd.tp.topic, "partition": cmd.tp.partition, "offset": cmd.offset},
        }
        await self.publish(cmd, snapshot, event, result, state)
        self.counters[outcome] += 1

    def state_event(
        self,
        cmd: Command,
        order: dict[str, Any],
        previous: str | None,
        view: tuple[str | None, int],
    ) -> dict[str, Any]:
        transitions = order["state"]["transitions"]
        new = view[0] or cmd.value["state"]
        if len(transitions) >= 2 and transitions[-1]["status"] == new:
            previous = transitions[-2]["status"]  # the order's own history
        stamp = next(
            (t.get("timeStamp") for t in reversed(transitions) if t["status"] == new), None
        )
        occurred = (rfc3339(stamp) if stamp else None) or rfc3339_now()
        return {
            "eventId": f"{cmd.command_id}:state-changed",
            "orderId": cmd.order_id,
            "merchant": cmd.value["merchant"],
            "channel": cmd.value["channel"],
            "previousStatus": previous,
            "newStatus": new,
            "transitionAt": stamp,
            "commandId": cmd.command_id,
            "correlationId": cmd.correlation_id,
            "occurredAt": occurred,
        }

    async def publish(
        self,
        cmd: Command,
        snapshot: dict[str, Any],
        event: dict[str, Any] | None,
        result: dict[str, Any],
        state: bytes,
    ) -> None:
        a, send = self.args, self.producer.send
        key = cmd.order_id.encode()
        ids: Headers = [
            ("norce.command.id", cmd.command_id.encode()),
            ("norce.order.id", key),
        ]
        if cmd.correlation_id:
            ids.append(("norce.correlation.id", cmd.correlation_id.encode()))
        h = self.schema_headers
        futures = [
            await send(
                a.snapshots, self.snapshot.encode(snapshot), key, headers=ids + h[self.snapshot]
            )
        ]
        if event is not None:
            futures.append(
                await send(a.events, self.event.encode(event), key, headers=ids + h[self.event])
            )
        futures.append(
            await send(a.results, self.result.encode(result), key, headers=ids + h[self.result])
        )
        futures.append(
            await send(a.order_state, state, key, partition=cmd.tp.partition, headers=ids[:1])
        )
        for future in futures:
            await future

    async def call(
        self, method: str, url: yarl.URL, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[bytes, int]:
        """One API call, retried on 5xx/429 in a plain loop: (body, attempts)."""
        assert self.http is not None
        attempts = 0
        while True:
            attempts += 1
            async with self.http.request(method, url, headers=headers, data=body) as resp:
                data = await resp.read()
                status = resp.status
            if status < 300:
                return data, attempts
            if status not in RETRY_STATUSES or attempts >= 10:
                raise HttpError(method, status, data)
            await asyncio.sleep(0.05 * attempts)

    def order_urls(self, order_id: str) -> tuple[yarl.URL, yarl.URL]:
        urls = self.urls.get(order_id)
        if urls is None:
            base = self.base + urllib.parse.quote(order_id, safe="")
            urls = yarl.URL(base, encoded=True), yarl.URL(base + "/state", encoded=True)
            if len(self.urls) >= 100_000:
                self.urls.clear()
            self.urls[order_id] = urls
        return urls

    def api_headers(self, merchant: str, channel: str) -> tuple[dict[str, str], dict[str, str]]:
        headers = self.headers.get((merchant, channel))
        if headers is None:
            get = {
                "Authorization": f"Bearer {self.args.api_key}",
                "x-merchant": merchant,
                "x-channel": channel,
                "x-adapterid": self.args.adapter_id,
                "Accept": "application/json",
            }
            headers = get, {**get, "Content-Type": "application/json"}
            self.headers[(merchant, channel)] = headers
        return headers


_STATE_BODIES: dict[str, bytes] = {}


def _state_body(state: str) -> bytes:
    body = _STATE_BODIES.get(state)
    if body is None:
        body = _STATE_BODIES[state] = orjson.dumps({"currentStatus": state})
    return body


def state_record(
    order: dict[str, Any], view: tuple[str | None, int], at: str, command_id: str
) -> bytes:
    """The order state store's record of ``order`` (``bridge.order_state.OrderState.encode``)."""
    digest = hashlib.sha256(orjson.dumps(order, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return orjson.dumps(
        {
            "v": 1,
            "status": view[0],
            "transitions": view[1],
            "deleted": False,
            "digest": digest,
            "at": at,
            "commandId": command_id,
        }
    )


def order_view(order: dict[str, Any]) -> tuple[str | None, int]:
    state = order.get("state") or {}
    return state.get("currentStatus"), len(state.get("transitions") or ())


async def amain(args: argparse.Namespace) -> int:
    ref = Reference(args)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ref.stopping.set)
    await ref.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv, os.environ)))


if __name__ == "__main__":
    sys.exit(main())
