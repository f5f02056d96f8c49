"""The topic/settings factory: unique topics and group per run, settings and process environments.

Every run of a test, the demo or a benchmark gets topics and a consumer group nobody else uses
(``fresh_topics``, ``unique``); ``make_settings`` builds the ``BridgeSettings`` of an in-process
bridge and ``deployment_env`` the ``BRIDGE_*`` environment of a ``bridge run`` process configured
like a deployment (topics created beforehand, ``BRIDGE_TOPICS__CREATE_MISSING=false``).
"""

from __future__ import annotations

import uuid
from typing import Any

from bridge.config import (
    BridgeSettings,
    HttpSettings,
    KafkaSettings,
    NorceSettings,
    ProcessingSettings,
    RetrySettings,
    TopicSettings,
)
from bridge_devkit.harness.util import clean_env

API_KEY = "test-api-key-0123456789"


def unique(prefix: str) -> str:
    """A name nobody else uses: ``prefix`` plus ten random hex digits."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def fresh_topics(prefix: str, partitions: int = 3) -> TopicSettings:
    """The topics of one run (``<prefix>-<random>.commands`` ...), with ``partitions`` each."""
    base = unique(prefix)
    return TopicSettings(
        commands=f"{base}.commands",
        snapshots=f"{base}.snapshots",
        events=f"{base}.events",
        results=f"{base}.results",
        dlq=f"{base}.dlq",
        order_state=f"{base}.state",
        notifications=f"{base}.notifications",
        partitions=partitions,
    )


def make_settings(
    bootstrap: str, sim_url: str, *, partitions: int = 3, **processing: Any
) -> BridgeSettings:
    """Settings of an in-process bridge on fresh topics and group, tuned for quick tests."""
    defaults: dict[str, Any] = {"commit_interval_s": 0.2, "drain_deadline_s": 10.0}
    defaults.update(processing)
    return BridgeSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, group_id=unique("g")),
        topics=fresh_topics("t", partitions),
        norce=NorceSettings(
            base_url=sim_url,
            read_timeout_s=2.0,
            retry=RetrySettings(max_attempts=3, base_delay_s=0.02, max_delay_s=0.2, deadline_s=3.0),
        ),
        processing=ProcessingSettings(**defaults),
        http=HttpSettings(host="127.0.0.1", port=0),
    )


def env_name(key: str) -> str:
    """``processing__max_in_flight`` -> ``BRIDGE_PROCESSING__MAX_IN_FLIGHT`` (a name already
    starting with ``BRIDGE_`` is kept as it is)."""
    return key if key.startswith("BRIDGE_") else f"BRIDGE_{key.upper()}"


def env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def deployment_env(
    bootstrap: str,
    group: str,
    topics: TopicSettings,
    sim_url: str,
    api_key: str,
    **settings: object,
) -> dict[str, str]:
    """The environment of a ``bridge run`` process on ``topics`` and ``group``, configured by
    ``BRIDGE_*`` variables like a deployment; ``settings`` add or override variables by their
    nested name (``processing__max_in_flight=64``) or their full name (``BRIDGE_LOG_LEVEL``)."""
    env = clean_env(
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        BRIDGE_KAFKA__GROUP_ID=group,
        BRIDGE_TOPICS__COMMANDS=topics.commands,
        BRIDGE_TOPICS__SNAPSHOTS=topics.snapshots,
        BRIDGE_TOPICS__EVENTS=topics.events,
        BRIDGE_TOPICS__RESULTS=topics.results,
        BRIDGE_TOPICS__DLQ=topics.dlq,
        BRIDGE_TOPICS__ORDER_STATE=topics.order_state,
        BRIDGE_TOPICS__NOTIFICATIONS=topics.notifications,
        BRIDGE_TOPICS__CREATE_MISSING="false",
        BRIDGE_NORCE__BASE_URL=sim_url,
        BRIDGE_NORCE__API_KEY=api_key,
        BRIDGE_HTTP__HOST="127.0.0.1",
        BRIDGE_HTTP__PORT="0",
    )
    env.update({env_name(k): env_value(v) for k, v in settings.items()})
    return env


def process_env(settings: BridgeSettings, sim_url: str, **extra: str) -> dict[str, str]:
    """The environment of a test's ``bridge run`` process on ``settings``' topics and group."""
    s = settings
    return deployment_env(
        s.kafka.bootstrap_servers,
        s.kafka.group_id,
        s.topics,
        sim_url,
        API_KEY,
        processing__commit_interval_s="0.2",
        processing__max_in_flight="16",
        log_level="DEBUG",
        **extra,
    )
