"""The reference pipeline's plumbing: configuration (``BRIDGE_*`` or flags), JSON log lines,
a command as it is queued, and one partition's offsets (``bridge_devkit.throughput.reference``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import TopicPartition

from bridge_devkit.throughput.reference_avro import rfc3339_now

ORDERS_PATH = "api/v0/checkout/orders/"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
Headers = list[tuple[str, bytes | None]]

OPTIONS: tuple[tuple[str, str, str], ...] = (
    # flag, BRIDGE_* variable, default
    ("bootstrap", "BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    ("group_id", "BRIDGE_KAFKA__GROUP_ID", "norce-order-bridge-reference"),
    ("commands", "BRIDGE_TOPICS__COMMANDS", "norce.order.commands"),
    ("snapshots", "BRIDGE_TOPICS__SNAPSHOTS", "norce.order.snapshots"),
    ("events", "BRIDGE_TOPICS__EVENTS", "norce.order.events"),
    ("results", "BRIDGE_TOPICS__RESULTS", "norce.order.command-results"),
    ("order_state", "BRIDGE_TOPICS__ORDER_STATE", "norce.order.bridge-state"),
    ("base_url", "BRIDGE_NORCE__BASE_URL", "http://127.0.0.1:8089"),
    ("api_key", "BRIDGE_NORCE__API_KEY", ""),
    ("adapter_id", "BRIDGE_NORCE__ADAPTER_ID", "norce-order-bridge"),
    ("max_connections", "BRIDGE_NORCE__MAX_CONNECTIONS", "256"),
    ("max_in_flight", "BRIDGE_PROCESSING__MAX_IN_FLIGHT", "256"),
    ("max_buffered", "BRIDGE_PROCESSING__MAX_BUFFERED_TOTAL", "20000"),
    ("commit_interval_s", "BRIDGE_PROCESSING__COMMIT_INTERVAL_S", "1.0"),
    ("linger_ms", "BRIDGE_KAFKA__LINGER_MS", "5"),
)


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    """Flags win; each defaults to its ``BRIDGE_*`` variable, then to the bridge's default."""
    p = argparse.ArgumentParser(description="Lean reference pipeline of the throughput benchmark")
    for name, var, default in OPTIONS:
        p.add_argument("--" + name.replace("_", "-"), default=env.get(var, default), help=var)
    p.add_argument("--no-gc-freeze", action="store_true", help="skip gc.freeze() after start-up")
    args = p.parse_args(argv)
    for name in ("max_connections", "max_in_flight", "max_buffered", "linger_ms"):
        setattr(args, name, int(getattr(args, name)))
    args.commit_interval_s = float(args.commit_interval_s)
    return args


def log(msg: str, level: str = "INFO", **fields: object) -> None:
    line = {"ts": rfc3339_now(), "level": level, "logger": "reference", "msg": msg, **fields}
    sys.stderr.write(json.dumps(line) + "\n")
    sys.stderr.flush()


class Command:
    __slots__ = ("command_id", "correlation_id", "offset", "order_id", "tp", "value")

    def __init__(self, tp: TopicPartition, offset: int, value: dict[str, Any]) -> None:
        self.tp = tp
        self.offset = offset
        self.value = value
        self.command_id: str = value["commandId"]
        self.order_id: str = value["orderId"]
        self.correlation_id: str | None = value.get("correlationId")


class Offsets:
    """One partition's offsets in arrival order; ``committable`` = contiguous done + 1."""

    __slots__ = ("committable", "committed", "done", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.committable = -1
        self.committed = -1

    def finish(self, offset: int) -> None:
        self.done.add(offset)
        pending, done = self.pending, self.done
        while pending and pending[0] in done:
            done.discard(pending[0])
            self.committable = pending.popleft() + 1


class HttpError(Exception):
    def __init__(self, method: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} answered {status}: {body[:200]!r}")
