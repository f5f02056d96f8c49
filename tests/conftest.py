"""Shared fixtures: one real Kafka broker per test session, fresh topics and groups per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from bridge_devkit.localkafka import LocalKafka, external_bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The session's broker: a local KRaft broker unless KAFKA_BOOTSTRAP_SERVERS is set."""
    external = external_bootstrap()
    if external:
        yield external
        return
    broker = LocalKafka()
    t0 = time.monotonic()
    broker.start()
    print(
        f"\n[localkafka] broker ready at {broker.bootstrap_servers} in {time.monotonic() - t0:.2f}s"
    )
    try:
        yield broker.bootstrap_servers
    finally:
        broker.cleanup()


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of names unique to this test (topics, groups, transactional ids)."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make
