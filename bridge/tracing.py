"""Tracing of commands (OpenTelemetry, opt-in): the one small interface the hot path calls.

The runtime calls three things, always, whether tracing is on or not:

* :meth:`Tracing.consume` when a command's task starts: a CONSUMER span (``process <topic>``)
  continuing the W3C ``traceparent``/``tracestate`` of the command record; it is the current
  span while the command runs, so the Norce client's spans are its children;
* :meth:`Tracing.client` per HTTP attempt to the Norce API: a CLIENT span whose context goes to
  Norce as ``traceparent``;
* :meth:`CommandTrace.produce` before the outputs are published: one PRODUCER span per output
  record (``send <topic>``), its context appended to the record's headers.

:data:`NO_TRACING` (tracing off) implements all of it as no-ops and imports nothing from
``opentelemetry``; :func:`build_tracing` imports :mod:`bridge.tracing_otel` (the SDK
implementation) only when tracing is on, and fails start-up with one line when the package is
missing. Attribute values never include secrets: the API key and SASL credentials are never read
here, request headers are not recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from bridge.config import BridgeSettings, otel_requested
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.commands import AnyCommand
    from bridge.outputs import Disposition, SourceRecord
    from bridge.settle import EncodedRecord

__all__ = [
    "NO_TRACING",
    "ClientSpan",
    "CommandTrace",
    "Tracing",
    "build_tracing",
]

INSTALL_HINT = "pip install 'norce-order-bridge[otel]'"


class ClientSpan:
    """One HTTP attempt to the Norce API (no-op: tracing off)."""

    __slots__ = ()

    def inject(self, headers: dict[str, str]) -> dict[str, str]:
        """The request's headers with this span's context added (a copy; ``headers`` is shared)."""
        return headers

    def succeeded(self, status: int) -> None:
        """The attempt got a 2xx answer with ``status``; ends the span."""

    def failed(self, exc: BaseException) -> None:
        """The attempt failed (an error answer, a timeout, a reset); ends the span."""


class CommandTrace:
    """The trace of one command's task (no-op: tracing off)."""

    __slots__ = ()

    def outcome(self, outcome: Disposition) -> None:
        """How the command ended (its outcome, dead-letter reason)."""

    def produce(
        self, records: list[EncodedRecord], roles: Mapping[str, str]
    ) -> list[EncodedRecord]:
        """Start a PRODUCER span per record and return the records with its context in their
        headers (appended last: a dead letter keeps the original headers as they were).
        ``roles`` maps topic names to output roles (snapshot, event, result, dlq, ...)."""
        return records

    def published(self, ok: bool) -> None:
        """The records given to :meth:`produce` were acknowledged (``ok``) or abandoned."""

    def end(self) -> None:
        """The task ends: end the consumer span (and any producer span still open)."""


_NO_CLIENT_SPAN = ClientSpan()
_NO_COMMAND_TRACE = CommandTrace()


class Tracing:
    """Tracing off: every hook is a no-op returning shared objects."""

    enabled = False

    def consume(self, src: SourceRecord, command: AnyCommand | None) -> CommandTrace:
        """Start the CONSUMER span of one command record (``command`` None: unparseable)."""
        return _NO_COMMAND_TRACE

    def client(self, method: str, endpoint: str, path: str, resend_count: int) -> ClientSpan:
        """Start the CLIENT span of one HTTP attempt (``path`` relative to the base URL;
        ``resend_count`` 0 for the first attempt)."""
        return _NO_CLIENT_SPAN

    def shutdown(self) -> None:
        """Flush and stop exporting (at service shutdown)."""


NO_TRACING = Tracing()


def build_tracing(settings: BridgeSettings, environ: Mapping[str, str]) -> Tracing:
    """The tracing the settings and the standard ``OTEL_*`` variables ask for.

    Off: :data:`NO_TRACING`, and ``opentelemetry`` is not imported. On: the SDK with the
    exporter ``OTEL_TRACES_EXPORTER`` names (``otlp`` by default, ``console``, ``none``), OTLP
    over the protocol ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` names (``http/protobuf`` by
    default, ``grpc``), everything else (endpoint, headers, sampler, batch sizes, resource) read
    by the SDK from its standard variables. Raises :class:`ConfigError` (one line) when a needed
    package is missing or a variable names something unknown.
    """
    on, _ = otel_requested(settings.otel, environ)
    if not on:
        return NO_TRACING
    try:
        from bridge import tracing_otel
    except ImportError as exc:
        raise ConfigError(
            f"tracing is enabled but OpenTelemetry is not installed ({exc.name or exc}): "
            f"{INSTALL_HINT}, or unset BRIDGE_OTEL__ENABLED / the OTEL_* variables"
        ) from None
    processors = tracing_otel.exporting_processors(environ)
    return tracing_otel.OtelTracing.with_processors(
        processors,
        group_id=settings.kafka.group_id,
        norce_base_url=settings.norce.resolved_base_url(),
        producer_spans=settings.otel.producer_spans,
    )


def exporter_names(environ: Mapping[str, str]) -> Sequence[str]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (comma-separated; default ``otlp``)."""
    raw = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    return [n.strip() for n in raw.split(",") if n.strip()]
