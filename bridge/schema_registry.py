"""A client of a Confluent-compatible schema registry, and the bridge's start-up registration.

Only start-up talks to the registry (register or look up the bridge's schemas, set the
subjects' compatibility) plus, at run time, the one fetch of a command's writer schema id never
seen before (then cached by the codec): no registry call on the hot path.

* :class:`SchemaRegistryClient`: the Confluent REST API (``/subjects``, ``/schemas/ids``,
  ``/config``) over httpx, with a timeout around every whole request (a response was once
  observed never arriving), basic or bearer auth (from the environment or mounted files via
  :mod:`bridge.secret_files`; never logged, never in an error message) and a TLS CA file.
* :func:`subjects_of`: the subject names (``TopicNameStrategy`` ``<topic>-value`` for the
  single-schema topics; the events topic by ``TopicRecordNameStrategy``
  ``<topic>-<full name>`` or ``<topic>-value`` with a union schema).
* :func:`register_schemas`: what ``order-bridge run`` does before it reports ready: retries an
  unreachable registry with backoff (``on_waiting`` keeps ``/readyz`` saying why), refuses to
  start with one line when the registry rejects a schema as incompatible.

Errors: :class:`RegistryUnavailableError` (connect, timeout, 5xx, 429: retry later),
:class:`SchemaNotFoundError` (404), :class:`IncompatibleSchemaError` (409),
:class:`RegistryRejectedError` (any other answer, e.g. 401/403/422).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
from pydantic import SecretStr

from bridge.codec import CONFLUENT_CONTENT_TYPE as CONFLUENT_CT
from bridge.codec import AvroCodec, ConfluentId
from bridge.config import BridgeSettings, SchemaRegistrySettings
from bridge.errors import BridgeError, ConfigError, SchemaLoadError
from bridge.secret_files import load_secret

__all__ = [
    "CONFLUENT_CONTENT_TYPE",
    "IncompatibleSchemaError",
    "Registration",
    "RegistryError",
    "RegistryRejectedError",
    "RegistryUnavailableError",
    "SchemaFetcher",
    "SchemaNotFoundError",
    "SchemaRegistryClient",
    "Subject",
    "client_from_settings",
    "confluent_codec",
    "register_schemas",
    "subjects_of",
]

log = logging.getLogger("bridge.schema_registry")

CONFLUENT_CONTENT_TYPE: Final = CONFLUENT_CT
"""The ``content-type`` of Confluent-framed Avro records (no registered media type exists)."""

_REGISTRY_MEDIA: Final = "application/vnd.schemaregistry.v1+json"


class RegistryError(BridgeError):
    """A schema registry request failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RegistryUnavailableError(RegistryError):
    """No usable answer (connect error, timeout, 5xx, 429): systemic, retry later."""


class SchemaNotFoundError(RegistryError):
    """404: the subject, version or schema id does not exist."""


class IncompatibleSchemaError(RegistryError):
    """409: the registry rejects the schema under the subject's compatibility rule."""


class RegistryRejectedError(RegistryError):
    """Any other refusal (401/403 credentials, 422 invalid schema, ...)."""


class SchemaRegistryClient:
    """The few Confluent schema registry calls the bridge makes (async, httpx)."""

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, SecretStr] | None = None,
        bearer: SecretStr | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._base = url.rstrip("/")
        self._timeout_s = timeout_s
        headers = {"Accept": _REGISTRY_MEDIA}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer.get_secret_value()}"
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=ca_file)
        self._http = httpx.AsyncClient(
            headers=headers,
            auth=None if auth is None else (auth[0], auth[1].get_secret_value()),
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,
        )
        self.requests = 0
        """Requests sent (tests check that the hot path sends none)."""

    @property
    def url(self) -> str:
        return self._base

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> SchemaRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        self.requests += 1
        what = f"{method} {path}"
        content = None if body is None else json.dumps(body).encode()
        headers = None if body is None else {"Content-Type": _REGISTRY_MEDIA}
        try:
            # httpx's timeouts are per phase (a trickling answer never trips them): bound the
            # whole request as well.
            resp = await asyncio.wait_for(
                self._http.request(method, self._base + path, content=content, headers=headers),
                self._timeout_s,
            )
        except TimeoutError:
            raise RegistryUnavailableError(
                f"schema registry: {what} timed out after {self._timeout_s:g}s"
            ) from None
        except httpx.TimeoutException:
            raise RegistryUnavailableError(
                f"schema registry: {what} timed out after {self._timeout_s:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"schema registry: {what} failed ({type(exc).__name__})"
            ) from None
        status = resp.status_code
        if 200 <= status < 300:
            try:
                return resp.json()
            except ValueError:
                raise RegistryRejectedError(
                    f"schema registry: {what} answered {status} without JSON", status=status
                ) from None
        message = _error_message(resp)
        text = f"schema registry: {what} answered {status}: {message}"
        if status == 404:
            raise SchemaNotFoundError(text, status=status)
        if status == 409:
            raise IncompatibleSchemaError(text, status=status)
        if status >= 500 or status in (408, 429):
            raise RegistryUnavailableError(text, status=status)
        raise RegistryRejectedError(text, status=status)

    async def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` (an existing identical version keeps its id)."""
        path = f"/subjects/{_q(subject)}/versions"
        data = await self._call("POST", path, {"schema": schema, "schemaType": "AVRO"})
        return _id_of(data)

    async def lookup(self, subject: str, schema: str) -> int:
        """The id of ``schema`` already registered under ``subject``; 404 when it is not."""
        data = await self._call("POST", f"/subjects/{_q(subject)}", {"schema": schema})
        return _id_of(data)

    async def latest(self, subject: str) -> tuple[int, str]:
        """The id and text of the subject's latest version."""
        data = await self._call("GET", f"/subjects/{_q(subject)}/versions/latest")
        return _id_of(data), str(data["schema"])

    async def schema_by_id(self, schema_id: int) -> str:
        """The schema text of a global id."""
        data = await self._call("GET", f"/schemas/ids/{int(schema_id)}")
        return str(data["schema"])

    async def set_compatibility(self, subject: str, level: str) -> None:
        """Set the subject's compatibility rule (e.g. ``BACKWARD``)."""
        await self._call("PUT", f"/config/{_q(subject)}", {"compatibility": level})

    async def compatibility(self, subject: str) -> str | None:
        """The subject's own compatibility rule, None when it has none."""
        try:
            data = await self._call("GET", f"/config/{_q(subject)}")
        except SchemaNotFoundError:
            return None
        level = data.get("compatibilityLevel") or data.get("compatibility")
        return None if level is None else str(level)


class SchemaFetcher:
    """``schema_by_id`` sharing one request between concurrent callers of the same id (the
    codec caches the answer: each unknown id is fetched once while the registry answers)."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client
        self._pending: dict[int, asyncio.Future[str]] = {}
        self.fetches = 0

    @property
    def client(self) -> SchemaRegistryClient:
        return self._client

    async def __call__(self, schema_id: int) -> str:
        pending = self._pending.get(schema_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[schema_id] = future
        try:
            self.fetches += 1
            text = await self._client.schema_by_id(schema_id)
            future.set_result(text)
            return text
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no warning when nobody else waited
            raise
        finally:
            del self._pending[schema_id]


def _q(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")


def _id_of(data: Any) -> int:
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        raise RegistryRejectedError("schema registry: an answer without a schema id")
    return int(data["id"])


def _error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.reason_phrase or "no message"
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return " ".join(body["message"].split())[:300]
    return resp.reason_phrase or "no message"


def client_from_settings(
    s: SchemaRegistrySettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> SchemaRegistryClient:
    """The client of ``BRIDGE_SCHEMA_REGISTRY__*``; secrets read from env or files here."""
    if s.url is None:
        raise ConfigError("no schema registry configured: set BRIDGE_SCHEMA_REGISTRY__URL")
    auth = None
    bearer = None
    if s.username is not None:
        password = load_secret(
            s.password,
            s.password_file,
            variable="BRIDGE_SCHEMA_REGISTRY__PASSWORD",
            what="schema registry password",
        )
        auth = (s.username, password)
    elif s.bearer_token is not None or s.bearer_token_file is not None:
        bearer = load_secret(
            s.bearer_token,
            s.bearer_token_file,
            variable="BRIDGE_SCHEMA_REGISTRY__BEARER_TOKEN",
            what="schema registry bearer token",
        )
    ca = None
    if s.ca_file is not None:
        if not s.ca_file.is_file():
            raise ConfigError(f"BRIDGE_SCHEMA_REGISTRY__CA_FILE: no such file {str(s.ca_file)!r}")
        ca = str(s.ca_file)
    return SchemaRegistryClient(
        s.url, auth=auth, bearer=bearer, ca_file=ca, timeout_s=s.timeout_s, transport=transport
    )


@dataclass(frozen=True, slots=True)
class Subject:
    """One subject the bridge writes: its name and the schemas (short names) it carries.

    One schema: that record. Several: a union of them, in this order (the union branch index
    goes in front of each body)."""

    name: str
    schemas: tuple[str, ...]


def subjects_of(settings: BridgeSettings) -> tuple[Subject, ...]:
    """The subjects of the bridge's Avro outputs, by the configured naming strategy."""
    t = settings.topics
    out = [
        Subject(f"{t.snapshots}-value", ("OrderSnapshot",)),
        Subject(f"{t.results}-value", ("CommandResult",)),
    ]
    events = ("OrderStateChanged", "OrderDeleted")
    if settings.schema_registry.events_subject_strategy == "topic":
        out.append(Subject(f"{t.events}-value", events))
    else:
        out.extend(Subject(f"{t.events}-com.norce.bridge.v1.{name}", (name,)) for name in events)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Registration:
    """A subject's schema id and, with ``use_latest``, the registered schema text written."""

    subject: Subject
    schema_id: int
    writer_schema: str | None = None


SchemaText = Callable[[Subject], str]


async def _register_one(
    client: SchemaRegistryClient, s: SchemaRegistrySettings, subject: Subject, text: str
) -> Registration:
    if s.use_latest:
        schema_id, latest = await client.latest(subject.name)
        return Registration(subject, schema_id, latest)
    if not s.auto_register:
        try:
            return Registration(subject, await client.lookup(subject.name, text))
        except SchemaNotFoundError:
            raise ConfigError(
                f"schema registry: the bridge's schema is not registered under subject "
                f"{subject.name!r} (BRIDGE_SCHEMA_REGISTRY__AUTO_REGISTER=false): register it, "
                "or allow the bridge to"
            ) from None
    # The rule first: a registry's global default may be NONE (Apicurio's is), and a subject
    # registered without a rule would accept any later schema.
    await client.set_compatibility(subject.name, s.compatibility)
    try:
        return Registration(subject, await client.register(subject.name, text))
    except IncompatibleSchemaError as exc:
        raise ConfigError(
            f"schema registry rejected the bridge's schema for subject {subject.name!r} as "
            f"incompatible with its latest version ({s.compatibility}): {exc}"
        ) from None


async def register_schemas(
    client: SchemaRegistryClient,
    settings: BridgeSettings,
    schema_text: SchemaText,
    *,
    on_waiting: Callable[[str], None] | None = None,
    deadline_s: float | None = None,
) -> dict[str, Registration]:
    """Register (or look up) every output subject; by subject name.

    An unreachable registry is retried with exponential backoff and jitter (``on_waiting``
    says why the bridge is not ready yet) until it answers, or ``deadline_s`` passes
    (``RegistryUnavailableError``). Incompatible, unknown or refused schemas raise
    :class:`ConfigError` with one line (the bridge does not start).
    """
    s = settings.schema_registry
    rng = random.Random()
    started = time.monotonic()
    delay = s.retry_initial_s
    out: dict[str, Registration] = {}
    for subject in subjects_of(settings):
        while True:
            try:
                out[subject.name] = await _register_one(client, s, subject, schema_text(subject))
                break
            except RegistryUnavailableError as exc:
                if deadline_s is not None and time.monotonic() - started > deadline_s:
                    raise
                log.warning(
                    "schema registry unavailable; retrying",
                    extra={"error": str(exc), "retry_in_s": round(delay, 2)},
                )
                if on_waiting is not None:  # /readyz shows it: no configuration value in it
                    on_waiting("schema registry unavailable; retrying")
                await asyncio.sleep(delay * (0.5 + rng.random() / 2))
                delay = min(s.retry_max_s, delay * 2)
            except SchemaNotFoundError as exc:
                raise ConfigError(f"{exc} (subject {subject.name!r})") from None
            except RegistryRejectedError as exc:
                raise ConfigError(str(exc)) from None
    log.info(
        "schemas registered",
        extra={
            "registry": client.url,
            "subjects": {name: r.schema_id for name, r in out.items()},
        },
    )
    return out


async def confluent_codec(
    codec: AvroCodec,
    client: SchemaRegistryClient,
    settings: BridgeSettings,
    *,
    on_waiting: Callable[[str], None] | None = None,
    deadline_s: float | None = None,
) -> AvroCodec:
    """Register the bridge's output schemas (:func:`register_schemas`) and return the codec
    writing the Confluent wire format with their ids; unknown ids of commands are fetched
    from ``client`` (once each)."""

    def text(subject: Subject) -> str:
        parts = [codec.schema_text(name) for name in subject.schemas]
        return parts[0] if len(parts) == 1 else "[" + ",".join(parts) + "]"

    registered = await register_schemas(
        client, settings, text, on_waiting=on_waiting, deadline_s=deadline_s
    )
    ids: dict[str, ConfluentId] = {}
    for r in registered.values():
        union = len(r.subject.schemas) > 1
        for branch, name in enumerate(r.subject.schemas):
            ids[name] = ConfluentId(
                r.schema_id, branch if union else None, None if union else r.writer_schema
            )
    try:
        return codec.framed(ids, fetch=SchemaFetcher(client))
    except SchemaLoadError as exc:
        raise ConfigError(f"schema registry: {exc}") from None
