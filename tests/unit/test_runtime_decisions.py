"""The runtime's pure decisions: flow control, output encoding, metrics accounting, client
configuration, and the shared in-memory state (no broker)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from bridge.codec import AvroCodec
from bridge.config import BridgeSettings
from bridge.errors import ConfigError
from bridge.flow import FlowState, plan_flow
from bridge.kafka_clients import (
    consumer_config,
    kafka_client_options,
    producer_config,
    transactional_id,
    transactional_producer_config,
)
from bridge.lease import MembershipLease
from bridge.ledger import PartitionLedger
from bridge.metrics import BridgeMetrics
from bridge.partition import COUNTER_NAMES, Partition, RuntimeState, WorkItem
from bridge.processor import Outcome, Output
from bridge.settle import account_outcome, encode_outputs
from bridge.vocabulary import TOPIC_ROLES, DeadLetterReason, OutputKind
from bridge.vocabulary import Outcome as OutcomeName

TOPICS = {"snapshot": "snaps", "event": "evs", "result": "res", "dlq": "dead"}


def _flow(
    parts: list[tuple[str, int, bool]], *, circuit_open: bool = False, all_paused: bool = False
) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    plan = plan_flow(
        [FlowState(k, b, p) for k, b, p in parts],
        total=sum(b for _, b, _ in parts),
        circuit_open=circuit_open,
        all_paused=all_paused,
        max_total=100,
        max_per_partition=10,
    )
    return plan.all_paused, plan.pause, plan.resume


def test_full_partitions_pause_and_resume_at_half_their_limit() -> None:
    """Per partition: pause at the limit, stay paused above half of it, resume at half."""
    assert _flow([("a", 10, False), ("b", 9, False)]) == (False, ("a",), ())
    assert _flow([("a", 6, True)]) == (False, (), ())  # hysteresis: still above half
    assert _flow([("a", 5, True)]) == (False, (), ("a",))


def test_a_full_total_buffer_or_an_open_circuit_pauses_everything() -> None:
    """All partitions pause while the total is full or the API circuit is open."""
    many = [(str(i), 9, False) for i in range(12)]  # 108 buffered >= 100
    all_paused, pause, resume = _flow(many)
    assert all_paused
    assert pause == tuple(str(i) for i in range(12))
    assert resume == ()
    assert _flow([("a", 0, False)], circuit_open=True) == (True, ("a",), ())
    # the total drained to half: everything resumes; in between, the pause holds
    assert _flow([(str(i), 5, True) for i in range(12)], all_paused=True) == (True, (), ())
    resumed = _flow([(str(i), 5, True) for i in range(10)], all_paused=True)
    assert resumed == (False, (), tuple(str(i) for i in range(10)))


def test_outputs_are_encoded_per_topic_role() -> None:
    """Avro for records with a schema, raw bytes for dead letters, None for tombstones."""
    codec = AvroCodec.load()
    deleted = {
        "eventId": "c-1:deleted",
        "orderId": "o1",
        "merchant": "m",
        "channel": "1",
        "alreadyDeleted": False,
        "commandId": "c-1",
        "occurredAt": "2026-01-01T00:00:00Z",
    }
    outcome = Outcome(
        OutcomeName.APPLIED,
        "DeleteOrder",
        [
            Output(OutputKind.SNAPSHOT, b"o1", "OrderSnapshot", None),
            Output(OutputKind.EVENT, b"o1", "OrderDeleted", deleted, [("h", b"v")]),
            Output(OutputKind.DLQ, b"k", None, b"raw"),
        ],
    )
    records = encode_outputs(outcome, TOPICS, codec)
    assert [r[0] for r in records] == ["snaps", "evs", "dead"]
    assert records[0][2] is None
    event_value = records[1][2]
    assert event_value is not None
    assert codec.decode(event_value) == (
        "OrderDeleted",
        {**deleted, "previousStatus": None, "correlationId": None},
    )
    assert records[1][3] == [("h", b"v")]
    assert records[2][2] == b"raw"
    broken = Outcome(
        OutcomeName.APPLIED, "DeleteOrder", [Output(OutputKind.EVENT, b"o1", None, {"x": 1})]
    )
    with pytest.raises(ValueError, match="without a schema"):
        encode_outputs(broken, TOPICS, codec)


def test_an_outcome_is_counted_once_with_dead_letters_by_reason() -> None:
    """One handled record: its outcome once, each output by role, a dead letter by reason."""
    registry = CollectorRegistry()
    metrics = BridgeMetrics(
        registry, version="t", processing_guarantee="at_least_once", ordering="key"
    )
    counters = dict.fromkeys(COUNTER_NAMES, 0)
    failed = Outcome(
        OutcomeName.FAILED,
        "SetOrderState",
        [
            Output(OutputKind.DLQ, None, None, b"x"),
            Output(OutputKind.RESULT, b"o", "CommandResult", {}),
        ],
        reason="bad",
        dead_letter_reason=DeadLetterReason.UNKNOWN_STATE,
    )
    where = {"offset": 3, "partition": 0}
    account_outcome(metrics, counters, failed, n_records=2, seconds=0.1, age_s=1.0, where=where)
    applied = Outcome(
        OutcomeName.APPLIED, "SetOrderState", [Output(OutputKind.EVENT, b"o", "E", {})]
    )
    account_outcome(metrics, counters, applied, n_records=1, seconds=0.1, age_s=None, where=where)
    assert counters["failed"] == 1
    assert counters["applied"] == 1
    assert counters["dead_lettered"] == 1
    assert counters["published"] == 3

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("norce_bridge_commands_total", type="SetOrderState", outcome="failed") == 1
    assert sample("norce_bridge_commands_total", type="SetOrderState", outcome="applied") == 1
    assert sample("norce_bridge_dead_letters_total", reason="unknown_state") == 1
    assert sample("norce_bridge_records_published_total", topic=TOPIC_ROLES[OutputKind.DLQ]) == 1
    assert sample("norce_bridge_records_published_total", topic=TOPIC_ROLES[OutputKind.EVENT]) == 1
    last = sample("norce_bridge_last_success_timestamp_seconds")
    assert last is not None
    assert abs(last - time.time()) < 60


def test_client_configs_follow_the_settings() -> None:
    """Consumer and producers: manual commits, read_committed, stable transactional ids."""
    settings = BridgeSettings.model_validate(
        {"kafka": {"bootstrap_servers": "k:9092", "group_id": "g", "session_timeout_ms": 30_000}}
    )
    consumer = consumer_config(settings, 12_345)
    assert consumer["enable_auto_commit"] is False
    assert consumer["isolation_level"] == "read_committed"
    assert consumer["rebalance_timeout_ms"] == 12_345
    assert consumer["heartbeat_interval_ms"] == 3000
    assert consumer["request_timeout_ms"] >= 35_000
    assert producer_config(settings)["acks"] == "all"
    tp = TopicPartition("cmds", 3)
    assert transactional_id("g", tp) == "norce-order-bridge.g.cmds.3"
    tx = transactional_producer_config(settings, tp)
    assert tx["transactional_id"] == "norce-order-bridge.g.cmds.3"
    assert tx["client_id"].endswith("-tx-3")


async def test_a_lost_partition_stops_its_work_and_is_no_longer_live() -> None:
    """Losing a partition drops its queued items, cancels its tasks and ends its liveness."""
    state = RuntimeState(MembershipLease(10.0, 2.0))
    tp = TopicPartition("cmds", 0)
    recovered: list[int] = []
    part = Partition(tp, 1, PartitionLedger(), lambda p: recovered.append(p.epoch))
    state.parts[tp] = part
    item = WorkItem(tp, 0, "o1", None, None, None, 1, None, 0.0)  # type: ignore[arg-type]
    assert state.live(item, part)
    state.sched.add(item)
    task = asyncio.get_running_loop().create_task(asyncio.sleep(30))
    part.tasks[0] = task
    state.lose(part, "fenced")
    state.lose(part, "again")  # idempotent
    assert not state.live(item, part)
    assert state.sched.pop_ready() is None
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.lease_changed.is_set()
    state.die(RuntimeError("boom"))
    assert state.stopping.is_set()
    assert isinstance(state.fatal, RuntimeError)
    start = time.monotonic()
    await state.wait_idle(lambda: True, time.monotonic() + 5)  # fatal: returns at once
    assert time.monotonic() - start < 1


async def test_wait_idle_returns_on_progress_or_at_the_deadline() -> None:
    """Waiting for idleness wakes on progress and gives up at the deadline."""
    state = RuntimeState(MembershipLease(10.0, 2.0))
    busy = [True]

    async def finish() -> None:
        await asyncio.sleep(0.05)
        busy[0] = False
        state.progress.set()

    waker = asyncio.get_running_loop().create_task(finish())
    await state.wait_idle(lambda: busy[0], time.monotonic() + 10)
    await waker
    assert not busy[0]
    start = time.monotonic()
    await state.wait_idle(lambda: True, time.monotonic() + 0.1)
    assert time.monotonic() - start < 5


def test_security_options_come_from_the_settings(tmp_path: Path) -> None:
    """Plain, SASL (password read lazily), TLS with the system CAs; bad TLS files are named."""
    plain = BridgeSettings.model_validate({"kafka": {"bootstrap_servers": "k:9092"}})
    assert kafka_client_options(plain, lambda: None) == {"security_protocol": "PLAINTEXT"}
    sasl = BridgeSettings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": "k:9093",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "bridge",
                "sasl_password": "pw",
                "ssl_check_hostname": False,
            }
        }
    )
    opts = kafka_client_options(sasl, lambda: "pw")
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "bridge"
    assert opts["sasl_plain_password"] == "pw"
    assert opts["ssl_context"].check_hostname is False
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    tls = {"bootstrap_servers": "k:9093", "security_protocol": "SSL"}
    broken = BridgeSettings.model_validate({"kafka": {**tls, "ssl_cafile": str(bad_ca)}})
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__SSL_CAFILE") as caught:
        kafka_client_options(broken, lambda: None)
    assert "not a certificate" not in str(caught.value)
    no_cert = BridgeSettings.model_validate({"kafka": {**tls, "ssl_keyfile": str(bad_ca)}})
    with pytest.raises(ConfigError, match="without BRIDGE_KAFKA__SSL_CERTFILE"):
        kafka_client_options(no_cert, lambda: None)
    bad_cert = BridgeSettings.model_validate({"kafka": {**tls, "ssl_certfile": str(bad_ca)}})
    with pytest.raises(ConfigError, match="BRIDGE_KAFKA__SSL_CERTFILE/SSL_KEYFILE"):
        kafka_client_options(bad_cert, lambda: None)
