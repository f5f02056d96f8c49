"""Kill -9 replays publish exactly what happened (issue 10, last check).

For each guarantee, two bridge processes run the same commands (same command ids, same
correlation ids, same send order) on two sets of fresh two-partition topics against one
simulator, each on its own freshly seeded ``checkout`` orders:

* the *reference* run is never disturbed;
* the *crash* run is killed with SIGKILL once every write has been applied at the API but
  before any output or offset was made durable: commits are effectively off
  (``commit_interval_s`` = 1 h; only the dispatch reservation is committed, before any work),
  and the last write of some orders (a DELETE after two state changes, a DELETE after one, a
  lone PUT) is applied by the simulator and then never answered (scripted ``hang`` with
  ``after_apply``). A new process on the same group then replays the partition.

After the restart the crash run must have published, per order, exactly the reference run's
events and results:

* events: the same ``eventId`` sequence (first occurrences, per order), and every copy equal to
  the reference field by field. ``exactly_once``: one copy per ``eventId`` (read_committed).
  ``at_least_once``: duplicates are allowed, but only of identical content.
* results: ``exactly_once`` exactly one per command, ``at_least_once`` at least one; each with
  the reference's ``currentStatus``, ids, ``commandType`` and ``httpStatus``. The outcome is the
  reference's (``applied``), or ``already_applied`` with ``replayed=true`` for a command the
  replay found already applied.
* the latest snapshot per order (the compacted view) says the same thing; no dead letters; each
  order's API history is the reference's (no write repeated, none moved backwards), and the
  restarted process writes nothing at all (every write had already happened).

Fields compared across runs only after mapping, because they cannot be equal between two runs:
``orderId`` (mapped to the order's role in the plan); ``transitionAt`` and the state-change
``occurredAt`` (mapped to the index of the simulator's own transition they name, within that
run's order: they must name the transition the command made, exactly). Fields left out, and why:
``OrderDeleted.occurredAt`` (the processing time of the delete; the API keeps no trace of a
deleted order, so a replay cannot know the first execution's instant); a result's
``processedAt`` and ``attempts`` (processing facts of each execution), ``source`` (the records'
topics differ, and partitions/offsets follow the order ids' hashes) and ``reason`` (follows the
outcome class: ``None`` for ``applied``, an explanation for a replayed ``already_applied``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bridge_devkit.harness import (
    Bridge,
    OutputRecord,
    TopicReader,
    delete,
    log_lines,
    make_settings,
    process_env,
    set_state,
    simulator,
    spawn_bridge,
    wait_exit,
)
from norce_simulator import SimulatorHandle

from bridge.app import ensure_topics
from bridge.commands import DeleteOrder, SetOrderState
from bridge.config import BridgeSettings
from bridge.order_model import OrderStatus

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 2
MERCHANT, CHANNEL = "norce", "1"
HANG_S = 120.0


@dataclass(frozen=True)
class Plan:
    """One order's commands (states, or ``delete``) and whether its last write goes unanswered
    in the crash run (applied by the API, no answer: the process dies waiting for it)."""

    role: str
    steps: tuple[str, ...]
    unanswered: bool

    def history(self) -> list[str]:
        return ["checkout", *("deleted" if s == "delete" else s for s in self.steps)]


PLANS = (
    Plan("deleted-unanswered-a", ("processing", "accepted", "delete"), True),
    Plan("deleted-unanswered-b", ("processing", "accepted", "delete"), True),
    Plan("deleted-answered", ("processing", "accepted", "delete"), False),
    Plan("deleted-from-processing", ("processing", "delete"), True),
    Plan("accepted", ("processing", "accepted"), False),
    Plan("processing-unanswered", ("processing",), True),
)


def plan_commands(
    plan: Plan, order_id: str, prefix: str, issued_at: datetime
) -> list[SetOrderState | DeleteOrder]:
    out: list[SetOrderState | DeleteOrder] = []
    previous = "checkout"
    for i, step in enumerate(plan.steps):
        ids = {
            "command_id": f"{prefix}-{plan.role}-{i}",
            "correlation_id": f"corr-{prefix}-{plan.role}",
            "issued_at": issued_at,
        }
        if step == "delete":
            out.append(delete(order_id, merchant=MERCHANT, channel=CHANNEL, **ids))
        else:
            out.append(
                set_state(
                    order_id,
                    step,
                    merchant=MERCHANT,
                    channel=CHANNEL,
                    expected_state=OrderStatus(previous),
                    **ids,
                )
            )
            previous = step
    return out


@dataclass
class Run:
    """One run's topics, orders (by role) and the simulator's live transition lists."""

    name: str
    settings: BridgeSettings
    io: Bridge
    orders: dict[str, str]
    transitions: dict[str, list[dict[str, Any]]]
    commands: dict[str, list[SetOrderState | DeleteOrder]]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def role_of(self, order_id: str) -> str:
        for role, oid in self.orders.items():
            if oid == order_id:
                return role
        raise AssertionError(f"{self.name}: output for an unknown order {order_id}")


async def prepare(
    bootstrap: str, sim: SimulatorHandle, name: str, prefix: str, issued_at: datetime
) -> Run:
    """Fresh topics, freshly seeded checkout orders, and the plan's commands sent interleaved."""
    settings = make_settings(bootstrap, sim.url, partitions=PARTITIONS)
    await ensure_topics(settings, {})
    ids = sim.app.seed(len(PLANS), MERCHANT, CHANNEL, status="checkout")
    orders = {p.role: oid for p, oid in zip(PLANS, ids, strict=True)}
    # The simulator's own record of each order's transitions (the list survives a delete).
    transitions = {
        role: sim.app.store.orders[oid].data["state"]["transitions"] for role, oid in orders.items()
    }
    for role, oid in orders.items():
        assert sim.app.history(oid) == ["checkout"], (role, sim.app.history(oid))
    commands = {p.role: plan_commands(p, orders[p.role], prefix, issued_at) for p in PLANS}
    run = Run(name, settings, Bridge(bootstrap, sim, settings), orders, transitions, commands)
    longest = max(len(p.steps) for p in PLANS)
    for i in range(longest):  # round robin: the same send order in both runs
        for p in PLANS:
            if i < len(p.steps):
                await run.io.send(commands[p.role][i])
    return run


def bridge_env(
    run: Run, sim: SimulatorHandle, guarantee: str, adapter: str, **extra: str
) -> dict[str, str]:
    return process_env(
        run.settings,
        sim.url,
        BRIDGE_PROCESSING__PROCESSING_GUARANTEE=guarantee,
        BRIDGE_NORCE__ADAPTER_ID=adapter,
        BRIDGE_KAFKA__SESSION_TIMEOUT_MS="6000",
        BRIDGE_PROCESSING__REVOKE_DEADLINE_S="3",
        BRIDGE_PROCESSING__DRAIN_DEADLINE_S="5",
        BRIDGE_LOG_LEVEL="INFO",
        **extra,
    )


@contextlib.asynccontextmanager
async def runs(bootstrap: str, sim: SimulatorHandle) -> AsyncIterator[tuple[Run, Run]]:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    issued_at = datetime.now(UTC)
    reference = await prepare(bootstrap, sim, "reference", prefix, issued_at)
    crash = await prepare(bootstrap, sim, "crash", prefix, issued_at)
    try:
        yield reference, crash
    finally:
        for run in (reference, crash):
            for proc in run.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in run.procs:
                with contextlib.suppress(AssertionError):
                    await wait_exit(proc, 30)
            await run.io.aclose()


def writes(sim: SimulatorHandle, order_id: str, adapter: str) -> list[dict[str, Any]]:
    return [
        c
        for c in sim.app.calls(order_id)
        if c["method"] in ("PUT", "DELETE") and c["headers"]["x-adapterid"] == adapter
    ]


async def wait_fully_committed(run: Run, timeout_s: float) -> None:
    """Until the group's committed offsets reach the commands topic's end (all handled)."""
    ends = {p: e for p, e in (await run.io.end_offsets()).items() if e > 0}
    deadline = time.monotonic() + timeout_s
    committed: dict[int, int] = {}
    while time.monotonic() < deadline:
        committed = await run.io.committed()
        if all(committed.get(p, -1) == e for p, e in ends.items()):
            return
        await asyncio.sleep(0.2)  # pacing between admin queries, not synchronisation
    raise AssertionError(f"{run.name}: committed {committed}, end offsets {ends}")


async def read_outputs(run: Run) -> list[OutputRecord]:
    t = run.settings.topics
    async with TopicReader(
        run.io.bootstrap,
        (t.events, t.results, t.snapshots, t.dlq),
        run.io.codec,
        partitions=PARTITIONS,
        raw_topics=(t.dlq,),
    ) as reader:
        return await reader.read_to_end(60)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _transition_named(
    text: str | None, transitions: list[dict[str, Any]], exact: bool
) -> str | None:
    if text is None:
        return None
    for i, t in enumerate(transitions):
        stamp = t["timeStamp"]
        if (stamp == text) if exact else (_instant(stamp) == _instant(text)):
            return f"transition {i} ({t['status']})"
    return f"no transition at {text}"


def normalised_event(run: Run, rec: OutputRecord) -> tuple[str, dict[str, Any]]:
    """(role, the event with run-specific values mapped or left out; see module docstring)."""
    assert rec.value is not None
    assert rec.schema is not None
    ev = dict(rec.value)
    role = run.role_of(ev["orderId"])
    assert rec.key == ev["orderId"], f"{run.name}: event keyed {rec.key} for {ev['orderId']}"
    transitions = run.transitions[role]
    ev["schema"] = rec.schema
    ev["orderId"] = role
    if rec.schema == "OrderStateChanged":
        ev["transitionAt"] = _transition_named(ev["transitionAt"], transitions, exact=True)
        ev["occurredAt"] = _transition_named(ev["occurredAt"], transitions, exact=False)
    else:
        ev.pop("occurredAt")
    return role, ev


def events_by_role(
    run: Run, records: list[OutputRecord]
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """role -> eventId (in first-occurrence order) -> every copy, normalised."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {role: {} for role in run.orders}
    for rec in records:
        if rec.topic == run.settings.topics.events:
            role, ev = normalised_event(run, rec)
            out[role].setdefault(ev["eventId"], []).append(ev)
    return out


RESULT_FIELDS = (
    "commandType",
    "merchant",
    "channel",
    "correlationId",
    "currentStatus",
    "httpStatus",
)


def results_by_command(run: Run, records: list[OutputRecord]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec.topic == run.settings.topics.results:
            assert rec.value is not None
            r = dict(rec.value)
            r["orderId"] = run.role_of(r["orderId"])
            out.setdefault(r["commandId"], []).append(r)
    return out


def latest_snapshots(run: Run, records: list[OutputRecord]) -> dict[str, tuple[str, str] | None]:
    """role -> (currentStatus, commandId) of the latest snapshot, None for a tombstone."""
    out: dict[str, tuple[str, str] | None] = {}
    for rec in records:
        if rec.topic == run.settings.topics.snapshots:
            role = run.role_of(rec.key)
            out[role] = (
                None
                if rec.value is None
                else (rec.value["state"]["currentStatus"], rec.value["commandId"])
            )
    return out


def expected_events(plan: Plan, run: Run) -> dict[str, dict[str, Any]]:
    """What the plan's commands must publish, normalised: the reference run is checked too."""
    out: dict[str, dict[str, Any]] = {}
    previous = "checkout"
    for i, (step, cmd) in enumerate(zip(plan.steps, run.commands[plan.role], strict=True)):
        common = {
            "orderId": plan.role,
            "merchant": MERCHANT,
            "channel": CHANNEL,
            "commandId": cmd.command_id,
            "correlationId": cmd.correlation_id,
            "previousStatus": previous,
        }
        if step == "delete":
            eid = f"{cmd.command_id}:deleted"
            out[eid] = {
                "schema": "OrderDeleted",
                "eventId": eid,
                "alreadyDeleted": False,
                **common,
            }
        else:
            eid = f"{cmd.command_id}:state-changed"
            named = f"transition {i + 1} ({step})"
            out[eid] = {
                "schema": "OrderStateChanged",
                "eventId": eid,
                "newStatus": step,
                "transitionAt": named,
                "occurredAt": named,
                "source": "bridge",
                **common,
            }
            previous = step
    return out


def compare(
    guarantee: str, reference: Run, ref_out: list[OutputRecord], crash: Run, out: list[OutputRecord]
) -> list[str]:
    """Every difference between the crash run's outputs and the reference's, one line each."""
    problems: list[str] = []
    ref_events = events_by_role(reference, ref_out)
    got_events = events_by_role(crash, out)
    for plan in PLANS:
        role = plan.role
        want, got = ref_events[role], got_events[role]
        planned = expected_events(plan, reference)
        actual = {eid: copies[0] for eid, copies in want.items() if len(copies) == 1}
        # Not an assertion: the reference run's own faults are listed with the crash run's.
        if actual != planned or len(actual) != len(want):
            problems.append(f"reference run, order {role}: events {want}, planned {planned}")
        if list(got) != list(want):
            problems.append(
                f"order {role}: event ids {list(got)} != reference {list(want)} "
                f"(missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))})"
            )
        for eid, copies in got.items():
            if guarantee == "exactly_once" and len(copies) != 1:
                problems.append(f"order {role}: event {eid} published {len(copies)} times")
            expected = want.get(eid)
            if expected is None:
                continue
            for k, copy in enumerate(copies):
                for name in sorted(set(expected[0]) | set(copy)):
                    if copy.get(name) != expected[0].get(name):
                        problems.append(
                            f"order {role}: event {eid} copy {k + 1}/{len(copies)}: {name} = "
                            f"{copy.get(name)!r}, reference {expected[0].get(name)!r}"
                        )
    ref_results = results_by_command(reference, ref_out)
    got_results = results_by_command(crash, out)
    for plan in PLANS:
        for cmd in crash.commands[plan.role]:
            cid = cmd.command_id
            [want_r] = ref_results[cid]  # a clean run: exactly one result
            # A clean run applies every command of the plan (checked, not assumed).
            assert (want_r["outcome"], want_r["replayed"]) == ("applied", False), want_r
            assert want_r["currentStatus"] == (None if cmd.type == "DeleteOrder" else cmd.state)
            copies = got_results.get(cid, [])
            if not copies:
                problems.append(f"order {plan.role}: command {cid}: no result")
            if guarantee == "exactly_once" and len(copies) > 1:
                problems.append(f"order {plan.role}: command {cid}: {len(copies)} results")
            for k, r in enumerate(copies):
                where = (
                    f"order {plan.role}: command {cid} ({cmd.type}) result {k + 1}/{len(copies)}"
                )
                ok = ("already_applied", True) if r["replayed"] else ("applied", False)
                if (r["outcome"], r["replayed"]) != ok:
                    problems.append(
                        f"{where}: outcome {r['outcome']} replayed={r['replayed']}, "
                        f"reference {want_r['outcome']}"
                    )
                for name in ("orderId", *RESULT_FIELDS):
                    if r[name] != want_r[name]:
                        problems.append(
                            f"{where}: {name} = {r[name]!r}, reference {want_r[name]!r} "
                            f"(outcome {r['outcome']}, reason {r['reason']!r})"
                        )
    want_snaps = latest_snapshots(reference, ref_out)
    got_snaps = latest_snapshots(crash, out)
    for plan in PLANS:
        if got_snaps.get(plan.role) != want_snaps.get(plan.role):
            problems.append(
                f"order {plan.role}: latest snapshot (status, commandId) "
                f"{got_snaps.get(plan.role)}, reference {want_snaps.get(plan.role)}"
            )
    for run, records in ((reference, ref_out), (crash, out)):
        dlq = [r for r in records if r.topic == run.settings.topics.dlq]
        if dlq:
            problems.append(f"{len(dlq)} dead letters in the {run.name} run")
    return problems


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_kill_9_after_set_state_and_delete_replays_exactly_the_uncrashed_outputs(
    kafka_bootstrap: str, tmp_path: Path, guarantee: str
) -> None:
    """SIGKILL after every write reached the API but no output or offset was durable; after a
    restart the events and results per order equal those of a run without the crash."""
    async with simulator() as sim, runs(kafka_bootstrap, sim) as (reference, crash):
        sim.app.set_faults(
            hang_s=HANG_S,
            script=[
                {
                    "method": "DELETE" if p.steps[-1] == "delete" else "PUT",
                    "path_suffix": crash.orders[p.role]
                    + ("" if p.steps[-1] == "delete" else "/state"),
                    "fault": "hang",
                    "after_apply": True,
                    "count": 1,
                }
                for p in PLANS
                if p.unanswered
            ],
        )
        reference.procs.append(
            spawn_bridge(
                bridge_env(reference, sim, guarantee, "reference"), tmp_path / "reference.log"
            )
        )
        crashed = spawn_bridge(
            bridge_env(
                crash,
                sim,
                guarantee,
                "crashed",
                BRIDGE_PROCESSING__COMMIT_INTERVAL_S="3600",
                BRIDGE_NORCE__READ_TIMEOUT_S=str(HANG_S),
                BRIDGE_NORCE__RETRY__DEADLINE_S=str(HANG_S),
            ),
            tmp_path / "crashed.log",
        )
        crash.procs.append(crashed)

        # The crash point: every write applied at the API, and every answered command's result
        # produced (read_uncommitted: in exactly-once they sit in the open transaction).
        answered = {
            c.command_id
            for p in PLANS
            for c in crash.commands[p.role][: len(p.steps) - (1 if p.unanswered else 0)]
        }
        t = crash.settings.topics
        async with TopicReader(
            kafka_bootstrap,
            (t.results,),
            crash.io.codec,
            partitions=PARTITIONS,
            isolation="read_uncommitted",
        ) as uncommitted:
            deadline = time.monotonic() + 60
            while True:
                await uncommitted.poll()
                seen = {r.value["commandId"] for r in uncommitted.records if r.value is not None}
                applied = all(sim.app.history(crash.orders[p.role]) == p.history() for p in PLANS)
                if applied and answered <= seen:
                    break
                assert crashed.poll() is None, "the crash-run bridge exited by itself"
                assert time.monotonic() < deadline, (
                    f"crash point not reached: histories "
                    f"{ {p.role: sim.app.history(crash.orders[p.role]) for p in PLANS} }, "
                    f"results missing for {sorted(answered - seen)}"
                )
        for p in PLANS:
            if p.unanswered:
                last = writes(sim, crash.orders[p.role], "crashed")[-1]
                assert last["fault"] == "script:hang", (p.role, last)
        crashed.send_signal(signal.SIGKILL)
        assert await wait_exit(crashed, 10) == -signal.SIGKILL

        # What the kill left behind: nothing committed past the reservation, so a replay.
        ends = {p: e for p, e in (await crash.io.end_offsets()).items() if e > 0}
        committed = await crash.io.committed()
        assert all(committed.get(p, 0) < e for p, e in ends.items()), (committed, ends)
        if guarantee == "exactly_once":
            # The only transactions committed before the kill are the ones the bridge commits
            # right before each DELETE (noting the state it deletes from): every unanswered
            # write's result is still invisible.
            visible = {
                str(r.value["commandId"])
                for r in await read_outputs(crash)
                if r.topic == t.results and r.value is not None
            }
            hung = {crash.commands[p.role][-1].command_id for p in PLANS if p.unanswered}
            assert not visible & hung, f"results of unanswered writes visible: {visible & hung}"

        restart_log = tmp_path / "restarted.log"
        crash.procs.append(
            spawn_bridge(bridge_env(crash, sim, guarantee, "restarted"), restart_log)
        )
        await wait_fully_committed(reference, 90)
        await wait_fully_committed(crash, 90)
        assert [
            x
            for x in log_lines(restart_log)
            if x.get("msg") == "partition assigned with records to check for replays"
        ], "the restarted bridge found nothing to replay"

        ref_out = await read_outputs(reference)
        out = await read_outputs(crash)
        problems = compare(guarantee, reference, ref_out, crash, out)
        for p in PLANS:
            ref_h = sim.app.history(reference.orders[p.role])
            got_h = sim.app.history(crash.orders[p.role])
            if not (ref_h == got_h == p.history()):
                problems.append(f"order {p.role}: API history {got_h}, reference {ref_h}")
            again = writes(sim, crash.orders[p.role], "restarted")
            if again:
                problems.append(
                    f"order {p.role}: the restarted bridge wrote again: "
                    f"{[(c['method'], c['body'], c['status']) for c in again]}"
                )
        assert not problems, f"{guarantee}: {len(problems)} differences:\n" + "\n".join(problems)
