"""Bad input goes to the DLQ with reasons, outages hold commands instead of dead-lettering them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from bridge_devkit.harness import poll_until, running_bridge, set_state, simulator

from bridge.codec import AvroCodec
from bridge.config import BridgeSettings

pytestmark = pytest.mark.broker

NOW = datetime.now(UTC).isoformat()


def _cmd(**fields: object) -> bytes:
    base: dict[str, object] = {
        "type": "SetOrderState",
        "commandId": "bad-1",
        "orderId": "o_AbcdefghijklmnopqrstuvwxyZ",
        "merchant": "norce",
        "channel": "1",
        "issuedAt": NOW,
        "state": "processing",
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def malformed_records() -> list[tuple[str, bytes | None, list[tuple[str, bytes]], str]]:
    """(name, value, headers, expected reason) — at least 20 different malformed inputs."""
    avro_codec = AvroCodec.load(BridgeSettings().schemas_dir)
    wrong_schema = avro_codec.encode(
        "OrderDeleted",
        {
            "eventId": "e",
            "orderId": "o",
            "merchant": "m",
            "channel": "c",
            "previousStatus": None,
            "alreadyDeleted": False,
            "commandId": "c",
            "correlationId": None,
            "occurredAt": NOW,
        },
    )
    return [
        ("invalid json", b"{nope", [], "invalid_json"),
        ("truncated json", b'{"type": "SetOrderState"', [], "invalid_json"),
        ("not utf-8", b"\xff\xfe\x00garbage", [], "invalid_utf8"),
        ("json array", b"[1,2]", [], "not_an_object"),
        ("json string", b'"SetOrderState"', [], "not_an_object"),
        ("null value", None, [], "empty_value"),
        ("empty value", b"", [], "empty_value"),
        ("unknown type", _cmd(type="ShipOrder"), [], "unknown_type"),
        ("missing type", _cmd(type=...), [], "missing_field"),
        ("missing order id", _cmd(orderId=...), [], "missing_field"),
        ("missing command id", _cmd(commandId=...), [], "missing_field"),
        ("missing issuedAt", _cmd(issuedAt=...), [], "missing_field"),
        ("path traversal id", _cmd(orderId="../../admin"), [], "bad_order_id"),
        ("slash in id", _cmd(orderId="o_a/b"), [], "bad_order_id"),
        ("crlf in id", _cmd(orderId="o_a\r\nX-Evil: 1"), [], "bad_order_id"),
        ("empty id", _cmd(orderId=""), [], "bad_order_id"),
        ("overlong id", _cmd(orderId="o_" + "a" * 300), [], "bad_order_id"),
        ("unknown state", _cmd(state="shipped"), [], "unknown_state"),
        ("bad timestamp", _cmd(issuedAt="yesterday"), [], "bad_timestamp"),
        ("naive timestamp", _cmd(issuedAt="2026-01-01T10:00:00"), [], "bad_timestamp"),
        ("unknown field", _cmd(expectedstate="processing"), [], "unknown_field"),
        ("number as order id", _cmd(orderId=12345), [], "bad_order_id"),
        ("crlf in merchant", _cmd(merchant="norce\r\nx"), [], "invalid_field"),
        ("oversize", _cmd(correlationId="x" * 70_000), [], "oversize"),
        ("avro garbage", b"\xc3\x01" + b"\x01" * 20, [], "invalid_avro"),
        (
            "avro of another schema",
            wrong_schema,
            [("content-type", b"application/avro")],
            "invalid_avro",
        ),
        ("avro header, json body", _cmd(), [("content-type", b"application/avro")], "invalid_avro"),
    ]


async def test_malformed_inputs_are_dead_lettered_with_reasons_and_offsets_move_on(
    kafka_bootstrap: str,
) -> None:
    """Each malformed record is dead-lettered once with its reason; valid ones around it apply."""
    cases = malformed_records()
    assert len(cases) >= 20
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim, partitions=1) as bridge:
        orders = sim.app.seed(len(cases) + 1, "norce", "1")
        valid = []
        for i, (_, value, headers, _) in enumerate(cases):
            good = set_state(orders[i], "processing")
            valid.append(good)
            await bridge.send(good)
            await bridge.send_raw(value, key=b"poison", headers=[*headers, ("trace", b"t-%d" % i)])
        last = set_state(orders[-1], "processing")
        valid.append(last)
        await bridge.send(last)
        out = await bridge.all_handled()

        assert len(out.dlq) == len(cases)
        by_offset = {int(h["__connect.errors.offset"]): (v, h) for _, v, h in out.dlq}
        poison_offsets = sorted(by_offset)
        for (name, value, _, reason), off in zip(cases, poison_offsets, strict=True):
            v, h = by_offset[off]
            assert h["__connect.errors.reason"].decode() == reason, name
            assert v == value, f"{name}: original value not preserved"
            assert h["trace"].startswith(b"t-"), f"{name}: original headers not preserved"
            assert h["__connect.errors.topic"].decode() == bridge.topics.commands
            assert h["__connect.errors.partition"] == b"0"
            assert h["__connect.errors.stage"] == b"VALUE_CONVERTER"
            assert h["__connect.errors.class.name"].startswith(b"bridge.errors.")
            assert h["__connect.errors.exception.message"]
        results = out.results_by_command()
        for cmd in valid:
            assert [r["outcome"] for r in results[cmd.command_id]] == ["applied"]
        assert all(sim.app.history(o)[-1] == "processing" for o in orders)

        end = (await bridge.end_offsets())[0]

        async def committed_to_end() -> bool:
            return (await bridge.committed()).get(0) == end

        deadline = time.monotonic() + 20
        while not await committed_to_end():
            assert time.monotonic() < deadline, (
                "committed offset never moved past the poison records"
            )
            await bridge.collect(lambda o: False, timeout_s=0.2)


async def test_api_down_for_ten_seconds_holds_commands_and_applies_them_after_recovery(
    kafka_bootstrap: str,
) -> None:
    """While Norce answers 503 the circuit opens, nothing is dead-lettered, all apply later."""
    async with (
        simulator() as sim,
        running_bridge(kafka_bootstrap, sim, circuit_open_s=0.5, circuit_max_open_s=2.0) as bridge,
    ):
        orders = sim.app.seed(30, "norce", "1")
        first = [set_state(o, "processing") for o in orders[:10]]
        await bridge.send(*first)
        await bridge.collect(lambda o: len(o.results) >= 10)
        sim.app.set_faults(down=True)
        down_at = time.monotonic()
        rest = [set_state(o, "processing") for o in orders[10:]] + [
            set_state(o, "accepted") for o in orders
        ]
        await bridge.send(*rest)
        service = bridge.service
        assert service is not None
        await poll_until(
            lambda: service.runtime.circuit_state != "closed", 10, "the circuit to open"
        )
        # the consumer pauses while the circuit is open
        await poll_until(lambda: service.runtime.all_paused, 5, "partitions to be paused")
        remaining = 10 - (time.monotonic() - down_at)
        await bridge.collect(lambda o: False, timeout_s=max(0.0, remaining))
        assert not bridge.outputs.dlq, "valid commands were dead-lettered during the outage"
        assert len(bridge.outputs.results) == 10
        sim.app.set_faults(down=False)
        out = await bridge.all_handled(timeout_s=60)
        assert not out.dlq
        outcomes = [r["outcome"] for r in out.results]
        assert outcomes.count("applied") == len(first) + len(rest)
        assert all(sim.app.history(o) == ["checkout", "processing", "accepted"] for o in orders)
        assert service.runtime.circuit_state == "closed"


async def test_start_up_refuses_a_record_limit_whose_dead_letters_cannot_be_written(
    kafka_bootstrap: str,
) -> None:
    """max_record_bytes must leave room for a whole dead letter under the DLQ topic's limit."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from bridge_devkit.harness import make_settings

    from bridge.app import ensure_topics
    from bridge.errors import ConfigError

    settings = make_settings(kafka_bootstrap, "http://127.0.0.1:9", max_record_bytes=200_000)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(settings.topics.dlq, 1, 1, topic_configs={"max.message.bytes": "100000"})]
        )
    finally:
        await admin.close()
    with pytest.raises(ConfigError, match="BRIDGE_PROCESSING__MAX_RECORD_BYTES"):
        await ensure_topics(settings, {})
    fits = make_settings(kafka_bootstrap, "http://127.0.0.1:9", max_record_bytes=200_000)
    await ensure_topics(fits, {})  # the broker's default limits leave room
