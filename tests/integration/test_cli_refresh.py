"""``order-bridge refresh`` through the console script, as the README documents it: the
RefreshOrder records it enqueues, read back from the commands topic of the real broker, for
orders listed from the simulator."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from bridge_devkit.harness import (
    API_KEY,
    clean_env,
    console_script,
    create_topics,
    fresh_topics,
    read_topic,
    simulator,
)
from norce_simulator import SimulatorHandle

from bridge.codec import AvroCodec
from bridge.config import TopicSettings
from bridge.timestamps import parse_rfc3339

pytestmark = pytest.mark.broker

PARTITIONS = 3


def _env(bootstrap: str, topics: TopicSettings, sim: SimulatorHandle) -> dict[str, str]:
    return clean_env(
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        BRIDGE_TOPICS__COMMANDS=topics.commands,
        BRIDGE_NORCE__BASE_URL=sim.url,
        BRIDGE_NORCE__API_KEY=API_KEY,
    )


async def _refresh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [console_script(), "refresh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
    )


async def _commands(bootstrap: str, topics: TopicSettings) -> list[Any]:
    return await read_topic(
        bootstrap, topics.commands, AvroCodec.load(None), PARTITIONS, raw=True, timeout_s=30
    )


def _expected_partition(order_id: str) -> int:
    """The default (murmur2) partitioner's choice for a key, as ``order-bridge send`` gets."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(order_id.encode(), partitions, partitions))


def _check_records(records: list[Any], reason: str, merchant: str, channel: str) -> list[str]:
    """Every record is a RefreshOrder per contract 1; returns their order ids."""
    ids = []
    for rec in records:
        assert rec.raw is not None
        value = json.loads(rec.raw)
        assert value["type"] == "RefreshOrder"
        assert value["reason"] == reason
        assert (value["merchant"], value["channel"]) == (merchant, channel)
        assert parse_rfc3339(value["issuedAt"]) is not None
        assert set(value) <= {
            "type",
            "commandId",
            "orderId",
            "merchant",
            "channel",
            "issuedAt",
            "reason",
            "correlationId",
        }
        headers = rec.header_map()
        assert headers["content-type"] == b"application/json"
        assert headers["norce.command.id"] == value["commandId"].encode()
        assert headers["norce.order.id"] == value["orderId"].encode()
        assert rec.raw_key == value["orderId"].encode()
        assert rec.partition == _expected_partition(value["orderId"])
        ids.append(value["orderId"])
    return ids


async def test_refresh_given_orders_enqueues_one_refresh_each(kafka_bootstrap: str) -> None:
    """`refresh --order-id A --order-id B`: two RefreshOrder records (reason manual), keyed by
    order id on the murmur2 partition, with the command headers; the summary counts them."""
    topics = fresh_topics("refresh", PARTITIONS)
    await create_topics(kafka_bootstrap, topics)
    async with simulator() as sim:
        a, b = sim.app.seed(2)
        env = _env(kafka_bootstrap, topics, sim)
        proc = await _refresh(env, "--order-id", a, "--order-id", b, "--correlation-id", "ops-1")
        assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["enqueued"] == 2
    assert summary["failed"] == 0
    assert "enqueued 2 RefreshOrder commands" in proc.stderr
    records = await _commands(kafka_bootstrap, topics)
    assert sorted(_check_records(records, "manual", "norce", "1")) == sorted([a, b])
    for rec in records:
        assert rec.header_map()["norce.correlation.id"] == b"ops-1"
        assert json.loads(rec.raw)["correlationId"] == "ops-1"


async def test_refresh_all_pages_through_the_merchant_channel(kafka_bootstrap: str) -> None:
    """`refresh --all --page-size 10` over 25 orders of norce/1 (and 4 of another merchant):
    3 pages, the 25 orders once each (reason backfill); `--merchant m2 --channel c2` gets the 4;
    `--since T` gets exactly those created at or after T."""
    topics = fresh_topics("refresh-all", PARTITIONS)
    await create_topics(kafka_bootstrap, topics)
    async with simulator() as sim:
        mine = sim.app.seed(25, "norce", "1")
        other = sim.app.seed(4, "m2", "c2")
        env = _env(kafka_bootstrap, topics, sim)
        proc = await _refresh(env, "--all", "--page-size", "10", "--progress-interval", "0")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert (summary["listed"], summary["enqueued"], summary["pages"]) == (25, 25, 3)
        assert "refresh: " in proc.stderr
        assert "/s" in proc.stderr
        records = await _commands(kafka_bootstrap, topics)
        assert sorted(_check_records(records, "backfill", "norce", "1")) == sorted(mine)

        proc = await _refresh(env, "--all", "--merchant", "m2", "--channel", "c2")
        assert proc.returncode == 0, proc.stderr
        records = await _commands(kafka_bootstrap, topics)
        m2 = [r for r in records if json.loads(r.raw)["merchant"] == "m2"]
        assert sorted(_check_records(m2, "backfill", "m2", "c2")) == sorted(other)

        created = {}
        for order_id in mine:
            order = sim.app.get_order(order_id)
            assert order is not None
            created[order_id] = order["created"]
        ordered = sorted(mine, key=lambda o: (parse_rfc3339(created[o]), o))
        since = created[ordered[10]]
        threshold = parse_rfc3339(since)
        assert threshold is not None
        want = {o for o in mine if (parse_rfc3339(created[o]) or threshold) >= threshold}
        assert 0 < len(want) < 25
        before = len(records)
        proc = await _refresh(
            env, "--all", "--since", since, "--page-size", "5", "--reason", "since-test"
        )
        assert proc.returncode == 0, proc.stderr
        records = await _commands(kafka_bootstrap, topics)
        new = [r for r in records if json.loads(r.raw)["reason"] == "since-test"]
        assert len(records) - before == len(new)
        assert sorted(_check_records(new, "since-test", "norce", "1")) == sorted(want)


async def test_refresh_refuses_hostile_order_ids_and_dry_run_sends_nothing(
    kafka_bootstrap: str,
) -> None:
    """A hostile order id is refused before anything is sent (exit 2, named on stderr);
    `--since` without `--all` is a usage error; a missing topic fails at once (exit 2) instead
    of every send waiting for its metadata; `--dry-run` counts without sending; an API error
    while listing is a partial failure (exit 1, the summary says why, no key printed)."""
    topics = fresh_topics("refresh-bad", PARTITIONS)
    await create_topics(kafka_bootstrap, topics)
    async with simulator() as sim:
        (good,) = sim.app.seed(1)
        env = _env(kafka_bootstrap, topics, sim)
        for hostile in ("../admin", "o_x/../../y", "o_x?debug=1", "o_\r\nx", "", "a" * 129):
            proc = await _refresh(env, "--order-id", good, "--order-id", hostile)
            assert proc.returncode == 2, (hostile, proc.stderr)
            assert "refused bad order ids" in proc.stderr
            assert "Traceback" not in proc.stderr
        proc = await _refresh(env, "--order-id", good, "--since", "2026-01-01")
        assert proc.returncode == 2
        assert "--since needs --all" in proc.stderr
        missing = f"{topics.commands}-missing"
        proc = await _refresh(env, "--order-id", good, "--topic", missing, "--timeout", "10")
        assert proc.returncode == 2, proc.stderr
        assert f"topic {missing!r} does not exist" in proc.stderr
        proc = await _refresh(env, "--all", "--dry-run")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["dry_run"]
        assert summary["enqueued"] == 1
        assert "would enqueue 1" in proc.stderr
        sim.app.set_faults(
            script=[{"method": "GET", "path_suffix": "/orders", "status": 400, "count": 1}]
        )
        proc = await _refresh(env, "--all")
        assert proc.returncode == 1, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["enqueued"] == 0
        assert "400" in summary["list_error"]
        assert "listing stopped early" in proc.stderr
        assert API_KEY not in proc.stdout + proc.stderr
    assert await _commands(kafka_bootstrap, topics) == []
