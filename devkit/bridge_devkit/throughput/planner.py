"""Sizing the benchmark's runs: N from ``--commands``, else from the throughput measured so far."""

from __future__ import annotations

import argparse

from bridge.config import NorceSettings
from bridge_devkit.throughput.bench import COMPARISONS
from bridge_devkit.throughput.runs import PARTITIONS, RunResult, RunSpec

COMMANDS_PER_ORDER = 10
DEFAULT_COMMANDS = {0.0: 10_000, 20.0: 10_000, 100.0: 6_000}
FALLBACK_COMMANDS = 10_000


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def words(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def bridge_default_backend() -> str:
    """The HTTP backend the bridge uses when nothing is configured."""
    return str(NorceSettings.model_fields["http_backend"].default)


class Planner:
    """Sizes runs: N from --commands, else from the throughput measured so far in this invocation.

    Throughput does not depend on N (the window excludes start-up), so each run is sized to last
    about --run-seconds (partition mode at L > 0: --partition-seconds) at the rate expected from
    the last key-mode run, capped at 10,000 commands (6,000 at L=100 ms).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rates: dict[str, float] = {}  # backend -> last measured key-mode commands/s

    def learn(self, result: RunResult) -> None:
        s = result.spec
        if result.passed and s.mode == "key" and s.rate is None and s.pipeline == "bridge":
            self.rates[s.http_backend] = result.throughput

    def commands(self, mode: str, latency_ms: float, backend: str) -> int:
        a = self.args
        bound = None if latency_ms <= 0 else PARTITIONS / (2 * latency_ms / 1000)
        if mode == "key" and bound is not None:
            bound *= a.max_in_flight / PARTITIONS
        slow_partition = mode == "partition" and bound is not None
        seconds = a.partition_seconds if slow_partition else a.run_seconds
        if a.commands:
            n = int(a.commands)
            if slow_partition:
                assert bound is not None
                n = min(n, max(36, round(bound * seconds)))
            return n
        rate = self.rates.get(backend) or (max(self.rates.values()) if self.rates else None)
        if rate is None:
            return int(a.first_commands)
        expected = rate if bound is None else min(rate, bound * (0.5 if slow_partition else 0.8))
        cap = DEFAULT_COMMANDS.get(latency_ms, FALLBACK_COMMANDS)
        return int(max(min(a.min_commands, cap), min(cap, round(expected * seconds))))

    def orders(self, n: int) -> int:
        a = self.args
        per_order = a.commands / a.orders if a.commands and a.orders else COMMANDS_PER_ORDER
        return max(1, min(n // 3, round(n / per_order)))

    def spec(
        self,
        kind: str,
        mode: str,
        latency_ms: float,
        n: int,
        *,
        backend: str | None = None,
        rate: float | None = None,
        scrape: bool = False,
        stop_after_s: float | None = None,
        pipeline: str = "bridge",
        repetition: int = 0,
        variant: str | None = None,
    ) -> RunSpec:
        """The run's spec; reference runs are labelled ``reference`` instead of the mode (they
        are always per key), repetitions after the first ``#2``, ``#3``..."""
        backend = backend or self.args.http_backend
        label = f"{'reference' if pipeline == 'reference' else mode} L={latency_ms:g}ms"
        if kind == "paced":
            label = f"paced {label} @{rate:,.0f}/s"
        elif kind == "http":
            label = f"{backend} {label}"
        elif kind == "memory":
            label = f"memory {label}"
        elif variant is not None:  # comparison run: kind is the comparison's dimension
            compared = next(c for c in COMPARISONS if c.dimension == kind)
            label = f"{compared.label.format(variant)} {label}"
        if self.args.write_guard != "lease" and pipeline == "bridge":
            label = f"{label} guard={self.args.write_guard}"
        if repetition:
            label = f"{label} #{repetition + 1}"
        return RunSpec(
            label=label,
            kind=kind,
            mode=mode,
            latency_ms=latency_ms,
            commands=n,
            orders=self.orders(n),
            max_in_flight=self.args.max_in_flight,
            http_backend=backend,
            rate=rate,
            scrape=scrape,
            stop_after_s=stop_after_s,
            write_guard=self.args.write_guard,
            pipeline=pipeline,
            variant=variant,
        )
