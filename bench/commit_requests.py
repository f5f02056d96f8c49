"""What the periodic at-least-once commit costs: one OffsetCommit per partition vs one for all.

Drives the bridge's own delivery strategy (``bridge.delivery.AtLeastOnce``) with a real
consumer of a fresh group on a local broker (started here: its CPU is read from ``/proc``):
``--partitions`` partitions, each with new done offsets before every commit round and the
bridge's replay metadata in the commit. Per round it runs either ``commit`` once per partition
(how the bridge committed before) or ``commit_many`` once (one request), alternately
``--rounds`` times each, and prints per commit round: the broker's CPU ms, this process's CPU
ms and the wall ms. Figures are CPU time on a shared machine: compare the rows of one run.

Usage::

    python bench/commit_requests.py --partitions 12 --commits 100 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from bridge_devkit.harness import create_topics, fresh_topics, unique
from bridge_devkit.localkafka import LocalKafka
from bridge_devkit.throughput.runs import proc_cpu_s
from prometheus_client import CollectorRegistry

from bridge.delivery import AtLeastOnce
from bridge.lease import MembershipLease
from bridge.ledger import PartitionLedger
from bridge.metrics import BridgeMetrics
from bridge.partition import Partition, RuntimeState, WorkItem


def cpu_s(pid: int) -> float:
    """The broker's CPU seconds so far (it runs for the whole benchmark)."""
    value = proc_cpu_s(pid)
    if value is None:
        raise RuntimeError(f"the broker (pid {pid}) is gone")
    return value


async def measure(bootstrap: str, broker_pid: int, args: argparse.Namespace) -> None:
    topics = fresh_topics("commit-bench", args.partitions)
    await create_topics(bootstrap, topics)
    tps = [TopicPartition(topics.commands, p) for p in range(args.partitions)]
    lease = MembershipLease(300.0, 5.0, clock=time.monotonic)
    lease.renew(time.monotonic())
    state = RuntimeState(lease)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=unique("commit-bench"), enable_auto_commit=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    metrics = BridgeMetrics(
        CollectorRegistry(), version="bench", processing_guarantee="at_least_once", ordering="key"
    )
    delivery = AtLeastOnce(state, metrics, consumer, producer)
    await consumer.start()
    await delivery.start()
    consumer.assign(tps)
    parts = []
    for tp in tps:
        ledger: PartitionLedger[WorkItem] = PartitionLedger((0, ""))
        parts.append(Partition(tp, 1, ledger, lambda _p: None))
    offset = 0

    def progress() -> None:  # one more done offset per partition: every commit is new
        nonlocal offset
        for part in parts:
            if part.ledger.accept(offset) is not None:
                part.ledger.complete(offset)
        offset += 1

    async def one_by_one() -> None:
        for part in parts:
            await delivery.commit(part, None, force=False)

    async def together() -> None:
        await delivery.commit_many(parts)

    figures: dict[str, list[tuple[float, float, float]]] = {"one by one": [], "one request": []}
    try:
        for _ in range(args.rounds):
            for name, run in (("one by one", one_by_one), ("one request", together)):
                b0, c0, w0 = cpu_s(broker_pid), time.process_time(), time.monotonic()
                for _ in range(args.commits):
                    progress()
                    await run()
                n = args.commits
                row = (
                    (cpu_s(broker_pid) - b0) * 1000 / n,
                    (time.process_time() - c0) * 1000 / n,
                    (time.monotonic() - w0) * 1000 / n,
                )
                figures[name].append(row)
                print(
                    f"  {name:<12} broker CPU {row[0]:6.2f} ms  bridge CPU {row[1]:5.2f} ms  "
                    f"wall {row[2]:6.1f} ms  per commit round",
                    flush=True,
                )
    finally:
        await delivery.close()
        await consumer.stop()
    print()
    print(f"commit round of {args.partitions} partitions, median of {args.rounds} x {n} rounds:")
    print(f"  {'':<12} {'broker CPU ms':>14} {'bridge CPU ms':>14} {'wall ms':>9}")
    for name, rows in figures.items():
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"  {name:<12} {med[0]:>14.2f} {med[1]:>14.2f} {med[2]:>9.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--commits", type=int, default=100, help="commit rounds per measurement")
    p.add_argument("--rounds", type=int, default=3, help="measurements of each way")
    args = p.parse_args(argv)
    print("starting a local Apache Kafka broker (KRaft, single node) ...", flush=True)
    kafka = LocalKafka()
    kafka.start()
    try:
        pid = kafka.pid
        assert pid is not None
        print(f"broker ready at {kafka.bootstrap_servers}; {args.partitions} partitions")
        asyncio.run(measure(kafka.bootstrap_servers, pid, args))
    finally:
        kafka.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
