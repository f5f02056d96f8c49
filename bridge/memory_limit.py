"""``norce_bridge_memory_limit_bytes``: the memory limit of the bridge's container (cgroup).

Read on every scrape, so an in-place resize of the pod shows. With
``process_resident_memory_bytes`` it lets an alert say "this instance is near its limit" before
the kernel kills it: the order state store grows with the orders an instance's partitions have
published (README, "Refresh and the order state store"), and a pod killed for memory restores the
same store again on restart.

cgroup v2 (``/sys/fs/cgroup/memory.max``) or v1 (``memory/memory.limit_in_bytes``). No limit
("max", or v1's page-rounded 2^63) or no cgroup file: the family is exported without a sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CGROUP_LIMIT_FILES", "MemoryLimit", "read_memory_limit"]

CGROUP_LIMIT_FILES: Final = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
_UNLIMITED_FROM: Final = 1 << 60  # v1 reports "no limit" as 2^63 rounded down to a page


def read_memory_limit(files: Sequence[Path] = CGROUP_LIMIT_FILES) -> int | None:
    """The first readable file's limit in bytes; None when unlimited or unknown."""
    for path in files:
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            return None
        return limit if 0 < limit < _UNLIMITED_FROM else None
    return None


class MemoryLimit(Collector):
    """The collector; ``files`` are the cgroup files to try, in order."""

    def __init__(self, files: Sequence[Path] = CGROUP_LIMIT_FILES) -> None:
        self._files = tuple(files)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "norce_bridge_memory_limit_bytes",
            "Memory limit of the bridge's container (cgroup memory.max); no sample when "
            "unlimited. Compare with process_resident_memory_bytes.",
        )
        limit = read_memory_limit(self._files)
        if limit is not None:
            family.add_metric([], float(limit))
        yield family
