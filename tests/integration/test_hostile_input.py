"""A corpus of hostile records through the real broker: none stops the partition (issue 10).

Each hostile record is followed by a valid command for the same order. The valid ones must all
apply, every hostile record gets exactly its expected dead letter (and a ``failed`` result when
its command id is readable), the offsets commit past all of them, and the metrics count every
record exactly once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from bridge_devkit.harness import running_bridge, set_state, simulator

from bridge.codec import AvroCodec
from bridge.config import BridgeSettings

pytestmark = pytest.mark.broker

NOW = datetime.now(UTC).isoformat().replace("+00:00", "Z")
FIELDS = (
    "type",
    "commandId",
    "orderId",
    "merchant",
    "channel",
    "issuedAt",
    "state",
    "expectedState",
    "expiresAt",
    "correlationId",
)
BIG = 1_048_400  # accepted by the broker, too large for a dead letter with headers


@dataclass
class Case:
    name: str
    value: bytes | None
    reason: str
    result: bool  # a failed CommandResult is expected (the command id is readable)
    headers: tuple[tuple[str, bytes | None], ...] = ()


def _base(order_id: str, command_id: str) -> dict[str, Any]:
    return {
        "type": "SetOrderState",
        "commandId": command_id,
        "orderId": order_id,
        "merchant": "norce",
        "channel": "1",
        "issuedAt": NOW,
        "state": "processing",
        "expectedState": "checkout",
        "expiresAt": "2999-01-01T00:00:00Z",
        "correlationId": "corr",
    }


def _json(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


def _avro(codec: AvroCodec, d: dict[str, Any]) -> bytes:
    record = dict.fromkeys(FIELDS)
    record.update(d)
    return codec.encode("OrderCommand", record)


WRONG_TYPES: dict[str, Any] = {
    "number": 12345,
    "boolean": True,
    "array": ["x"],
    "object": {"x": 1},
    "null": None,
}
# The reason each field gives for a value of the wrong type (null included where it is required).
FIELD_REASON = {
    "type": "unknown_type",
    "commandId": "invalid_field",
    "orderId": "bad_order_id",
    "merchant": "invalid_field",
    "channel": "invalid_field",
    "issuedAt": "bad_timestamp",
    "state": "invalid_field",
    "expectedState": "invalid_field",
    "expiresAt": "bad_timestamp",
    "correlationId": "invalid_field",
}
OPTIONAL = {"expectedState", "expiresAt", "correlationId"}


def corpus(order_id: str, i: int, codec: AvroCodec) -> list[Case]:
    """All hostile records for order ``order_id`` (command ids ``h-{i}-...``)."""

    def cid(tag: str) -> str:
        return f"h-{i}-{tag}"

    def base(tag: str, **over: Any) -> dict[str, Any]:
        d = _base(order_id, cid(tag))
        d.update(over)
        return {k: v for k, v in d.items() if v is not ...}

    cases: list[Case] = []
    for depth in (33, 500, 1025, 2000, 20_000):
        cases.append(
            Case(f"nested array {depth}", b"[" * depth + b"]" * depth, "invalid_json", False)
        )
    cases.append(
        Case(
            "nested object inside a command",
            _json(base("deep"))[:-1] + b', "x": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}",
            "invalid_json",
            False,
        )
    )
    cases.append(Case("nested 100k (oversize)", b"[" * 50_000 + b"]" * 50_000, "oversize", False))
    # Lone surrogates: escaped (invalid JSON for the strict parser) and raw (invalid UTF-8).
    for field in ("commandId", "orderId"):
        escaped = _json(base(f"esc-{field}")).replace(
            json.dumps(base(f"esc-{field}")[field]).encode(), b'"\\ud800"'
        )
        cases.append(Case(f"escaped surrogate in {field}", escaped, "invalid_json", False))
        raw = _json(base(f"raw-{field}", **{field: "SURROGATE"})).replace(
            b"SURROGATE", b"\xed\xa0\x80"
        )
        cases.append(Case(f"raw surrogate in {field}", raw, "invalid_utf8", False))
    # Invalid UTF-8 in every field.
    for field in FIELDS:
        d = base(f"utf8-{field}")
        d[field] = "BADBYTES"
        cases.append(
            Case(
                f"invalid utf-8 in {field}",
                _json(d).replace(b"BADBYTES", b"ab\xff\xfecd"),
                "invalid_utf8",
                False,
            )
        )
    cases.append(Case("1 MiB record", b"{" + b" " * (BIG - 2) + b"}", "oversize", False))
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
        v = _json(base(f"num-{literal.decode()}", correlationId="X")).replace(b'"X"', literal)
        cases.append(Case(f"{literal.decode()} as a value", v, "invalid_json", False))
    good = _json(base("bom"))
    cases.append(Case("UTF-8 BOM", b"\xef\xbb\xbf" + good, "invalid_json", False))
    cases.append(
        Case(
            "UTF-16 LE with BOM",
            _json(base("u16")).decode().encode("utf-16"),
            "invalid_utf8",
            False,
        )
    )
    cases.append(
        Case("UTF-16 BE", _json(base("u16be")).decode().encode("utf-16-be"), "invalid_json", False)
    )
    cases.append(Case("null value", None, "empty_value", False))
    cases.append(Case("empty value", b"", "empty_value", False))
    cases.append(Case("whitespace", b"   \n", "invalid_json", False))
    cases.append(Case("JSON null", b"null", "not_an_object", False))
    # Every field with every wrong type.
    for field in FIELDS:
        for tname, wrong in WRONG_TYPES.items():
            if tname == "null" and field in OPTIONAL:
                continue  # null is a legitimate value of an optional field
            reason = FIELD_REASON[field]
            if field == "type" and tname == "null":
                reason = "missing_field"
            readable = field != "commandId"
            cases.append(
                Case(
                    f"{field} as {tname}",
                    _json(base(f"type-{field}-{tname}", **{field: wrong})),
                    reason,
                    readable,
                )
            )
    # The contract, exactly as published.
    cases += [
        Case("state capitalised", _json(base("cap", state="Processing")), "unknown_state", True),
        Case("state padded", _json(base("pad", state=" processing ")), "unknown_state", True),
        Case(
            "issuedAt epoch number",
            _json(base("ep", issuedAt=1_700_000_000)),
            "bad_timestamp",
            True,
        ),
        Case(
            "issuedAt numeric string",
            _json(base("eps", issuedAt="1700000000")),
            "bad_timestamp",
            True,
        ),
        Case(
            "issuedAt without zone",
            _json(base("nz", issuedAt="2026-01-01T10:00:00")),
            "bad_timestamp",
            True,
        ),
        Case(
            "duplicate state keys",
            _json(base("dup"))[:-1] + b', "state": "declined"}',
            "invalid_json",
            False,
        ),
        Case(
            "unsupported charset",
            _json(base("cs")),
            "unsupported_content_type",
            True,
            (("content-type", b"application/json; charset=utf-16"),),
        ),
        Case(
            "null header value, bad JSON",
            b"{nope",
            "invalid_json",
            False,
            (("trace", None), ("content-type", None)),
        ),
    ]
    # Avro: the same rules as JSON, and a failed result when the id is readable.
    avro = (("content-type", b"application/avro"),)
    delete = {k: v for k, v in base("av-del").items() if k not in ("state", "expectedState")}
    cases += [
        Case(
            "avro DeleteOrder with a state",
            _avro(codec, {**delete, "type": "DeleteOrder", "state": "bogus"}),
            "unknown_field",
            True,
            avro,
        ),
        Case(
            "avro state capitalised",
            _avro(codec, base("av-cap", state="Processing")),
            "unknown_state",
            True,
            avro,
        ),
        Case(
            "avro epoch issuedAt",
            _avro(codec, base("av-ep", issuedAt="1700000000")),
            "bad_timestamp",
            True,
            avro,
        ),
        Case(
            "avro raw surrogate",
            _avro(codec, base("av-sur", correlationId="QQQ")).replace(b"QQQ", b"\xed\xa0\x80"),
            "invalid_avro",
            False,
            avro,
        ),
        Case("avro garbage", b"\xc3\x01" + b"\x01" * 20, "invalid_avro", False),
    ]
    return cases


def valid_extras(
    order_id: str, codec: AvroCodec
) -> list[tuple[str, bytes, tuple[tuple[str, bytes | None], ...]]]:
    """Valid Avro commands with unusual but correct media types: they must be applied."""
    out: list[tuple[str, bytes, tuple[tuple[str, bytes | None], ...]]] = []
    for n, ctype in enumerate(
        (
            b"application/avro; charset=binary",
            b"APPLICATION/AVRO",
            b"application/vnd.apache.avro+binary",
        )
    ):
        d = _base(order_id, f"ok-avro-{n}")
        d.update(state="processing", expectedState=None)
        out.append((f"avro as {ctype.decode()}", _avro(codec, d), (("content-type", ctype),)))
    return out


def _headers(headers: tuple[tuple[str, bytes | None], ...]) -> list[tuple[str, bytes]]:
    # aiokafka sends a None header value as a null header (the harness types it as bytes).
    return cast(list[tuple[str, bytes]], list(headers))


def _metric_sum(registry: Any, name: str) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                total += sample.value
    return total


async def test_hostile_corpus_never_stops_the_partition(kafka_bootstrap: str) -> None:
    """Every hostile record is dead-lettered as expected, valid ones behind it apply, offsets
    commit past all of them, and each record is counted once."""
    codec = AvroCodec.load(BridgeSettings().schemas_dir)
    probe = corpus("o_probe", 0, codec)
    assert len(probe) >= 60
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim, partitions=1) as bridge:
        order = sim.app.seed(1, "norce", "1")[0]
        cases: dict[tuple[int, int], Case] = {}
        valid = []
        for i, case in enumerate(corpus(order, 0, codec)):
            p, off = await bridge.send_raw(
                case.value, key=order.encode(), headers=_headers(case.headers)
            )
            cases[(p, off)] = case
            # checkout <-> processing: every valid command after a hostile one changes the order.
            good = set_state(order, "processing" if i % 2 == 0 else "checkout")
            valid.append(good)
            await bridge.send(good)
        extra_order = sim.app.seed(1, "norce", "1")[0]
        for _name, value, headers in valid_extras(extra_order, codec):
            await bridge.send_raw(value, key=extra_order.encode(), headers=_headers(headers))
        out = await bridge.all_handled(timeout_s=120)

        # Each hostile record: exactly one dead letter with its reason, headers kept exactly.
        dlq_by_source: dict[tuple[int, int], tuple[bytes | None, dict[str, Any]]] = {}
        for _key, dlq_value, h in out.dlq:
            src = (int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))
            assert src not in dlq_by_source, f"two dead letters for {src}"
            dlq_by_source[src] = (dlq_value, h)
        assert set(dlq_by_source) == set(cases), "dead letters for exactly the hostile records"
        results = out.results_by_command()
        by_source = {(r["source"]["partition"], r["source"]["offset"]): r for r in out.results}
        table = []
        for src, case in cases.items():
            stored, h = dlq_by_source[src]
            reason = h["__connect.errors.reason"].decode()
            table.append((case.name, reason))
            assert reason == case.reason, f"{case.name}: {reason} != {case.reason}"
            for name, hv in case.headers:
                assert h[name] == hv, f"{case.name}: header {name} not kept exactly"
            if case.value is not None and len(case.value) >= BIG:
                assert h["__bridge.dlq.truncated"] == b"true"
                assert int(h["__bridge.dlq.original.size"]) == len(case.value)
                assert (
                    h["__bridge.dlq.original.sha256"]
                    == hashlib.sha256(case.value).hexdigest().encode()
                )
                assert stored is not None
                assert case.value.startswith(stored)
            else:
                assert stored == case.value, f"{case.name}: original value not preserved"
            if case.result:
                r = by_source.get(src)
                assert r is not None, f"{case.name}: no CommandResult"
                assert r["outcome"] == "failed", case.name
                assert r["reason"].startswith(case.reason), case.name
            else:
                assert src not in by_source, f"{case.name}: unexpected result"
        # The valid commands behind them all applied.
        for cmd in valid:
            assert [r["outcome"] for r in results[cmd.command_id]] == ["applied"], cmd.command_id
        for n in range(3):
            assert results[f"ok-avro-{n}"][0]["outcome"] in ("applied", "already_applied")

        # Offsets committed past everything.
        end = (await bridge.end_offsets())[0]
        deadline = time.monotonic() + 30
        while (await bridge.committed()).get(0) != end:
            assert time.monotonic() < deadline, "committed offset never reached the end"
            await bridge.collect(lambda o: False, timeout_s=0.2)

        # Counted once each: commands by outcome sum to the records, dead letters by reason.
        assert bridge.service is not None
        registry = bridge.service.registry
        handled = len(cases) + len(valid) + 3
        assert _metric_sum(registry, "norce_bridge_commands_total") == handled
        assert _metric_sum(registry, "norce_bridge_dead_letters_total") == len(cases)
        assert bridge.task is not None
        assert not bridge.task.done(), "the bridge exited"
        print("\ncorpus table (record kind -> dead-letter reason):")
        for name, reason in table:
            print(f"  {name:45s} -> {reason}")


# A record whose header name is not UTF-8. aiokafka's C record builder cannot write one, so a
# separate interpreter uses its pure-Python builder (AIOKAFKA_NO_EXTENSIONS, read at import) with
# a name whose encode() returns raw bytes: what a librdkafka producer can send.
_BAD_HEADER_PRODUCER = """
import asyncio, os, sys
os.environ["AIOKAFKA_NO_EXTENSIONS"] = "1"
from aiokafka import AIOKafkaProducer

class RawName(str):
    def encode(self, *args, **kwargs):
        return b"\\xff\\xfebad"

async def main(bootstrap, topic, partition, key):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        md = await producer.send_and_wait(
            topic, b"{}", key=key.encode(), partition=int(partition), headers=[(RawName("x"), b"v")]
        )
        print(md.offset)
    finally:
        await producer.stop()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_record_the_kafka_client_cannot_decode_holds_its_partition_only(
    kafka_bootstrap: str,
) -> None:
    """aiokafka refuses a batch with a non-UTF-8 header name inside getmany, before the bridge
    sees the record; that used to end the process, and every restart again (a crash loop). Now
    that partition is held (paused, nothing committed past the record, the metric says so) and
    the bridge goes on with the others: a command sent after it on the other partition applies,
    while the one behind it on the held partition waits."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim, partitions=2) as bridge:
        orders = sim.app.seed(8, "norce", "1")
        by_partition: dict[int, str] = {}
        for order in orders:  # one order on each partition, by where its first command lands
            ((p, _),) = await bridge.send(set_state(order, "processing"))
            by_partition.setdefault(p, order)
        assert set(by_partition) == {0, 1}
        await bridge.all_handled(timeout_s=60)
        held_p, other_p = 0, 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BAD_HEADER_PRODUCER,
            kafka_bootstrap,
            bridge.topics.commands,
            str(held_p),
            by_partition[held_p],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        bad_offset = int(out)
        behind = set_state(by_partition[held_p], "accepted")
        after = set_state(by_partition[other_p], "accepted")
        await bridge.send(behind)
        await bridge.send(after)
        outputs = await bridge.collect(
            lambda o: after.command_id in o.results_by_command(), timeout_s=60
        )
        assert [r["outcome"] for r in outputs.results_by_command()[after.command_id]] == ["applied"]
        assert behind.command_id not in outputs.results_by_command()
        assert bridge.task is not None
        assert not bridge.task.done(), "the bridge exited"
        assert bridge.service is not None
        deadline = time.monotonic() + 30
        while _metric_sum(bridge.service.registry, "norce_bridge_paused_partitions") < 1:
            assert time.monotonic() < deadline, "the partition was never reported paused"
            await bridge.collect(lambda o: False, timeout_s=0.2)
        committed = await bridge.committed()
        assert committed.get(held_p, 0) <= bad_offset, "committed past the undecodable record"
        assert not [
            h
            for _k, _v, h in outputs.dlq
            if h.get("__connect.errors.offset") == str(bad_offset).encode()
        ]
