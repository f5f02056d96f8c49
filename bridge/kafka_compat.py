"""The bridge's only reach into aiokafka's private API, isolated and tested against the broker.

aiokafka (pinned in ``pyproject.toml``) offers no public hook for "a heartbeat succeeded" nor a
public way to read committed offsets *with their metadata*. Both are needed:

* :func:`observe_group_liveness` wraps the group coordinator's request sender
  (``consumer._coordinator._send_req``, the one method through which every Heartbeat and
  SyncGroup request goes) and reports, for each Heartbeat (API key 12) or SyncGroup (API key 14)
  answered without error, the lease-clock time at which the request was *sent*. A Heartbeat
  answered ``REBALANCE_IN_PROGRESS`` also counts: the coordinator keeps a member that heartbeats
  during a rebalance until the rebalance timeout, and the bridge finishes its revoke well before.
* :func:`fetch_committed_with_metadata` reads committed offsets with their metadata strings.

``tests/integration/test_kafka_compat.py`` checks both against the real broker, so an aiokafka
upgrade that moves these internals fails a test instead of silently disabling fencing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bridge.errors import BridgeError
from bridge.lease import lease_clock

HEARTBEAT_API_KEY = 12
SYNC_GROUP_API_KEY = 14
NO_ERROR = 0
REBALANCE_IN_PROGRESS = 27
_RENEWING = {
    HEARTBEAT_API_KEY: (NO_ERROR, REBALANCE_IN_PROGRESS),
    SYNC_GROUP_API_KEY: (NO_ERROR,),
}


class KafkaCompatError(BridgeError):
    """aiokafka's internals are not what this module was written against."""


def _coordinator(consumer: AIOKafkaConsumer) -> Any:
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not callable(getattr(coordinator, "_send_req", None)):
        raise KafkaCompatError(
            "aiokafka's group coordinator has no _send_req: this aiokafka version is not "
            "supported (write fencing needs it); install the version pinned by the project"
        )
    return coordinator


def observe_group_liveness(
    consumer: AIOKafkaConsumer,
    on_alive: Callable[[float], None],
    clock: Callable[[], float] = lease_clock,
) -> None:
    """Call ``on_alive(sent_at)`` for every successful Heartbeat/SyncGroup of ``consumer``.

    Must be called after ``consumer.start()`` (which creates the coordinator) and before
    ``subscribe()`` (which starts the first join).
    """
    coordinator = _coordinator(consumer)
    original = coordinator._send_req

    async def send_req(request: Any) -> Any:
        sent_at = clock()
        response = await original(request)
        ok = _RENEWING.get(int(getattr(request, "API_KEY", -1)), ())
        if getattr(response, "error_code", None) in ok:
            on_alive(sent_at)
        return response

    coordinator._send_req = send_req


async def fetch_committed_with_metadata(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, tuple[int, str]]:
    """Committed (offset, metadata) per partition; partitions without a commit are left out."""
    parts = list(partitions)
    if not parts:
        return {}
    committed = await _coordinator(consumer).fetch_committed_offsets(parts)
    out: dict[TopicPartition, tuple[int, str]] = {}
    for tp, om in committed.items():
        if om is not None and om.offset >= 0:
            out[tp] = (int(om.offset), str(om.metadata or ""))
    return out
