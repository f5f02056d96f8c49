"""The Confluent wire format against a real Apicurio Registry and the real broker (issue 15).

Every Avro output of an end-to-end run is decoded by an independent client (confluent-kafka's
``AvroDeserializer`` behind a librdkafka ``read_committed`` consumer); Confluent-framed commands
are accepted (their unknown writer schema id fetched once); schema evolution follows the
subject's BACKWARD rule at start-up; the registry down at start-up keeps the bridge not ready,
and down later does not affect processing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import fastavro
import pytest
from bridge_devkit.harness import (
    API_KEY,
    Bridge,
    console_script,
    delete,
    free_port,
    make_settings,
    poll_until,
    process_env,
    running_bridge,
    set_state,
    simulator,
)
from bridge_devkit.localregistry import LocalRegistry
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import SecretStr

from bridge.app import build_service, ensure_topics
from bridge.codec import CONFLUENT_CONTENT_TYPE, AvroCodec
from bridge.commands import AnyCommand, command_to_avro_record
from bridge.config import BridgeSettings, HttpSettings, SchemaRegistrySettings
from bridge.errors import ConfigError
from bridge.schema_registry import SchemaFetcher, SchemaRegistryClient

pytestmark = pytest.mark.broker

SCHEMAS = Path(__file__).resolve().parents[2] / "bridge" / "schemas"


def _confluent_read(
    bootstrap: str, registry_url: str, topics: list[str], partitions: int, expected: int
) -> list[tuple[str, dict[str, Any] | None, dict[str, bytes]]]:
    """Every record of ``topics`` (read_committed, from the start), values decoded by
    confluent-kafka's AvroDeserializer; blocks until ``expected`` records were read."""
    # A request timeout: without one a registry request that gets no answer blocks forever.
    sr = ConfluentRegistryClient({"url": registry_url, "timeout": 10})
    # confluent-kafka >= 2.16 resolves the subject name through the registry's "associations"
    # API by default (Apicurio answers it 404, and once in CI did not answer at all); decoding
    # by the schema id in the frame needs no subject, so the classic topic strategy is enough.
    deserialize = AvroDeserializer(sr, conf={"subject.name.strategy.type": "TOPIC"})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"confluent-reader-{time.monotonic_ns()}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(partitions)])
    out: list[tuple[str, dict[str, Any] | None, dict[str, bytes]]] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            topic = msg.topic()
            assert topic is not None
            raw = msg.value()
            value = (
                None
                if raw is None
                else deserialize(raw, SerializationContext(topic, MessageField.VALUE))
            )
            headers: dict[str, bytes] = {}
            for pair in msg.headers() or []:
                if isinstance(pair, tuple) and isinstance(pair[1], bytes):
                    headers[str(pair[0])] = pair[1]
            out.append((topic, value, headers))
    finally:
        consumer.close()
        sr.close()
    return out


def _confluent_command(schema_id: int, command: AnyCommand, codec: AvroCodec) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(
        buf, codec.parsed_schema("OrderCommand"), command_to_avro_record(command)
    )
    return buf.getvalue()


@pytest.mark.parametrize("strategy", ["topic_record", "topic"])
async def test_every_output_decodes_with_confluent_kafka_and_confluent_commands_are_accepted(
    kafka_bootstrap: str, registry_url: str, strategy: str
) -> None:
    registry = SchemaRegistrySettings.model_validate(
        {"url": registry_url, "events_subject_strategy": strategy}
    )
    async with (
        simulator() as sim,
        running_bridge(kafka_bootstrap, sim, schema_registry=registry) as bridge,
    ):
        orders = sim.app.seed(4, "norce", "1")
        commands: list[AnyCommand] = [set_state(o, "processing") for o in orders]
        commands.append(delete(orders[0]))
        await bridge.send(*commands)
        await bridge.send_raw(b'{"type": "Nope"}')  # a dead letter: raw bytes, not Avro
        fetcher = bridge.codec.fetcher
        assert isinstance(fetcher, SchemaFetcher)
        at_start = fetcher.client.requests  # registration: compatibility + register per subject
        assert at_start == 2 * (3 if strategy == "topic" else 4)
        # A producer with its own (registered) command schema: Confluent framing, no content
        # type; the bridge has never seen the id and fetches it once for the three records.
        async with SchemaRegistryClient(registry_url) as client:
            command_id = await client.register(
                f"{bridge.topics.commands}-value", bridge.codec.schema_text("OrderCommand")
            )
        # Sent right behind the JSON commands of the same orders: a record whose schema id is
        # not fetched yet waits behind them by its record key (the order id, as recommended),
        # so each expectedState=processing holds.
        framed = [set_state(o, "accepted", expected_state="processing") for o in orders[1:]]
        for c in framed:
            await bridge.send_raw(
                _confluent_command(command_id, c, bridge.codec), key=c.order_id.encode()
            )
        out = await bridge.all_handled()
        results = out.results_by_command()
        assert {results[c.command_id][0]["outcome"] for c in commands} == {"applied"}
        assert [results[c.command_id][0]["outcome"] for c in framed] == ["applied"] * 3
        assert len(out.dlq) == 1
        assert fetcher.fetches == 1
        assert fetcher.client.requests == at_start + 1  # no registry call on the hot path

        t = bridge.topics
        avro_topics = [t.snapshots, t.events, t.results]
        n = sum(1 for topic, _ in out.raw if topic in avro_topics)
        read = await asyncio.to_thread(
            _confluent_read, kafka_bootstrap, registry_url, avro_topics, t.partitions, n
        )
    assert len(read) == n
    by_topic = Counter(topic for topic, _, _ in read)
    assert by_topic[t.results] == len(out.results) == 8
    assert by_topic[t.events] == len(out.events) == 8  # 7 state changes + 1 deletion
    tombstones = [v for topic, v, _ in read if topic == t.snapshots and v is None]
    assert len(tombstones) == 1
    for topic, value, headers in read:
        if value is None:
            continue
        assert headers["content-type"] == CONFLUENT_CONTENT_TYPE.encode()
        if topic == t.results:
            assert value["orderId"] in orders
    decoded_results = sorted(
        (v["commandId"], v["outcome"]) for topic, v, _ in read if topic == t.results and v
    )
    assert decoded_results == sorted((r["commandId"], r["outcome"]) for r in out.results)
    assert {"eventId", "newStatus"} <= {
        k for topic, v, _ in read if topic == t.events and v for k in v
    }


def _schemas_with_result_field(tmp: Path, field: dict[str, Any]) -> Path:
    shutil.copytree(SCHEMAS, tmp, ignore=shutil.ignore_patterns("*.json"))
    path = tmp / "CommandResult.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(field)
    path.write_text(json.dumps(schema))
    return tmp


async def test_compatible_v2_is_accepted_and_an_incompatible_one_refused_in_one_line(
    kafka_bootstrap: str, registry_url: str, tmp_path: Path
) -> None:
    registry = SchemaRegistrySettings(url=registry_url)
    async with simulator() as sim:
        settings = make_settings(kafka_bootstrap, sim.url).model_copy(
            update={"schema_registry": registry}
        )
        await ensure_topics(settings, {})
        subject = f"{settings.topics.results}-value"
        v1 = await build_service(settings, api_key=SecretStr(API_KEY))
        await v1.aclose()
        v2_dir = _schemas_with_result_field(
            tmp_path / "v2", {"name": "note", "type": ["null", "string"], "default": None}
        )
        v2 = settings.model_copy(update={"schemas_dir": v2_dir})
        bridge = Bridge(kafka_bootstrap, sim, v2)
        try:
            await bridge.start()
            (order,) = sim.app.seed(1, "norce", "1")
            c = set_state(order, "processing")
            await bridge.send(c)
            out = await bridge.all_handled()
            assert out.results[0]["note"] is None  # written with v2
        finally:
            await bridge.aclose()
        async with SchemaRegistryClient(registry_url) as client:
            latest_id, latest = await client.latest(subject)
            assert "note" in latest
            assert await client.compatibility(subject) == "BACKWARD"
        v3_dir = _schemas_with_result_field(tmp_path / "v3", {"name": "must", "type": "string"})
        v3 = settings.model_copy(update={"schemas_dir": v3_dir})
        with pytest.raises(ConfigError) as refused:
            await build_service(v3, api_key=SecretStr(API_KEY))
        message = str(refused.value)
        assert "\n" not in message
        assert "incompatible" in message
        assert subject in message
        # The console script: exit 2 and one human line (the rest are JSON log lines).
        env = process_env(settings, sim.url, schemas_dir=str(v3_dir))
        env["BRIDGE_SCHEMA_REGISTRY__URL"] = registry_url
        proc = await asyncio.to_thread(
            subprocess.run,
            [console_script(), "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        human = [line for line in proc.stderr.splitlines() if line and not _is_json(line)]
        assert len(human) == 1, proc.stderr[-2000:]
        assert human[0].startswith("order-bridge: schema registry rejected")
        async with SchemaRegistryClient(registry_url) as client:
            assert (await client.latest(subject))[0] == latest_id  # v3 not registered


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


async def _readyz(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/readyz") as resp,
    ):
        return resp.status, await resp.text()


@contextlib.asynccontextmanager
async def _served(settings: BridgeSettings, sim: Any) -> AsyncIterator[Bridge]:
    bridge = Bridge(settings.kafka.bootstrap_servers, sim, settings)
    try:
        yield bridge
    finally:
        await bridge.aclose()


async def test_registry_down_at_start_up_then_up_and_down_again_in_steady_state(
    kafka_bootstrap: str,
) -> None:
    """Not ready while the registry is down at start-up, ready once it is up; afterwards the
    registry down does not touch processing, and a command whose schema id needs the registry
    is held (not dead-lettered) until it answers again."""
    port = free_port()
    local = LocalRegistry(port=free_port())
    registry = SchemaRegistrySettings(
        url=local.url, timeout_s=1.0, retry_initial_s=0.1, retry_max_s=0.5
    )
    async with simulator() as sim:
        settings = make_settings(kafka_bootstrap, sim.url).model_copy(
            update={
                "schema_registry": registry,
                "http": HttpSettings(host="127.0.0.1", port=port),
            }
        )
        await ensure_topics(settings, {})
        async with _served(settings, sim) as bridge:
            starting = asyncio.create_task(bridge.start())
            try:
                status = 0
                text = ""
                deadline = time.monotonic() + 30
                while "schema registry" not in text and time.monotonic() < deadline:
                    with contextlib.suppress(aiohttp.ClientError):
                        status, text = await _readyz(port)
                    await asyncio.sleep(0.1)
                assert status == 503
                assert "schema registry unavailable" in text
                await asyncio.to_thread(local.start)
                await asyncio.wait_for(starting, 120)
                ready: list[int] = []

                async def probe() -> None:
                    ready.append((await _readyz(port))[0])

                async def is_ready() -> bool:
                    await probe()
                    return ready[-1] == 200

                deadline = time.monotonic() + 60
                while not await is_ready():
                    assert time.monotonic() < deadline, "never ready"
                    await asyncio.sleep(0.1)

                async with SchemaRegistryClient(local.url) as client:
                    command_id = await client.register(
                        f"{bridge.topics.commands}-value", bridge.codec.schema_text("OrderCommand")
                    )
                local.pause()  # down: requests hang until the client's timeout
                orders = sim.app.seed(2, "norce", "1")
                json_command = set_state(orders[0], "processing")
                await bridge.send(json_command)
                held = set_state(orders[1], "processing")
                held_at = await bridge.send_raw(
                    _confluent_command(command_id, held, bridge.codec),
                    key=held.order_id.encode(),
                )
                out = await bridge.collect(
                    lambda o: json_command.command_id in o.results_by_command(), 30
                )
                assert out.results_by_command()[json_command.command_id][0]["outcome"] == (
                    "applied"
                )
                fetcher = bridge.codec.fetcher
                assert isinstance(fetcher, SchemaFetcher)
                await poll_until(lambda: fetcher.fetches >= 2, 30, "a retried schema fetch")
                assert held_at not in bridge.outputs.handled_sources()
                assert not bridge.outputs.dlq
                local.resume()
                out = await bridge.all_handled(timeout_s=60)
                assert out.results_by_command()[held.command_id][0]["outcome"] == "applied"
                assert not out.dlq
            finally:
                local.cleanup()
                if not starting.done():
                    starting.cancel()
                    with contextlib.suppress(BaseException):
                        await starting


@pytest.mark.slow
def test_demo_runs_with_a_schema_registry() -> None:
    """``order-bridge-dev demo --schema-registry``: a local Apicurio, Confluent-framed outputs,
    the same summary as without a registry."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")
    }
    proc = subprocess.run(
        [console_script("order-bridge-dev"), "demo", "--schema-registry", "--orders", "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "schema registry at http://127.0.0.1:" in out
    assert f"content-type {CONFLUENT_CONTENT_TYPE}" in out
    assert "records handled : 27/27" in out
    assert "dead letters    : 11" in out
    assert "snapshot        : status accepted" in out
