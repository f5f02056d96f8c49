"""Several ``bridge run`` processes in one consumer group, as the scale-out runs use them.

A ``Fleet`` starts instances (``python -m bridge run`` through the harness's ``BridgeProcess``,
each with its own log file and ``BRIDGE_NORCE__ADAPTER_ID``, so the simulator's call log says
which instance made each request), tells from their logs when the group is stable (the latest
``partitions assigned`` of every instance, none revoked since, together cover every partition
exactly once), samples each instance's CPU from ``/proc``, stops them all with SIGTERM at once
and reads their logs: the counters of their ``bridge stopped`` lines and their ERROR lines.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_devkit.harness import BridgeProcess
from bridge_devkit.throughput.runs import interpolate, proc_cpu_s

ADAPTER_ENV = "BRIDGE_NORCE__ADAPTER_ID"


@dataclass
class Instance:
    """One bridge process of the fleet, with its CPU samples (wall time, utime + stime)."""

    name: str  # also its adapter id
    process: BridgeProcess
    spawned: float  # time.time() of the spawn
    samples: list[tuple[float, float]] = field(default_factory=list)

    def cpu_between(self, t0: float, t1: float) -> float:
        """CPU seconds this instance used between two wall times (NaN without samples)."""
        if not self.samples:
            return math.nan
        return interpolate(self.samples, t1) - interpolate(self.samples, max(t0, self.spawned))

    def ownership(self) -> tuple[list[int] | None, int]:
        """The partitions of its latest assignment (None if none, or revoked since) and how many
        ``partitions assigned`` lines it logged so far."""
        owned: list[int] | None = None
        assignments = 0
        for rec in self.process.log_records():
            msg = rec.get("msg")
            if msg == "partitions assigned":
                owned = sorted(int(p) for p in rec.get("partitions", []))
                assignments += 1
            elif msg == "partitions revoked":
                owned = None
        return owned, assignments


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs of the machine so far (``/proc/stat``)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


@dataclass
class Observer:
    """What else shares the machine during a run: the whole machine's CPU and the simulator's."""

    sim_pid: int | None
    machine: list[tuple[float, float, float]] = field(default_factory=list)  # t, busy, total
    sim: list[tuple[float, float]] = field(default_factory=list)

    def sample(self, now: float) -> None:
        jiffies = machine_jiffies()
        if jiffies is not None:
            self.machine.append((now, float(jiffies[0]), float(jiffies[1])))
        cpu = proc_cpu_s(self.sim_pid) if self.sim_pid is not None else None
        if cpu is not None:
            self.sim.append((now, cpu))

    def machine_busy_pct(self, t0: float, t1: float) -> float:
        """Percent of all the machine's CPUs busy between two wall times (any process)."""
        if len(self.machine) < 2:
            return math.nan
        busy = [(t, b) for t, b, _ in self.machine]
        total = [(t, tot) for t, _, tot in self.machine]
        d_total = interpolate(total, t1) - interpolate(total, t0)
        return 100 * (interpolate(busy, t1) - interpolate(busy, t0)) / d_total if d_total else 0

    def sim_cpu_pct(self, t0: float, t1: float) -> float:
        """The simulator's CPU in percent of one core between two wall times."""
        if not self.sim or t1 <= t0:
            return math.nan
        return 100 * (interpolate(self.sim, t1) - interpolate(self.sim, t0)) / (t1 - t0)


class Fleet:
    """Bridge instances of one run, all in the group of ``env``."""

    def __init__(
        self,
        env: Mapping[str, str],
        workdir: Path,
        *,
        prefix: str,
        wrapper: Sequence[str],
        sim_pid: int | None = None,
    ) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.prefix = prefix
        self.wrapper = list(wrapper)
        self.instances: list[Instance] = []
        self.observer = Observer(sim_pid)

    def spawn(self) -> Instance:
        name = f"{self.prefix}-{len(self.instances) + 1}"
        env = self.env | {ADAPTER_ENV: name}
        spawned = time.time()
        proc = BridgeProcess(env, self.workdir / f"bridge-{name}.log", argv=self.wrapper)
        inst = Instance(name, proc, spawned)
        self.instances.append(inst)
        return inst

    def sample(self) -> None:
        """One CPU sample of every running instance (and of the machine and the simulator);
        raises if an instance exited by itself."""
        now = time.time()
        self.observer.sample(now)
        for inst in self.instances:
            cpu = proc_cpu_s(inst.process.pid)
            if cpu is not None:
                inst.samples.append((now, cpu))
            if inst.process.exited:
                raise RuntimeError(
                    f"bridge {inst.name} exited during the run:\n{inst.process.log_tail()}"
                )

    def assignment(self, partitions: int) -> list[list[int]] | None:
        """Each instance's partitions if the group is stable (every instance owns a disjoint
        share and together they cover all ``partitions``), else None."""
        owned = [inst.ownership()[0] for inst in self.instances]
        if any(o is None for o in owned):
            return None
        shares = [o or [] for o in owned]
        flat = sorted(p for share in shares for p in share)
        return shares if flat == list(range(partitions)) else None

    def assignment_counts(self) -> list[int]:
        return [inst.ownership()[1] for inst in self.instances]

    async def wait_stable(self, partitions: int, timeout_s: float) -> list[list[int]]:
        """Poll the logs (with a deadline) until the group is stable; each instance's share."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.sample()
            shares = self.assignment(partitions)
            if shares is not None:
                return shares
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the group of {len(self.instances)} did not settle within {timeout_s:.0f}s: "
                    f"{[inst.ownership()[0] for inst in self.instances]}"
                )
            await asyncio.sleep(0.1)

    async def stop(self) -> list[int]:
        """SIGTERM every instance at once and wait; their exit codes."""
        return list(await asyncio.gather(*(inst.process.stop() for inst in self.instances)))

    def read_logs(self) -> tuple[list[dict[str, int]], list[str]]:
        """Per instance the counters of its ``bridge stopped`` line; the bridge's ERROR lines."""
        counters: list[dict[str, int]] = []
        errors: list[str] = []
        for inst in self.instances:
            records = inst.process.log_records()
            stopped = [r for r in records if r.get("msg") == "bridge stopped"]
            last: dict[str, Any] = stopped[-1] if stopped else {}
            counters.append(
                {k: v for k, v in last.items() if isinstance(v, int) and k != "uptime_s"}
            )
            errors += [
                f"{inst.name}: {r.get('msg')}"
                for r in records
                if r.get("level") in ("ERROR", "CRITICAL")
                and str(r.get("logger")).startswith("bridge")
            ]
        return counters, errors

    def logs(self) -> list[Path]:
        return [inst.process.log_path for inst in self.instances]


def summed(counters: Sequence[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return dict(total)
