"""The bridges of a chaos run: ``bridge run`` processes in slots, kept running by a supervisor.

Slot 0 is the first bridge, slot 1 the second instance (rebalances), ``JOINER_SLOT`` the
instance a fencing step starts to take partitions over. A wanted slot whose process exited by
itself is restarted after a backoff (as Kubernetes would), and counted as a self-exit.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bridge_devkit.chaos.fencing import LogTail
from bridge_devkit.chaos.timeline import Timeline
from bridge_devkit.harness import BridgeProcess, log_count

JOINER_SLOT = 2  # the slot of the instance a fencing step starts to take partitions over
ASSIGNED = '"msg": "partitions assigned"'  # the bridge's log line once it owns partitions


def adapter_id(label: str, n: int) -> str:
    """The ``x-adapterid`` of bridge incarnation ``n`` of a run."""
    return f"chaos-{label}-{n}"


@dataclass
class Incarnation:
    n: int
    slot: int
    proc: BridgeProcess
    started_t: float
    ended_t: float | None = None
    end: str | None = None  # kill -9 | exit N (self) | SIGTERM -> exit N
    self_exit: bool = False

    @property
    def log(self) -> Path:
        return self.proc.log_path

    @property
    def alive(self) -> bool:
        return not self.proc.exited

    async def wait_log(self, needle: str, timeout_s: float) -> bool:
        """Poll the log until it contains ``needle`` (or the process exits, or time is up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive:
            if log_count(self.log, needle):
                return True
            await asyncio.sleep(0.05)
        return False


@dataclass
class KillRecord:
    t: float
    incarnation: int
    pid: int
    uptime_s: float
    restart_delay_s: float
    during_replay: str = ""


class Fleet:
    """Bridge processes in slots; a supervisor keeps the wanted slots running."""

    def __init__(self, env: dict[str, str], logdir: Path, label: str, clock: Timeline) -> None:
        self.env = env
        self.logdir = logdir
        self.label = label
        self.clock = clock
        self.slots: dict[int, Incarnation | None] = {0: None, 1: None, JOINER_SLOT: None}
        self.tails: dict[int, LogTail] = {}
        self.wanted: set[int] = {0}
        self.restart_at: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.incarnations: list[Incarnation] = []
        self.kills: list[KillRecord] = []
        self.stopping = False

    def t(self) -> float:
        return self.clock.t()

    def spawn(self, slot: int) -> Incarnation:
        n = len(self.incarnations) + 1
        env = dict(self.env)
        env["BRIDGE_KAFKA__CLIENT_ID"] = f"chaos-{self.label}-{n}"
        # every API call names the incarnation that made it (the simulator logs x-adapterid)
        env["BRIDGE_NORCE__ADAPTER_ID"] = adapter_id(self.label, n)
        proc = BridgeProcess(env, self.logdir / f"{self.label}-bridge-{n:02d}.log")
        inc = Incarnation(n, slot, proc, self.t())
        self.incarnations.append(inc)
        self.tails[n] = LogTail(n, inc.log)
        self.slots[slot] = inc
        return inc

    def tail(self, inc: Incarnation) -> LogTail:
        return self.tails[inc.n]

    def poll_logs(self) -> None:
        for tail in self.tails.values():
            tail.poll()

    def running(self) -> list[Incarnation]:
        return [inc for inc in self.slots.values() if inc is not None and inc.alive]

    def _exited(self, slot: int, inc: Incarnation, now: float) -> None:
        inc.end, inc.ended_t, inc.self_exit = f"exit {inc.proc.returncode}", self.t(), True
        delay = self.backoff.get(slot, 1.0)
        self.backoff[slot] = min(5.0, delay * 1.5)
        self.restart_at[slot] = now + delay
        self.clock.say(
            f"bridge #{inc.n} exited by itself (code {inc.proc.returncode}); "
            f"restarting in {delay:.1f}s"
        )
        self.slots[slot] = None

    async def supervise(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for slot in sorted(self.wanted):
                inc = self.slots[slot]
                if inc is not None and not inc.alive and inc.end is None:
                    self._exited(slot, inc, now)
                    continue
                if inc is None and now >= self.restart_at.get(slot, 0.0) and not self.stopping:
                    new = self.spawn(slot)
                    if len(self.incarnations) > 1:
                        self.clock.say(f"started bridge #{new.n} (slot {slot})")
            for slot, inc in self.slots.items():
                if inc is not None and inc.alive and self.t() - inc.started_t > 20:
                    self.backoff[slot] = 1.0
            await asyncio.sleep(0.1)

    async def wait_running(
        self, slot: int | None, timeout_s: float, min_uptime_s: float = 0.0
    ) -> Incarnation | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            candidates = [
                inc
                for inc in self.running()
                if (slot is None or inc.slot == slot) and self.t() - inc.started_t >= min_uptime_s
            ]
            if candidates:
                return candidates[0]
            await asyncio.sleep(0.05)
        return None

    def kill(self, inc: Incarnation, restart_delay: float, note: str = "") -> KillRecord:
        inc.proc.kill()  # SIGKILL to this pid only
        inc.end, inc.ended_t = "kill -9", self.t()
        rec = KillRecord(
            self.t(), inc.n, inc.proc.pid, self.t() - inc.started_t, restart_delay, note
        )
        self.kills.append(rec)
        if self.slots.get(inc.slot) is inc:
            self.slots[inc.slot] = None
        self.restart_at[inc.slot] = time.monotonic() + restart_delay
        return rec

    async def stop_slot(self, slot: int, timeout_s: float = 40.0) -> int | None:
        """SIGTERM the slot's bridge (graceful drain) and stop wanting the slot."""
        self.wanted.discard(slot)
        inc = self.slots.get(slot)
        self.slots[slot] = None
        if inc is None or not inc.alive:
            return None
        code = await inc.proc.stop(timeout_s)
        killed = code == -9
        inc.end = "SIGTERM -> no exit, killed" if killed else f"SIGTERM -> exit {code}"
        inc.ended_t = self.t()
        return code

    async def stop_all(self) -> list[tuple[int, int | None]]:
        self.stopping = True
        codes = []
        for slot in sorted(self.slots):
            inc = self.slots.get(slot)
            if inc is not None:
                codes.append((inc.n, await self.stop_slot(slot)))
        return codes
