"""The bridge end to end against the real broker and the simulator."""

from __future__ import annotations

import io
import json
from typing import Any

import avro.io
import avro.schema
import fastavro
import pytest
from bridge_devkit.harness import delete, running_bridge, set_state, simulator

from bridge.codec import HEADER_SIZE
from bridge.events import order_from_snapshot

pytestmark = pytest.mark.broker


def _apache_decode(schema_text: str, data: bytes) -> dict[str, Any]:
    schema = avro.schema.parse(schema_text)
    reader = avro.io.DatumReader(schema)
    result = reader.read(avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:])))
    assert isinstance(result, dict)
    return result


async def test_set_state_publishes_snapshot_equal_to_the_order_and_a_state_event(
    kafka_bootstrap: str,
) -> None:
    """PUT → GET gives a snapshot equal to the order and an event with previous/new status."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        (order_id,) = sim.app.seed(1, "norce", "1")
        c1 = set_state(order_id, "processing", correlation_id="corr-1")
        c2 = set_state(order_id, "accepted")
        await bridge.send(c1, c2)
        out = await bridge.all_handled()
        results = out.results_by_command()
        assert [r["outcome"] for r in results[c1.command_id]] == ["applied"]
        assert results[c2.command_id][0]["currentStatus"] == "accepted"
        assert results[c1.command_id][0]["correlationId"] == "corr-1"
        events = [e for name, e in out.events if name == "OrderStateChanged"]
        assert [(e["previousStatus"], e["newStatus"]) for e in events] == [
            ("checkout", "processing"),
            ("processing", "accepted"),
        ]
        assert events[0]["commandId"] == c1.command_id
        assert events[0]["transitionAt"] is not None
        key, last = out.snapshots[-1]
        assert key == order_id
        assert last is not None
        assert order_from_snapshot(last) == sim.app.get_order(order_id)
        assert sim.app.history(order_id) == ["checkout", "processing", "accepted"]


async def test_delete_publishes_tombstone_and_event_and_a_repeat_is_already_deleted(
    kafka_bootstrap: str,
) -> None:
    """DELETE → tombstone + deleted event; a second delete succeeds as already deleted."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        (order_id,) = sim.app.seed(1, "norce", "1")
        d1, d2 = delete(order_id), delete(order_id)
        await bridge.send(d1, d2)
        out = await bridge.all_handled()
        results = out.results_by_command()
        assert results[d1.command_id][0]["outcome"] == "applied"
        assert results[d2.command_id][0]["outcome"] == "already_applied"
        assert results[d2.command_id][0]["reason"] == "order already deleted"
        assert (order_id, None) in out.snapshots
        deleted = [e for name, e in out.events if name == "OrderDeleted"]
        assert [e["alreadyDeleted"] for e in deleted] == [False, True]
        assert deleted[0]["previousStatus"] == "checkout"
        assert sim.app.get_order(order_id) is None
        assert not out.dlq


async def test_preconditions_expiry_and_api_rejections(kafka_bootstrap: str) -> None:
    """Unmet preconditions reject, expired commands expire, API 400/404 fail to the DLQ."""
    from datetime import UTC, datetime, timedelta

    from bridge.order_model import OrderStatus

    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        a, b, c = sim.app.seed(3, "norce", "1")
        rejected = set_state(a, "accepted", expected_state=OrderStatus("processing"))
        expired = set_state(b, "processing", expires_at=datetime.now(UTC) - timedelta(seconds=1))
        illegal = set_state(c, "completed")
        missing = set_state("o_DoesNotExistAnywhereAtAllXy", "processing")
        await bridge.send(rejected, expired, illegal, missing)
        out = await bridge.all_handled()
        r = {k: v[0] for k, v in out.results_by_command().items()}
        assert (r[rejected.command_id]["outcome"], r[rejected.command_id]["currentStatus"]) == (
            "rejected",
            "checkout",
        )
        assert (r[expired.command_id]["outcome"], r[expired.command_id]["currentStatus"]) == (
            "expired",
            "checkout",
        )
        assert r[illegal.command_id]["outcome"] == "failed"
        assert r[illegal.command_id]["httpStatus"] == 400
        assert r[missing.command_id]["outcome"] == "failed"
        assert r[missing.command_id]["httpStatus"] == 404
        reasons = sorted(h["__connect.errors.reason"].decode() for _, _, h in out.dlq)
        assert reasons == ["api_rejected", "order_not_found"]
        for _, value, headers in out.dlq:
            assert headers["__connect.errors.stage"] == b"TASK_PUT"
            assert int(headers["__connect.errors.attempts"]) >= 1
            assert json.loads(value or b"{}")["type"] == "SetOrderState"
        assert sim.app.history(b) == ["checkout"]
        assert sim.app.history(a) == ["checkout"]


async def test_every_output_decodes_with_apache_avro_and_fastavro(kafka_bootstrap: str) -> None:
    """Every Avro output (snapshots, events, results) decodes with both Apache avro and fastavro."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        a, b = sim.app.seed(2, "norce", "1")
        await bridge.send(set_state(a, "processing"), delete(b), set_state(a, "checkout"))
        out = await bridge.all_handled()
        await bridge.collect(lambda o: len([x for x in o.raw if x[1] is not None]) >= 8, 10)
        decoded = 0
        for topic, value in out.raw:
            if value is None or topic == bridge.topics.dlq:
                continue
            name, ours = bridge.codec.decode(value)
            schema_text = bridge.codec.canonical_form(name)
            assert _apache_decode(schema_text, value) == ours
            parsed = fastavro.parse_schema(json.loads(schema_text))
            assert fastavro.schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), parsed) == ours
            decoded += 1
        assert decoded >= 8
