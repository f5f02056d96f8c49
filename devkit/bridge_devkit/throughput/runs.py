"""One benchmark run: what it does (``RunSpec``), what it measured (``RunResult``), and the
measurements of the bridge process (``/proc``) it is made of."""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PARTITIONS = 12
PIPELINES = ("bridge", "reference")  # what a run measures: ``bridge run`` or the lean reference
WARMUP_S = 3.0  # paced runs: latencies of commands sent in the first WARMUP_S are the warm-up
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RunSpec:
    label: str
    kind: str  # throughput | paced | memory | http | a comparison's dimension (see bench.py)
    mode: str  # key | partition
    latency_ms: float
    commands: int
    orders: int
    max_in_flight: int
    http_backend: str
    rate: float | None = None  # commands/s produced while the bridge runs (paced runs)
    scrape: bool = False  # poll the bridge's /metrics for the buffered-records gauge
    stop_after_s: float | None = None  # SIGTERM the bridge this long after the first result
    write_guard: str = "lease"  # BRIDGE_PROCESSING__WRITE_GUARD
    pipeline: str = "bridge"  # bridge | reference (bridge_devkit.throughput.reference)
    variant: str | None = None  # of the comparison ``kind`` (e.g. otlp): bench.COMPARISONS

    @property
    def width(self) -> int:
        return self.max_in_flight if self.mode == "key" else PARTITIONS

    @property
    def bound(self) -> float | None:
        """Commands/s when every slot is always busy with two API round trips of L."""
        if self.latency_ms <= 0:
            return None
        return self.width / (2 * self.latency_ms / 1000)


@dataclass
class RunResult:
    spec: RunSpec
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    processed: int = 0  # commands with a result (N unless the run was stopped early)
    window_s: float = math.nan
    throughput: float = math.nan
    cpu_s: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    latency_samples: int = 0
    warmup_p99_ms: float = math.nan  # paced runs: commands sent in the first WARMUP_S
    steady_p99_ms: float = math.nan  # paced runs: commands sent after WARMUP_S
    # paced runs, steady state, split at the snapshot's fetchedAt (when the command's work
    # started: both pipelines stamp it before the first API call): p99 of CreateTime ->
    # fetchedAt (producer, broker, fetch, queueing) and of fetchedAt -> snapshot log-append time
    # (API calls, encoding, produce)
    steady_p99_to_start_ms: float = math.nan
    steady_p99_start_to_snapshot_ms: float = math.nan
    warmup_samples: int = 0
    # paced runs, per second of sending: (second, commands, p50, p99, max latency in ms)
    paced_seconds: list[tuple[int, int, float, float, float]] = field(default_factory=list)
    bytes_checked: int = 0  # orders whose last snapshot was compared byte for byte
    peak_rss_mb: float = math.nan
    peak_buffered: int | None = None
    api_requests: int = 0
    wall_s: float = math.nan
    startup_s: float = math.nan  # bridge spawned -> first API request
    verify_s: float = math.nan
    bridge_warnings: int = 0
    bridge_counters: dict[str, Any] = field(default_factory=dict)
    # full (gen2) collections after start-up and the longest of them, from the stopped line
    gen2_collections: int | None = None
    gen2_max_ms: float = math.nan
    young_max_ms: float = math.nan  # the longest generation 0 or 1 collection
    pid: int | None = None  # of the bridge/reference process (names its py-spy profile)

    @property
    def cpu_ms_per_command(self) -> float:
        return self.cpu_s / self.processed * 1000 if self.processed else math.nan

    @property
    def pct_of_bound(self) -> float:
        bound = self.spec.bound
        return math.nan if bound is None else 100 * self.throughput / bound

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"]["bound"] = self.spec.bound
        data["cpu_s_per_1000"] = self.cpu_ms_per_command
        data["pct_of_bound"] = self.pct_of_bound
        data["api_requests_per_command"] = self.api_requests / max(1, self.processed)
        clean: dict[str, Any] = _nan_to_none(data)
        return clean


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# -- /proc ------------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process in seconds (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a process in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def interpolate(samples: Sequence[tuple[float, float]], at: float) -> float:
    """Linear interpolation of (time, value) samples sorted by time."""
    times = [t for t, _ in samples]
    i = bisect.bisect_left(times, at)
    if i <= 0:
        return samples[0][1]
    if i >= len(samples):
        return samples[-1][1]
    (t1, v1), (t2, v2) = samples[i - 1], samples[i]
    return v1 if t2 <= t1 else v1 + (v2 - v1) * (at - t1) / (t2 - t1)
