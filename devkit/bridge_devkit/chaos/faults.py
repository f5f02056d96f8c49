"""The faults of a chaos run, at seeded moments while commands are produced.

``kill -9`` of bridges (victims up >= 2 s, restarted after 0.2-3 s; one kill lands right after a
restarted bridge was assigned its partitions, i.e. while it replays), one broker restart (same
data directory; production pauses meanwhile), a second bridge instance for part of the run
(rebalances), and the two fencing steps of ``fencer`` (a pause and an expulsion).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bridge_devkit.chaos.context import RunContext
from bridge_devkit.chaos.fencer import Fencer
from bridge_devkit.chaos.fleet import ASSIGNED, Fleet, Incarnation
from bridge_devkit.harness import log_count

FAULTS: dict[str, Any] = {
    "error_rate": 0.10,
    "error_statuses": [500, 502, 503, 504],
    "rate_limit_rate": 0.05,
    "retry_after_s": 0.2,
    "hang_rate": 0.02,
    "hang_s": 3.0,  # longer than the bridge's read timeout
    "reset_rate": 0.01,
    "fault_after_apply_rate": 0.01,
}
NO_FAULTS: dict[str, Any] = {
    "error_rate": 0.0,
    "rate_limit_rate": 0.0,
    "hang_rate": 0.0,
    "reset_rate": 0.0,
    "fault_after_apply_rate": 0.0,
}


class Faults:
    """The fault schedule of one run, and what it did (``broker_restart``, ``second_window``)."""

    def __init__(self, ctx: RunContext, fleet: Fleet, fencer: Fencer, gate: asyncio.Event) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.fleet = fleet
        self.fencer = fencer
        self.gate = gate  # production pauses while it is cleared
        self.broker_restart: tuple[float, float] | None = None  # (at, took)
        self.second_window: list[float] = []

    def schedule(self) -> list[tuple[float, str]]:
        rng, p = self.ctx.rng, self.ctx.profile
        T = p.produce_s
        events: list[tuple[float, str]] = []
        random_kills = max(0, p.kills - 1)
        kill_times = sorted(rng.uniform(0.08 * T, 0.95 * T) for _ in range(random_kills))
        replay_after = rng.randrange(random_kills) if random_kills else -1
        for i, t in enumerate(kill_times):
            events.append((t, "kill+replay-kill" if i == replay_after else "kill"))
        if random_kills == 0:
            events.append((rng.uniform(0.2 * T, 0.5 * T), "replay-kill"))
        events.append((rng.uniform(0.4 * T, 0.6 * T), "broker-restart"))
        if p.two_instances:
            events.append((rng.uniform(0.15 * T, 0.3 * T), "second-start"))
            events.append((rng.uniform(0.65 * T, 0.8 * T), "second-stop"))
        # the fencing steps while commands keep coming (they need busy orders), alternating
        # (expulsion first: a pause step can block for tens of seconds, and each step needs
        # commands still to come when it starts; evenly spread over the first half, jittered)
        chosen: list[str] = []
        counts = Counter({"pause": p.pauses, "expel": p.expulsions})
        for kind in ["expel", "pause"] * max(p.pauses, p.expulsions):
            if counts[kind] > 0:
                chosen.append(kind)
                counts[kind] -= 1
        step = 0.45 * T / max(1, len(chosen))
        fenced = [0.05 * T + i * step + rng.uniform(0, 0.3 * step) for i in range(len(chosen))]
        events.extend(zip(fenced, chosen, strict=True))
        events.sort()
        return events

    async def run(self) -> None:
        shift = 0.0  # time spent in blocking events pushes the rest of the schedule back
        for at, kind in self.schedule():
            await asyncio.sleep(max(0.0, at + shift - self.clock.t()))
            began = self.clock.t()
            if kind in ("kill", "kill+replay-kill"):
                await self._kill(replay_kill=kind == "kill+replay-kill")
            elif kind == "replay-kill":
                await self._replay_kill(slot=None)
            elif kind == "broker-restart":
                await self._broker_restart()
            elif kind == "pause":
                await self.fencer.pause()
            elif kind == "expel":
                await self.fencer.expel()
            elif kind == "second-start":
                self.fleet.wanted.add(1)
                self.second_window.append(self.clock.t())
                self.clock.note("second bridge instance wanted (rebalance)")
            elif kind == "second-stop":
                # not while it is still starting (it would die of SIGTERM before its handler)
                await self.fleet.wait_running(1, 30, min_uptime_s=3.0)
                code = await self.fleet.stop_slot(1)
                self.second_window.append(self.clock.t())
                self.clock.note(f"second bridge instance stopped with SIGTERM (exit {code})")
            # (the fencing steps do not push the schedule: they need commands still coming)
            if kind in ("kill+replay-kill", "replay-kill", "broker-restart"):
                shift += self.clock.t() - began

    async def _kill(self, *, replay_kill: bool) -> None:
        # a victim that has been up for a moment (killing a process that is still importing
        # modules tests nothing)
        inc = await self.fleet.wait_running(None, 60, min_uptime_s=2.0)
        if inc is None:
            self.clock.note("no bridge running to kill")
            return
        running = [i for i in self.fleet.running() if self.fleet.t() - i.started_t >= 2.0]
        inc = self.ctx.rng.choice(running) if running else inc
        delay = self.ctx.rng.uniform(0.2, 3.0)
        rec = self.fleet.kill(inc, delay)
        self.clock.note(
            f"kill -9 bridge #{rec.incarnation} (pid {rec.pid}, up {rec.uptime_s:.1f}s); "
            f"restart in {delay:.1f}s"
        )
        if replay_kill:
            await self._replay_kill(slot=inc.slot)

    async def _replay_kill(self, slot: int | None) -> None:
        """Kill a restarted bridge right after it was assigned partitions (while it replays)."""
        # a fresh incarnation: wait for one that starts after now
        after = len(self.fleet.incarnations)
        deadline = time.monotonic() + 60
        inc: Incarnation | None = None
        while time.monotonic() < deadline:
            fresh = [
                i
                for i in self.fleet.incarnations[after:]
                if i.alive and (slot is None or i.slot == slot)
            ]
            if fresh:
                inc = fresh[0]
                break
            if slot is None and self.fleet.running():
                # nothing restarting: kill one to get a fresh incarnation
                victim = self.ctx.rng.choice(self.fleet.running())
                rec = self.fleet.kill(victim, self.ctx.rng.uniform(0.2, 1.0))
                self.clock.note(f"kill -9 bridge #{rec.incarnation} (pid {rec.pid}) to replay")
                slot = victim.slot
            await asyncio.sleep(0.05)
        if inc is None:
            self.clock.note("no restarted bridge appeared for the replay kill")
            return
        await inc.wait_log(ASSIGNED, max(1.0, deadline - time.monotonic()))
        if not inc.alive:
            self.clock.note(f"bridge #{inc.n} exited before the replay kill")
            return
        await asyncio.sleep(self.ctx.rng.uniform(0.1, 1.0))
        recovering = log_count(inc.log, "partition assigned with records to check for replays")
        finished = log_count(inc.log, "replay recovery finished for partition")
        delay = self.ctx.rng.uniform(0.2, 2.0)
        note = f"{recovering} partitions replaying, {finished} finished"
        rec = self.fleet.kill(inc, delay, note)
        self.clock.note(
            f"kill -9 bridge #{rec.incarnation} {rec.uptime_s:.1f}s after its start, during "
            f"replay ({note}); restart in {delay:.1f}s"
        )

    async def _broker_restart(self) -> None:
        self.gate.clear()
        start = self.clock.t()
        self.clock.note("restarting the broker (same data directory)")
        try:
            await asyncio.to_thread(self.ctx.broker.restart)
        finally:
            self.gate.set()
        self.broker_restart = (start, self.clock.t() - start)
        self.clock.note(f"broker back after {self.clock.t() - start:.1f}s")
