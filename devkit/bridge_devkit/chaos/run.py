"""One chaos run (one processing guarantee): prepare, produce under faults, catch up, check.

``prepare`` creates fresh topics and group, seeds the orders and plans the records; ``ChaosRun``
starts the fleet of bridges, produces the plan while ``Faults`` (and its ``Fencer``) strike,
waits until every input record has a result or a dead letter (``read_committed``), stops the
bridges gracefully and runs every check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner

from bridge.codec import AvroCodec
from bridge_devkit.chaos.checks import (
    Check,
    InputRecord,
    Problems,
    RunReport,
    check_orders,
    check_processes,
    check_records,
    fetch_orders,
    ranges,
    read_inputs,
)
from bridge_devkit.chaos.context import (
    API_KEY,
    READ_TIMEOUT_S,
    REVOKE_DEADLINE_S,
    SESSION_TIMEOUT_S,
    RunContext,
)
from bridge_devkit.chaos.evidence import write_evidence
from bridge_devkit.chaos.faults import FAULTS, NO_FAULTS, Faults
from bridge_devkit.chaos.fence_checks import FenceReview
from bridge_devkit.chaos.fencer import Fencer
from bridge_devkit.chaos.fleet import ASSIGNED, Fleet
from bridge_devkit.chaos.plan import Profile, make_plan
from bridge_devkit.chaos.produce import Producer
from bridge_devkit.chaos.report import injected_rows
from bridge_devkit.chaos.timeline import Timeline
from bridge_devkit.harness import (
    OutputCollector,
    SimulatorProcess,
    committed_offsets,
    create_topics,
    deployment_env,
    fresh_topics,
    metrics_text,
)
from bridge_devkit.localkafka import LocalKafka

STALL_S = 45.0  # no progress for this long while waiting to catch up: look for skipped records
STUCK_METRICS = (
    "norce_bridge_consumer_lag{",
    "norce_bridge_buffered_records ",
    "norce_bridge_in_flight_commands ",
)


async def prepare(
    guarantee: str,
    profile: Profile,
    seed: int,
    *,
    broker: LocalKafka,
    sim: SimulatorProcess,
    workdir: Path,
    codec: AvroCodec,
) -> RunContext:
    """Fresh topics and group, seeded orders and the plan of one run."""
    label = "eos" if guarantee == "exactly_once" else "alo"
    topics = fresh_topics(f"chaos-{label}-{os.getpid()}", profile.partitions)
    await create_topics(broker.bootstrap_servers, topics)
    await sim.admin("POST", "/reset-log")
    orders = await sim.seed(profile.orders)
    rng_plan = random.Random(f"plan-{seed}-{guarantee}")
    plan = make_plan(rng_plan, profile, orders, f"{label}{seed}")
    # the producer's default partitioner (murmur2 of the key), checked against the topic later
    partitioner = DefaultPartitioner()
    everyone = list(range(profile.partitions))
    partition_of = {o: partitioner(o.encode(), everyone, everyone) for o in orders}
    return RunContext(
        guarantee=guarantee,
        profile=profile,
        seed=seed,
        label=label,
        broker=broker,
        sim=sim,
        workdir=workdir,
        codec=codec,
        topics=topics,
        group=f"chaos-{label}-{seed}-{os.getpid()}",
        plan=plan,
        partition_of=partition_of,
        clock=Timeline(),
        rng=random.Random(f"chaos-{seed}-{guarantee}"),
    )


def bridge_env(ctx: RunContext, write_guard: str | None) -> dict[str, str]:
    """The bridges' environment: configured like a deployment, tuned for fast failover."""
    env = deployment_env(
        ctx.bootstrap,
        ctx.group,
        ctx.topics,
        ctx.sim.url,
        API_KEY,
        kafka__session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
        topics__partitions=ctx.profile.partitions,
        norce__read_timeout_s=READ_TIMEOUT_S,
        norce__retry__max_attempts=4,
        norce__retry__base_delay_s=0.05,
        norce__retry__max_delay_s=0.5,
        norce__retry__retry_after_cap_s=1.0,
        norce__retry__deadline_s=6,
        processing__processing_guarantee=ctx.guarantee,
        processing__commit_interval_s=0.5,
        processing__max_in_flight=64,
        processing__drain_deadline_s=15,
        # the revoke must end (plus 2 s for the final commit) within the session timeout
        processing__revoke_deadline_s=REVOKE_DEADLINE_S,
        log_level="DEBUG",
    )
    if write_guard:
        env["BRIDGE_PROCESSING__WRITE_GUARD"] = write_guard
    return env


class ChaosRun:
    def __init__(self, ctx: RunContext, *, wait_assigned: bool, write_guard: str | None) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.wait_assigned = wait_assigned
        self.report = RunReport(ctx.guarantee)
        self.collector = OutputCollector(ctx.bootstrap, ctx.topics, ctx.codec)
        self.producer = Producer(
            ctx.bootstrap,
            ctx.topics.commands,
            ctx.plan,
            produce_s=ctx.profile.produce_s,
            correlation=f"chaos-{ctx.seed}",
            rng=random.Random(f"produce-{ctx.seed}-{ctx.guarantee}"),
            clock=ctx.clock,
        )
        self.fleet = Fleet(bridge_env(ctx, write_guard), ctx.workdir, ctx.label, ctx.clock)
        self.fencer = Fencer(ctx, self.fleet, self.pending_orders)
        self.faults = Faults(ctx, self.fleet, self.fencer, self.producer.gate)
        self.skipped: set[tuple[int, int]] = set()
        self.stall_notes: list[str] = []

    def pending_orders(self, partitions: frozenset[int]) -> list[str]:
        """Orders on ``partitions`` with commands still to come or not yet handled."""
        handled = self.collector.outputs.answered()
        part = self.ctx.partition_of
        busy = {k for k, q in self.producer.queues.items() if q and k in part}
        for cid, src in self.producer.produced_at.items():
            spec = self.ctx.plan.specs[cid]
            if spec.order_id and src not in handled:
                busy.add(spec.order_id)
        return sorted(o for o in busy if part.get(o) in partitions)

    async def progress(self, total: int) -> None:
        out, fleet = self.collector.outputs, self.fleet
        while True:
            await asyncio.sleep(5)
            alive = ",".join(f"#{i.n}" for i in fleet.running()) or "-"
            self.clock.say(
                f"produced {self.producer.produced}/{total}  handled {len(out.answered())}  "
                f"results {sum(map(len, out.results_at.values()))}  dlq "
                f"{sum(map(len, out.dlq_at.values()))}  bridges {alive}  kills {len(fleet.kills)}"
            )

    async def _first_owner(self) -> None:
        """``--wait-assigned``: wait until the first bridge owns its partitions."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            first = await self.fleet.wait_running(0, 60)
            if first is not None and await first.wait_log(ASSIGNED, 60):
                break
        self.clock.restart()
        self.clock.note("the first bridge owns its partitions; producing starts now")

    async def _skipped(self, missing: set[tuple[int, int]]) -> set[tuple[int, int]]:
        """Records below the group's committed offset: never handled again."""
        ctx = self.ctx
        committed = await committed_offsets(
            ctx.bootstrap, ctx.group, ctx.topics.commands, tolerate_errors=True
        )
        return {(q, o) for q, o in missing if o < committed.get(q, -1)}

    async def _catch_up(
        self, inputs: list[InputRecord]
    ) -> tuple[set[tuple[int, int]], float | None]:
        """Wait until every input record is answered: (still missing, seconds after production)."""
        want = {(r.partition, r.offset) for r in inputs}
        deadline = time.monotonic() + self.ctx.profile.catchup_s
        last_change, last_missing = time.monotonic(), -1
        missing: set[tuple[int, int]] = set()
        while time.monotonic() < deadline:
            missing = want - self.collector.outputs.answered()
            if not missing:
                return missing, self.clock.t() - (self.producer.done_t or 0.0)
            if len(missing) != last_missing:
                last_change, last_missing = time.monotonic(), len(missing)
            elif time.monotonic() - last_change > STALL_S:
                # no progress for a while: records below the group's committed offset
                # will never be handled again (their outputs would be visible by now)
                self.skipped = await self._skipped(missing)
                if self.skipped == missing:
                    break
                last_change = time.monotonic()
            await asyncio.sleep(0.25)
        if missing and not self.skipped:
            self.skipped = await self._skipped(missing)
        return missing, None

    async def run(self) -> RunReport:
        ctx, p = self.ctx, self.ctx.profile
        print(
            f"\n=== {ctx.guarantee}: {p.commands} commands + {p.poison} poison over {p.orders} "
            f"orders, {p.partitions} partitions, seed {ctx.seed} ===",
            flush=True,
        )
        await ctx.sim.set_faults(**FAULTS, script=[])
        await self.collector.__aenter__()
        self.collector.start()
        self.clock.restart()
        supervisor = asyncio.create_task(self.fleet.supervise())
        if self.wait_assigned:
            await self._first_owner()
        progress = asyncio.create_task(self.progress(ctx.plan.total))
        chaos = asyncio.create_task(self.faults.run())
        caught_up_after: float | None = None
        missing: set[tuple[int, int]] = set()
        inputs: list[InputRecord] = []
        try:
            await self.producer.run()
            self.clock.note(
                f"all {ctx.plan.total} records produced ({self.producer.send_retries} send retries)"
            )
            await chaos
            inputs = await read_inputs(
                ctx.bootstrap, ctx.topics.commands, p.partitions, ctx.plan, ctx.codec
            )
            missing, caught_up_after = await self._catch_up(inputs)
            self.clock.note(
                "caught up: every record has a result or a dead letter"
                if not missing
                else f"NOT caught up: {len(missing)} records unhandled, {len(self.skipped)} of "
                "them below the group's committed offset (skipped for good)"
            )
            if missing:
                await self._stall_snapshot()
        finally:
            progress.cancel()
            if not chaos.done():
                chaos.cancel()
            with contextlib.suppress(BaseException):
                await chaos
            codes = await self.fleet.stop_all()
            supervisor.cancel()
            with contextlib.suppress(BaseException):
                await supervisor
        self.clock.note(f"bridges stopped gracefully: exit codes {codes}")
        await ctx.sim.set_faults(**NO_FAULTS)
        drained = await self.collector.drain(90)
        await self.collector.stop()
        stats = await ctx.sim.admin("GET", "/stats")
        self.report.duration_s = self.clock.t()
        review = FenceReview(self.fleet, self.fencer.steps, ctx.label, p)
        self.report.injected = injected_rows(
            p, ctx.plan, inputs, stats, self.faults, review, self.producer.done_t or 0.0
        )
        await self._check(inputs, review, missing, caught_up_after, codes, drained)
        return self.report

    async def _stall_snapshot(self) -> None:
        """Where the running bridges are stuck: lag per partition, buffered, in flight."""
        self.fleet.poll_logs()
        for inc in self.fleet.running():
            port = self.fleet.tail(inc).port
            text = await metrics_text(port) if port is not None else None
            if text is None:
                continue
            shown: list[str] = []
            for line in text.splitlines():
                if not line.startswith(STUCK_METRICS):
                    continue
                name, value = line.rsplit(" ", 1)
                if name.startswith("norce_bridge_consumer_lag{") and float(value) == 0:
                    continue
                part = re.search(r'partition="(\d+)"', name)
                label = f"lag p{part.group(1)}" if part else name.split("_", 2)[2]
                shown.append(f"{label}={float(value):g}")
            note = f"bridge #{inc.n} while stuck: " + (", ".join(shown) or "nothing lagging")
            self.stall_notes.append(note)
            self.clock.note(note)

    def _caught_up(
        self,
        inputs: list[InputRecord],
        missing: set[tuple[int, int]],
        caught_up_after: float | None,
        drained: bool,
    ) -> Check:
        unknown = [r for r in inputs if r.spec is None]
        if caught_up_after is not None:
            detail = f"{len(inputs)} records handled, {caught_up_after:.1f}s after production"
        else:
            detail = f"{len(missing)} of {len(inputs)} records never handled"
            if self.skipped:
                per: dict[int, list[int]] = {}
                for q, o in sorted(self.skipped):
                    per.setdefault(q, []).append(o)
                shown = "; ".join(f"p{q}: {ranges(offs)}" for q, offs in sorted(per.items()))
                detail += (
                    f"; {len(self.skipped)} of them lie below the group's committed offset, "
                    f"i.e. were skipped for good ({shown})"
                )
        if self.stall_notes:
            detail += "; " + "; ".join(self.stall_notes)
        if not drained:
            detail += "; outputs could not be read to their end"
        if unknown:
            detail += f"; {len(unknown)} unknown input records"
        return Check("caught-up", caught_up_after is not None and drained, detail)

    async def _check(
        self,
        inputs: list[InputRecord],
        review: FenceReview,
        missing: set[tuple[int, int]],
        caught_up_after: float | None,
        codes: list[tuple[int, int | None]],
        drained: bool,
    ) -> None:
        ctx, out = self.ctx, self.collector.outputs
        problems = Problems()
        checks = self.report.checks
        checks.append(self._caught_up(inputs, missing, caught_up_after, drained))
        sim = await fetch_orders(ctx.sim, ctx.plan.orders)
        checks += check_orders(
            ctx.plan, inputs, sim, out, eos=ctx.eos, codec=ctx.codec, problems=problems
        )
        calls = {o: s.calls for o, s in sim.items()}
        checks += review.check(inputs, ctx.partition_of, calls, problems)
        checks += check_records(inputs, out, eos=ctx.eos, problems=problems)
        checks += check_processes(self.fleet, self.faults.broker_restart, codes)
        if any(not c.ok for c in checks):
            hist = {o: s.history for o, s in sim.items()}
            self.report.evidence_file = await write_evidence(
                ctx, inputs, out, self.fleet, problems, review.violations, hist
            )
