"""The schema registry client, settings and start-up registration (issue 15).

The registry's answers come from an ``httpx.MockTransport`` here (status codes, hanging
requests, what the client sends); the real Apicurio Registry is in
tests/integration/test_schema_registry.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bridge.codec import AvroCodec
from bridge.config import AvroEncoding, BridgeSettings, SchemaRegistrySettings, load_settings
from bridge.errors import ConfigError
from bridge.schema_registry import (
    IncompatibleSchemaError,
    RegistryRejectedError,
    RegistryUnavailableError,
    SchemaFetcher,
    SchemaNotFoundError,
    SchemaRegistryClient,
    client_from_settings,
    confluent_codec,
    register_schemas,
    subjects_of,
)

URL = "http://registry.test/apis/ccompat/v7"
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def transport(handler: Handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def settings(**registry: Any) -> BridgeSettings:
    return BridgeSettings(schema_registry=SchemaRegistrySettings(url=URL, **registry))


class FakeRegistry:
    """Just enough of the Confluent API: subjects, versions, ids, config (in memory)."""

    def __init__(self) -> None:
        self.schemas: list[str] = []
        self.subjects: dict[str, list[int]] = {}
        self.config: dict[str, str] = {}
        self.requests: list[httpx.Request] = []
        self.down = 0  # answer 503 to this many requests first
        self.incompatible: set[str] = set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.down:
            self.down -= 1
            return httpx.Response(503, json={"message": "down", "error_code": 50301})
        path = request.url.path.removeprefix("/apis/ccompat/v7")
        parts = path.strip("/").split("/")
        body = json.loads(request.content) if request.content else {}
        if parts[0] == "config" and request.method == "PUT":
            self.config[parts[1]] = body["compatibility"]
            return httpx.Response(200, json=body)
        if parts[0] == "schemas":
            i = int(parts[2]) - 1
            if 0 <= i < len(self.schemas):
                return httpx.Response(200, json={"schema": self.schemas[i]})
            return httpx.Response(404, json={"message": "Schema not found", "error_code": 40403})
        subject = parts[1]
        if parts[-1] == "latest":
            ids = self.subjects.get(subject)
            if not ids:
                return httpx.Response(404, json={"message": "no subject", "error_code": 40401})
            return httpx.Response(200, json={"id": ids[-1], "schema": self.schemas[ids[-1] - 1]})
        schema = body["schema"]
        if parts[-1] == "versions":
            if subject in self.incompatible:
                return httpx.Response(409, json={"message": "Incompatible", "error_code": 409})
            if schema not in self.schemas:
                self.schemas.append(schema)
            sid = self.schemas.index(schema) + 1
            self.subjects.setdefault(subject, []).append(sid)
            return httpx.Response(200, json={"id": sid})
        ids = self.subjects.get(subject, [])
        if schema in self.schemas and self.schemas.index(schema) + 1 in ids:
            return httpx.Response(200, json={"id": self.schemas.index(schema) + 1})
        return httpx.Response(404, json={"message": "not found", "error_code": 40403})


def client(fake: Handler, **kwargs: Any) -> SchemaRegistryClient:
    return SchemaRegistryClient(URL, transport=transport(fake), **kwargs)


# --- settings ------------------------------------------------------------------------------


def test_encoding_follows_the_registry_unless_set() -> None:
    assert BridgeSettings().avro_encoding == AvroEncoding.SINGLE_OBJECT
    assert settings().avro_encoding == AvroEncoding.CONFLUENT
    pinned = BridgeSettings(
        schema_registry=SchemaRegistrySettings(url=URL),
        avro={"encoding": "single-object"},  # type: ignore[arg-type]
    )
    assert pinned.avro_encoding == AvroEncoding.SINGLE_OBJECT


def test_confluent_without_a_registry_and_bad_urls_are_refused() -> None:
    with pytest.raises(ConfigError, match="BRIDGE_AVRO__ENCODING=confluent needs"):
        load_settings(avro={"encoding": "confluent"})
    with pytest.raises(ConfigError, match="must be an http"):
        load_settings(schema_registry={"url": "ftp://x"})
    with pytest.raises(ConfigError, match="must not carry credentials") as creds:
        load_settings(schema_registry={"url": "https://u:hunter2@x"})
    assert "hunter2" not in str(creds.value)
    with pytest.raises(ConfigError, match="choose one auth"):
        load_settings(schema_registry={"url": URL, "username": "u", "bearer_token": "t"})
    with pytest.raises(ConfigError, match="needs __USERNAME"):
        load_settings(schema_registry={"url": URL, "password": "p"})
    assert load_settings(schema_registry={"url": ""}).schema_registry.url is None


def test_subjects_by_strategy() -> None:
    record = subjects_of(settings())
    t = BridgeSettings().topics
    assert [s.name for s in record] == [
        f"{t.snapshots}-value",
        f"{t.results}-value",
        f"{t.events}-com.norce.bridge.v1.OrderStateChanged",
        f"{t.events}-com.norce.bridge.v1.OrderDeleted",
    ]
    union = subjects_of(settings(events_subject_strategy="topic"))
    assert union[-1].name == f"{t.events}-value"
    assert union[-1].schemas == ("OrderStateChanged", "OrderDeleted")


# --- the client ----------------------------------------------------------------------------


async def test_basic_auth_from_a_file_and_bearer_from_env(tmp_path: Path) -> None:
    fake = FakeRegistry()
    secret = tmp_path / "password"
    secret.write_text("s3cret-pw\n")
    s = SchemaRegistrySettings(url=URL, username="bridge", password_file=secret)
    async with client_from_settings(s, transport=transport(fake)) as c:
        await c.set_compatibility("a-value", "BACKWARD")
    expected = base64.b64encode(b"bridge:s3cret-pw").decode()
    assert fake.requests[-1].headers["authorization"] == f"Basic {expected}"
    s = SchemaRegistrySettings(url=URL, bearer_token=SecretStr("tok-123"))
    async with client_from_settings(s, transport=transport(fake)) as c:
        await c.set_compatibility("a-value", "BACKWARD")
    assert fake.requests[-1].headers["authorization"] == "Bearer tok-123"
    assert fake.requests[-1].headers["content-type"] == "application/vnd.schemaregistry.v1+json"
    assert "tok-123" not in repr(s)


def test_missing_secrets_and_ca_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BRIDGE_SCHEMA_REGISTRY__PASSWORD"):
        client_from_settings(SchemaRegistrySettings(url=URL, username="u"))
    with pytest.raises(ConfigError, match="CA_FILE"):
        client_from_settings(SchemaRegistrySettings(url=URL, ca_file=tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match="no schema registry"):
        client_from_settings(SchemaRegistrySettings())


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, SchemaNotFoundError),
        (409, IncompatibleSchemaError),
        (500, RegistryUnavailableError),
        (429, RegistryUnavailableError),
        (401, RegistryRejectedError),
        (422, RegistryRejectedError),
    ],
)
async def test_answers_map_to_errors(status: int, error: type[Exception]) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"message": "  no\n way  ", "error_code": status})

    async with client(answer, bearer=SecretStr("tok-secret")) as c:
        with pytest.raises(error) as raised:
            await c.register("s-value", "{}")
    assert "no way" in str(raised.value)
    assert "tok-secret" not in str(raised.value)


async def test_a_response_that_never_arrives_times_out() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with client(hang, timeout_s=0.05) as c:
        with pytest.raises(RegistryUnavailableError, match="timed out"):
            await c.schema_by_id(1)


async def test_connection_errors_and_non_json_answers() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client(refuse) as c:
        with pytest.raises(RegistryUnavailableError, match="ConnectError"):
            await c.latest("s-value")

    async def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>")

    async with client(html) as c:
        with pytest.raises(RegistryRejectedError, match="without JSON"):
            await c.latest("s-value")


async def test_compatibility_lookup() -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/missing"):
            return httpx.Response(404, json={"message": "no"})
        return httpx.Response(200, json={"compatibilityLevel": "BACKWARD"})

    async with client(answer) as c:
        assert await c.compatibility("s-value") == "BACKWARD"
        assert await c.compatibility("missing") is None


async def test_fetcher_shares_one_request_between_concurrent_callers() -> None:
    release = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json={"schema": '"string"'})

    async with client(slow) as c:
        fetch = SchemaFetcher(c)
        waiting = [asyncio.create_task(fetch(7)) for _ in range(3)]
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(*waiting) == ['"string"'] * 3
        assert fetch.fetches == 1
        assert c.requests == 1


# --- start-up registration ------------------------------------------------------------------


async def test_registration_sets_compatibility_first_then_registers_and_frames() -> None:
    fake = FakeRegistry()
    s = settings()
    async with client(fake) as c:
        codec = await confluent_codec(AvroCodec.load(), c, s)
    subjects = [x.name for x in subjects_of(s)]
    assert list(fake.subjects) == subjects
    assert fake.config == dict.fromkeys(subjects, "BACKWARD")
    methods = [r.method for r in fake.requests]
    assert methods == ["PUT", "POST"] * len(subjects)
    snapshot_id = fake.subjects[subjects[0]][0]
    assert codec.knows_id(snapshot_id)
    assert codec.content_type == "application/vnd.confluent.avro"


async def test_union_registration_writes_one_union_schema() -> None:
    fake = FakeRegistry()
    s = settings(events_subject_strategy="topic")
    async with client(fake) as c:
        await confluent_codec(AvroCodec.load(), c, s)
    union = json.loads(fake.schemas[-1])
    assert [r["name"] for r in union] == ["OrderStateChanged", "OrderDeleted"]


async def test_unavailable_registry_is_retried_and_readiness_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeRegistry()
    fake.down = 3
    waiting: list[str] = []
    s = settings(retry_initial_s=0.001, retry_max_s=0.002)
    with caplog.at_level(logging.WARNING):
        async with client(fake) as c:
            got = await register_schemas(c, s, lambda subject: "{}", on_waiting=waiting.append)
    assert len(got) == 4
    assert waiting == ["schema registry unavailable; retrying"] * 3
    fake.down = 100
    async with client(fake) as c:
        with pytest.raises(RegistryUnavailableError):
            await register_schemas(c, s, lambda subject: "{}", deadline_s=0.01)


async def test_incompatible_schema_refuses_start_up_in_one_line() -> None:
    fake = FakeRegistry()
    s = settings()
    fake.incompatible.add(subjects_of(s)[1].name)
    async with client(fake) as c:
        with pytest.raises(ConfigError) as refused:
            await register_schemas(c, s, lambda subject: "{}")
    assert "\n" not in str(refused.value)
    assert "incompatible" in str(refused.value)
    assert subjects_of(s)[1].name in str(refused.value)


async def test_locked_down_registry_looks_schemas_up() -> None:
    fake = FakeRegistry()
    s = settings()
    async with client(fake) as c:
        registered = await register_schemas(c, s, lambda subject: subject.name)
        fake.requests.clear()
        looked_up = await register_schemas(
            c, settings(auto_register=False), lambda subject: subject.name
        )
        assert {k: r.schema_id for k, r in looked_up.items()} == {
            k: r.schema_id for k, r in registered.items()
        }
        assert {r.method for r in fake.requests} == {"POST"}
        assert not any(r.url.path.endswith("/versions") for r in fake.requests)
        with pytest.raises(ConfigError, match="not registered under subject"):
            await register_schemas(c, settings(auto_register=False), lambda subject: "other")


async def test_use_latest_writes_with_the_registered_version() -> None:
    fake = FakeRegistry()
    plain = AvroCodec.load()
    s = settings(use_latest=True)
    for subject in subjects_of(s):
        parts = [json.loads(plain.schema_text(n)) for n in subject.schemas]
        text = json.dumps(parts[0] if len(parts) == 1 else parts)
        fake.schemas.append(text)
        fake.subjects[subject.name] = [len(fake.schemas)]
    async with client(fake) as c:
        codec = await confluent_codec(plain, c, s)
    assert all(r.method == "GET" for r in fake.requests)
    assert codec.knows_id(1)
    with pytest.raises(ConfigError, match="subject"):
        async with client(FakeRegistry()) as c:
            await confluent_codec(plain, c, s)


# --- TLS with a CA file, against a real HTTPS server on loopback ----------------------------


async def test_tls_with_the_ca_file_and_refused_without_it(tmp_path: Path) -> None:
    import ssl

    import trustme
    from aiohttp import web

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    async def schema(request: web.Request) -> web.Response:
        return web.json_response({"schema": '"string"'})

    app = web.Application()
    app.router.add_get("/apis/ccompat/v7/schemas/ids/{id}", schema)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = f"https://127.0.0.1:{port}/apis/ccompat/v7"
        trusted = SchemaRegistrySettings(url=url, ca_file=ca_file, timeout_s=5)
        async with client_from_settings(trusted) as c:
            assert await c.schema_by_id(1) == '"string"'
        async with client_from_settings(SchemaRegistrySettings(url=url, timeout_s=5)) as c:
            with pytest.raises(RegistryUnavailableError, match="ConnectError"):
                await c.schema_by_id(1)
    finally:
        await runner.cleanup()
