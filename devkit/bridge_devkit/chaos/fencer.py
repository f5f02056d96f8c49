"""The two fencing scenarios of a chaos run (issue 9), placed while commands are still produced.

1. *SIGSTOP in retry backoff* (``pause``): an owner is stopped past the session timeout while
   writes of its orders sleep in a 503/Retry-After backoff, then continued: a zombie whose
   timers fire at once.
2. *Expelled during a revoke* (``expel``): an owner whose write hangs is stopped as soon as its
   revoke begins (another instance joined) until the group moved on without it.

Each step is recorded as a ``FenceStep``; the ``fencing`` and ``scenarios`` checks read them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bridge_devkit.chaos.context import SESSION_TIMEOUT_S, RunContext
from bridge_devkit.chaos.fencing import FenceStep, retry_delay
from bridge_devkit.chaos.fleet import ASSIGNED, JOINER_SLOT, Fleet, Incarnation
from bridge_devkit.harness import scrape_metric

SCRIPTED_ORDERS = 30  # orders whose writes a fencing step scripts (503 or hang)
MAX_STOP_S = 40.0  # a fencing step never keeps a bridge stopped longer


def reassigned(
    fleet: Fleet, victim: Incarnation, parts: frozenset[int], since: float
) -> tuple[float, int] | None:
    """(when, to whom) another incarnation was assigned one of ``parts`` after ``since``."""
    fleet.poll_logs()
    for inc in fleet.incarnations:
        if inc is victim:
            continue
        for event in fleet.tail(inc).events:
            if event.kind == "assigned" and event.ts > since and event.partitions & parts:
                return event.ts, inc.n
    return None


def scripted(orders: list[str], **answer: Any) -> list[dict[str, Any]]:
    """Simulator fault script entries: every write (PUT state, DELETE) of ``orders`` answered
    with ``answer``; a callable value is called with the order's index."""
    return [
        {
            "method": method,
            "path_suffix": f"/{order_id}{suffix}",
            **{k: v(i) if callable(v) else v for k, v in answer.items()},
        }
        for i, order_id in enumerate(orders)
        for method, suffix in (("PUT", "/state"), ("DELETE", ""))
    ]


class Fencer:
    """Runs the fencing steps against the fleet; ``pending_orders(partitions)`` names the orders
    on those partitions with commands still to come or not yet answered."""

    def __init__(
        self, ctx: RunContext, fleet: Fleet, pending_orders: Callable[[frozenset[int]], list[str]]
    ) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.fleet = fleet
        self.pending_orders = pending_orders
        self.steps: list[FenceStep] = []

    async def _script(self, entries: list[dict[str, Any]]) -> None:
        await self.ctx.sim.admin("PUT", "/faults", {"script": entries})

    async def _owner(
        self, timeout_s: float, *, exclude_slots: tuple[int, ...] = ()
    ) -> tuple[Incarnation, frozenset[int]] | None:
        """A running incarnation (up >= 3 s) that owns partitions with orders still busy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.fleet.poll_logs()
            candidates = [
                (inc, self.fleet.tail(inc).owned())
                for inc in self.fleet.running()
                if inc.slot not in exclude_slots and self.fleet.t() - inc.started_t >= 3.0
            ]
            candidates = [(i, p) for i, p in candidates if p and self.pending_orders(p)]
            if candidates:
                return self.ctx.rng.choice(candidates)
            await asyncio.sleep(0.2)
        return None

    def _continue(
        self,
        victim: Incarnation,
        rec: FenceStep,
        held: float,
        moved: tuple[float, int] | None,
        moved_text: str,
    ) -> float:
        """SIGCONT a stopped victim, record how long it was held and where its work went; return
        when it was continued."""
        if victim.alive:
            victim.proc.resume()
        rec.continued_at = continued_at = time.time()
        rec.stopped_s = held
        rec.reassigned = moved
        self.clock.note(
            f"SIGCONT bridge #{victim.n} after {held:.1f}s: "
            + (moved_text if moved else "its partitions were NOT reassigned")
        )
        return continued_at

    async def _hold_stopped(
        self, victim: Incarnation, parts: frozenset[int], stopped_at: float
    ) -> tuple[float, tuple[float, int] | None]:
        """Keep ``victim`` stopped past the session timeout and until its partitions moved."""
        at_least = SESSION_TIMEOUT_S + self.ctx.rng.uniform(1.0, 4.0)
        began = time.monotonic()
        moved: tuple[float, int] | None = None
        while time.monotonic() - began < MAX_STOP_S:
            moved = moved or reassigned(self.fleet, victim, parts, stopped_at)
            if moved is not None and time.monotonic() - began >= at_least:
                break
            await asyncio.sleep(0.1)
        return time.monotonic() - began, moved

    async def _with_peer(self) -> bool:
        """Make sure a second member can take partitions over; True if a joiner was started."""
        self.fleet.poll_logs()
        owners = [i for i in self.fleet.running() if self.fleet.tail(i).owned()]
        if len(owners) >= 2:
            return False
        inc = await self._start_joiner()
        return inc is not None

    async def _start_joiner(self) -> Incarnation | None:
        """Start a bridge in the joiner slot and wait until it owns partitions."""
        self.fleet.wanted.add(JOINER_SLOT)
        inc = await self.fleet.wait_running(JOINER_SLOT, 30)
        if inc is None:
            return None
        await inc.wait_log(ASSIGNED, 40)
        return inc

    async def _release_joiner(self, victim: Incarnation, since: float) -> None:
        """Once ``victim`` is back in the group, stop the joiner (graceful: SIGTERM)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and victim.alive:
            self.fleet.poll_logs()
            if any(
                e.kind == "assigned" and e.ts > since and e.partitions
                for e in self.fleet.tail(victim).events
            ):
                break
            await asyncio.sleep(0.2)
        code = await self.fleet.stop_slot(JOINER_SLOT)
        self.clock.note(f"joiner stopped with SIGTERM (exit {code})")

    async def pause(self) -> None:
        """SIGSTOP an owner while it has writes in retry backoff, past the session timeout.

        The simulator answers 503 with ``Retry-After: 1`` to the writes of orders on the victim's
        partitions; once the victim logs a retry of one of them (it now sleeps in its backoff),
        it is stopped, kept stopped until another member was assigned its partitions and past
        the session timeout, then continued: a zombie whose timers fire at once.
        """
        rec = FenceStep("pause", self.clock.t())
        self.steps.append(rec)
        joiner = await self._with_peer()
        found = await self._owner(30, exclude_slots=(JOINER_SLOT,) if joiner else ())
        if found is None:
            rec.notes.append("no owner with busy orders")
            self.clock.note("pause: no bridge owns partitions with busy orders; skipped")
            if joiner:
                await self.fleet.stop_slot(JOINER_SLOT)
            return
        victim, parts = found
        rec.victim, rec.partitions = victim.n, parts
        orders = self.pending_orders(parts)[:SCRIPTED_ORDERS]
        entries = scripted(orders, status=503, headers={"Retry-After": "1"}, count=3)
        tail = self.fleet.tail(victim)
        tail.poll()
        seen = len(tail.write_retries)
        scripted_at = time.time()
        await self._script(entries)
        deadline = time.monotonic() + 20
        in_backoff: list[tuple[float, str, str]] = []
        while time.monotonic() < deadline and victim.alive:
            tail.poll()
            # the scripted 503s (Retry-After: 1), not a random fault's short backoff
            in_backoff = [
                r
                for r in tail.write_retries[seen:]
                if r[1] in orders and r[0] >= scripted_at and retry_delay(r[2]) >= 0.5
            ]
            if in_backoff:
                break
            await asyncio.sleep(0.03)
        if not victim.alive:
            await self._script([])
            rec.notes.append("victim exited before the pause")
            return
        victim.proc.pause()
        stopped_at = time.time()
        await self._script([])
        # a write is in its backoff if its retry was logged less than its delay ago
        rec.in_backoff = sorted({o for ts, o, m in in_backoff if stopped_at < ts + retry_delay(m)})
        rec.stopped_at = stopped_at
        self.clock.note(
            f"SIGSTOP bridge #{victim.n} (partitions {sorted(parts)}) with "
            f"{len(rec.in_backoff)} write(s) in retry backoff"
        )
        held, moved = await self._hold_stopped(victim, parts, stopped_at)
        continued_at = self._continue(
            victim,
            rec,
            held,
            moved,
            f"its partitions went to #{moved[1]} {moved[0] - stopped_at:.1f}s after the stop"
            if moved
            else "",
        )
        if joiner:
            await self._release_joiner(victim, continued_at)

    async def expel(self) -> None:
        """Expel an owner during a long revoke: a write hanging while another instance joins.

        The simulator hangs the writes of orders on the victim's partitions (some after applying
        them: ambiguous outcomes); once one hangs, a new instance joins. As soon as the victim's
        revoke starts (its ``norce_bridge_rebalances_total`` grows), it is stopped until the group
        completed the rebalance without it (its partitions assigned to another member), then
        continued: it finishes a revoke the group has already moved past.
        """
        rec = FenceStep("expel", self.clock.t())
        self.steps.append(rec)
        found = await self._owner(30, exclude_slots=(JOINER_SLOT,))
        if found is None:
            rec.notes.append("no owner with busy orders")
            self.clock.note("expulsion: no bridge owns partitions with busy orders; skipped")
            return
        victim, parts = found
        rec.victim, rec.partitions = victim.n, parts
        tail = self.fleet.tail(victim)
        tail.poll()
        if tail.port is None:
            rec.notes.append("victim's metrics port unknown")
        orders = self.pending_orders(parts)[:SCRIPTED_ORDERS]
        entries = scripted(orders, fault="hang", after_apply=lambda i: i % 3 == 0, count=4)
        before = await self.ctx.sim.admin("GET", "/stats")
        hangs0 = int(before.get("by_fault", {}).get("script:hang", 0))
        await self._script(entries)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = await self.ctx.sim.admin("GET", "/stats")
            if int(stats.get("by_fault", {}).get("script:hang", 0)) > hangs0:
                rec.hang_seen_at = time.time()
                break
            await asyncio.sleep(0.05)
        rebalances0 = (
            await scrape_metric(tail.port, "norce_bridge_rebalances_total") if tail.port else None
        )
        self.fleet.wanted.add(JOINER_SLOT)
        rec.join_at = time.time()
        self.clock.note(
            f"expulsion: a write of bridge #{victim.n} hangs"
            + ("" if rec.hang_seen_at else " (NOT observed)")
            + "; a new instance joins"
        )
        revoking = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and victim.alive and tail.port:
            now = await scrape_metric(tail.port, "norce_bridge_rebalances_total")
            if now is not None and rebalances0 is not None and now > rebalances0:
                revoking = True
                break
            await asyncio.sleep(0.05)
        if not victim.alive:
            await self._script([])
            rec.notes.append("victim exited before its revoke")
            await self.fleet.stop_slot(JOINER_SLOT)
            return
        victim.proc.pause()
        stopped_at = rec.stopped_at = time.time()
        rec.revoking = revoking
        self.clock.note(
            f"SIGSTOP bridge #{victim.n} "
            + ("during its revoke" if revoking else "(its revoke was NOT observed)")
        )
        held, moved = await self._hold_stopped(victim, parts, stopped_at)
        await self._script([])
        continued_at = self._continue(
            victim,
            rec,
            held,
            moved,
            f"the group gave its partitions to #{moved[1]} without it (expelled)" if moved else "",
        )
        await self._release_joiner(victim, continued_at)
