"""The checks of a chaos run: every order against the simulator, every record's outputs.

* ``history``      the simulator's status history equals the commands' targets in offset order
                   (consecutive duplicates collapsed), ending in ``deleted`` after a delete;
* ``final-state``  the order's state is the last command's target (or it is deleted);
* ``snapshot``     the last snapshot equals the simulator's order (a tombstone after a delete);
* ``results``      one result per command (exactly_once), at least one (at_least_once);
* ``dlq``          no valid command dead-lettered; each poison record dead-lettered once
                   (exactly_once) / at least once (at_least_once);
* ``outcomes``     valid commands end ``applied``/``already_applied``; poison results are
                   ``failed`` and dead letters carry the expected reason;
* ``self-exits``, ``shutdown`` (no crash; a graceful stop exits 0). ``caught-up`` is decided by
  the run, ``fencing`` and ``scenarios`` by :mod:`bridge_devkit.chaos.fence_checks`.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.codec import AvroCodec
from bridge_devkit.chaos.fleet import Fleet
from bridge_devkit.chaos.plan import Plan, Spec
from bridge_devkit.chaos.produce import CHAOS_HEADER
from bridge_devkit.harness import Outputs, SimulatorAdmin, TopicReader
from bridge_devkit.harness.outputs import DLQ_REASON
from bridge_devkit.harness.verify import collapse, snapshot_diff

SUCCESS = {"applied", "already_applied"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class RunReport:
    guarantee: str
    injected: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    evidence_file: Path | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


@dataclass
class Problems:
    """What failed, for the evidence file: per check, per order and per record."""

    orders: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    records: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))

    def order(self, check: str, order_id: str, why: str) -> None:
        self.orders[check][order_id] = why

    def record(self, check: str, cid: str, why: str) -> None:
        self.records[check].append((cid, why))


@dataclass
class InputRecord:
    partition: int
    offset: int
    cid: str | None
    spec: Spec | None


@dataclass
class SimOrder:
    """What the simulator knows of one order at the end."""

    history: list[str]
    order: dict[str, Any] | None  # None: deleted
    calls: list[dict[str, Any]]


def ranges(offsets: list[int]) -> str:
    """1,2,3,7 -> '1-3,7'."""
    out: list[str] = []
    for o in offsets:
        if out and "-" in out[-1] and int(out[-1].split("-")[1]) == o - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{o}"
        elif out and "-" not in out[-1] and int(out[-1]) == o - 1:
            out[-1] = f"{out[-1]}-{o}"
        else:
            out.append(str(o))
    return ",".join(out)


async def read_inputs(
    bootstrap: str, topic: str, partitions: int, plan: Plan, codec: AvroCodec
) -> list[InputRecord]:
    """The commands topic as it is (the ground truth: producer retries may have duplicated)."""
    async with TopicReader(
        bootstrap, [topic], codec, partitions=partitions, raw_topics=[topic]
    ) as reader:
        records = await reader.read_to_end(60.0)
    out = []
    for rec in records:
        raw = rec.header_map().get(CHAOS_HEADER)
        cid = raw.decode() if raw else None
        out.append(InputRecord(rec.partition, rec.offset, cid, plan.specs.get(cid or "")))
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


async def fetch_orders(sim: SimulatorAdmin, orders: list[str]) -> dict[str, SimOrder]:
    sem = asyncio.Semaphore(32)

    async def fetch(order_id: str) -> tuple[str, SimOrder]:
        async with sem:
            hist = await sim.history(order_id)
            order = await sim.admin("GET", f"/orders/{order_id}")
            calls = await sim.calls(order_id)
            return order_id, SimOrder(hist, order, calls)

    return dict(await asyncio.gather(*(fetch(o) for o in orders)))


def by_order(inputs: list[InputRecord]) -> dict[str, list[InputRecord]]:
    """The valid commands of each order, in offset order."""
    out: dict[str, list[InputRecord]] = defaultdict(list)
    for r in inputs:
        if r.spec is not None and r.spec.kind != "poison" and r.spec.order_id is not None:
            out[r.spec.order_id].append(r)
    return out


def _snapshot_problem(
    last: str, snap: bytes | None, order: dict[str, Any] | None, codec: AvroCodec
) -> str | None:
    """Why the order's last snapshot (``b"<missing>"``: none) does not match the simulator."""
    if last == "deleted":
        if snap is None:
            return None
        why = "no snapshot" if snap == b"<missing>" else "not a tombstone"
        return f"deleted order, last snapshot {why}"
    if snap is None or snap == b"<missing>":
        why = "a tombstone" if snap is None else "missing"
        return f"order exists, last snapshot {why}"
    _, record = codec.decode(snap)
    diff = snapshot_diff(record, order)
    if not diff:
        return None
    status = record.get("state", {})
    return (
        f"last snapshot differs in {diff} (snapshot state {status!r:.120}, "
        f"commandId {record.get('commandId')})"
    )


def check_orders(
    plan: Plan,
    inputs: list[InputRecord],
    sim: dict[str, SimOrder],
    out: Outputs,
    *,
    eos: bool,
    codec: AvroCodec,
    problems: Problems,
) -> list[Check]:
    """``history``, ``final-state`` and ``snapshot`` of every order."""
    per_order = by_order(inputs)
    hist_ok = final_ok = snap_ok = 0
    for order_id in plan.orders:
        recs = per_order.get(order_id, [])
        if len({r.partition for r in recs}) > 1:
            problems.order("history", order_id, "commands on several partitions")
        steps = [
            "deleted" if r.spec.kind == "delete" else str(r.spec.target) for r in recs if r.spec
        ]
        expected = collapse(["checkout", *steps])
        actual = collapse(sim[order_id].history)
        if actual == expected:
            hist_ok += 1
        else:
            problems.order("history", order_id, f"simulator {actual} != expected {expected}")
        last = steps[-1] if steps else "checkout"
        order = sim[order_id].order
        current = order["state"]["currentStatus"] if order else "deleted"
        if current == last:
            final_ok += 1
        else:
            problems.order("final-state", order_id, f"order is {current}, last command {last}")
        # exactly_once fences a zombie's outputs: the last record must be right. In
        # at_least_once outputs a frozen member handed to its producer before it lost the
        # partition can still land late; readers keep the newest version (README).
        snap = (out.last_snapshot if eos else out.newest_snapshot).get(order_id, b"<missing>")
        why = _snapshot_problem(last, snap, order, codec)
        if why is None:
            snap_ok += 1
        else:
            problems.order("snapshot", order_id, why)
    n = len(plan.orders)
    late = f"; stale snapshots published late: {out.stale_snapshots}"
    return [
        Check("history", hist_ok == n, f"{hist_ok}/{n} orders match"),
        Check("final-state", final_ok == n, f"{final_ok}/{n} orders match"),
        Check(
            "snapshot",
            snap_ok == n and (not eos or out.stale_snapshots == 0),
            f"{snap_ok}/{n} {'last' if eos else 'newest'} snapshots match{late}",
        ),
    ]


@dataclass
class _Seen:
    """One input record with what the bridge published for it."""

    spec: Spec
    where: str
    results: list[dict[str, Any]]
    dead_letters: list[dict[str, bytes]]


class _RecordChecks:
    """The per-record checks, counting as they go (``n``) and filing problems."""

    def __init__(self, eos: bool, problems: Problems) -> None:
        self.eos = eos
        self.p = problems
        self.n: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    def results(self, r: _Seen) -> None:
        spec, res = r.spec, r.results
        if spec.kind != "poison":
            self.n["valid"] += 1
        elif spec.has_result:
            self.n["poison_ids"] += 1
        if spec.kind == "poison" and not spec.has_result:
            if res:
                self.p.record("results", spec.cid, f"{r.where}: unexpected result(s)")
            return
        if not res:
            self.n["missing_results"] += 1
            self.p.record("results", spec.cid, f"{r.where}: no result")
        elif len(res) > 1:
            self.n["dup_results"] += len(res) - 1
            if self.eos:
                got = [x["outcome"] for x in res]
                self.p.record("results", spec.cid, f"{r.where}: {len(res)} results {got}")
        for x in res:
            if x["commandId"] != spec.cid:
                self.p.record("results", spec.cid, f"{r.where}: result for {x['commandId']}")

    def valid(self, r: _Seen) -> None:
        for x in r.results:
            self.outcomes[x["outcome"]] += 1
            if x["outcome"] not in SUCCESS:
                why = f"{r.where}: {x['outcome']} ({x.get('reason')})"
                self.p.record("outcomes", r.spec.cid, why)
        if r.dead_letters:
            self.n["valid_in_dlq"] += 1
            reasons = [h.get(DLQ_REASON, b"").decode() for h in r.dead_letters]
            why = f"{r.where}: valid command dead-lettered {reasons}"
            self.p.record("dlq", r.spec.cid, why)

    def poison(self, r: _Seen) -> None:
        spec, dlq = r.spec, r.dead_letters
        self.n["poison"] += 1
        if not dlq:
            self.n["poison_missing"] += 1
            self.p.record("dlq", spec.cid, f"{r.where}: poison not dead-lettered")
        elif len(dlq) > 1:
            self.n["poison_dup"] += len(dlq) - 1
            if self.eos:
                self.p.record("dlq", spec.cid, f"{r.where}: dead-lettered {len(dlq)} times")
        for h in dlq:
            reason = h.get(DLQ_REASON, b"").decode()
            if reason != spec.reason:
                self.p.record("outcomes", spec.cid, f"{r.where}: DLQ reason {reason}")
        for x in r.results:
            if x["outcome"] != "failed":
                self.p.record("outcomes", spec.cid, f"{r.where}: poison result {x['outcome']}")


def check_records(
    inputs: list[InputRecord], out: Outputs, *, eos: bool, problems: Problems
) -> list[Check]:
    """``results``, ``dlq`` and ``outcomes`` of every input record."""
    c = _RecordChecks(eos, problems)
    for r in inputs:
        if r.spec is None:
            continue
        src = (r.partition, r.offset)
        where = f"p{r.partition}@{r.offset} {r.spec.cid} {r.spec.describe()}"
        seen = _Seen(r.spec, where, out.results_at.get(src, []), out.dlq_at.get(src, []))
        c.results(seen)
        if r.spec.kind != "poison":
            c.valid(seen)
        else:
            c.poison(seen)
    known = {(r.partition, r.offset) for r in inputs}
    for src in set(out.results_at) - known:
        problems.record("results", "", f"result for unknown source p{src[0]}@{src[1]}")
    for src in set(out.dlq_at) - known:
        problems.record("dlq", "", f"dead letter for unknown source p{src[0]}@{src[1]}")
    bad, n = problems.records, c.n
    rule = "exactly one" if eos else "at least one"
    shown = ", ".join(f"{k} {v}" for k, v in sorted(c.outcomes.items()))
    return [
        Check(
            "results",
            not bad["results"],
            f"{rule} result per command: {n['valid']} commands + {n['poison_ids']} poison with "
            f"an id; {n['missing_results']} missing, {n['dup_results']} duplicates"
            + (f", {len(bad['results'])} problems" if bad["results"] else ""),
        ),
        Check(
            "dlq",
            not bad["dlq"],
            f"{n['valid_in_dlq']} valid commands dead-lettered; "
            f"{n['poison'] - n['poison_missing']}/{n['poison']} poison records dead-lettered "
            f"({rule}), {n['poison_dup']} duplicates",
        ),
        Check(
            "outcomes",
            not bad["outcomes"],
            f"valid commands: {shown}; {len(bad['outcomes'])} problems",
        ),
    ]


def check_processes(
    fleet: Fleet,
    broker_restart: tuple[float, float] | None,
    codes: list[tuple[int, int | None]],
) -> list[Check]:
    """``self-exits`` and ``shutdown``."""
    # a bridge may exit by itself only because the broker was gone (the supervisor restarts
    # it, like Kubernetes); any other self-exit is a crash
    lo, hi = (
        (broker_restart[0], broker_restart[0] + broker_restart[1] + 15.0)
        if broker_restart
        else (0.0, -1.0)
    )
    crashes = [
        i
        for i in fleet.incarnations
        if i.self_exit and not (i.ended_t is not None and lo <= i.ended_t <= hi)
    ]
    unclean = [(n, c) for n, c in codes if c != 0]
    return [
        Check(
            "self-exits",
            not crashes,
            f"{len(crashes)} bridge(s) exited by themselves outside the broker restart"
            + (
                " (" + ", ".join(f"#{i.n} {i.end} at t={i.ended_t:.1f}s" for i in crashes) + ")"
                if crashes
                else ""
            ),
        ),
        Check(
            "shutdown",
            not unclean,
            f"{len(codes)} bridge(s) stopped with SIGTERM, exit codes {[c for _, c in codes]}",
        ),
    ]
