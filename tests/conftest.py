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


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of names unique to this test (topics, groups, transactional ids)."""

    return unique
