"""Unit tests of bridge.tracing: when it is on, what it loads, its Norce client spans."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import SecretStr

from bridge.config import BridgeSettings, OtelSettings, RetrySettings, otel_requested
from bridge.errors import ConfigError
from bridge.norce import NorceClient, build_http_client
from bridge.outputs import SourceRecord
from bridge.settle import EncodedRecord
from bridge.tracing import NO_TRACING, build_tracing
from bridge.tracing_otel import OtelTracing

API_KEY = "tracing-secret-api-key"
BASE = "http://127.0.0.1:8089/checkout/order/"


@pytest.mark.parametrize(
    ("enabled", "environ", "expected"),
    [
        (None, {}, (False, "default")),
        (True, {}, (True, "BRIDGE_OTEL__ENABLED")),
        (False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, (False, "BRIDGE_OTEL__ENABLED")),
        (
            None,
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            (True, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ),
        (
            None,
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
            (True, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ),
        (None, {"OTEL_TRACES_EXPORTER": "otlp"}, (True, "OTEL_TRACES_EXPORTER")),
        (None, {"OTEL_TRACES_EXPORTER": "none"}, (False, "OTEL_TRACES_EXPORTER")),
        (
            None,
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
            (False, "OTEL_TRACES_EXPORTER"),
        ),
        (True, {"OTEL_SDK_DISABLED": "true"}, (False, "OTEL_SDK_DISABLED")),
        (
            None,
            {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"},
            (True, "OTEL_TRACES_EXPORTER"),
        ),
    ],
)
def test_when_tracing_is_on(
    enabled: bool | None, environ: dict[str, str], expected: tuple[bool, str]
) -> None:
    assert otel_requested(OtelSettings(enabled=enabled), environ) == expected


def test_the_setting_is_read_from_bridge_otel_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_OTEL__ENABLED", "true")
    assert BridgeSettings().otel.enabled is True


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
        check=False,
    )


def test_with_tracing_off_nothing_of_opentelemetry_is_imported() -> None:
    done = _run_python(
        """
        import os, sys
        import bridge.app, bridge.cli, bridge.worker, bridge.norce
        from bridge.config import BridgeSettings
        from bridge.tracing import NO_TRACING, build_tracing
        assert build_tracing(BridgeSettings(), os.environ) is NO_TRACING
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        assert "bridge.tracing_otel" not in sys.modules
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_tracing_on_without_the_package_fails_start_up_with_one_line() -> None:
    # The package is installed here: the child makes `import opentelemetry` fail as if not.
    done = _run_python(
        """
        import sys
        sys.modules["opentelemetry"] = None
        from bridge.cli import main
        sys.exit(main(["run"]))
        """,
        BRIDGE_OTEL__ENABLED="true",
        BRIDGE_NORCE__API_KEY=API_KEY,
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "order-bridge: tracing is enabled but OpenTelemetry is not installed"
    )
    assert "pip install 'norce-order-bridge[otel]'" in lines[0]


def test_build_tracing_off_is_the_no_op() -> None:
    assert build_tracing(BridgeSettings(), {}) is NO_TRACING
    assert not NO_TRACING.enabled


def test_build_tracing_with_no_exporter_still_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    tracing = build_tracing(
        BridgeSettings(otel=OtelSettings(enabled=True)), {"OTEL_TRACES_EXPORTER": "none"}
    )
    assert isinstance(tracing, OtelTracing)
    assert tracing.provider.resource.attributes["service.name"] == "norce-order-bridge"
    tracing.shutdown()


def test_the_service_name_comes_from_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-bridge-eu")
    tracing = build_tracing(
        BridgeSettings(otel=OtelSettings(enabled=True)), {"OTEL_TRACES_EXPORTER": "none"}
    )
    assert isinstance(tracing, OtelTracing)
    assert tracing.provider.resource.attributes["service.name"] == "orders-bridge-eu"
    tracing.shutdown()


@pytest.mark.parametrize("exporter", ["console", "otlp"])
def test_build_tracing_builds_the_named_exporter(exporter: str) -> None:
    tracing = build_tracing(
        BridgeSettings(otel=OtelSettings(enabled=True)),
        {"OTEL_TRACES_EXPORTER": exporter, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"},
    )
    assert tracing.enabled
    tracing.shutdown()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "zipkin"},
            "OTEL_TRACES_EXPORTER: unknown span exporter 'zipkin'",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json'"),
    ],
)
def test_unknown_exporters_and_protocols_are_one_line_config_errors(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        build_tracing(BridgeSettings(otel=OtelSettings(enabled=True)), environ)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


@pytest.fixture
def spans() -> Iterator[tuple[OtelTracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield (
        OtelTracing(provider, group_id="g", norce_base_url=BASE),
        exporter,
    )
    provider.shutdown()


async def test_each_norce_attempt_is_a_client_span_whose_context_norce_receives(
    spans: tuple[OtelTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans
    answers = [httpx.Response(503), httpx.Response(200)]
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answers.pop(0)

    http = build_http_client(BASE, transport=httpx.MockTransport(handler))
    client = NorceClient(
        http,
        api_key=SecretStr(API_KEY),
        retry=RetrySettings(base_delay_s=0.0, max_delay_s=0.0),
        tracing=tracing,
    )
    await client.set_state("o_1", "accepted", merchant="norce", channel="1")
    await http.aclose()

    first, second = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    for span, request in ((first, sent[0]), (second, sent[1])):
        assert span.kind == SpanKind.CLIENT
        assert span.name == "PUT /checkout/order/api/v0/checkout/orders/{orderId}/state"
        ctx = span.context
        assert request.headers["traceparent"].startswith(
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-"
        )
        attrs = dict(span.attributes or {})
        assert attrs["url.full"] == f"{BASE}api/v0/checkout/orders/o_1/state"
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["server.port"] == 8089
        assert all(API_KEY not in str(v) for v in attrs.values())
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes is not None
    assert first.attributes["error.type"] == "503"
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes is not None
    assert second.attributes["http.response.status_code"] == 200
    assert second.attributes["http.request.resend_count"] == 1
    assert second.status.status_code == StatusCode.UNSET


async def test_a_transport_failure_names_its_class_not_its_message(
    spans: tuple[OtelTracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = spans

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused, key {API_KEY}")

    http = build_http_client(BASE, transport=httpx.MockTransport(handler))
    client = NorceClient(
        http,
        api_key=SecretStr(API_KEY),
        retry=RetrySettings(max_attempts=1),
        tracing=tracing,
    )
    with pytest.raises(Exception, match="connection"):
        await client.get_order_json("o_1", merchant="norce", channel="1")
    await http.aclose()
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["error.type"] == "NorceConnectionError"
    assert span.name == "GET /checkout/order/api/v0/checkout/orders/{orderId}"
    assert not span.events  # no exception message recorded
    assert all(API_KEY not in str(v) for v in span.attributes.values())


def _source(headers: tuple[tuple[str, bytes | None], ...]) -> SourceRecord:
    return SourceRecord("cmds", 2, 41, b"o_1", b"{}", headers, 0)


def _records() -> list[EncodedRecord]:
    return [
        ("snaps", b"o_1", b"s", [("norce.command.id", b"c-1")], None),
        ("snaps", b"o_1", None, [], None),
        ("state", b"o_1", b"{}", [], 2),
    ]


@pytest.mark.parametrize("producer_spans", ["command", "record"])
def test_the_outputs_carry_their_producer_span_and_the_last_traceparent_is_continued(
    producer_spans: str,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = OtelTracing(
        provider, group_id="g", norce_base_url=BASE, producer_spans=producer_spans
    )
    stale = b"00-11111111111111111111111111111111-2222222222222222-01"
    upstream = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    trace = tracing.consume(_source((("traceparent", stale), ("traceparent", upstream))), None)
    out = trace.produce(_records(), {"snaps": "snapshot", "state": "order_state"})
    trace.published(True)
    trace.end()
    spans = exporter.get_finished_spans()
    (consumer,) = [s for s in spans if s.kind == SpanKind.CONSUMER]
    assert consumer.parent is not None
    assert consumer.parent.trace_id == 0x0AF7651916CD43DD8448EB211C80319C  # the last header
    producers = {s.context.span_id: s for s in spans if s.kind == SpanKind.PRODUCER}
    assert len(producers) == (1 if producer_spans == "command" else 3)
    for (topic, key, value, headers, partition), original in zip(out, _records(), strict=True):
        assert (topic, key, value, partition) == (
            original[0],
            original[1],
            original[2],
            original[4],
        )
        assert headers[: len(original[3])] == original[3]  # the record's own headers first
        (name, tp), *_ = headers[len(original[3]) :]
        assert name == "traceparent"
        assert tp is not None
        assert int(tp.split(b"-")[2], 16) in producers
    if producer_spans == "record":
        tombstone = [
            s for s in producers.values() if attr_of(s, "messaging.kafka.message.tombstone")
        ]
        assert len(tombstone) == 1
        (state,) = [s for s in producers.values() if s.name == "send state"]
        assert attr_of(state, "messaging.destination.partition.id") == "2"
    provider.shutdown()


def attr_of(span: ReadableSpan, name: str) -> object:
    return (span.attributes or {}).get(name)


def test_outputs_not_published_end_their_spans_as_errors() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = OtelTracing(provider, group_id="g", norce_base_url=BASE)
    trace = tracing.consume(_source(()), None)
    trace.produce(_records(), {})
    trace.end()  # the partition was revoked before publishing
    (producer,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert producer.status.status_code == StatusCode.ERROR
    (consumer,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CONSUMER]
    assert consumer.parent is None  # no context on the record: a new trace
    provider.shutdown()


def test_the_no_op_hands_records_back_untouched() -> None:
    records = _records()
    trace = NO_TRACING.consume(_source(()), None)
    assert trace.produce(records, {}) is records
    trace.published(True)
    trace.end()
    span = NO_TRACING.client("GET", "get_order", "x", 0)
    headers = {"a": "b"}
    assert span.inject(headers) is headers
    span.succeeded(200)
    NO_TRACING.shutdown()
