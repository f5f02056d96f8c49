"""Garbage-collection pauses of the bridge process, timed per generation and exported.

``bridge.app`` tunes the collector after start-up (``gc.freeze()``, a larger young threshold);
this collector shows what that leaves: ``norce_bridge_gc_pause_seconds{generation}`` and
``norce_bridge_gc_pause_max_seconds{generation}``, and the summary the shutdown line carries.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

__all__ = ["GC_PAUSE_BUCKETS", "GcPauses"]

# 50 us .. 1 s: a young collection takes microseconds, a full one of a large heap tens of ms.
GC_PAUSE_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
)  # fmt: skip
_GENERATIONS: Final = 3


class GcPauses:
    """Times every garbage collection per generation (``gc.callbacks``) and exports the pauses.

    ``norce_bridge_gc_pause_seconds{generation}`` (histogram) and
    ``norce_bridge_gc_pause_max_seconds{generation}`` (the longest pause since it was
    installed), every generation's series present (at zero) from ``install()`` on, so that a
    dashboard sees "no full collection" rather than no data. The callback only does arithmetic on
    plain lists (no lock: it runs inside the collector, which may interrupt any code, including
    a metric update holding its lock); the families are built when ``/metrics`` is scraped.
    """

    def __init__(self, buckets: tuple[float, ...] = GC_PAUSE_BUCKETS) -> None:
        self._bounds = buckets
        self._started = 0.0
        self._started_cpu = 0.0
        self._max_cpu = [0.0] * _GENERATIONS
        self._sum_cpu = [0.0] * _GENERATIONS
        self._counts = [[0] * (len(buckets) + 1) for _ in range(_GENERATIONS)]
        self._sums = [0.0] * _GENERATIONS
        self._max = [0.0] * _GENERATIONS
        self._installed = False

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._started_cpu = time.thread_time()
            return
        pause = time.perf_counter() - self._started
        cpu = time.thread_time() - self._started_cpu
        generation = info.get("generation", 0)
        if not 0 <= generation < _GENERATIONS:
            return
        self._sum_cpu[generation] += cpu
        if cpu > self._max_cpu[generation]:
            self._max_cpu[generation] = cpu
        self._counts[generation][bisect.bisect_left(self._bounds, pause)] += 1
        self._sums[generation] += pause
        if pause > self._max[generation]:
            self._max[generation] = pause

    def install(self) -> None:
        """Start timing collections (idempotent)."""
        if not self._installed:
            gc.callbacks.append(self)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self)
            self._installed = False

    def longest(self, generation: int) -> float:
        """The longest pause of ``generation`` seen so far, in seconds (0 before the first)."""
        return self._max[generation]

    def summary(self) -> dict[str, list[float] | list[int]]:
        """Collections and longest pause (ms) per generation, for the shutdown log line.

        ``gc_cpu_max_ms`` / ``gc_cpu_total_ms``: the longest and the total collection time in CPU
        time of the collecting thread (on a busy machine the wall-time pause also counts the time
        the process was not scheduled).
        """
        return {
            "gc_collections": [sum(c) for c in self._counts],
            "gc_pause_max_ms": [round(m * 1000, 3) for m in self._max],
            "gc_cpu_max_ms": [round(m * 1000, 3) for m in self._max_cpu],
            "gc_cpu_total_ms": [round(m * 1000, 1) for m in self._sum_cpu],
        }

    def describe(self) -> list[Metric]:
        return [
            HistogramMetricFamily(
                "norce_bridge_gc_pause_seconds",
                "Garbage-collector pauses of this process, by generation (2 = full collection).",
                labels=["generation"],
            ),
            GaugeMetricFamily(
                "norce_bridge_gc_pause_max_seconds",
                "Longest garbage-collector pause since start-up, by generation.",
                labels=["generation"],
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        hist, longest = self.describe()
        assert isinstance(hist, HistogramMetricFamily)
        assert isinstance(longest, GaugeMetricFamily)
        if not self._installed and not any(map(any, self._counts)):
            return  # never timed anything: no series
        for generation in range(_GENERATIONS):
            counts = list(self._counts[generation])
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            label = [str(generation)]
            hist.add_metric(label, buckets, self._sums[generation])
            longest.add_metric(label, self._max[generation])
        yield hist
        yield longest
