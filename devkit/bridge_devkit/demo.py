"""``order-bridge demo``: the whole bridge on embedded defaults, with a readable summary.

Starts the local Kafka broker (or uses ``KAFKA_BOOTSTRAP_SERVERS``) and the Norce API simulator,
creates topics, seeds orders, sends a scripted mix of commands (full lifecycles, a
processing → checkout loop, deletes and a repeated delete, a failed precondition, an expired
command, an illegal transition, malformed records), runs the bridge until every record is
accounted for (a command result or a dead letter), then prints counts by outcome, the dead letters
with their reasons and a decoded snapshot and event. Then the change feed (issue 14): the bridge's
notification ingress is registered with the simulator as a channel notification, a "payment
adapter" moves an order through the simulator's admin API, and the demo waits until Norce's
notification has come back as that order's snapshot and an ``OrderStateChanged`` with
``source=external``. Exit code 0 when everything was handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
import textwrap
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from norce_simulator.admin_client import SimulatorAdmin
from pydantic import SecretStr

from bridge.app import build_service
from bridge.codec import AvroCodec
from bridge.commands import DeleteOrder, SetOrderState, command_to_avro_record, command_to_json
from bridge.config import (
    BridgeSettings,
    HttpSettings,
    IngressSettings,
    KafkaSettings,
    NorceSettings,
    ProcessingSettings,
    SchemaRegistrySettings,
)
from bridge.logs import configure_logging
from bridge.order_model import OrderStatus
from bridge_devkit.harness import (
    JSON_HEADERS,
    OutputCollector,
    Outputs,
    async_broker,
    command_producer,
    delete,
    fresh_topics,
    set_state,
    simulator,
    unique,
)
from bridge_devkit.harness.outputs import DLQ_REASON

LIFECYCLES: list[list[str]] = [
    ["processing", "accepted", "completed"],
    ["processing", "checkout", "processing", "accepted", "declined"],
    ["processing", "accepted", "completed"],
    ["DELETE", "DELETE"],
    ["processing", "accepted"],
    ["processing", "removed"],
]


def _say(text: str) -> None:
    print(text, flush=True)


def build_script(
    order_ids: list[str], merchant: str, channel: str
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """(key, value, headers) records: lifecycles per order, plus edge cases and malformed input."""
    now = datetime.now(UTC)
    out: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
    json_h = JSON_HEADERS

    def cmd(order_id: str, state: str | None, **extra: Any) -> SetOrderState | DeleteOrder:
        extra.setdefault("command_id", f"demo-{uuid.uuid4().hex[:12]}")
        extra.setdefault("correlation_id", f"demo-run-{order_id[-6:]}")
        extra["issued_at"] = now
        if state is None:
            return delete(order_id, merchant=merchant, channel=channel, **extra)
        return set_state(order_id, state, merchant=merchant, channel=channel, **extra)

    special = order_ids[-4:]
    for i, order_id in enumerate(order_ids[:-4]):
        for step in LIFECYCLES[i % len(LIFECYCLES)]:
            c = cmd(order_id, None if step == "DELETE" else step)
            out.append((order_id.encode(), command_to_json(c), json_h))
    precond, expired, illegal, avro_order = special
    # a failed precondition (order is in checkout, not processing): rejected
    out.append(
        (
            precond.encode(),
            command_to_json(cmd(precond, "accepted", expected_state=OrderStatus("processing"))),
            json_h,
        )
    )
    # an expired command: reported as expired, not executed
    out.append(
        (
            expired.encode(),
            command_to_json(cmd(expired, "processing", expires_at=now - timedelta(minutes=5))),
            json_h,
        )
    )
    # an illegal transition (checkout -> completed): the API rejects it for good → dead letter
    out.append((illegal.encode(), command_to_json(cmd(illegal, "completed")), json_h))
    # the same command contract in Avro (told apart by the marker bytes)
    avro = AvroCodec.load(BridgeSettings().schemas_dir).encode(
        "OrderCommand", command_to_avro_record(cmd(avro_order, "processing"))
    )
    out.append((avro_order.encode(), avro, [("content-type", b"application/avro")]))
    malformed: list[tuple[bytes | None, bytes | None]] = [
        (b"x", b"{not json"),
        (
            b"x",
            json.dumps(
                {"type": "ShipOrder", "commandId": "bad-type", "orderId": order_ids[0]}
            ).encode(),
        ),
        (
            b"x",
            json.dumps(
                {
                    "type": "SetOrderState",
                    "commandId": "no-order",
                    "merchant": merchant,
                    "channel": channel,
                    "issuedAt": now.isoformat(),
                    "state": "accepted",
                }
            ).encode(),
        ),
        (
            b"x",
            json.dumps(
                {
                    "type": "DeleteOrder",
                    "commandId": "traversal",
                    "orderId": "../../etc/passwd",
                    "merchant": merchant,
                    "channel": channel,
                    "issuedAt": now.isoformat(),
                }
            ).encode(),
        ),
        (
            b"x",
            json.dumps(
                {
                    "type": "SetOrderState",
                    "commandId": "bad-state",
                    "orderId": order_ids[0],
                    "merchant": merchant,
                    "channel": channel,
                    "issuedAt": now.isoformat(),
                    "state": "shipped",
                }
            ).encode(),
        ),
        (b"x", b"\xff\xfe not utf-8"),
        (b"x", b"[1, 2, 3]"),
        (b"x", None),
        (b"x", b"\xc3\x01" + b"\x00" * 12),
        (b"x", b'{"type": "DeleteOrder", "pad": "' + b"a" * 70_000 + b'"}'),
    ]
    for key, value in malformed:
        out.append((key, value, []))
    return out


async def run_demo(
    *, orders: int = 24, verbose: bool = False, schema_registry: bool = False
) -> int:
    configure_logging("INFO" if verbose else "ERROR")
    if not verbose:
        # aiokafka logs the broker's transient "coordinator not available yet" at ERROR while a
        # fresh broker elects its group coordinator; the demo's summary says what matters.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    started = time.monotonic()
    async with async_broker(lambda text: _say(f"[demo] {text}")) as bootstrap:
        return await _run(bootstrap, orders, started, schema_registry)


async def _registry(stack: contextlib.AsyncExitStack) -> str:
    """A schema registry for ``--schema-registry``: SCHEMA_REGISTRY_URL or a local Apicurio."""
    from bridge_devkit.localregistry import LocalRegistry, external_registry

    external = external_registry()
    if external:
        _say(f"[demo] schema registry {external} (SCHEMA_REGISTRY_URL)")
        return external
    registry = LocalRegistry()
    _say("[demo] starting a local Apicurio Registry (needs Java 21+) ...")
    await asyncio.to_thread(registry.start)
    stack.push_async_callback(asyncio.to_thread, registry.cleanup)
    _say(f"[demo] schema registry at {registry.url}, ready in {registry.cold_start_s:.1f}s")
    return registry.url


async def _run(bootstrap: str, orders: int, started: float, schema_registry: bool) -> int:
    api_key = secrets.token_urlsafe(24)
    async with contextlib.AsyncExitStack() as stack:
        registry_url = await _registry(stack) if schema_registry else None
        sim = await stack.enter_async_context(simulator(api_keys=(api_key,), seed=7))
        order_ids = sim.app.seed(max(orders, 8), "norce", "1")
        [feed_order] = sim.app.seed(1, "norce", "1", status="processing")
        _say(f"[demo] Norce API simulator at {sim.url} with {len(order_ids) + 1} seeded orders")
        webhook_secret = secrets.token_urlsafe(24)
        settings = BridgeSettings(
            kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=unique("demo")),
            topics=fresh_topics("demo", 3),
            norce=NorceSettings(base_url=sim.url),
            processing=ProcessingSettings(drain_deadline_s=10, commit_interval_s=0.5),
            http=HttpSettings(host="127.0.0.1", port=0),
            ingress=IngressSettings(
                enabled=True, host="127.0.0.1", port=0, secret=SecretStr(webhook_secret)
            ),
            schema_registry=SchemaRegistrySettings(url=registry_url),
        )
        service = await build_service(settings, api_key=SecretStr(api_key))
        stack.push_async_callback(service.aclose)
        codec = service.codec or AvroCodec.load(settings.schemas_dir)
        if registry_url is not None:
            _say(
                "[demo] outputs in the Confluent wire format (content-type "
                f"{codec.content_type}), schemas registered at start-up"
            )
        assert service.health is not None
        _say(f"[demo] bridge metrics at {service.health.url}/metrics")
        script = build_script(order_ids, "norce", "1")
        producer = command_producer(bootstrap)
        await producer.start()
        expected: set[tuple[int, int]] = set()
        try:
            for key, value, headers in script:
                md = await producer.send_and_wait(
                    settings.topics.commands, value, key=key, headers=headers
                )
                expected.add((md.partition, md.offset))
        finally:
            await producer.stop()
        _say(f"[demo] sent {len(script)} records ({len(script) - 10} commands, 10 malformed)")
        run_task = asyncio.create_task(service.runtime.run())
        outcome = await _watch(bootstrap, settings, expected, run_task, codec)
        if outcome == 0 and service.notifications and service.notifications.server:
            feed = FeedDemo(
                sim.url, settings, service.notifications.server.port, webhook_secret, codec
            )
            outcome = await feed.run(bootstrap, feed_order, run_task)
        service.runtime.stop()
        await run_task
        _say(f"[demo] done in {time.monotonic() - started:.1f}s")
        return outcome


class FeedDemo:
    """The change feed, end to end: a change made in Norce by another adapter comes back as the
    order's snapshot and an ``OrderStateChanged`` (``source=external``) through a notification."""

    def __init__(
        self, sim_url: str, settings: BridgeSettings, port: int, secret: str, codec: AvroCodec
    ) -> None:
        self.codec = codec
        self.sim_url = sim_url
        self.settings = settings
        self.url = f"http://127.0.0.1:{port}"
        self.secret = secret

    async def run(self, bootstrap: str, order_id: str, run_task: asyncio.Task[None]) -> int:
        _say("")
        _say("=== change feed (Norce notifications) ===")
        async with SimulatorAdmin(self.sim_url) as admin:
            # What a Norce adapter channel configuration does: notify the bridge's ingress of
            # every status change of the channel's orders, with the shared secret as a header.
            await admin.set_adapter(
                "order-bridge", self.url, {self.settings.ingress.secret_header: self.secret}
            )
            await admin.register_channel(
                "norce",
                "1",
                [
                    {
                        "adapterId": "order-bridge",
                        "reference": "order-bridge-change-feed",
                        "description": "every status change, to norce-order-bridge",
                        "scope": "/state/currentStatus",
                        "invoke": "{configuration.adapter.internalUrl}/notifications",
                    }
                ],
            )
            _say(f"[demo] notification ingress at {self.url}/notifications (shared secret)")
            started = time.monotonic()
            await admin.change_state(order_id, "accepted", adapter_id="payment-adapter")
            _say(
                f"[demo] the payment adapter moved order {order_id} processing -> accepted "
                "in Norce (simulator admin API), not through the bridge"
            )
            codec = self.codec

            def external(out: Outputs) -> dict[str, Any] | None:
                for name, ev in out.events:
                    mine = name == "OrderStateChanged" and ev.get("orderId") == order_id
                    if mine and ev.get("source") == "external":
                        return ev
                return None

            def snapshots(out: Outputs) -> list[dict[str, Any]]:
                return [snap for key, snap in out.snapshots if key == order_id and snap is not None]

            def refreshed(out: Outputs) -> bool:
                # The event and the snapshot go to different topics: the collector may read one
                # before the other, so wait for both (the snapshot at the new status).
                snaps = snapshots(out)
                return (
                    external(out) is not None
                    and bool(snaps)
                    and snaps[-1]["state"]["currentStatus"] == "accepted"
                )

            async with OutputCollector(bootstrap, self.settings.topics, codec) as collector:
                out = await collector.collect(
                    lambda o: refreshed(o) or run_task.done(), timeout_s=60
                )
            attempts = await admin.attempts(order_id=order_id)
        event = external(out)
        if event is None:
            _say("[demo] FAILED: no OrderStateChanged with source=external arrived within 60 s")
            return 1
        took = time.monotonic() - started
        snapshot = snapshots(out)
        delivered = [a for a in attempts if a.get("status") == 200]
        _say(f"notification    : {len(delivered)} delivery answered 200 by the bridge's ingress")
        _say(
            "external event  : "
            + json.dumps(
                {k: event[k] for k in ("orderId", "previousStatus", "newStatus", "source")}
            )
        )
        if snapshot:
            _say(f"snapshot        : status {snapshot[-1]['state']['currentStatus']}")
        _say(f"change -> event : {took * 1000:,.0f} ms")
        return 0


async def _watch(
    bootstrap: str,
    settings: BridgeSettings,
    expected: set[tuple[int, int]],
    run_task: asyncio.Task[None],
    codec: AvroCodec,
) -> int:
    last_print = 0.0
    last_count = -1

    def done(out: Outputs) -> bool:
        """Progress: a line when the count moved (at most every 0.5 s) and the last one."""
        nonlocal last_print, last_count
        count = len(out.answered() & expected)
        finished = out.answered() >= expected or run_task.done()
        now = time.monotonic()
        if count != last_count and (finished or now - last_print > 0.5):
            last_print, last_count = now, count
            _say(f"[demo] handled {count}/{len(expected)} records")
        return finished

    async with OutputCollector(bootstrap, settings.topics, codec) as collector:
        out = await collector.collect(done, timeout_s=120)
    seen = out.answered()
    outcomes = Counter(r["outcome"] for r in out.results)
    dead = [
        (
            h[DLQ_REASON].decode(errors="replace"),
            textwrap.shorten(h["__connect.errors.exception.message"].decode(errors="replace"), 110),
        )
        for letters in out.dlq_at.values()
        for h in letters
    ]
    tombstones = sum(1 for _, snap in out.snapshots if snap is None)
    snapshot = next((snap for _, snap in out.snapshots if snap is not None), None)
    event = next((ev for name, ev in out.events if name == "OrderStateChanged"), None)
    ok = seen >= expected
    _say("")
    _say("=== summary ===")
    _say(f"records handled : {len(seen & expected)}/{len(expected)}")
    _say("results by outcome: " + ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())))
    _say(f"tombstones      : {tombstones}")
    _say(f"dead letters    : {len(dead)}")
    for reason, message in sorted(dead):
        _say(f"  - {reason:<16} {message}")
    if snapshot is not None:
        cart = snapshot.get("cart") or {}
        _say(
            "sample snapshot : "
            + json.dumps(
                {
                    "id": snapshot["id"],
                    "status": snapshot["state"]["currentStatus"],
                    "transitions": [t["status"] for t in snapshot["state"]["transitions"]],
                    "items": len(cart.get("items") or []),
                    "total": snapshot.get("total"),
                    "commandId": snapshot.get("commandId"),
                }
            )
        )
    if event is not None:
        _say(
            "sample event    : "
            + json.dumps(
                {
                    k: event[k]
                    for k in ("orderId", "previousStatus", "newStatus", "transitionAt", "commandId")
                }
            )
        )
    if not ok:
        missing = sorted(expected - seen)[:10]
        _say(f"[demo] FAILED: {len(expected - seen)} records were not handled, e.g. {missing}")
        if run_task.done() and run_task.exception() is not None:
            _say(f"[demo] the bridge stopped: {run_task.exception()!r}")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(asyncio.run(run_demo()))
