"""The metrics of RefreshOrder and the order state store (``norce_bridge_`` prefix).

* ``notification_to_snapshot_seconds``: a RefreshOrder's ``norce.notification.received-at``
  header (when the ingress received the notification) -> its snapshot or tombstone acknowledged.
* ``order_state_restore_seconds`` (histogram) and ``order_state_restored_records`` /
  ``order_state_orders`` (gauges per partition): restoring the order state store on assignment.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ["NOTIFICATION_LATENCY_BUCKETS", "RefreshMetrics"]

NS: Final = "norce_bridge"
# 10 ms .. 10 min: ingress -> Kafka -> relay -> commands topic -> GET -> snapshot acknowledged.
NOTIFICATION_LATENCY_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
RESTORE_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class RefreshMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._to_snapshot = Histogram(
            f"{NS}_notification_to_snapshot_seconds",
            "Notification received by the ingress -> the RefreshOrder's snapshot acknowledged.",
            buckets=NOTIFICATION_LATENCY_BUCKETS,
            registry=registry,
        )
        self._restore = Histogram(
            f"{NS}_order_state_restore_seconds",
            "Time to restore the order state store of the partitions assigned in one rebalance.",
            buckets=RESTORE_BUCKETS,
            registry=registry,
        )
        self._records = Gauge(
            f"{NS}_order_state_restored_records",
            "State records read when the partition's order state store was last restored.",
            ["partition"],
            registry=registry,
        )
        self._orders = Gauge(
            f"{NS}_order_state_orders",
            "Orders in the partition's order state store (last published state known).",
            ["partition"],
            registry=registry,
        )

    def notification_to_snapshot(self, seconds: float) -> None:
        self._to_snapshot.observe(max(seconds, 0.0))

    def restored(self, seconds: float, sizes: dict[int, tuple[int, int]]) -> None:
        """One restore: its duration, and per partition (records read, orders known)."""
        self._restore.observe(max(seconds, 0.0))
        for partition, (records, orders) in sizes.items():
            self._records.labels(partition=str(partition)).set(records)
            self._orders.labels(partition=str(partition)).set(orders)

    def orders(self, partition: int, n: int) -> None:
        self._orders.labels(partition=str(partition)).set(n)

    def forget(self, partition: int) -> None:
        for g in (self._records, self._orders):
            with contextlib.suppress(KeyError):
                g.remove(str(partition))
