"""Chaos harness: kill -9, API faults, a broker restart and zombies, then check every order.

One command (``python bench/chaos.py``; ``--short`` is the CI form) starts its own Kafka broker
(:class:`bridge_devkit.localkafka.LocalKafka` on a data directory it owns, since it restarts it),
the
Norce API simulator as a process, and ``python -m bridge run`` processes configured like a
deployment. For each processing guarantee (``--guarantee``; fresh topics and group each) it:

1. seeds orders and plans, per order, a valid sequence of commands: processing ⇄ checkout loops,
   same-state repeats, an ending (accepted → completed, declined, removed, ...), sometimes a
   DeleteOrder (sometimes repeated); some commands carry ``expectedState``. Poison records
   (malformed JSON, unknown state, bad order ids, unknown type, empty value, ...) are mixed in;
2. produces them paced over ``produce_s`` while the bridge runs; meanwhile it kills the bridge
   with SIGKILL at seeded random moments (one kill lands right after a restarted bridge was
   assigned its partitions, i.e. while it replays), restarts it after a random delay, restarts
   the broker once (same data directory), runs a second bridge for part of the run
   (rebalances), and restarts a bridge that exits by itself (as Kubernetes would). The simulator
   injects 10 % 5xx, 5 % 429 with ``Retry-After``, 2 % hangs past the client read timeout, 1 %
   connection resets and 1 % "write applied, then 500" (ambiguous outcomes);
3. waits until every input record has a result or a dead letter (``read_committed``), stops the
   bridge gracefully, and checks every order and every record:

   * ``history``      the simulator's status history equals the commands' targets in offset order
                      (consecutive duplicates collapsed), ending in ``deleted`` after a delete;
   * ``final-state``  the order's state is the last command's target (or it is deleted);
   * ``snapshot``     the last snapshot equals the simulator's order (a tombstone after a delete);
   * ``results``      one result per command (exactly_once), at least one (at_least_once);
   * ``dlq``          no valid command dead-lettered; each poison record dead-lettered once
                      (exactly_once) / at least once (at_least_once);
   * ``outcomes``     valid commands end ``applied``/``already_applied``; poison results are
                      ``failed`` and dead letters carry the expected reason;
   * ``caught-up`` and ``shutdown`` (every record handled in time; graceful stop exits 0).

Two fencing steps (issue 9) are part of every run (``--pauses``/``--expulsions``): an owner is
SIGSTOPped past the session timeout while writes of its orders sleep in a 503/Retry-After
backoff, and an owner whose write hangs is expelled during its revoke when another instance
joins (stopped as soon as its revoke begins, until the group moved on without it). Every
incarnation has its own ``x-adapterid``; the ``fencing`` check compares each PUT/DELETE in the
simulator's call log with the assignment timeline from the bridges' logs and fails the run on any
write by a process after its partition was reassigned (see ``attribute_writes``). ``scenarios``
fails if a step did not happen as described; ``self-exits`` if a bridge crashed (exited by itself
outside the broker restart).

``--wait-assigned`` produces only once the first bridge owns its partitions (a diagnostic: it
takes the first assignment of a fresh group out of the picture). While waiting to catch up,
records that stay unhandled below the group's committed offset are reported as skipped for good
instead of waiting for the deadline.

It prints what was injected and a PASS/FAIL line per check, writes the evidence of failures
(commands, results, simulator history and call log, bridge log lines per order) to the work
directory, and exits 1 on any FAIL. Everything is seeded (``--seed``): the plan and the fault
schedule replay exactly; process timing does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from bridge_devkit.localkafka import LocalKafka, free_port

from bridge.codec import AvroCodec
from bridge.commands import DeleteOrder, SetOrderState, command_to_json
from bridge.config import DEFAULT_SCHEMAS_DIR
from bridge.events import order_from_snapshot
from bridge.order_model import OrderStatus

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "chaos-api-key-0123456789abcdef"
MERCHANT, CHANNEL = "norce", "1"
CHAOS_HEADER = "chaos.id"
ASSIGNED = '"msg": "partitions assigned"'  # the bridge's log line once it owns partitions
READ_TIMEOUT_S = 1.0
SESSION_TIMEOUT_S = 6.0
REVOKE_DEADLINE_S = 3.0
JOINER_SLOT = 2  # the slot of the instance a fencing step starts to take partitions over
SCRIPTED_ORDERS = 30  # orders whose writes a fencing step scripts (503 or hang)
MAX_STOP_S = 40.0  # a fencing step never keeps a bridge stopped longer
STALL_S = 45.0  # no progress for this long while waiting to catch up: look for skipped records
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
GUARANTEES = ("exactly_once", "at_least_once")
SUCCESS = {"applied", "already_applied"}

# Endings after the checkout ⇄ processing loops (each starts from processing) and their weights.
ENDINGS: list[tuple[list[str], float]] = [
    (["accepted", "completed"], 0.35),
    (["accepted", "completed", "completed"], 0.05),
    (["accepted"], 0.12),
    (["accepted", "declined"], 0.06),
    (["declined"], 0.10),
    (["removed"], 0.08),
    (["processing"], 0.08),
    ([], 0.16),
]


@dataclass(frozen=True)
class Profile:
    """The size of a run."""

    name: str
    orders: int
    commands: int  # valid commands; poison records come on top
    poison: int
    partitions: int
    produce_s: float
    kills: int  # SIGKILLs in total, one of them while a restarted bridge replays
    two_instances: bool
    catchup_s: float
    pauses: int  # SIGSTOP of an owner with writes in retry backoff, past the session timeout
    expulsions: int  # an owner expelled during a long revoke (hanging write + a joiner)


FULL = Profile("full", 500, 5000, 40, 12, 90.0, 6, True, 480.0, 3, 2)
SHORT = Profile("short", 60, 900, 12, 6, 45.0, 2, True, 150.0, 1, 1)


# --------------------------------------------------------------------------------------------
# The plan: what to send


@dataclass
class Spec:
    """One input record to produce."""

    cid: str
    kind: str  # set | delete | poison
    order_id: str | None
    key: bytes | None
    target: str | None = None  # set: target state
    expected: str | None = None  # expectedState, if any
    value: bytes | None = None  # poison: the raw value
    reason: str | None = None  # poison: the expected dead-letter reason
    has_result: bool = False  # poison: carries a commandId, so a failed result is expected

    def build(self, correlation: str) -> bytes | None:
        if self.kind == "poison":
            return self.value
        assert self.order_id is not None
        common: dict[str, Any] = {
            "command_id": self.cid,
            "order_id": self.order_id,
            "merchant": MERCHANT,
            "channel": CHANNEL,
            "issued_at": datetime.now(UTC),
            "expected_state": OrderStatus(self.expected) if self.expected else None,
            "correlation_id": correlation,
        }
        if self.kind == "delete":
            return command_to_json(DeleteOrder(**common))
        assert self.target is not None
        return command_to_json(SetOrderState(state=OrderStatus(self.target), **common))

    def describe(self) -> str:
        if self.kind == "poison":
            return f"POISON[{self.reason}]"
        what = "DeleteOrder" if self.kind == "delete" else f"SetOrderState {self.target}"
        return what + (f" (expected {self.expected})" if self.expected else "")


def _has_command_id(value: bytes | None) -> bool:
    if not value:
        return False
    try:
        raw = json.loads(value)
    except ValueError:
        return False
    return isinstance(raw, dict) and isinstance(raw.get("commandId"), str)


def _poison(n: int, cid: str, order_id: str) -> tuple[bytes | None, str]:
    """The n-th kind of poison record: (value, expected dead-letter reason)."""
    base = {
        "type": "SetOrderState",
        "commandId": cid,
        "orderId": order_id,
        "merchant": MERCHANT,
        "channel": CHANNEL,
        "issuedAt": datetime.now(UTC).isoformat(),
        "state": "processing",
    }

    def js(**changes: Any) -> bytes:
        raw = {**base, **changes}
        return json.dumps({k: v for k, v in raw.items() if v is not None}).encode()

    kinds: list[tuple[bytes | None, str]] = [
        (js()[:-7] + b",", "invalid_json"),
        (js(state="shipped"), "unknown_state"),
        (js(orderId="../../etc/passwd"), "bad_order_id"),
        (js(orderId="o_1\r\nX-Injected: yes"), "bad_order_id"),
        (js(type="CancelOrder"), "unknown_type"),
        (b"", "empty_value"),
        (None, "empty_value"),
        (b"[1, 2, 3]", "not_an_object"),
        (b"\xff\xfe" + cid.encode(), "invalid_utf8"),
        (js(issuedAt=None), "missing_field"),
        (js(expectedStat="checkout"), "unknown_field"),
        (js(issuedAt="yesterday"), "bad_timestamp"),
    ]
    return kinds[n % len(kinds)]


def _ranges(offsets: list[int]) -> str:
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


def _collapse(states: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in states:
        if not out or out[-1] != s:
            out.append(s)
    return out


def plan_order(rng: random.Random, length: int) -> list[tuple[str, str | None, str | None]]:
    """A valid command sequence for an order in checkout: (kind, target, expected) tuples."""
    ending = rng.choices([e for e, _ in ENDINGS], weights=[w for _, w in ENDINGS])[0]
    deletes = 0
    if rng.random() < 0.3:
        deletes = 2 if rng.random() < 0.35 else 1
    body_len = max(1, length - len(ending) - deletes)
    targets: list[str] = []
    state = "checkout"
    while len(targets) < body_len:
        if targets and rng.random() < 0.1:
            targets.append(state)  # same-state repeat: a no-op
        else:
            state = "processing" if state == "checkout" else "checkout"
            targets.append(state)
    if ending and state == "checkout" and ending[0] != "removed":
        targets.append("processing")
    targets += ending
    steps: list[tuple[str, str | None, str | None]] = []
    previous = "checkout"
    for target in targets:
        expected = previous if rng.random() < 0.2 else None
        steps.append(("set", target, expected))
        previous = target
    for i in range(deletes):
        expected = previous if i == 0 and rng.random() < 0.3 else None
        steps.append(("delete", None, expected))
    return steps


@dataclass
class Plan:
    orders: list[str]
    queues: dict[str, list[Spec]]  # per key (order id or a poison key), in send order
    specs: dict[str, Spec]

    @property
    def total(self) -> int:
        return len(self.specs)


def make_plan(rng: random.Random, profile: Profile, orders: list[str], prefix: str) -> Plan:
    mean = profile.commands / len(orders)
    lengths = [rng.randint(max(2, int(mean * 0.5)), max(3, int(mean * 1.5))) for _ in orders]
    # Nudge the lengths so they add up to the requested number of commands.
    i = 0
    while sum(lengths) != profile.commands:
        j = i % len(lengths)
        if sum(lengths) < profile.commands:
            lengths[j] += 1
        elif lengths[j] > 2:
            lengths[j] -= 1
        i += 1
    queues: dict[str, list[Spec]] = {}
    specs: dict[str, Spec] = {}
    n = 0
    for order_id, length in zip(orders, lengths, strict=True):
        queue: list[Spec] = []
        for kind, target, expected in plan_order(rng, length):
            n += 1
            cid = f"{prefix}-c{n:05d}"
            spec = Spec(cid, kind, order_id, order_id.encode(), target=target, expected=expected)
            queue.append(spec)
            specs[cid] = spec
        queues[order_id] = queue
    for p in range(profile.poison):
        cid = f"{prefix}-p{p:03d}"
        host = rng.choice(orders)
        value, reason = _poison(p, cid, host)
        mode = p % 3
        key = host.encode() if mode == 0 else None if mode == 1 else f"poison-{p}".encode()
        spec = Spec(
            cid, "poison", None, key, value=value, reason=reason, has_result=_has_command_id(value)
        )
        specs[cid] = spec
        if mode == 0:  # interleaved with the order's own commands (same partition)
            queue = queues[host]
            queue.insert(rng.randint(0, len(queue)), spec)
        else:
            queues[f"poison-{p}"] = [spec]
    return Plan(orders, queues, specs)


# --------------------------------------------------------------------------------------------
# Fencing: who owned which partition when, and which writes came from whom


ASSIGNED_MSG = "partitions assigned"
REVOKED_MSG = "partitions revoked"
LOST_MSG = "partition lost; abandoning its work"
LEASE_EXPIRED_MSG = "membership lease expired; holding writes until a heartbeat succeeds"
ABANDONED_MSG = "command abandoned before its write: partition no longer ours"
HEALTH_PREFIX = "health server listening on port "
WRITE_ENDPOINTS = ("Norce set_state failed", "Norce delete_order failed")
WRITE_METHODS = ("PUT", "DELETE")


def retry_delay(msg: str) -> float:
    """The backoff of a client retry log line ("... retrying in 1.000s"), 0 if none."""
    found = re.search(r"retrying in ([0-9.]+)s", msg)
    return float(found.group(1)) if found else 0.0


def parse_ts(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (bridge logs and the simulator's call log)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class OwnershipEvent:
    """One incarnation gained (``assigned``) or gave up (``revoked``/``lost``) partitions."""

    ts: float  # epoch seconds, from the bridge's log line (same host clock as the simulator)
    incarnation: int
    kind: str  # assigned | revoked | lost
    partitions: frozenset[int]


@dataclass(frozen=True)
class WriteCall:
    """A PUT/DELETE that reached the simulator (answered or not), from its call log."""

    ts: float  # epoch seconds: when the simulator received (and applied) it
    method: str
    order_id: str
    adapter: str | None
    status: int | None
    fault: str | None


@dataclass(frozen=True)
class FenceViolation:
    """A write that the fencing should have prevented."""

    kind: str  # reassigned | unowned | unattributed
    call: WriteCall
    writer: int | None
    partition: int | None
    owner: int | None  # incarnation the partition was last assigned to before the write
    owner_since: float | None

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.call.ts, UTC).isoformat(timespec="microseconds")
        text = (
            f"{when} {self.call.method} {self.call.order_id} by {self.call.adapter or '?'} "
            f"(#{self.writer}) -> {self.call.status if self.call.status is not None else '-'}"
            f"{' [' + self.call.fault + ']' if self.call.fault else ''}, partition "
            f"{self.partition}"
        )
        if self.kind == "reassigned" and self.owner_since is not None:
            since = datetime.fromtimestamp(self.owner_since, UTC).isoformat(timespec="milliseconds")
            text += f" assigned to #{self.owner} since {since}"
        elif self.kind == "unowned":
            text += " not assigned to the writer at that moment"
        return f"{self.kind}: {text}"


def attribute_writes(
    calls: Iterable[WriteCall],
    partition_of: dict[str, int],
    events: Iterable[OwnershipEvent],
    incarnation_of: dict[str, int],
) -> list[FenceViolation]:
    """Every write made by a process that did not own the order's partition at that moment.

    * ``reassigned``: the partition's most recent assignment before the write (any incarnation's
      ``partitions assigned`` line) went to another incarnation: the write of a zombie;
    * ``unowned``: the partition was not (or no longer) assigned to the writer by its own log
      (never assigned, or revoked/lost before the write) although nobody else had it yet;
    * ``unattributed``: the call's ``x-adapterid`` names no incarnation, or the order is unknown.

    An event counts for a write only if its timestamp is strictly earlier; log lines carry
    milliseconds (truncated), the call log microseconds.
    """
    per_partition: dict[int, list[OwnershipEvent]] = defaultdict(list)
    for event in events:
        for p in event.partitions:
            per_partition[p].append(event)
    for timeline in per_partition.values():
        timeline.sort(key=lambda e: e.ts)
    out: list[FenceViolation] = []
    for call in calls:
        writer = incarnation_of.get(call.adapter or "")
        partition = partition_of.get(call.order_id)
        if writer is None or partition is None:
            out.append(FenceViolation("unattributed", call, writer, partition, None, None))
            continue
        owner: int | None = None
        owner_since: float | None = None
        writer_holds = False
        for event in per_partition.get(partition, []):
            if event.ts >= call.ts:
                break
            if event.kind == "assigned":
                owner, owner_since = event.incarnation, event.ts
            if event.incarnation == writer:
                writer_holds = event.kind == "assigned"
        if owner is not None and owner != writer:
            out.append(FenceViolation("reassigned", call, writer, partition, owner, owner_since))
        elif not writer_holds:
            out.append(FenceViolation("unowned", call, writer, partition, owner, owner_since))
    return out


@dataclass
class LogTail:
    """Incremental reader of one incarnation's JSON log: the lines the harness acts on."""

    n: int
    path: Path
    offset: int = 0
    events: list[OwnershipEvent] = field(default_factory=list)
    write_retries: list[tuple[float, str, str]] = field(default_factory=list)  # ts, order, msg
    revokes: list[tuple[float, frozenset[int], int]] = field(default_factory=list)
    lease_expired: list[float] = field(default_factory=list)
    abandoned: list[tuple[float, str | None]] = field(default_factory=list)
    port: int | None = None
    _rest: bytes = b""

    def poll(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return
        self.offset += len(chunk)
        data = self._rest + chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        for raw in lines:
            self._take(raw)

    def _take(self, raw: bytes) -> None:
        try:
            rec = json.loads(raw)
        except ValueError:
            return
        if not isinstance(rec, dict):
            return
        msg = str(rec.get("msg", ""))
        try:
            ts = parse_ts(str(rec.get("ts")))
        except ValueError:
            return
        if msg in (ASSIGNED_MSG, REVOKED_MSG):
            parts = frozenset(int(p) for p in rec.get("partitions", []))
            kind = "assigned" if msg == ASSIGNED_MSG else "revoked"
            self.events.append(OwnershipEvent(ts, self.n, kind, parts))
            if kind == "revoked":
                self.revokes.append((ts, parts, int(rec.get("cancelled_before_write", 0))))
        elif msg == LOST_MSG and "partition" in rec:
            self.events.append(OwnershipEvent(ts, self.n, "lost", frozenset({rec["partition"]})))
        elif msg.startswith(WRITE_ENDPOINTS) and "retrying in" in msg and rec.get("order_id"):
            self.write_retries.append((ts, str(rec["order_id"]), msg))
        elif msg.startswith(LEASE_EXPIRED_MSG[:30]):
            self.lease_expired.append(ts)
        elif msg == ABANDONED_MSG:
            self.abandoned.append((ts, rec.get("order_id")))
        elif msg.startswith(HEALTH_PREFIX):
            with contextlib.suppress(ValueError):
                self.port = int(msg[len(HEALTH_PREFIX) :])

    def owned(self) -> frozenset[int]:
        """The partitions this incarnation owns by its log so far."""
        owned: set[int] = set()
        for event in self.events:
            if event.kind == "assigned":
                owned = set(event.partitions)
            else:
                owned -= event.partitions
        return frozenset(owned)


async def scrape_counter(http: httpx.AsyncClient, port: int, name: str) -> float | None:
    """One sample of a bridge's ``/metrics`` (None when it cannot be read)."""
    try:
        resp = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)
    except httpx.HTTPError:
        return None
    for line in resp.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


# --------------------------------------------------------------------------------------------
# Processes: simulator and bridges


class Simulator:
    """The simulator as its own process, plus its admin API."""

    def __init__(self, seed: int, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "norce_simulator",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--orders",
                "0",
                "--seed",
                str(seed),
                "--api-key",
                API_KEY,
                "--latency-ms",
                "3",
                "--jitter-ms",
                "4",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator did not start (see {log_path})")
        started = json.loads(line)
        self.url = started["url"].rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, timeout=30.0)

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        resp = await self.http.request(method, f"/__admin{path}", json=body)
        if resp.status_code == 404 and path.startswith("/orders/"):
            return None
        resp.raise_for_status()
        return resp.json() if resp.content else None

    async def seed(self, count: int) -> list[str]:
        got = await self.admin(
            "POST", "/seed", {"count": count, "merchant": MERCHANT, "channel": CHANNEL}
        )
        ids: list[str] = got["ids"]
        return ids

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def adapter_id(label: str, n: int) -> str:
    """The ``x-adapterid`` of bridge incarnation ``n`` of a run."""
    return f"chaos-{label}-{n}"


@dataclass
class Incarnation:
    n: int
    slot: int
    proc: subprocess.Popen[bytes]
    log: Path
    started_t: float
    ended_t: float | None = None
    end: str | None = None  # kill -9 | exit N (self) | SIGTERM -> exit N
    self_exit: bool = False


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

    def __init__(self, env: dict[str, str], logdir: Path, label: str, t0: float) -> None:
        self.env = env
        self.logdir = logdir
        self.label = label
        self.t0 = t0
        self.slots: dict[int, Incarnation | None] = {0: None, 1: None, JOINER_SLOT: None}
        self.tails: dict[int, LogTail] = {}
        self.wanted: set[int] = {0}
        self.restart_at: dict[int, float] = {}
        self.backoff: dict[int, float] = {}
        self.incarnations: list[Incarnation] = []
        self.kills: list[KillRecord] = []
        self._log_handles: list[IO[bytes]] = []
        self.stopping = False

    def t(self) -> float:
        return time.monotonic() - self.t0

    def spawn(self, slot: int) -> Incarnation:
        n = len(self.incarnations) + 1
        log = self.logdir / f"{self.label}-bridge-{n:02d}.log"
        handle = log.open("ab")
        self._log_handles.append(handle)
        env = dict(self.env)
        env["BRIDGE_KAFKA__CLIENT_ID"] = f"chaos-{self.label}-{n}"
        # every API call names the incarnation that made it (the simulator logs x-adapterid)
        env["BRIDGE_NORCE__ADAPTER_ID"] = adapter_id(self.label, n)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=handle,
            stdin=subprocess.DEVNULL,
        )
        inc = Incarnation(n, slot, proc, log, self.t())
        self.incarnations.append(inc)
        self.tails[n] = LogTail(n, log)
        self.slots[slot] = inc
        return inc

    def tail(self, inc: Incarnation) -> LogTail:
        return self.tails[inc.n]

    def poll_logs(self) -> None:
        for tail in self.tails.values():
            tail.poll()

    def running(self) -> list[Incarnation]:
        return [inc for inc in self.slots.values() if inc is not None and inc.proc.poll() is None]

    async def supervise(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for slot in sorted(self.wanted):
                inc = self.slots[slot]
                if inc is not None and inc.proc.poll() is not None and inc.end is None:
                    inc.end, inc.ended_t, inc.self_exit = (
                        f"exit {inc.proc.returncode}",
                        self.t(),
                        True,
                    )
                    delay = self.backoff.get(slot, 1.0)
                    self.backoff[slot] = min(5.0, delay * 1.5)
                    self.restart_at[slot] = now + delay
                    print(
                        f"  [{self.t():6.1f}s] bridge #{inc.n} exited by itself "
                        f"(code {inc.proc.returncode}); restarting in {delay:.1f}s",
                        flush=True,
                    )
                    self.slots[slot] = None
                    continue
                if inc is None and now >= self.restart_at.get(slot, 0.0) and not self.stopping:
                    new = self.spawn(slot)
                    if len(self.incarnations) > 1:
                        print(f"  [{self.t():6.1f}s] started bridge #{new.n} (slot {slot})")
            for slot, inc in self.slots.items():
                if inc is not None and inc.proc.poll() is None and self.t() - inc.started_t > 20:
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
        inc.proc.wait(10)
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
        if inc is None or inc.proc.poll() is not None:
            return None
        inc.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(inc.proc.wait, timeout_s)
        if inc.proc.poll() is None:
            inc.proc.kill()
            inc.proc.wait(10)
            inc.end, inc.ended_t = "SIGTERM -> no exit, killed", self.t()
            return -9
        inc.end, inc.ended_t = f"SIGTERM -> exit {inc.proc.returncode}", self.t()
        return inc.proc.returncode

    async def stop_all(self) -> list[tuple[int, int | None]]:
        self.stopping = True
        codes = []
        for slot in sorted(self.slots):
            inc = self.slots.get(slot)
            if inc is not None:
                codes.append((inc.n, await self.stop_slot(slot)))
        return codes

    def close_logs(self) -> None:
        for handle in self._log_handles:
            with contextlib.suppress(Exception):
                handle.close()


async def wait_for_log(
    path: Path, needle: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> bool:
    """Poll a bridge log until it contains ``needle`` (or the process exits, or time is up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        if _log_has(path, needle):
            return True
        await asyncio.sleep(0.05)
    return False


def _log_has(path: Path, needle: str) -> int:
    try:
        return path.read_text(errors="replace").count(needle)
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------
# Reading what the bridge published


@dataclass
class Topics:
    commands: str
    snapshots: str
    events: str
    results: str
    dlq: str

    @classmethod
    def fresh(cls, label: str) -> Topics:
        s = f"chaos-{label}-{os.getpid()}-{int(time.time())}"
        return cls(f"{s}.commands", f"{s}.snapshots", f"{s}.events", f"{s}.results", f"{s}.dlq")


class Collector:
    """A read_committed consumer of results, dead letters and snapshots (no group)."""

    def __init__(self, bootstrap: str, topics: Topics, partitions: int, codec: AvroCodec) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.codec = codec
        self.tps = [
            TopicPartition(t, p)
            for t in (topics.results, topics.dlq, topics.snapshots)
            for p in range(partitions)
        ]
        self.results: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        self.dlq: dict[tuple[int, int], list[dict[str, bytes]]] = defaultdict(list)
        self.snapshots: dict[str, bytes | None] = {}
        self.snapshot_count = 0
        # The compacted topic as a version-aware reader sees it (README, "Consuming the
        # snapshot topic"): a snapshot older than one already seen for the order is stale.
        self.effective: dict[str, bytes | None] = {}
        self.versions: dict[str, tuple[int, int]] = {}
        self.stale_snapshots = 0
        self.consumer: AIOKafkaConsumer | None = None
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await self.consumer.start()
        self.consumer.assign(self.tps)
        await self.consumer.seek_to_beginning(*self.tps)
        self._task = asyncio.create_task(self._loop())

    def handled(self) -> set[tuple[int, int]]:
        return set(self.results) | set(self.dlq)

    def _take(self, tp: TopicPartition, m: Any) -> None:
        if tp.topic == self.topics.results:
            _, record = self.codec.decode(m.value)
            src = record["source"]
            self.results[(int(src["partition"]), int(src["offset"]))].append(record)
        elif tp.topic == self.topics.dlq:
            headers = {k: bytes(v or b"") for k, v in (m.headers or ())}
            p = int(headers.get("__connect.errors.partition", b"-1"))
            o = int(headers.get("__connect.errors.offset", b"-1"))
            self.dlq[(p, o)].append(headers)
        else:
            self.snapshot_count += 1
            key = m.key.decode() if m.key else ""
            self.snapshots[key] = None if m.value is None else bytes(m.value)
            if m.value is None:
                self.effective[key] = None
                return
            _, snap = self.codec.decode(m.value)
            version = (
                int(snap.get("lastModifiedMillis") or 0),
                len((snap.get("state") or {}).get("transitions") or []),
            )
            seen = self.versions.get(key)
            tombstoned = key in self.effective and self.effective[key] is None
            if seen is not None and (version < seen or (tombstoned and version <= seen)):
                self.stale_snapshots += 1  # published late by a member that lost the partition
                return
            self.versions[key] = version
            self.effective[key] = bytes(m.value)

    async def _poll(self) -> None:
        assert self.consumer is not None
        try:
            batch = await self.consumer.getmany(timeout_ms=200, max_records=2000)
        except KafkaError:
            await asyncio.sleep(0.5)
            return
        for tp, msgs in batch.items():
            for m in msgs:
                self._take(tp, m)

    async def _loop(self) -> None:
        while not self._stop:
            await self._poll()

    async def drain(self, timeout_s: float) -> bool:
        """Stop the background loop and read until every partition's read_committed end."""
        self._stop = True
        if self._task is not None:
            await self._task
        assert self.consumer is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ends = await self.consumer.end_offsets(self.tps)
                positions = {tp: await self.consumer.position(tp) for tp in self.tps}
            except KafkaError:
                await asyncio.sleep(0.5)
                continue
            if all(positions[tp] >= ends[tp] for tp in self.tps):
                return True
            await self._poll()
        return False

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()


@dataclass
class InputRecord:
    partition: int
    offset: int
    cid: str | None
    spec: Spec | None


async def read_inputs(
    bootstrap: str, topic: str, partitions: int, plan: Plan, timeout_s: float = 60.0
) -> list[InputRecord]:
    """The commands topic as it is (the ground truth: producer retries may have duplicated)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    out: list[InputRecord] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, msgs in batch.items():
                for m in msgs:
                    headers = {k: bytes(v or b"") for k, v in (m.headers or ())}
                    raw = headers.get(CHAOS_HEADER)
                    cid = raw.decode() if raw else None
                    out.append(InputRecord(tp.partition, m.offset, cid, plan.specs.get(cid or "")))
    finally:
        await consumer.stop()
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


# --------------------------------------------------------------------------------------------
# One run


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class FenceStep:
    """What one fencing step (``pause`` or ``expel``) did, for the report and the checks."""

    kind: str
    t: float
    victim: int | None = None
    partitions: frozenset[int] = frozenset()
    in_backoff: list[str] = field(default_factory=list)  # pause: orders whose write was waiting
    hang_seen_at: float | None = None  # expel: a scripted hang reached the simulator
    join_at: float | None = None
    revoking: bool = False  # expel: stopped after its revoke began
    stopped_at: float | None = None
    continued_at: float | None = None
    stopped_s: float = 0.0
    reassigned: tuple[float, int] | None = None  # (when, to whom) while it was stopped
    notes: list[str] = field(default_factory=list)


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


class ChaosRun:
    def __init__(
        self,
        *,
        guarantee: str,
        profile: Profile,
        seed: int,
        broker: LocalKafka,
        sim: Simulator,
        workdir: Path,
        codec: AvroCodec,
        wait_assigned: bool = False,
        write_guard: str | None = None,
    ) -> None:
        self.guarantee = guarantee
        self.wait_assigned = wait_assigned
        self.write_guard = write_guard
        self.fence_steps: list[FenceStep] = []
        self.fence_violations: list[FenceViolation] = []
        self.stall_notes: list[str] = []
        self.plan: Plan | None = None
        self.collector: Collector | None = None
        self.queues: dict[str, list[Spec]] = {}
        self.produced_at: dict[str, tuple[int, int]] = {}  # cid -> (partition, offset)
        self.partition_of: dict[str, int] = {}  # order id -> partition of its commands
        self.skipped: set[tuple[int, int]] = set()
        self.eos = guarantee == "exactly_once"
        self.profile = profile
        self.seed = seed
        self.broker = broker
        self.sim = sim
        self.workdir = workdir
        self.codec = codec
        self.label = "eos" if self.eos else "alo"
        self.topics = Topics.fresh(self.label)
        self.group = f"chaos-{self.label}-{seed}-{os.getpid()}"
        self.rng_plan = random.Random(f"plan-{seed}-{guarantee}")
        self.rng_prod = random.Random(f"produce-{seed}-{guarantee}")
        self.rng_chaos = random.Random(f"chaos-{seed}-{guarantee}")
        self.t0 = time.monotonic()
        self.produce_gate = asyncio.Event()
        self.produce_gate.set()
        self.produced = 0
        self.send_retries = 0
        self.production_done_t: float | None = None
        self.broker_restart: tuple[float, float] | None = None
        self.second_window: list[float] = []
        self.events: list[str] = []
        self.report = RunReport(guarantee)

    def t(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        line = f"  [{self.t():6.1f}s] {text}"
        self.events.append(line.strip())
        print(line, flush=True)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    def bridge_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        t = self.topics
        env.update(
            {
                "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
                "BRIDGE_KAFKA__GROUP_ID": self.group,
                "BRIDGE_KAFKA__SESSION_TIMEOUT_MS": str(int(SESSION_TIMEOUT_S * 1000)),
                "BRIDGE_TOPICS__COMMANDS": t.commands,
                "BRIDGE_TOPICS__SNAPSHOTS": t.snapshots,
                "BRIDGE_TOPICS__EVENTS": t.events,
                "BRIDGE_TOPICS__RESULTS": t.results,
                "BRIDGE_TOPICS__DLQ": t.dlq,
                "BRIDGE_TOPICS__PARTITIONS": str(self.profile.partitions),
                "BRIDGE_TOPICS__CREATE_MISSING": "false",
                "BRIDGE_NORCE__BASE_URL": self.sim.url,
                "BRIDGE_NORCE__API_KEY": API_KEY,
                "BRIDGE_NORCE__READ_TIMEOUT_S": str(READ_TIMEOUT_S),
                "BRIDGE_NORCE__RETRY__MAX_ATTEMPTS": "4",
                "BRIDGE_NORCE__RETRY__BASE_DELAY_S": "0.05",
                "BRIDGE_NORCE__RETRY__MAX_DELAY_S": "0.5",
                "BRIDGE_NORCE__RETRY__RETRY_AFTER_CAP_S": "1.0",
                "BRIDGE_NORCE__RETRY__DEADLINE_S": "6",
                "BRIDGE_PROCESSING__PROCESSING_GUARANTEE": self.guarantee,
                "BRIDGE_PROCESSING__COMMIT_INTERVAL_S": "0.5",
                "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "64",
                "BRIDGE_PROCESSING__DRAIN_DEADLINE_S": "15",
                # the revoke must end (plus 2 s for the final commit) within the session timeout
                "BRIDGE_PROCESSING__REVOKE_DEADLINE_S": str(REVOKE_DEADLINE_S),
                "BRIDGE_HTTP__HOST": "127.0.0.1",
                "BRIDGE_HTTP__PORT": "0",
                "BRIDGE_LOG_LEVEL": "DEBUG",
            }
        )
        if self.write_guard:
            env["BRIDGE_PROCESSING__WRITE_GUARD"] = self.write_guard
        return env

    async def committed_offsets(self) -> dict[int, int]:
        """The bridge group's committed offsets on the commands topic (empty if unknown)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            await admin.start()
            offsets = await admin.list_consumer_group_offsets(self.group)
        except KafkaError:
            return {}
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return {
            tp.partition: om.offset
            for tp, om in offsets.items()
            if tp.topic == self.topics.commands
        }

    async def create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            t = self.topics
            n = self.profile.partitions
            await admin.create_topics(
                [
                    NewTopic(t.commands, n, 1),
                    NewTopic(t.snapshots, n, 1, topic_configs={"cleanup.policy": "compact"}),
                    NewTopic(t.events, n, 1),
                    NewTopic(t.results, n, 1),
                    NewTopic(t.dlq, n, 1),
                ]
            )
        finally:
            await admin.close()

    # -- producing --------------------------------------------------------------------------

    async def produce(self, plan: Plan) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            request_timeout_ms=15000,
        )
        await producer.start()
        correlation = f"chaos-{self.seed}"
        queues = self.queues = {k: list(v) for k, v in plan.queues.items()}
        rate = plan.total / self.profile.produce_s
        active = 0.0
        last = time.monotonic()
        try:
            while any(queues.values()):
                await asyncio.sleep(0.1)
                if not self.produce_gate.is_set():
                    await self.produce_gate.wait()
                    last = time.monotonic()
                    continue
                now = time.monotonic()
                active += now - last
                last = now
                due = int(rate * active) - self.produced
                if due <= 0:
                    continue
                keys = [k for k, q in queues.items() if q]
                # weighted by what is left, so that long sequences keep pace with short ones
                keys.sort(key=lambda k: -len(queues[k]) * self.rng_prod.random())
                batch = [queues[k].pop(0) for k in keys[:due]]
                await self._send_batch(producer, batch, correlation)
                self.produced += len(batch)
        finally:
            await producer.stop()
        self.production_done_t = self.t()

    async def _send_batch(
        self, producer: AIOKafkaProducer, batch: list[Spec], correlation: str
    ) -> None:
        """One record per key per batch; a failed send is retried (a duplicate stays adjacent)."""
        pending = list(batch)
        while pending:
            futures = []
            for spec in pending:
                headers = [("content-type", b"application/json"), (CHAOS_HEADER, spec.cid.encode())]
                try:
                    fut = await producer.send(
                        self.topics.commands, spec.build(correlation), key=spec.key, headers=headers
                    )
                except KafkaError:
                    fut = None
                futures.append(fut)
            failed = []
            for spec, fut in zip(pending, futures, strict=True):
                if fut is None:
                    failed.append(spec)
                    continue
                try:
                    md = await fut
                except KafkaError:
                    failed.append(spec)
                    continue
                if spec.kind != "poison":
                    self.produced_at[spec.cid] = (md.partition, md.offset)
            if failed:
                self.send_retries += len(failed)
                await self.produce_gate.wait()
                await asyncio.sleep(0.5)
            pending = failed

    # -- chaos ------------------------------------------------------------------------------

    def schedule(self) -> list[tuple[float, str]]:
        rng, p = self.rng_chaos, self.profile
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

    async def chaos(self, fleet: Fleet) -> None:
        shift = 0.0  # time spent in blocking events pushes the rest of the schedule back
        for at, kind in self.schedule():
            await asyncio.sleep(max(0.0, at + shift - self.t()))
            began = self.t()
            if kind in ("kill", "kill+replay-kill"):
                await self._kill(fleet, replay_kill=kind == "kill+replay-kill")
            elif kind == "replay-kill":
                await self._replay_kill(fleet, slot=None)
            elif kind == "broker-restart":
                await self._broker_restart()
            elif kind == "pause":
                await self._pause(fleet)
            elif kind == "expel":
                await self._expel(fleet)
            elif kind == "second-start":
                fleet.wanted.add(1)
                self.second_window.append(self.t())
                self.note("second bridge instance wanted (rebalance)")
            elif kind == "second-stop":
                # not while it is still starting (it would die of SIGTERM before its handler)
                await fleet.wait_running(1, 30, min_uptime_s=3.0)
                code = await fleet.stop_slot(1)
                self.second_window.append(self.t())
                self.note(f"second bridge instance stopped with SIGTERM (exit {code})")
            # (the fencing steps do not push the schedule: they need commands still coming)
            if kind in ("kill+replay-kill", "replay-kill", "broker-restart"):
                shift += self.t() - began

    async def _kill(self, fleet: Fleet, *, replay_kill: bool) -> None:
        # a victim that has been up for a moment (killing a process that is still importing
        # modules tests nothing)
        inc = await fleet.wait_running(None, 60, min_uptime_s=2.0)
        if inc is None:
            self.note("no bridge running to kill")
            return
        running = [i for i in fleet.running() if fleet.t() - i.started_t >= 2.0]
        inc = self.rng_chaos.choice(running) if running else inc
        delay = self.rng_chaos.uniform(0.2, 3.0)
        rec = fleet.kill(inc, delay)
        self.note(
            f"kill -9 bridge #{rec.incarnation} (pid {rec.pid}, up {rec.uptime_s:.1f}s); "
            f"restart in {delay:.1f}s"
        )
        if replay_kill:
            await self._replay_kill(fleet, slot=inc.slot)

    async def _replay_kill(self, fleet: Fleet, slot: int | None) -> None:
        """Kill a restarted bridge right after it was assigned partitions (while it replays)."""
        # a fresh incarnation: wait for one that starts after now
        after = len(fleet.incarnations)
        deadline = time.monotonic() + 60
        inc: Incarnation | None = None
        while time.monotonic() < deadline:
            fresh = [
                i
                for i in fleet.incarnations[after:]
                if i.proc.poll() is None and (slot is None or i.slot == slot)
            ]
            if fresh:
                inc = fresh[0]
                break
            if slot is None and fleet.running():
                # nothing restarting: kill one to get a fresh incarnation
                victim = self.rng_chaos.choice(fleet.running())
                rec = fleet.kill(victim, self.rng_chaos.uniform(0.2, 1.0))
                self.note(f"kill -9 bridge #{rec.incarnation} (pid {rec.pid}) to replay")
                slot = victim.slot
            await asyncio.sleep(0.05)
        if inc is None:
            self.note("no restarted bridge appeared for the replay kill")
            return
        await wait_for_log(inc.log, ASSIGNED, max(1.0, deadline - time.monotonic()), inc.proc)
        if inc.proc.poll() is not None:
            self.note(f"bridge #{inc.n} exited before the replay kill")
            return
        await asyncio.sleep(self.rng_chaos.uniform(0.1, 1.0))
        recovering = _log_has(inc.log, "partition assigned with records to check for replays")
        finished = _log_has(inc.log, "replay recovery finished for partition")
        delay = self.rng_chaos.uniform(0.2, 2.0)
        note = f"{recovering} partitions replaying, {finished} finished"
        rec = fleet.kill(inc, delay, note)
        self.note(
            f"kill -9 bridge #{rec.incarnation} {rec.uptime_s:.1f}s after its start, during "
            f"replay ({note}); restart in {delay:.1f}s"
        )

    # -- fencing scenarios ------------------------------------------------------------------

    def _pending_orders(self, partitions: frozenset[int]) -> list[str]:
        """Orders on ``partitions`` with commands still to come or not yet handled."""
        handled = self.collector.handled() if self.collector is not None else set()
        busy: set[str] = {k for k, q in self.queues.items() if q and k in self.partition_of}
        for cid, src in self.produced_at.items():
            spec = self.plan.specs[cid] if self.plan is not None else None
            if spec is not None and spec.order_id and src not in handled:
                busy.add(spec.order_id)
        return sorted(o for o in busy if self.partition_of.get(o) in partitions)

    async def _script(self, entries: list[dict[str, Any]]) -> None:
        await self.sim.admin("PUT", "/faults", {"script": entries})

    async def _owner(
        self, fleet: Fleet, timeout_s: float, *, exclude_slots: tuple[int, ...] = ()
    ) -> tuple[Incarnation, frozenset[int]] | None:
        """A running incarnation (up >= 3 s) that owns partitions with orders still busy."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            fleet.poll_logs()
            candidates = [
                (inc, fleet.tail(inc).owned())
                for inc in fleet.running()
                if inc.slot not in exclude_slots and fleet.t() - inc.started_t >= 3.0
            ]
            candidates = [(i, p) for i, p in candidates if p and self._pending_orders(p)]
            if candidates:
                return self.rng_chaos.choice(candidates)
            await asyncio.sleep(0.2)
        return None

    async def _reassigned(
        self, fleet: Fleet, victim: Incarnation, parts: frozenset[int], since: float
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
        if victim.proc.poll() is None:
            victim.proc.send_signal(signal.SIGCONT)
        rec.continued_at = continued_at = time.time()
        rec.stopped_s = held
        rec.reassigned = moved
        self.note(
            f"SIGCONT bridge #{victim.n} after {held:.1f}s: "
            + (moved_text if moved else "its partitions were NOT reassigned")
        )
        return continued_at

    async def _hold_stopped(
        self, fleet: Fleet, victim: Incarnation, parts: frozenset[int], stopped_at: float
    ) -> tuple[float, tuple[float, int] | None]:
        """Keep ``victim`` stopped past the session timeout and until its partitions moved."""
        at_least = SESSION_TIMEOUT_S + self.rng_chaos.uniform(1.0, 4.0)
        began = time.monotonic()
        moved: tuple[float, int] | None = None
        while time.monotonic() - began < MAX_STOP_S:
            moved = moved or await self._reassigned(fleet, victim, parts, stopped_at)
            if moved is not None and time.monotonic() - began >= at_least:
                break
            await asyncio.sleep(0.1)
        return time.monotonic() - began, moved

    async def _with_peer(self, fleet: Fleet) -> bool:
        """Make sure a second member can take partitions over; True if a joiner was started."""
        fleet.poll_logs()
        owners = [i for i in fleet.running() if fleet.tail(i).owned()]
        if len(owners) >= 2:
            return False
        inc = await self._start_joiner(fleet)
        return inc is not None

    async def _start_joiner(self, fleet: Fleet) -> Incarnation | None:
        """Start a bridge in the joiner slot and wait until it owns partitions."""
        fleet.wanted.add(JOINER_SLOT)
        inc = await fleet.wait_running(JOINER_SLOT, 30)
        if inc is None:
            return None
        await wait_for_log(inc.log, ASSIGNED, 40, inc.proc)
        return inc

    async def _release_joiner(self, fleet: Fleet, victim: Incarnation, since: float) -> None:
        """Once ``victim`` is back in the group, stop the joiner (graceful: SIGTERM)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and victim.proc.poll() is None:
            fleet.poll_logs()
            if any(
                e.kind == "assigned" and e.ts > since and e.partitions
                for e in fleet.tail(victim).events
            ):
                break
            await asyncio.sleep(0.2)
        code = await fleet.stop_slot(JOINER_SLOT)
        self.note(f"joiner stopped with SIGTERM (exit {code})")

    async def _pause(self, fleet: Fleet) -> None:
        """SIGSTOP an owner while it has writes in retry backoff, past the session timeout.

        The simulator answers 503 with ``Retry-After: 1`` to the writes of orders on the victim's
        partitions; once the victim logs a retry of one of them (it now sleeps in its backoff),
        it is stopped, kept stopped until another member was assigned its partitions and past
        the session timeout, then continued: a zombie whose timers fire at once.
        """
        rec = FenceStep("pause", self.t())
        self.fence_steps.append(rec)
        joiner = await self._with_peer(fleet)
        found = await self._owner(fleet, 30, exclude_slots=(JOINER_SLOT,) if joiner else ())
        if found is None:
            rec.notes.append("no owner with busy orders")
            self.note("pause: no bridge owns partitions with busy orders; skipped")
            if joiner:
                await fleet.stop_slot(JOINER_SLOT)
            return
        victim, parts = found
        rec.victim, rec.partitions = victim.n, parts
        orders = self._pending_orders(parts)[:SCRIPTED_ORDERS]
        entries = [
            {
                "method": method,
                "path_suffix": f"/{order_id}{suffix}",
                "status": 503,
                "headers": {"Retry-After": "1"},
                "count": 3,
            }
            for order_id in orders
            for method, suffix in (("PUT", "/state"), ("DELETE", ""))
        ]
        tail = fleet.tail(victim)
        tail.poll()
        seen = len(tail.write_retries)
        scripted_at = time.time()
        await self._script(entries)
        deadline = time.monotonic() + 20
        in_backoff: list[tuple[float, str, str]] = []
        while time.monotonic() < deadline and victim.proc.poll() is None:
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
        if victim.proc.poll() is not None:
            await self._script([])
            rec.notes.append("victim exited before the pause")
            return
        victim.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.time()
        await self._script([])
        # a write is in its backoff if its retry was logged less than its delay ago
        rec.in_backoff = sorted({o for ts, o, m in in_backoff if stopped_at < ts + retry_delay(m)})
        rec.stopped_at = stopped_at
        self.note(
            f"SIGSTOP bridge #{victim.n} (partitions {sorted(parts)}) with "
            f"{len(rec.in_backoff)} write(s) in retry backoff"
        )
        held, moved = await self._hold_stopped(fleet, victim, parts, stopped_at)
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
            await self._release_joiner(fleet, victim, continued_at)

    async def _expel(self, fleet: Fleet) -> None:
        """Expel an owner during a long revoke: a write hanging while another instance joins.

        The simulator hangs the writes of orders on the victim's partitions (some after applying
        them: ambiguous outcomes); once one hangs, a new instance joins. As soon as the victim's
        revoke starts (its ``norce_bridge_rebalances_total`` grows), it is stopped until the group
        completed the rebalance without it (its partitions assigned to another member), then
        continued: it finishes a revoke the group has already moved past.
        """
        rec = FenceStep("expel", self.t())
        self.fence_steps.append(rec)
        found = await self._owner(fleet, 30, exclude_slots=(JOINER_SLOT,))
        if found is None:
            rec.notes.append("no owner with busy orders")
            self.note("expulsion: no bridge owns partitions with busy orders; skipped")
            return
        victim, parts = found
        rec.victim, rec.partitions = victim.n, parts
        tail = fleet.tail(victim)
        tail.poll()
        if tail.port is None:
            rec.notes.append("victim's metrics port unknown")
        orders = self._pending_orders(parts)[:SCRIPTED_ORDERS]
        entries = [
            {
                "method": method,
                "path_suffix": f"/{order_id}{suffix}",
                "fault": "hang",
                "after_apply": i % 3 == 0,
                "count": 4,
            }
            for i, order_id in enumerate(orders)
            for method, suffix in (("PUT", "/state"), ("DELETE", ""))
        ]
        before = await self.sim.admin("GET", "/stats")
        hangs0 = int(before.get("by_fault", {}).get("script:hang", 0))
        await self._script(entries)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = await self.sim.admin("GET", "/stats")
            if int(stats.get("by_fault", {}).get("script:hang", 0)) > hangs0:
                rec.hang_seen_at = time.time()
                break
            await asyncio.sleep(0.05)
        http = self.sim.http
        rebalances0 = (
            await scrape_counter(http, tail.port, "norce_bridge_rebalances_total")
            if tail.port
            else None
        )
        fleet.wanted.add(JOINER_SLOT)
        rec.join_at = time.time()
        self.note(
            f"expulsion: a write of bridge #{victim.n} hangs"
            + ("" if rec.hang_seen_at else " (NOT observed)")
            + "; a new instance joins"
        )
        revoking = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and victim.proc.poll() is None and tail.port:
            now = await scrape_counter(http, tail.port, "norce_bridge_rebalances_total")
            if now is not None and rebalances0 is not None and now > rebalances0:
                revoking = True
                break
            await asyncio.sleep(0.05)
        if victim.proc.poll() is not None:
            await self._script([])
            rec.notes.append("victim exited before its revoke")
            await fleet.stop_slot(JOINER_SLOT)
            return
        victim.proc.send_signal(signal.SIGSTOP)
        stopped_at = rec.stopped_at = time.time()
        rec.revoking = revoking
        self.note(
            f"SIGSTOP bridge #{victim.n} "
            + ("during its revoke" if revoking else "(its revoke was NOT observed)")
        )
        held, moved = await self._hold_stopped(fleet, victim, parts, stopped_at)
        await self._script([])
        continued_at = self._continue(
            victim,
            rec,
            held,
            moved,
            f"the group gave its partitions to #{moved[1]} without it (expelled)" if moved else "",
        )
        await self._release_joiner(fleet, victim, continued_at)

    async def _broker_restart(self) -> None:
        self.produce_gate.clear()
        start = self.t()
        self.note("restarting the broker (same data directory)")
        try:
            await asyncio.to_thread(self.broker.restart)
        finally:
            self.produce_gate.set()
        self.broker_restart = (start, self.t() - start)
        self.note(f"broker back after {self.t() - start:.1f}s")

    async def progress(self, collector: Collector, fleet: Fleet, total: int) -> None:
        while True:
            await asyncio.sleep(5)
            alive = ",".join(f"#{i.n}" for i in fleet.running()) or "-"
            print(
                f"  [{self.t():6.1f}s] produced {self.produced}/{total}  handled "
                f"{len(collector.handled())}  results {sum(map(len, collector.results.values()))}"
                f"  dlq {sum(map(len, collector.dlq.values()))}  bridges {alive}  "
                f"kills {len(fleet.kills)}",
                flush=True,
            )

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> RunReport:
        p = self.profile
        print(
            f"\n=== {self.guarantee}: {p.commands} commands + {p.poison} poison over {p.orders} "
            f"orders, {p.partitions} partitions, seed {self.seed} ===",
            flush=True,
        )
        await self.create_topics()
        await self.sim.admin("POST", "/reset-log")
        orders = await self.sim.seed(p.orders)
        plan = self.plan = make_plan(self.rng_plan, p, orders, f"{self.label}{self.seed}")
        # the producer's default partitioner (murmur2 of the key), checked against the topic later
        partitioner = DefaultPartitioner()
        everyone = list(range(p.partitions))
        self.partition_of = {o: partitioner(o.encode(), everyone, everyone) for o in orders}
        await self.sim.admin("PUT", "/faults", {**FAULTS, "script": []})
        collector = self.collector = Collector(
            self.bootstrap, self.topics, p.partitions, self.codec
        )
        await collector.start()
        self.t0 = time.monotonic()
        fleet = Fleet(self.bridge_env(), self.workdir, self.label, self.t0)
        supervisor = asyncio.create_task(fleet.supervise())
        if self.wait_assigned:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                first = await fleet.wait_running(0, 60)
                if first is not None and await wait_for_log(first.log, ASSIGNED, 60, first.proc):
                    break
            self.t0 = fleet.t0 = time.monotonic()
            self.note("the first bridge owns its partitions; producing starts now")
        progress = asyncio.create_task(self.progress(collector, fleet, plan.total))
        chaos = asyncio.create_task(self.chaos(fleet))
        caught_up_after: float | None = None
        missing: set[tuple[int, int]] = set()
        inputs: list[InputRecord] = []
        try:
            await self.produce(plan)
            self.note(f"all {plan.total} records produced ({self.send_retries} send retries)")
            await chaos
            inputs = await read_inputs(self.bootstrap, self.topics.commands, p.partitions, plan)
            want = {(r.partition, r.offset) for r in inputs}
            deadline = time.monotonic() + p.catchup_s
            last_change, last_missing = time.monotonic(), -1
            while time.monotonic() < deadline:
                missing = want - collector.handled()
                if not missing:
                    caught_up_after = self.t() - (self.production_done_t or 0.0)
                    break
                if len(missing) != last_missing:
                    last_change, last_missing = time.monotonic(), len(missing)
                elif time.monotonic() - last_change > STALL_S:
                    # no progress for a while: records below the group's committed offset
                    # will never be handled again (their outputs would be visible by now)
                    committed = await self.committed_offsets()
                    self.skipped = {(q, o) for q, o in missing if o < committed.get(q, -1)}
                    if self.skipped == missing:
                        break
                    last_change = time.monotonic()
                await asyncio.sleep(0.25)
            if missing and not self.skipped:
                committed = await self.committed_offsets()
                self.skipped = {(q, o) for q, o in missing if o < committed.get(q, -1)}
            self.note(
                "caught up: every record has a result or a dead letter"
                if not missing
                else f"NOT caught up: {len(missing)} records unhandled, {len(self.skipped)} of "
                "them below the group's committed offset (skipped for good)"
            )
            if missing:
                await self._stall_snapshot(fleet)
        finally:
            progress.cancel()
            if not chaos.done():
                chaos.cancel()
            with contextlib.suppress(BaseException):
                await chaos
            codes = await fleet.stop_all()
            supervisor.cancel()
            with contextlib.suppress(BaseException):
                await supervisor
            fleet.close_logs()
        self.note(f"bridges stopped gracefully: exit codes {codes}")
        await self.sim.admin("PUT", "/faults", NO_FAULTS)
        drained = await collector.drain(90)
        await collector.stop()
        stats = await self.sim.admin("GET", "/stats")
        self.report.duration_s = self.t()
        self._injected(fleet, stats, plan, inputs)
        await self._check(plan, inputs, collector, fleet, missing, caught_up_after, codes, drained)
        return self.report

    def _injected(
        self, fleet: Fleet, stats: dict[str, Any], plan: Plan, inputs: list[InputRecord]
    ) -> None:
        rows = self.report.injected
        valid = sum(1 for s in plan.specs.values() if s.kind != "poison")
        poison = len(plan.specs) - valid
        dup = sum(n - 1 for n in Counter(r.cid for r in inputs).values() if n > 1)
        rows.append(
            (
                "input records",
                f"{valid} commands + {poison} poison over {self.profile.orders} orders, "
                f"{self.profile.partitions} partitions, produced over "
                f"{self.production_done_t or 0:.1f}s ({dup} duplicated by send retries)",
            )
        )
        rows.append(("bridge incarnations", str(len(fleet.incarnations))))
        for i, k in enumerate(fleet.kills, 1):
            extra = f"; during replay: {k.during_replay}" if k.during_replay else ""
            rows.append(
                (
                    f"kill -9 #{i}",
                    f"t={k.t:.1f}s bridge #{k.incarnation} (up {k.uptime_s:.1f}s), "
                    f"restart after {k.restart_delay_s:.1f}s{extra}",
                )
            )
        selfx = [i for i in fleet.incarnations if i.self_exit]
        rows.append(
            (
                "bridge self-exits",
                f"{len(selfx)}"
                + (
                    " (" + ", ".join(f"#{i.n} {i.end} at t={i.ended_t:.1f}s" for i in selfx) + ")"
                    if selfx
                    else ""
                ),
            )
        )
        if self.broker_restart:
            at, took = self.broker_restart
            rows.append(("broker restart", f"t={at:.1f}s, back after {took:.1f}s"))
        else:
            rows.append(("broker restart", "NOT DONE"))
        rows.extend(self._fence_rows(fleet))
        if self.second_window:
            window = "..".join(f"t={t:.1f}s" for t in self.second_window)
            rows.append(("second bridge instance", window))
        requests = stats.get("requests", 0) or 1
        faults = stats.get("by_fault", {})
        rows.append(("simulator API requests", str(stats.get("requests", 0))))
        for name, label in (
            ("error", "5xx"),
            ("rate_limit", "429 + Retry-After"),
            ("hang", f"hang > {READ_TIMEOUT_S:g}s timeout"),
            ("reset", "connection reset"),
            ("after_apply", "write applied, then 500"),
        ):
            n = int(faults.get(name, 0))
            rows.append((f"fault: {label}", f"{n} ({100 * n / requests:.1f}%)"))

    def _check_fencing(
        self,
        fleet: Fleet,
        inputs: list[InputRecord],
        sim_calls: dict[str, list[dict[str, Any]]],
        bad_orders: dict[str, dict[str, str]],
    ) -> None:
        checks = self.report.checks
        partition_of = dict(self.partition_of)
        for r in inputs:  # the topic as read back is the truth
            if r.spec is not None and r.spec.order_id:
                partition_of[r.spec.order_id] = r.partition
        fleet.poll_logs()
        events = [e for tail in fleet.tails.values() for e in tail.events]
        incarnation_of = {adapter_id(self.label, inc.n): inc.n for inc in fleet.incarnations}
        calls = [
            WriteCall(
                parse_ts(c["ts"]),
                c["method"],
                order_id,
                c["headers"].get("x-adapterid"),
                c["status"],
                c.get("fault"),
            )
            for order_id, per_order in sim_calls.items()
            for c in per_order
            if c["method"] in WRITE_METHODS
        ]
        violations = attribute_writes(calls, partition_of, events, incarnation_of)
        kinds = Counter(v.kind for v in violations)
        for v in violations:
            per = bad_orders["fencing"]
            per[v.call.order_id] = "; ".join(filter(None, [per.get(v.call.order_id), v.describe()]))
        self.fence_violations = violations
        writers = Counter(incarnation_of.get(c.adapter or "", 0) for c in calls)
        checks.append(
            Check(
                "fencing",
                not violations,
                f"writes by a process after its partition was reassigned: {kinds['reassigned']}; "
                f"writes outside the writer's assignment: {kinds['unowned']}; unattributed: "
                f"{kinds['unattributed']} (of {len(calls)} PUT/DELETE by {len(writers)} "
                f"incarnations, {len(events)} assignment/revoke log lines)",
            )
        )
        # the scenarios really happened as the issue describes them
        pauses = [s for s in self.fence_steps if s.kind == "pause"]
        expels = [s for s in self.fence_steps if s.kind == "expel"]
        good_pauses = [s for s in pauses if s.in_backoff and s.reassigned]
        good_expels = [
            s for s in expels if s.hang_seen_at and s.revoking and self._expelled(fleet, s)
        ]
        p = self.profile
        checks.append(
            Check(
                "scenarios",
                len(good_pauses) >= p.pauses and len(good_expels) >= p.expulsions,
                f"{len(good_pauses)}/{p.pauses} pauses with writes in backoff and the "
                f"partitions reassigned meanwhile; {len(good_expels)}/{p.expulsions} expulsions "
                "during a revoke with a hanging write",
            )
        )

    async def _stall_snapshot(self, fleet: Fleet) -> None:
        """Where the running bridges are stuck: lag per partition, buffered, in flight."""
        fleet.poll_logs()
        wanted = (
            "norce_bridge_consumer_lag{",
            "norce_bridge_buffered_records ",
            "norce_bridge_in_flight_commands ",
        )
        for inc in fleet.running():
            port = fleet.tail(inc).port
            if port is None:
                continue
            try:
                resp = await self.sim.http.get(f"http://127.0.0.1:{port}/metrics", timeout=2.0)
            except httpx.HTTPError:
                continue
            shown: list[str] = []
            for line in resp.text.splitlines():
                if not line.startswith(wanted):
                    continue
                name, value = line.rsplit(" ", 1)
                if name.startswith("norce_bridge_consumer_lag{") and float(value) == 0:
                    continue
                part = re.search(r'partition="(\d+)"', name)
                label = f"lag p{part.group(1)}" if part else name.split("_", 2)[2]
                shown.append(f"{label}={float(value):g}")
            text = f"bridge #{inc.n} while stuck: " + (", ".join(shown) or "nothing lagging")
            self.stall_notes.append(text)
            self.note(text)

    def _victim_after(self, fleet: Fleet, step: FenceStep) -> dict[str, Any]:
        """What the victim of a fencing step logged after it was stopped."""
        tail = fleet.tails.get(step.victim or -1)
        stopped = step.stopped_at or 0.0
        out: dict[str, Any] = {"revoked_at": None, "cancelled": 0, "lease": 0, "abandoned": 0}
        if tail is None:
            return out
        tail.poll()
        revokes = [r for r in tail.revokes if r[0] > stopped]
        if revokes:
            out["revoked_at"], _, out["cancelled"] = revokes[0]
        # until its next step (or the end): what the wake-up of this victim caused
        later = [s.stopped_at for s in self.fence_steps if s.stopped_at and s.stopped_at > stopped]
        until = min(later) if later else float("inf")
        out["lease"] = sum(1 for ts in tail.lease_expired if stopped < ts < until)
        out["abandoned"] = sum(1 for ts, _ in tail.abandoned if stopped < ts < until)
        return out

    def _expelled(self, fleet: Fleet, step: FenceStep) -> bool:
        """The group gave the victim's partitions away before the victim finished its revoke."""
        after = self._victim_after(fleet, step)
        revoked_at = after["revoked_at"]
        return (
            step.reassigned is not None
            and revoked_at is not None
            and step.reassigned[0] < revoked_at
        )

    def _fence_rows(self, fleet: Fleet) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        n_pause = n_expel = 0
        for step in self.fence_steps:
            after = self._victim_after(fleet, step)
            moved = (
                f"its partitions went to #{step.reassigned[1]} "
                f"{step.reassigned[0] - (step.stopped_at or 0):.1f}s after the stop"
                if step.reassigned
                else "its partitions were NOT reassigned"
            )
            woke = (
                f"after SIGCONT: lease expired {after['lease']}x, {after['abandoned']} "
                f"command(s) abandoned before their write, revoke cancelled {after['cancelled']}"
            )
            notes = f" [{'; '.join(step.notes)}]" if step.notes else ""
            if step.kind == "pause":
                n_pause += 1
                rows.append(
                    (
                        f"SIGSTOP in backoff #{n_pause}",
                        f"t={step.t:.1f}s bridge #{step.victim} (partitions "
                        f"{sorted(step.partitions)}) stopped {step.stopped_s:.1f}s with "
                        f"{len(step.in_backoff)} write(s) in retry backoff (503 + Retry-After); "
                        f"{moved}; {woke}{notes}",
                    )
                )
            else:
                n_expel += 1
                revoke_s = (
                    f"its revoke ended {after['revoked_at'] - (step.join_at or 0):.1f}s after "
                    "the join"
                    if after["revoked_at"]
                    else "no revoke logged"
                )
                rows.append(
                    (
                        f"expulsion #{n_expel}",
                        f"t={step.t:.1f}s bridge #{step.victim} (partitions "
                        f"{sorted(step.partitions)}): a write hanging"
                        f"{'' if step.hang_seen_at else ' (NOT seen)'}, an instance joined, "
                        f"stopped {'during' if step.revoking else 'NOT during'} its revoke for "
                        f"{step.stopped_s:.1f}s; "
                        f"{'expelled' if self._expelled(fleet, step) else 'NOT expelled'} "
                        f"({moved}, {revoke_s}); {woke}{notes}",
                    )
                )
        return rows

    # -- checks -----------------------------------------------------------------------------

    async def _check(
        self,
        plan: Plan,
        inputs: list[InputRecord],
        col: Collector,
        fleet: Fleet,
        missing: set[tuple[int, int]],
        caught_up_after: float | None,
        codes: list[tuple[int, int | None]],
        drained: bool,
    ) -> None:
        checks = self.report.checks
        eos = self.eos
        bad_records: dict[str, list[tuple[str, str]]] = defaultdict(list)  # check -> (cid, why)
        bad_orders: dict[str, dict[str, str]] = defaultdict(dict)  # check -> order -> why

        unknown = [r for r in inputs if r.spec is None]
        if caught_up_after is not None:
            detail = f"{len(inputs)} records handled, {caught_up_after:.1f}s after production"
        else:
            detail = f"{len(missing)} of {len(inputs)} records never handled"
            if self.skipped:
                per: dict[int, list[int]] = defaultdict(list)
                for q, o in sorted(self.skipped):
                    per[q].append(o)
                shown = "; ".join(f"p{q}: {_ranges(offs)}" for q, offs in sorted(per.items()))
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
        checks.append(Check("caught-up", caught_up_after is not None and drained, detail))

        by_order: dict[str, list[InputRecord]] = defaultdict(list)
        for r in inputs:
            if r.spec is not None and r.spec.kind != "poison":
                assert r.spec.order_id is not None
                by_order[r.spec.order_id].append(r)

        sem = asyncio.Semaphore(32)

        async def fetch(
            order_id: str,
        ) -> tuple[str, list[str], dict[str, Any] | None, list[dict[str, Any]]]:
            async with sem:
                hist = await self.sim.admin("GET", f"/history?order_id={order_id}")
                order = await self.sim.admin("GET", f"/orders/{order_id}")
                calls = await self.sim.admin("GET", f"/calls?order_id={order_id}")
                return order_id, hist["history"], order, calls["calls"]

        fetched = await asyncio.gather(*(fetch(o) for o in plan.orders))
        sim_hist = {o: h for o, h, _, _ in fetched}
        sim_order = {o: d for o, _, d, _ in fetched}
        sim_calls = {o: c for o, _, _, c in fetched}

        # 1-3: per order
        hist_ok = final_ok = snap_ok = 0
        for order_id in plan.orders:
            recs = by_order.get(order_id, [])
            if len({r.partition for r in recs}) > 1:
                bad_orders["history"][order_id] = "commands on several partitions"
            steps = [
                "deleted" if r.spec.kind == "delete" else str(r.spec.target) for r in recs if r.spec
            ]
            expected = _collapse(["checkout", *steps])
            actual = _collapse(sim_hist[order_id])
            if actual == expected:
                hist_ok += 1
            else:
                bad_orders["history"][order_id] = f"simulator {actual} != expected {expected}"
            last = steps[-1] if steps else "checkout"
            order = sim_order[order_id]
            current = order["state"]["currentStatus"] if order else "deleted"
            if current == last:
                final_ok += 1
            else:
                bad_orders["final-state"][order_id] = f"order is {current}, last command {last}"
            # exactly_once fences a zombie's outputs: the last record must be right. In
            # at_least_once outputs a frozen member handed to its producer before it lost the
            # partition can still land late; readers keep the newest version (README).
            snap = (col.snapshots if eos else col.effective).get(order_id, b"<missing>")
            if last == "deleted":
                if snap is None:
                    snap_ok += 1
                else:
                    why = "no snapshot" if snap == b"<missing>" else "not a tombstone"
                    bad_orders["snapshot"][order_id] = f"deleted order, last snapshot {why}"
            elif snap is None or snap == b"<missing>":
                why = "a tombstone" if snap is None else "missing"
                bad_orders["snapshot"][order_id] = f"order exists, last snapshot {why}"
            else:
                _, record = self.codec.decode(snap)
                rebuilt = order_from_snapshot(record)
                if rebuilt == order:
                    snap_ok += 1
                else:
                    diff = sorted(
                        k
                        for k in set(rebuilt) | set(order or {})
                        if rebuilt.get(k) != (order or {}).get(k)
                    )
                    status = record.get("state", {})
                    bad_orders["snapshot"][order_id] = (
                        f"last snapshot differs in {diff} (snapshot state {status!r:.120}, "
                        f"commandId {record.get('commandId')})"
                    )
        n_orders = len(plan.orders)
        checks.append(Check("history", hist_ok == n_orders, f"{hist_ok}/{n_orders} orders match"))
        checks.append(
            Check("final-state", final_ok == n_orders, f"{final_ok}/{n_orders} orders match")
        )
        late = f"; stale snapshots published late: {col.stale_snapshots}"
        checks.append(
            Check(
                "snapshot",
                snap_ok == n_orders and (not eos or col.stale_snapshots == 0),
                f"{snap_ok}/{n_orders} {'last' if eos else 'newest'} snapshots match{late}",
            )
        )

        # fencing: every write attributed to the incarnation that made it
        self._check_fencing(fleet, inputs, sim_calls, bad_orders)

        # 4-6: per record
        def flag(check: str, cid: str, text: str) -> None:
            bad_records[check].append((cid, text))

        known = {(r.partition, r.offset): r for r in inputs}
        n_valid = n_poison_ids = missing_res = dup_res = 0
        outcomes: Counter[str] = Counter()
        valid_in_dlq = poison_missing = poison_dup = 0
        n_poison = 0
        for r in inputs:
            src = (r.partition, r.offset)
            res = col.results.get(src, [])
            dlq = col.dlq.get(src, [])
            spec = r.spec
            if spec is None:
                continue
            where = f"p{r.partition}@{r.offset} {spec.cid} {spec.describe()}"
            if spec.kind != "poison":
                n_valid += 1
            elif spec.has_result:
                n_poison_ids += 1
            expect_results = spec.kind != "poison" or spec.has_result
            if expect_results:
                if not res:
                    missing_res += 1
                    flag("results", spec.cid, f"{where}: no result")
                elif len(res) > 1:
                    dup_res += len(res) - 1
                    if eos:
                        got = [x["outcome"] for x in res]
                        flag("results", spec.cid, f"{where}: {len(res)} results {got}")
                for x in res:
                    if x["commandId"] != spec.cid:
                        flag("results", spec.cid, f"{where}: result for {x['commandId']}")
            elif res:
                flag("results", spec.cid, f"{where}: unexpected result(s)")
            if spec.kind != "poison":
                for x in res:
                    outcomes[x["outcome"]] += 1
                    if x["outcome"] not in SUCCESS:
                        flag("outcomes", spec.cid, f"{where}: {x['outcome']} ({x.get('reason')})")
                if dlq:
                    valid_in_dlq += 1
                    reasons = [h.get("__connect.errors.reason", b"").decode() for h in dlq]
                    flag("dlq", spec.cid, f"{where}: valid command dead-lettered {reasons}")
            else:
                n_poison += 1
                if not dlq:
                    poison_missing += 1
                    flag("dlq", spec.cid, f"{where}: poison not dead-lettered")
                elif len(dlq) > 1:
                    poison_dup += len(dlq) - 1
                    if eos:
                        flag("dlq", spec.cid, f"{where}: dead-lettered {len(dlq)} times")
                for h in dlq:
                    reason = h.get("__connect.errors.reason", b"").decode()
                    if reason != spec.reason:
                        flag("outcomes", spec.cid, f"{where}: DLQ reason {reason}")
                for x in res:
                    if x["outcome"] != "failed":
                        flag("outcomes", spec.cid, f"{where}: poison result {x['outcome']}")
        for src in col.results:
            if src not in known:
                bad_records["results"].append(("", f"result for unknown source p{src[0]}@{src[1]}"))
        for src in col.dlq:
            if src not in known:
                bad_records["dlq"].append(
                    ("", f"dead letter for unknown source p{src[0]}@{src[1]}")
                )

        rule = "exactly one" if eos else "at least one"
        checks.append(
            Check(
                "results",
                not bad_records["results"],
                f"{rule} result per command: {n_valid} commands + {n_poison_ids} poison with "
                f"an id; {missing_res} missing, {dup_res} duplicates"
                + (f", {len(bad_records['results'])} problems" if bad_records["results"] else ""),
            )
        )
        checks.append(
            Check(
                "dlq",
                not bad_records["dlq"],
                f"{valid_in_dlq} valid commands dead-lettered; {n_poison - poison_missing}/"
                f"{n_poison} poison records dead-lettered ({rule}), {poison_dup} duplicates",
            )
        )
        shown = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        checks.append(
            Check(
                "outcomes",
                not bad_records["outcomes"],
                f"valid commands: {shown}; {len(bad_records['outcomes'])} problems",
            )
        )
        # a bridge may exit by itself only because the broker was gone (the supervisor restarts
        # it, like Kubernetes); any other self-exit is a crash
        lo, hi = (
            (self.broker_restart[0], self.broker_restart[0] + self.broker_restart[1] + 15.0)
            if self.broker_restart
            else (0.0, -1.0)
        )
        crashes = [
            i
            for i in fleet.incarnations
            if i.self_exit and not (i.ended_t is not None and lo <= i.ended_t <= hi)
        ]
        checks.append(
            Check(
                "self-exits",
                not crashes,
                f"{len(crashes)} bridge(s) exited by themselves outside the broker restart"
                + (
                    " (" + ", ".join(f"#{i.n} {i.end} at t={i.ended_t:.1f}s" for i in crashes) + ")"
                    if crashes
                    else ""
                ),
            )
        )
        unclean = [(n, c) for n, c in codes if c != 0]
        checks.append(
            Check(
                "shutdown",
                not unclean,
                f"{len(codes)} bridge(s) stopped with SIGTERM, exit codes {[c for _, c in codes]}",
            )
        )
        if any(not c.ok for c in checks):
            await self._evidence(plan, inputs, col, fleet, bad_orders, bad_records, sim_hist)

    async def _evidence(
        self,
        plan: Plan,
        inputs: list[InputRecord],
        col: Collector,
        fleet: Fleet,
        bad_orders: dict[str, dict[str, str]],
        bad_records: dict[str, list[tuple[str, str]]],
        sim_hist: dict[str, list[str]],
    ) -> None:
        """Collect, per failing order: commands, results, simulator history and calls, logs."""
        orders: dict[str, list[str]] = defaultdict(list)
        for check, per in bad_orders.items():
            for order_id, why in per.items():
                orders[order_id].append(f"{check}: {why}")
        for check, problems in bad_records.items():
            for cid, problem in problems:
                spec = plan.specs.get(cid)
                order_id = spec.order_id if spec and spec.order_id else f"(record {cid})"
                orders[order_id].append(f"{check}: {problem}")
        wanted_orders = set(orders)
        cids_by_order: dict[str, set[str]] = defaultdict(set)
        for spec in plan.specs.values():
            if spec.order_id in wanted_orders:
                cids_by_order[spec.order_id].add(spec.cid)
        logs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for inc in fleet.incarnations:
            try:
                lines = inc.log.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                if '"order_id"' not in line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                order_id = rec.get("order_id")
                if order_id in wanted_orders:
                    rec["incarnation"] = inc.n
                    rec.pop("exc", None)
                    logs[order_id].append(rec)
        evidence: dict[str, Any] = {
            "seed": self.seed,
            "guarantee": self.guarantee,
            "fence_violations": [v.describe() for v in self.fence_violations],
            "ownership": [
                f"{datetime.fromtimestamp(e.ts, UTC).isoformat(timespec='milliseconds')} "
                f"#{e.incarnation} {e.kind} {sorted(e.partitions)}"
                for e in sorted(
                    (e for t in fleet.tails.values() for e in t.events), key=lambda e: e.ts
                )
            ],
            "orders": {},
        }
        for order_id, order_problems in sorted(orders.items()):
            entry: dict[str, Any] = {"problems": order_problems}
            if order_id in plan.queues or order_id in sim_hist:
                recs = [r for r in inputs if r.spec is not None and r.spec.order_id == order_id]
                entry["commands"] = [
                    {
                        "partition": r.partition,
                        "offset": r.offset,
                        "command_id": r.cid,
                        "command": r.spec.describe() if r.spec else "?",
                        "results": [
                            f"{x['outcome']}" + (f" ({x.get('reason')})" if x.get("reason") else "")
                            for x in col.results.get((r.partition, r.offset), [])
                        ],
                        "dead_letters": len(col.dlq.get((r.partition, r.offset), [])),
                    }
                    for r in recs
                ]
                entry["simulator_history"] = sim_hist.get(order_id)
                calls = await self.sim.admin("GET", f"/calls?order_id={order_id}")
                entry["simulator_calls"] = [
                    f"{c['ts']} {c['headers'].get('x-adapterid')} {c['method']} "
                    f"{c['path'].rsplit('/', 1)[-1]}"
                    f"{' ' + json.dumps(c['body']) if c.get('body') else ''} -> "
                    f"{c['status'] if c['status'] is not None else 'no answer'}"
                    f"{' [' + c['fault'] + ']' if c.get('fault') else ''}"
                    for c in calls["calls"]
                ]
                entry["bridge_log"] = [
                    " ".join(
                        str(x)
                        for x in (
                            f"#{rec['incarnation']}",
                            rec.get("ts"),
                            rec.get("level"),
                            rec.get("msg"),
                            *(
                                f"{k}={rec[k]}"
                                for k in (
                                    "command_id",
                                    "outcome",
                                    "partition",
                                    "offset",
                                    "reason",
                                    "error",
                                    "status",
                                    "attempts",
                                )
                                if k in rec
                            ),
                        )
                    )
                    for rec in logs.get(order_id, [])
                ]
            evidence["orders"][order_id] = entry
        for v in self.fence_violations[:10]:
            print(f"  FENCING {v.describe()}")
        path = self.workdir / f"evidence-{self.guarantee}.json"
        path.write_text(json.dumps(evidence, indent=2, default=str))
        self.report.evidence_file = path
        # print a few
        for order_id, entry in list(evidence["orders"].items())[:3]:
            print(f"\n  EVIDENCE {order_id}")
            for problem in entry["problems"][:5]:
                print(f"    problem: {problem}")
            for c in entry.get("commands", []):
                res = ", ".join(c["results"]) or "-"
                dl = f" DLQ x{c['dead_letters']}" if c["dead_letters"] else ""
                print(
                    f"    p{c['partition']}@{c['offset']} {c['command_id']} {c['command']} -> "
                    f"{res}{dl}"
                )
            if "simulator_history" in entry:
                print(f"    simulator history: {entry['simulator_history']}")
                for call in entry["simulator_calls"][-30:]:
                    print(f"    call: {call}")
                for line in entry["bridge_log"][-40:]:
                    print(f"    log: {line}")


# --------------------------------------------------------------------------------------------
# Main


def print_report(report: RunReport, seed: int) -> None:
    width = max(len(k) for k, _ in report.injected) if report.injected else 10
    print(f"\n--- {report.guarantee} (seed {seed}, {report.duration_s:.0f}s) ---")
    print("INJECTED")
    for k, v in report.injected:
        print(f"  {k:<{width}}  {v}")
    print("CHECKED")
    for c in report.checks:
        print(f"  [{'PASS' if c.ok else 'FAIL'}] {c.name:<12} {c.detail}")
    if report.evidence_file is not None:
        print(f"  evidence: {report.evidence_file}")


async def amain(args: argparse.Namespace) -> int:
    # the harness's own clients complain loudly while the broker restarts: that is the point
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    profile = SHORT if args.short else FULL
    overrides = {
        k: getattr(args, k)
        for k in ("orders", "commands", "partitions", "produce_s", "kills", "pauses", "expulsions")
        if getattr(args, k) is not None
    }
    if overrides:
        profile = Profile(**{**profile.__dict__, **overrides})
    chosen = args.guarantee or "both"
    guarantees = list(GUARANTEES) if chosen == "both" else [chosen]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    replay = f"python bench/chaos.py --seed {seed} --guarantee {chosen}"
    extras = [
        "--short" if args.short else "",
        "--wait-assigned" if args.wait_assigned else "",
        f"--write-guard {args.write_guard}" if args.write_guard else "",
        *(f"--{k.replace('_', '-')} {v}" for k, v in overrides.items()),
    ]
    replay = " ".join([replay, *(e for e in extras if e)])
    print(f"chaos harness: profile {profile.name}, seed {seed}, guarantees {guarantees}")
    print(f"  replay with: {replay}")
    print(f"  work directory (logs): {workdir}", flush=True)
    codec = AvroCodec.load(DEFAULT_SCHEMAS_DIR)
    broker = LocalKafka(data_dir=workdir / "kafka")
    t = time.monotonic()
    await asyncio.to_thread(broker.start)
    print(f"  broker ready at {broker.bootstrap_servers} in {time.monotonic() - t:.1f}s")
    sim = Simulator(seed, workdir / "simulator.log")
    print(f"  simulator at {sim.url}", flush=True)
    reports: list[RunReport] = []
    try:
        for guarantee in guarantees:
            run = ChaosRun(
                guarantee=guarantee,
                profile=profile,
                seed=seed,
                broker=broker,
                sim=sim,
                workdir=workdir,
                codec=codec,
                wait_assigned=args.wait_assigned,
                write_guard=args.write_guard,
            )
            reports.append(await run.run())
    finally:
        await sim.aclose()
        await asyncio.to_thread(broker.stop)
    for report in reports:
        print_report(report, seed)
    ok = bool(reports) and all(r.ok for r in reports)
    print(f"\nRESULT: {'PASS' if ok else 'FAIL'} (seed {seed}; replay: {replay})")
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs and evidence kept in {workdir}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI form (smaller, faster)")
    parser.add_argument("--seed", type=int, help="replay a run (default: random, printed)")
    parser.add_argument(
        "--guarantee",
        choices=[*GUARANTEES, "both"],
        help="processing guarantee(s) to run, each with fresh topics and group (default: both)",
    )
    parser.add_argument("--orders", type=int)
    parser.add_argument("--commands", type=int)
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--produce-s", type=float, dest="produce_s")
    parser.add_argument("--kills", type=int)
    parser.add_argument(
        "--wait-assigned",
        action="store_true",
        help="produce only after the first bridge was assigned its partitions",
    )
    parser.add_argument(
        "--pauses",
        type=int,
        help="SIGSTOPs of an owner with writes in retry backoff (default: full 3, short 1)",
    )
    parser.add_argument(
        "--expulsions",
        type=int,
        help="owners expelled during a revoke with a hanging write (default: full 2, short 1)",
    )
    parser.add_argument(
        "--write-guard",
        choices=["lease", "lease+read"],
        help="BRIDGE_PROCESSING__WRITE_GUARD for the bridges (default: the bridge's default)",
    )
    parser.add_argument("--workdir", help="where logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory on success")
    args = parser.parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
