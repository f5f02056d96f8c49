"""Shared fixtures: one real Kafka broker per test session, fresh topics and groups per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from bridge_devkit.harness import broker, unique


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The session's broker: a local KRaft broker unless KAFKA_BOOTSTRAP_SERVERS is set."""
    with broker(lambda text: print(f"\n[localkafka] {text}")) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def registry_url() -> Iterator[str]:
    """The session's schema registry (Confluent API): a local Apicurio Registry unless
    SCHEMA_REGISTRY_URL is set (issue 15)."""
    from bridge_devkit.localregistry import registry_for_dev

    with registry_for_dev() as url:
        yield url


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of names unique to this test (topics, groups, transactional ids)."""

    return unique
