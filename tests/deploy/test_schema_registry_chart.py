"""The chart's schema registry values (issue 15): settings, credential and CA files, and that
the settings they render are the bridge's own (``load_settings`` accepts them)."""

from __future__ import annotations

from typing import Any

import pytest
from helmtools import render, render_fails
from test_manifests import container, pod_spec, settings

from bridge.config import AvroEncoding, load_settings

URL = "https://registry.example/apis/ccompat/v7"


def mounts(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container(docs)["volumeMounts"]}


def volumes(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(docs)["volumes"]}


def test_no_registry_by_default() -> None:
    env = settings(render())
    assert not any("SCHEMA_REGISTRY" in k or "AVRO" in k for k in env)
    assert not any(name.startswith("schema-registry") for name in mounts(render()))


def test_basic_auth_and_ca_are_mounted_files() -> None:
    docs = render(
        sets=(
            f"config.schemaRegistry.url={URL}",
            "config.schemaRegistry.username=bridge",
            "config.schemaRegistry.credentialsSecret.name=registry-creds",
            "config.schemaRegistry.credentialsSecret.key=password",
            "config.schemaRegistry.caSecret.name=registry-ca",
            "config.schemaRegistry.eventsSubjectStrategy=topic",
            "config.schemaRegistry.autoRegister=false",
            "config.schemaRegistry.timeoutSeconds=5",
        )
    )
    env = settings(docs)
    assert env["BRIDGE_SCHEMA_REGISTRY__URL"] == URL
    assert env["BRIDGE_SCHEMA_REGISTRY__USERNAME"] == "bridge"
    assert env["BRIDGE_SCHEMA_REGISTRY__PASSWORD_FILE"] == (
        "/var/run/secrets/schema-registry/credential"
    )
    assert env["BRIDGE_SCHEMA_REGISTRY__CA_FILE"] == "/var/run/secrets/schema-registry-tls/ca.crt"
    assert "BRIDGE_SCHEMA_REGISTRY__BEARER_TOKEN_FILE" not in env
    assert mounts(docs)["schema-registry-credential"] == "/var/run/secrets/schema-registry"
    cred = volumes(docs)["schema-registry-credential"]["secret"]
    assert cred["secretName"] == "registry-creds"
    assert cred["items"] == [{"key": "password", "path": "credential"}]
    ca = volumes(docs)["schema-registry-tls-ca"]["secret"]
    assert ca["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    # What the chart renders is what the bridge accepts (files are read only at start-up).
    bridge_env = {
        k.removeprefix("BRIDGE_").lower(): v
        for k, v in env.items()
        if k.startswith(("BRIDGE_SCHEMA_REGISTRY__", "BRIDGE_AVRO__"))
    }
    registry = {k.split("__", 1)[1]: v for k, v in bridge_env.items()}
    parsed = load_settings(schema_registry=registry)
    assert parsed.avro_encoding == AvroEncoding.CONFLUENT
    assert parsed.schema_registry.events_subject_strategy == "topic"
    assert parsed.schema_registry.auto_register is False


def test_without_username_the_credential_is_a_bearer_token() -> None:
    env = settings(
        render(
            sets=(
                f"config.schemaRegistry.url={URL}",
                "config.schemaRegistry.credentialsSecret.name=registry-token",
                "config.schemaRegistry.encoding=confluent",
            )
        )
    )
    assert env["BRIDGE_SCHEMA_REGISTRY__BEARER_TOKEN_FILE"] == (
        "/var/run/secrets/schema-registry/credential"
    )
    assert env["BRIDGE_AVRO__ENCODING"] == "confluent"


@pytest.mark.parametrize(
    "item",
    [
        "config.schemaRegistry.url=ftp://x",
        "config.schemaRegistry.encoding=json",
        "config.schemaRegistry.eventsSubjectStrategy=record",
        "config.schemaRegistry.extra=1",
    ],
)
def test_invalid_values_are_refused(item: str) -> None:
    assert "schemaRegistry" in render_fails([item])
