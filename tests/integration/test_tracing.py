"""Tracing end to end on the real broker and the simulator, spans in the SDK's in-memory exporter.

A command produced inside an upstream PRODUCER span → the bridge's CONSUMER span (its child) →
CLIENT spans per Norce call (children of the consumer span, their ``traceparent`` received by
the simulator) and PRODUCER spans per output record (children of the consumer span, their
context in each output record's headers) — one trace id from the upstream service to the
outputs, dead letters included.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bridge_devkit.harness import JSON_HEADERS, Bridge, set_state, simulator
from bridge_devkit.harness.topics import API_KEY, make_settings
from bridge_devkit.harness.util import poll_until
from norce_simulator import SimulatorHandle
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import SecretStr

from bridge.app import Service, build_service, ensure_topics
from bridge.commands import command_to_json
from bridge.tracing_otel import OtelTracing

pytestmark = pytest.mark.broker

W3C = TraceContextTextMapPropagator()


class TracedBridge(Bridge):
    """The harness's in-process bridge with a given tracing, keeping every raw output record."""

    def __init__(self, *args: Any, tracing: OtelTracing) -> None:
        super().__init__(*args)
        self.tracing = tracing
        self.raw: list[tuple[str, Any]] = []

    def on_record(self, topic: str, partition: int, message: Any) -> None:
        self.raw.append((topic, message))

    async def start(self) -> Service:
        self.service = await build_service(
            self.settings, api_key=SecretStr(API_KEY), tracing=self.tracing
        )
        self.task = asyncio.create_task(self.service.runtime.run())
        return self.service


@contextlib.asynccontextmanager
async def traced_bridge(
    bootstrap: str, sim: SimulatorHandle, producer_spans: str = "command"
) -> AsyncIterator[tuple[TracedBridge, InMemorySpanExporter]]:
    settings = make_settings(bootstrap, sim.url, partitions=2)
    await ensure_topics(settings, {})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = OtelTracing(
        provider,
        group_id=settings.kafka.group_id,
        norce_base_url=sim.url,
        producer_spans=producer_spans,
    )
    bridge = TracedBridge(bootstrap, sim, settings, tracing=tracing)
    try:
        await bridge.start()
        yield bridge, exporter
    finally:
        await bridge.aclose()
        provider.shutdown()


def upstream_headers(tracestate: str = "upstream=1") -> tuple[list[tuple[str, bytes]], Any]:
    """Headers of a command sent from inside an upstream service's PRODUCER span."""
    provider = TracerProvider()
    span = provider.get_tracer("upstream").start_span("send commands", kind=SpanKind.PRODUCER)
    carrier: dict[str, str] = {}
    W3C.inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    carrier["tracestate"] = tracestate
    headers = [*JSON_HEADERS, *((k, v.encode()) for k, v in carrier.items())]
    return headers, span.get_span_context()


def parse_traceparent(value: str | bytes) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    _, trace_id, span_id, _ = text.split("-")
    return int(trace_id, 16), int(span_id, 16)


def header_values(message: Any, name: str) -> list[bytes]:
    return [v for k, v in message.headers if k == name]


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def attr(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


@pytest.mark.parametrize("producer_spans", ["command", "record"])
async def test_a_command_is_one_trace_from_the_upstream_producer_to_every_output(
    kafka_bootstrap: str, producer_spans: str
) -> None:
    async with (
        simulator() as sim,
        traced_bridge(kafka_bootstrap, sim, producer_spans) as (bridge, exporter),
    ):
        (order_id,) = sim.app.seed(1, "norce", "1")
        cmd = set_state(order_id, "processing", correlation_id="corr-t")
        headers, upstream = upstream_headers()
        partition, offset = await bridge.send_raw(
            command_to_json(cmd), key=order_id.encode(), headers=headers
        )
        out = await bridge.all_handled()
        assert [r["outcome"] for r in out.results_by_command()[cmd.command_id]] == ["applied"]
        await poll_until(
            lambda: any(s.kind == SpanKind.CONSUMER for s in exporter.get_finished_spans()),
            10,
            "the consumer span",
        )
        spans = exporter.get_finished_spans()
        assert {s.context.trace_id for s in spans} == {upstream.trace_id}

        (consumer,) = by_kind(spans, SpanKind.CONSUMER)
        assert parent_id(consumer) == upstream.span_id
        assert consumer.name == f"process {bridge.topics.commands}"
        attrs = dict(consumer.attributes or {})
        assert attrs["messaging.system"] == "kafka"
        assert attrs["messaging.operation.type"] == "process"
        assert attrs["messaging.destination.name"] == bridge.topics.commands
        assert attrs["messaging.destination.partition.id"] == str(partition)
        assert attrs["messaging.kafka.offset"] == offset
        assert attrs["messaging.kafka.message.key"] == order_id
        assert attrs["messaging.consumer.group.name"] == bridge.settings.kafka.group_id
        assert attrs["norce.command.id"] == cmd.command_id
        assert attrs["norce.order.id"] == order_id
        assert attrs["norce.command.outcome"] == "applied"
        assert consumer.status.status_code != StatusCode.ERROR

        # CLIENT spans: children of the consumer span; Norce received each one's context.
        clients = by_kind(spans, SpanKind.CLIENT)
        assert {attr(c, "http.request.method") for c in clients} >= {"PUT", "GET"}
        assert all(parent_id(c) == consumer.context.span_id for c in clients)
        put = next(c for c in clients if attr(c, "http.request.method") == "PUT")
        assert put.name == "PUT /api/v0/checkout/orders/{orderId}/state"
        assert attr(put, "http.response.status_code") == 200
        assert attr(put, "url.full").endswith(f"/orders/{order_id}/state")
        received = [parse_traceparent(c["headers"]["traceparent"]) for c in sim.app.calls(order_id)]
        assert sorted(received) == sorted((c.context.trace_id, c.context.span_id) for c in clients)

        # PRODUCER spans, children of the consumer span: one for the command's outputs (a
        # batch send), or one per output record; their context is in the records' headers
        # (with the upstream tracestate carried on).
        producers = by_kind(spans, SpanKind.PRODUCER)
        assert all(parent_id(p) == consumer.context.span_id for p in producers)
        topics = bridge.topics
        sent_to = (topics.snapshots, topics.events, topics.results, topics.order_state)
        if producer_spans == "command":
            (batch,) = producers
            assert batch.name == "send"
            assert attr(batch, "messaging.batch.message_count") == 4
            assert attr(batch, "norce.output.kinds") == "snapshot,event,result,order_state"
            assert attr(batch, "messaging.kafka.message.key") == order_id
            span_of = dict.fromkeys(sent_to, batch.context.span_id)
        else:
            assert sorted(p.name for p in producers) == sorted(f"send {t}" for t in sent_to)
            span_of = {attr(p, "messaging.destination.name"): p.context.span_id for p in producers}
        outputs = [(t, m) for t, m in bridge.raw if t in sent_to]
        assert len(outputs) == 3
        for topic, message in outputs:
            (tp,) = header_values(message, "traceparent")
            assert parse_traceparent(tp) == (upstream.trace_id, span_of[topic])
            assert header_values(message, "tracestate") == [b"upstream=1"]

        # No secret in any attribute.
        for span in spans:
            for value in (span.attributes or {}).values():
                assert API_KEY not in str(value)
                assert "Bearer" not in str(value)


async def test_a_dead_letter_carries_the_bridge_context_after_the_original_headers(
    kafka_bootstrap: str,
) -> None:
    async with simulator() as sim, traced_bridge(kafka_bootstrap, sim) as (bridge, exporter):
        headers, upstream = upstream_headers()
        await bridge.send_raw(b'{"type": "SetOrderState", "oops"', key=b"k", headers=headers)
        await bridge.collect(lambda o: len(o.dlq) == 1, 60)
        await poll_until(
            lambda: any(s.kind == SpanKind.CONSUMER for s in exporter.get_finished_spans()),
            10,
            "the consumer span",
        )
        spans = exporter.get_finished_spans()
        (consumer,) = by_kind(spans, SpanKind.CONSUMER)
        assert consumer.context.trace_id == upstream.trace_id
        assert parent_id(consumer) == upstream.span_id
        assert consumer.status.status_code == StatusCode.ERROR
        assert attr(consumer, "norce.dead_letter.reason") == "invalid_json"
        assert not by_kind(spans, SpanKind.CLIENT)
        (dlq_span,) = by_kind(spans, SpanKind.PRODUCER)
        assert dlq_span.name == f"send {bridge.topics.dlq}"
        assert attr(dlq_span, "norce.output.kinds") == "dlq"
        (dead,) = [m for t, m in bridge.raw if t == bridge.topics.dlq]
        original, ours = header_values(dead, "traceparent")
        # The original header stays as it was (first, before the diagnosis: a replay re-sends
        # it); the bridge's producer context comes last (what lastHeader-readers see).
        assert original == dict(headers)["traceparent"]
        assert parse_traceparent(ours) == (upstream.trace_id, dlq_span.context.span_id)
        assert [k for k, _ in dead.headers][-1] in ("traceparent", "tracestate")


async def test_a_command_without_trace_context_starts_a_trace(kafka_bootstrap: str) -> None:
    async with simulator() as sim, traced_bridge(kafka_bootstrap, sim) as (bridge, exporter):
        (order_id,) = sim.app.seed(1, "norce", "1")
        await bridge.send(set_state(order_id, "processing"))
        await bridge.all_handled()
        await poll_until(
            lambda: any(s.kind == SpanKind.CONSUMER for s in exporter.get_finished_spans()),
            10,
            "the consumer span",
        )
        spans = exporter.get_finished_spans()
        (consumer,) = by_kind(spans, SpanKind.CONSUMER)
        assert consumer.parent is None
        assert {s.context.trace_id for s in spans} == {consumer.context.trace_id}
        for topic, message in bridge.raw:
            (tp,) = header_values(message, "traceparent")
            assert parse_traceparent(tp)[0] == consumer.context.trace_id, topic
