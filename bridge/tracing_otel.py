"""The OpenTelemetry implementation of :mod:`bridge.tracing` (imported only when tracing is on).

Spans follow the OpenTelemetry semantic conventions for messaging (Kafka) and HTTP clients:

* CONSUMER ``process <commands topic>`` per command record, child of the record's
  ``traceparent`` (a new trace when it has none or an invalid one): ``messaging.system=kafka``,
  ``messaging.operation.type=process``, ``messaging.destination.name``,
  ``messaging.destination.partition.id``, ``messaging.consumer.group.name``,
  ``messaging.kafka.offset``, ``messaging.kafka.message.key``, plus the command's
  ``norce.command.id``, ``norce.command.type``, ``norce.order.id``, ``norce.correlation.id`` and,
  at the end, ``norce.command.outcome`` (and ``norce.dead_letter.reason``);
* CLIENT ``<METHOD> <url.template>`` per HTTP attempt to Norce (a retry is a new span with
  ``http.request.resend_count``): ``http.request.method``, ``url.template`` (the path with
  ``{orderId}``: low cardinality), ``url.full`` (the real URL: order ids are not secret, they
  are the Kafka keys; no credentials are ever in it), ``server.address``/``server.port``,
  ``http.response.status_code``, ``error.type``; its context goes to Norce as ``traceparent``;
* PRODUCER ``send <topic>`` per output record, child of the consumer span, ended when the
  outputs are acknowledged: ``messaging.operation.type=send``, ``messaging.destination.name``,
  ``messaging.kafka.message.key``, ``messaging.kafka.message.tombstone``, ``norce.output.kind``;
  its context is appended to the record's headers (``traceparent``, ``tracestate`` when set).

The propagator is the API's global one (``OTEL_PROPAGATORS``, default W3C trace context and
baggage). The tracer provider is the bridge's own (not the global one): several bridges in one
process (the tests) each keep theirs.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from contextvars import Token

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

from bridge import __version__
from bridge.commands import AnyCommand
from bridge.errors import ConfigError
from bridge.norce import (
    ENDPOINT_DELETE_ORDER,
    ENDPOINT_GET_ORDER,
    ENDPOINT_LIST_ORDERS,
    ENDPOINT_SET_STATE,
    ORDERS_PATH,
)
from bridge.outputs import Disposition, SourceRecord
from bridge.settle import EncodedRecord
from bridge.tracing import INSTALL_HINT, ClientSpan, CommandTrace, Tracing, exporter_names
from bridge.vocabulary import Outcome

SERVICE = "norce-order-bridge"
KAFKA = "kafka"
_TEMPLATES = {
    ENDPOINT_GET_ORDER: f"{ORDERS_PATH}/{{orderId}}",
    ENDPOINT_SET_STATE: f"{ORDERS_PATH}/{{orderId}}/state",
    ENDPOINT_DELETE_ORDER: f"{ORDERS_PATH}/{{orderId}}",
    ENDPOINT_LIST_ORDERS: ORDERS_PATH,
}


class _HeadersGetter(Getter[Sequence[tuple[str, bytes | None]]]):
    """Reads a Kafka record's headers; the *last* header of a name wins (as Java's
    ``Headers.lastHeader``, which OpenTelemetry's Kafka instrumentation reads)."""

    def get(self, carrier: Sequence[tuple[str, bytes | None]], key: str) -> list[str] | None:
        found: bytes | None = None
        for name, value in carrier:
            if name == key and value is not None:
                found = value
        return None if found is None else [found.decode("latin-1")]

    def keys(self, carrier: Sequence[tuple[str, bytes | None]]) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _HeadersGetter()


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None  # a binary key is not an attribute value worth having


class _OtelClientSpan(ClientSpan):
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def inject(self, headers: dict[str, str]) -> dict[str, str]:
        out = dict(headers)
        get_global_textmap().inject(out, context=trace.set_span_in_context(self._span))
        return out

    def succeeded(self, status: int) -> None:
        self._span.set_attribute("http.response.status_code", status)
        self._span.end()

    def failed(self, exc: BaseException) -> None:
        span = self._span
        status = getattr(exc, "status", None)
        if isinstance(status, int):
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("error.type", str(status))
        else:
            # The class name only: exception messages may quote what the API sent back.
            span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR))
        span.end()


class _OtelCommandTrace(CommandTrace):
    __slots__ = ("_per_record", "_producers", "_span", "_token", "_tracer")

    def __init__(
        self, span: trace.Span, token: Token[Context], tracer: trace.Tracer, *, per_record: bool
    ) -> None:
        self._span = span
        self._token = token
        self._tracer = tracer
        self._per_record = per_record
        self._producers: list[trace.Span] = []

    def outcome(self, outcome: Disposition) -> None:
        span = self._span
        span.set_attribute("norce.command.outcome", str(outcome.outcome))
        if outcome.dead_letter_reason is not None:
            span.set_attribute("norce.dead_letter.reason", str(outcome.dead_letter_reason))
        if outcome.outcome == Outcome.FAILED:
            span.set_status(Status(StatusCode.ERROR, outcome.reason or "failed"))

    def produce(
        self, records: list[EncodedRecord], roles: Mapping[str, str]
    ) -> list[EncodedRecord]:
        if self._per_record:
            return [out for record in records for out in self._send_span([record], roles)]
        return self._send_span(records, roles) if records else records

    def _send_span(
        self, records: list[EncodedRecord], roles: Mapping[str, str]
    ) -> list[EncodedRecord]:
        """One PRODUCER span for ``records`` (a batch: the outputs of one command), its context
        appended to each record's headers."""
        topics = list(dict.fromkeys(r[0] for r in records))
        keys = {r[1] for r in records}
        attributes: dict[str, str | int | bool] = {
            "messaging.system": KAFKA,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "norce.output.kinds": ",".join(roles.get(t, t) for t in topics),
        }
        if len(topics) == 1:
            name = f"send {topics[0]}"
            attributes["messaging.destination.name"] = topics[0]
        else:
            name = "send"  # several destinations: the operation alone (semantic conventions)
        if len(records) > 1:
            attributes["messaging.batch.message_count"] = len(records)
        else:
            if records[0][2] is None:
                attributes["messaging.kafka.message.tombstone"] = True
            if records[0][4] is not None:
                attributes["messaging.destination.partition.id"] = str(records[0][4])
        if len(keys) == 1:
            text = _key_text(next(iter(keys)))
            if text is not None:
                attributes["messaging.kafka.message.key"] = text
        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(self._span),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        )
        self._producers.append(span)
        carrier: dict[str, str] = {}
        get_global_textmap().inject(carrier, context=trace.set_span_in_context(span))
        trace_headers = [(k, v.encode("latin-1")) for k, v in carrier.items()]
        return [(t, k, v, [*h, *trace_headers], p) for t, k, v, h, p in records]

    def published(self, ok: bool) -> None:
        for span in self._producers:
            if not ok:
                span.set_status(Status(StatusCode.ERROR, "not published: partition revoked"))
            span.end()
        self._producers.clear()

    def end(self) -> None:
        if self._producers:
            self.published(False)
        otel_context.detach(self._token)
        self._span.end()


class OtelTracing(Tracing):
    """Tracing on: spans from the bridge's own ``TracerProvider``."""

    enabled = True

    def __init__(
        self,
        provider: TracerProvider,
        *,
        group_id: str,
        norce_base_url: str,
        producer_spans: str = "command",
    ) -> None:
        self.provider = provider
        self._per_record = producer_spans == "record"
        self._tracer = provider.get_tracer("bridge", __version__)
        self._group_id = group_id
        url = httpx.URL(norce_base_url)
        # No user info, query or fragment: only scheme, host, port and path.
        path = url.path if url.path.endswith("/") else url.path + "/"
        port = url.port
        self._server_address = url.host
        self._server_port = port if port is not None else (443 if url.scheme == "https" else 80)
        origin = f"{url.scheme}://{url.host}" + (f":{port}" if port is not None else "")
        self._base = origin + path
        self._base_path = path

    @classmethod
    def with_processors(
        cls,
        processors: Iterable[SpanProcessor],
        *,
        group_id: str,
        norce_base_url: str,
        producer_spans: str = "command",
    ) -> OtelTracing:
        """A provider with the standard resource (``OTEL_SERVICE_NAME``,
        ``OTEL_RESOURCE_ATTRIBUTES``; service name ``norce-order-bridge`` by default) and
        sampler (``OTEL_TRACES_SAMPLER``), exporting through ``processors``."""
        resource = Resource.create({SERVICE_VERSION: __version__})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
        provider = TracerProvider(resource=resource)
        for processor in processors:
            provider.add_span_processor(processor)
        return cls(
            provider,
            group_id=group_id,
            norce_base_url=norce_base_url,
            producer_spans=producer_spans,
        )

    def consume(self, src: SourceRecord, command: AnyCommand | None) -> CommandTrace:
        parent = get_global_textmap().extract(src.headers, getter=_GETTER)
        attributes: dict[str, str | int] = {
            "messaging.system": KAFKA,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": src.topic,
            "messaging.destination.partition.id": str(src.partition),
            "messaging.consumer.group.name": self._group_id,
            "messaging.kafka.offset": src.offset,
        }
        key = _key_text(src.key)
        if key is not None:
            attributes["messaging.kafka.message.key"] = key
        if command is not None:
            attributes["norce.command.id"] = command.command_id
            attributes["norce.command.type"] = command.type
            attributes["norce.order.id"] = command.order_id
            if command.correlation_id:
                attributes["norce.correlation.id"] = command.correlation_id
        span = self._tracer.start_span(
            f"process {src.topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return _OtelCommandTrace(span, token, self._tracer, per_record=self._per_record)

    def client(self, method: str, endpoint: str, path: str, resend_count: int) -> ClientSpan:
        template = self._base_path + _TEMPLATES.get(endpoint, endpoint)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.template": template,
            "url.full": self._base + path,
            "server.address": self._server_address,
            "server.port": self._server_port,
        }
        if resend_count:
            attributes["http.request.resend_count"] = resend_count
        span = self._tracer.start_span(
            f"{method} {template}", kind=SpanKind.CLIENT, attributes=attributes
        )
        return _OtelClientSpan(span)

    def shutdown(self) -> None:
        self.provider.shutdown()


def exporting_processors(environ: Mapping[str, str]) -> list[SpanProcessor]:
    """The batch span processors of the exporters ``OTEL_TRACES_EXPORTER`` names."""
    processors: list[SpanProcessor] = []
    for name in exporter_names(environ):
        if name == "none":
            continue
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "otlp":
            exporter = _otlp_exporter(environ)
        else:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER: unknown span exporter {name!r} "
                "(the bridge supports otlp, console and none)"
            )
        processors.append(BatchSpanProcessor(exporter))
    return processors


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    try:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if protocol == "grpc":  # an optional package (grpcio): imported by name
            module = importlib.import_module(
                "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
            )
            exporter: SpanExporter = module.OTLPSpanExporter()
            return exporter
    except ImportError as exc:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        raise ConfigError(
            f"OTLP over {protocol} needs {package}, which is not installed ({exc.name}): "
            + (f"pip install {package}" if protocol == "grpc" else INSTALL_HINT)
        ) from None
    raise ConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported "
        "(http/protobuf or grpc; http/json has no Python exporter)"
    )
