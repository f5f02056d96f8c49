"""The one settings model, read once at startup from ``BRIDGE_*`` environment variables.

Nested settings use ``__`` (``BRIDGE_KAFKA__BOOTSTRAP_SERVERS``). Secrets are ``SecretStr`` and
may instead be given as files (``..._FILE``: a mounted Kubernetes Secret). Nothing else in the
service reads ``os.environ``. Validation is loud: :func:`load_settings` raises
:class:`~bridge.errors.ConfigError` with one line per problem, naming the variable, never a value.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from bridge.errors import ConfigError

DEFAULT_SCHEMAS_DIR = Path(str(resources.files("bridge").joinpath("schemas")))
"""The schemas shipped in the package, as a path (``schemas_dir=None`` reads them from there)."""

NORCE_ENVIRONMENTS = {
    "playground": "https://{slug}.api-se.playground.norce.tech/checkout/order/",
    "stage": "https://{slug}.api-se.stage.norce.tech/checkout/order/",
    "production": "https://{slug}.api-se.norce.tech/checkout/order/",
}


_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Ordering(StrEnum):
    KEY = "key"
    PARTITION = "partition"


class ProcessingGuarantee(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


REVOKE_MARGIN_MS = 2_000  # the final commit after the revoke wait


class _Section(BaseModel):
    model_config = {"extra": "forbid", "frozen": True}


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "norce-order-bridge"
    group_id: str = "norce-order-bridge"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True
    session_timeout_ms: int = Field(default=30_000, ge=6_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    linger_ms: int = Field(default=5, ge=0)
    transaction_timeout_ms: int = Field(default=300_000, ge=1_000)
    # How long the group waits for members to rejoin in a rebalance; default: the session
    # timeout, or the revoke deadline plus 10 s when that is longer (see bridge.lease).
    rebalance_timeout_ms: int | None = Field(default=None, ge=6_000)

    def effective_rebalance_timeout_ms(self, revoke_deadline_s: float) -> int:
        """The rebalance timeout the consumer uses (explicit, or derived as described above)."""
        if self.rebalance_timeout_ms is not None:
            return self.rebalance_timeout_ms
        return max(self.session_timeout_ms, int(revoke_deadline_s * 1000) + 10_000)

    # How long start-up waits for an unreachable broker (/healthz up, /readyz says why) before
    # exiting with code 3. A refusal (credentials, certificate) fails at once.
    startup_deadline_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError("sasl_mechanism is required with a SASL security_protocol")
            if not self.sasl_username:
                raise ValueError("sasl_username is required with a SASL security_protocol")
            if self.sasl_password is None and self.sasl_password_file is None:
                raise ValueError("sasl_password or sasl_password_file is required with SASL")
        return self


class TopicSettings(_Section):
    commands: str = "norce.order.commands"
    snapshots: str = "norce.order.snapshots"
    events: str = "norce.order.events"
    results: str = "norce.order.command-results"
    dlq: str = "norce.order.commands.dlq"
    # Accepted Norce notification deliveries (bridge.ingress), relayed as RefreshOrder commands.
    notifications: str = "norce.order.notifications"
    # The order state store (compacted, internal; as many partitions as the commands topic).
    order_state: str = "norce.order.bridge-state"
    create_missing: bool = True
    partitions: int = Field(default=12, ge=1)
    replication_factor: int = Field(default=1, ge=1)

    def outputs(self) -> tuple[str, str, str, str]:
        return (self.snapshots, self.events, self.results, self.dlq)


class RetrySettings(_Section):
    """How one Norce API call retries (``BRIDGE_NORCE__RETRY__*``; applied by bridge.norce_retry).

    Retry ``n`` (0-based) waits ``uniform(0, min(max_delay_s, base_delay_s * 2**n))`` (full
    jitter) or the server's ``Retry-After`` capped at ``retry_after_cap_s``; at most
    ``max_attempts`` attempts, and never a sleep past ``deadline_s`` after the call started.
    """

    max_attempts: int = Field(default=6, ge=1)
    base_delay_s: float = Field(default=0.1, ge=0)
    max_delay_s: float = Field(default=5.0, ge=0)
    retry_after_cap_s: float = Field(default=30.0, ge=0)
    deadline_s: float = Field(default=30.0, gt=0)


class NorceSettings(_Section):
    base_url: str = "http://127.0.0.1:8089"
    environment: Literal["custom", "playground", "stage", "production"] = "custom"
    slug: str | None = None
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    adapter_id: str | None = "norce-order-bridge"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0)
    write_timeout_s: float = Field(default=10.0, gt=0)
    pool_timeout_s: float = Field(default=10.0, gt=0)
    max_connections: int = Field(default=256, ge=1)
    http_backend: Literal["httpx", "aiohttp"] = "aiohttp"
    retry: RetrySettings = RetrySettings()
    # The API key travels only over https:// or to a loopback address unless this is set.
    allow_insecure_http: bool = False

    @field_validator("slug")
    @classmethod
    def _slug_is_a_dns_label(cls, v: str | None) -> str | None:
        # The slug becomes part of the API's host name: anything but one DNS label (a dot, a
        # slash, an "@") would let it point the API key at another host.
        if v is not None and not _DNS_LABEL.fullmatch(v):
            raise ValueError("must be one DNS label: 1-63 letters, digits or inner hyphens")
        return v.lower() if v is not None else v

    @model_validator(mode="after")
    def _environment(self) -> NorceSettings:
        if self.environment != "custom" and not self.slug:
            raise ValueError(
                "BRIDGE_NORCE__SLUG is required when BRIDGE_NORCE__ENVIRONMENT is playground, "
                "stage or production"
            )
        url = urllib.parse.urlsplit(self.resolved_base_url())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                "BRIDGE_NORCE__BASE_URL must be an absolute http(s) URL with a host "
                "(value not shown)"
            )
        if url.scheme == "http" and not _is_loopback(url.hostname) and not self.allow_insecure_http:
            raise ValueError(
                "BRIDGE_NORCE__BASE_URL is plain http:// to a non-loopback host, which would send "
                "the API key in clear text; use https://, or set "
                "BRIDGE_NORCE__ALLOW_INSECURE_HTTP=true to accept that"
            )
        return self

    def resolved_base_url(self) -> str:
        if self.environment == "custom":
            return self.base_url
        return NORCE_ENVIRONMENTS[self.environment].format(slug=self.slug)


class ProcessingSettings(_Section):
    ordering: Ordering = Ordering.KEY
    processing_guarantee: ProcessingGuarantee = ProcessingGuarantee.AT_LEAST_ONCE
    max_in_flight: int = Field(default=256, ge=1, le=10_000)
    max_buffered_per_partition: int = Field(default=2_000, ge=1)
    max_buffered_total: int = Field(default=20_000, ge=1)
    max_record_bytes: int = Field(default=64 * 1024, ge=256)
    max_command_age_s: float | None = Field(default=None, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    drain_deadline_s: float = Field(default=30.0, gt=0)
    reserve_chunk: int = Field(default=256, ge=1)
    revoke_deadline_s: float = Field(default=20.0, gt=0)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_open_s: float = Field(default=2.0, gt=0)
    circuit_max_open_s: float = Field(default=30.0, gt=0)
    # lease: write to Norce only while the group-membership lease holds (bridge.lease);
    # lease+read: also re-read the order right before each write and write only if nobody
    # changed it since the bridge last saw it (README, "Fencing").
    write_guard: Literal["lease", "lease+read"] = "lease"


class HttpSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    wedged_after_s: float = Field(default=30.0, gt=0)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
MIN_INGRESS_SECRET_LENGTH = 16


class IngressSettings(_Section):
    """The Norce notification ingress (``BRIDGE_INGRESS__*``; bridge.ingress, bridge.notify_relay).

    Its own port, so that Kubernetes can expose it alone (a Service/Ingress to the Internet)
    while ``/metrics`` and the probes stay internal. Deliveries are authenticated by a shared
    secret in ``secret_header`` and/or a secret path token (``POST /notifications/{token}``);
    at least one is required when enabled. The relay (``relay``; default: on when the ingress
    is) turns each stored delivery into a ``RefreshOrder`` command.
    """

    enabled: bool = False
    host: str = "0.0.0.0"
    port: int = Field(default=8081, ge=0, le=65535)
    secret: SecretStr | None = None
    secret_file: Path | None = None
    secret_header: str = "X-Norce-Webhook-Secret"  # noqa: S105 - a header name
    path_token: SecretStr | None = None
    path_token_file: Path | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=16 * 1_048_576)
    body_timeout_s: float = Field(default=10.0, gt=0, le=300)
    ack_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Seconds a 503 tells the sender to wait (Retry-After) while Kafka is unavailable.
    retry_after_s: int = Field(default=5, ge=1, le=3600)
    # Linger of the notifications producer: 0 answered a lone delivery in ~4 ms (p50) against
    # ~11 ms with the bridge's 5 (bench/ingress.py); concurrent ones still batch.
    linger_ms: int = Field(default=0, ge=0, le=1000)
    # Connections open at once; more are closed at once (bounds slow-header clients).
    max_connections: int = Field(default=256, ge=1, le=100_000)
    # None: the relay runs when the ingress does; true: also without the HTTP server.
    relay: bool | None = None
    relay_group_id: str | None = None  # default: <BRIDGE_KAFKA__GROUP_ID>.notifications

    @field_validator("secret_header")
    @classmethod
    def _header_name(cls, v: str) -> str:
        if not _HEADER_NAME.fullmatch(v):
            raise ValueError("must be an HTTP header name (1-64 token characters)")
        return v

    @model_validator(mode="after")
    def _authenticated(self) -> IngressSettings:
        if not self.enabled:
            return self

        def given(value: SecretStr | None, file: Path | None) -> bool:
            return (value is not None and value.get_secret_value() != "") or file is not None

        if not given(self.secret, self.secret_file) and not given(
            self.path_token, self.path_token_file
        ):
            raise ValueError(
                "BRIDGE_INGRESS__ENABLED=true needs BRIDGE_INGRESS__SECRET(_FILE) and/or "
                "BRIDGE_INGRESS__PATH_TOKEN(_FILE): deliveries would not be authenticated"
            )
        return self

    def relay_enabled(self) -> bool:
        return self.enabled if self.relay is None else self.relay

    def relay_group(self, group_id: str) -> str:
        return self.relay_group_id or f"{group_id}.notifications"


class RuntimeSettings(_Section):
    """Process-level tuning of the service (``BRIDGE_RUNTIME__*``); defaults are on (issue 13).

    After start-up (settings, schemas, clients built) the bridge moves every object then alive
    to the permanent generation (``gc.freeze()``) so full collections no longer walk them, and
    raises the young-generation threshold so the per-command garbage is collected less often.
    Before it reports ready it opens a few keep-alive connections to the Norce API.
    """

    # gc.freeze() once start-up is done: long-lived objects leave the collector's generations.
    gc_freeze: bool = True
    # gc.set_threshold's first value (allocations between young collections); 0 keeps Python's
    # 700. Measured (issue 13, README): 10k cut the collector's CPU per command by about half
    # with young pauses of ~6 ms in a paced run; 50k cut more but paused up to ~50 ms.
    gc_gen0_threshold: int = Field(default=10_000, ge=0, le=10_000_000)
    # Keep-alive connections opened to the Norce API before /readyz says ready (0: none),
    # capped at BRIDGE_NORCE__MAX_CONNECTIONS, within warm_deadline_s (never failing start-up).
    warm_connections: int = Field(default=4, ge=0, le=64)
    warm_deadline_s: float = Field(default=2.0, gt=0, le=60)


class OtelSettings(_Section):
    """OpenTelemetry tracing (``BRIDGE_OTEL__*``; the rest is the standard ``OTEL_*`` variables,
    read by the OpenTelemetry SDK itself). See :func:`otel_requested` for when it is on."""

    # True/False decide; unset: on when the standard OTEL_* variables ask for traces.
    enabled: bool | None = None
    # One PRODUCER span per command for all its outputs (a batch send; cheaper), or one per
    # output record (per-topic spans; each costs about as much as the command's other spans).
    producer_spans: Literal["command", "record"] = "command"


_TRUE = ("true", "1", "yes", "on")


def otel_requested(otel: OtelSettings, environ: Mapping[str, str]) -> tuple[bool, str]:
    """Whether tracing is on, and which variable decided (for the start-up log).

    ``OTEL_SDK_DISABLED=true`` (the specification's kill switch) wins over everything; then
    ``BRIDGE_OTEL__ENABLED`` when set; otherwise tracing is on when ``OTEL_TRACES_EXPORTER`` names
    an exporter other than ``none``, or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). ``environ`` is the process environment.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE:
        return False, "OTEL_SDK_DISABLED"
    if otel.enabled is not None:
        return otel.enabled, "BRIDGE_OTEL__ENABLED"
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none", "OTEL_TRACES_EXPORTER"
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        if environ.get(name, "").strip():
            return True, name
    return False, "default"


class AvroEncoding(StrEnum):
    SINGLE_OBJECT = "single-object"
    CONFLUENT = "confluent"


class AvroSettings(_Section):
    """How Avro outputs are framed (``BRIDGE_AVRO__*``).

    ``encoding`` unset: ``confluent`` when a schema registry is configured
    (``BRIDGE_SCHEMA_REGISTRY__URL``), else ``single-object`` (the demo needs no registry).
    """

    encoding: AvroEncoding | None = None


class SchemaRegistrySettings(_Section):
    """The Confluent-compatible schema registry (``BRIDGE_SCHEMA_REGISTRY__*``), issue 15.

    Used only at start-up (register or look up the bridge's schemas, set the subjects'
    compatibility) and for a command's writer schema id never seen before (fetched once).
    """

    url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    bearer_token: SecretStr | None = None
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    # Every request, whole (connect to last byte): a response was once observed never arriving.
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Register the bridge's schemas at start-up (and set the subjects' compatibility); false:
    # look them up (a locked-down registry where a pipeline registers them).
    auto_register: bool = True
    # Write with the subject's latest registered schema (Confluent's use.latest.version).
    use_latest: bool = False
    compatibility: Literal[
        "BACKWARD",
        "BACKWARD_TRANSITIVE",
        "FORWARD",
        "FORWARD_TRANSITIVE",
        "FULL",
        "FULL_TRANSITIVE",
        "NONE",
    ] = "BACKWARD"
    # The events topic carries OrderStateChanged and OrderDeleted: one subject per record type
    # (topic_record: <topic>-<full name>) or one <topic>-value subject with a union schema.
    events_subject_strategy: Literal["topic_record", "topic"] = "topic_record"
    # Start-up retries while the registry is unreachable: the first and the largest pause.
    retry_initial_s: float = Field(default=0.5, gt=0, le=60)
    retry_max_s: float = Field(default=10.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        parsed = urllib.parse.urlsplit(v.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("BRIDGE_SCHEMA_REGISTRY__URL must be an http(s):// URL")
        if parsed.username or parsed.password:
            raise ValueError(
                "BRIDGE_SCHEMA_REGISTRY__URL must not carry credentials: use "
                "BRIDGE_SCHEMA_REGISTRY__USERNAME and __PASSWORD(_FILE)"
            )
        return v.strip().rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> SchemaRegistrySettings:
        basic = self.username is not None
        bearer = self.bearer_token is not None or self.bearer_token_file is not None
        if basic and bearer:
            raise ValueError(
                "BRIDGE_SCHEMA_REGISTRY__USERNAME and __BEARER_TOKEN(_FILE): choose one auth"
            )
        if not basic and (self.password is not None or self.password_file is not None):
            raise ValueError("BRIDGE_SCHEMA_REGISTRY__PASSWORD needs __USERNAME")
        return self


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # The asyncio event loop implementation: uvloop needs the extra norce-order-bridge[uvloop].
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    schemas_dir: Path | None = None  # None: the schemas shipped in the package
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    norce: NorceSettings = NorceSettings()
    processing: ProcessingSettings = ProcessingSettings()
    http: HttpSettings = HttpSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    ingress: IngressSettings = IngressSettings()
    otel: OtelSettings = OtelSettings()
    avro: AvroSettings = AvroSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()

    @property
    def avro_encoding(self) -> AvroEncoding:
        """The effective output encoding (``BRIDGE_AVRO__ENCODING``, else by the registry)."""
        if self.avro.encoding is not None:
            return self.avro.encoding
        if self.schema_registry.url is not None:
            return AvroEncoding.CONFLUENT
        return AvroEncoding.SINGLE_OBJECT

    @model_validator(mode="after")
    def _confluent_needs_a_registry(self) -> BridgeSettings:
        if self.avro.encoding == AvroEncoding.CONFLUENT and self.schema_registry.url is None:
            raise ValueError("BRIDGE_AVRO__ENCODING=confluent needs BRIDGE_SCHEMA_REGISTRY__URL")
        return self

    @model_validator(mode="after")
    def _revoke_fits_in_the_group_timeouts(self) -> BridgeSettings:
        # A revoke that outlasts the session or rebalance timeout gets the member expelled
        # while it still holds commands: they would then run as a zombie's (bridge.lease).
        revoke_ms = int(self.processing.revoke_deadline_s * 1000) + REVOKE_MARGIN_MS
        k = self.kafka
        rebalance_ms = k.effective_rebalance_timeout_ms(self.processing.revoke_deadline_s)
        if revoke_ms > k.session_timeout_ms or revoke_ms > rebalance_ms:
            raise ValueError(
                "BRIDGE_PROCESSING__REVOKE_DEADLINE_S plus 2 s must not exceed "
                "BRIDGE_KAFKA__SESSION_TIMEOUT_MS or BRIDGE_KAFKA__REBALANCE_TIMEOUT_MS "
                f"(revoke deadline {revoke_ms - REVOKE_MARGIN_MS} ms, session timeout "
                f"{k.session_timeout_ms} ms, rebalance timeout {rebalance_ms} ms)"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


def _setting_names() -> tuple[set[str], dict[str, set[str]]]:
    """The top-level scalar settings and, per section, its fields (upper case, no prefix)."""
    scalars: set[str] = set()
    sections: dict[str, set[str]] = {}
    for name, field in BridgeSettings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            sections[name.upper()] = {f.upper() for f in kind.model_fields}
        else:
            scalars.add(name.upper())
    return scalars, sections


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``BRIDGE_*`` variable that names no setting, with the closest name.

    pydantic-settings reads only the variables of known fields, so a misspelt top-level name
    (``BRIDGE_LOGLEVEL``, ``BRIDGE_KAFKAA__BOOTSTRAP_SERVERS``) would be ignored and its setting
    would silently keep its default; a misspelt field *inside* a section is already refused by
    the section's model (``extra="forbid"``). Names are matched case-insensitively, like
    pydantic-settings does; values are never read."""
    scalars, sections = _setting_names()
    candidates = sorted(
        scalars | set(sections) | {f"{s}__{f}" for s, fs in sections.items() for f in fs}
    )
    lines = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith("BRIDGE_"):
            continue
        rest = name.removeprefix("BRIDGE_")
        head = rest.split("__", 1)[0]
        if rest in scalars or head in sections:
            continue
        close = difflib.get_close_matches(rest, candidates, n=1, cutoff=0.75)
        hint = f" (did you mean BRIDGE_{close[0]}?)" if close else ""
        lines.append(f"{variable}: not a setting of the bridge{hint}")
    return lines


def load_settings(**overrides: Any) -> BridgeSettings:
    """Read and validate the settings; raise ConfigError listing every problem (no values).

    A ``BRIDGE_*`` variable that names no setting is a problem too (:func:`unknown_variables`)."""
    unknown = unknown_variables(os.environ)
    try:
        settings = BridgeSettings(**overrides)
    except ValidationError as exc:
        lines = list(unknown)
        for err in exc.errors():
            loc = "__".join(str(p) for p in err["loc"]).upper()
            msg = err["msg"].removeprefix("Value error, ")
            if loc and not msg.startswith(f"BRIDGE_{loc}"):
                msg = f"BRIDGE_{loc}: {msg}"
            lines.append(msg)
        _raise_config_error(lines)
    except SettingsError as exc:
        # A nested section given as one variable (BRIDGE_NORCE='{...}') that is not JSON.
        # pydantic-settings says which field; its message never includes the value.
        match = re.search(r'field "([a-z_]+)"', str(exc))
        name = f"BRIDGE_{match.group(1).upper()}" if match else "a BRIDGE_* variable"
        raise ConfigError(
            f"invalid configuration: {name}: not a valid JSON object (a nested section set "
            f"as one variable must be JSON; or use {name}__<FIELD> variables)"
        ) from None
    if unknown:
        _raise_config_error(unknown)
    return settings


def _raise_config_error(lines: list[str]) -> NoReturn:
    if len(lines) == 1:
        raise ConfigError(f"invalid configuration: {lines[0]}") from None
    raise ConfigError("invalid configuration:\n" + "\n".join(f"  {m}" for m in lines)) from None
