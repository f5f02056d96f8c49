"""The AsyncAPI contract (``bridge.asyncapi``, ``order-bridge asyncapi``, ``asyncapi.yaml``).

It is current (the committed file is what the code generates), every topic the bridge uses is a
channel with the configuration the bridge creates it with, every Avro payload is the schema the
codec loads, the commands' payload is their JSON Schema, and every header the code writes is
documented. Its validity under the official AsyncAPI parser is tests/deploy/test_asyncapi_valid.py.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import jsonschema
import pytest
import yaml

from bridge.app import topic_configs
from bridge.asyncapi import build_document, dump_document
from bridge.cli import main
from bridge.codec import AvroCodec
from bridge.commands import (
    DeleteOrder,
    RefreshOrder,
    SetOrderState,
    command_json_schema,
    command_record,
    command_to_json,
)
from bridge.config import BridgeSettings, TopicSettings
from bridge.deadletter import dead_letter
from bridge.dlq_tool import parse_dead_letter, redrive_headers
from bridge.errors import InvalidCommandError
from bridge.notification import notification_headers, parse_notification
from bridge.order_model import OrderStatus
from bridge.order_state import OrderState
from bridge.outputs import (
    Disposition,
    Ids,
    SourceRecord,
    deleted_outputs,
    result_output,
    snapshot_output,
    state_event_output,
)
from bridge.settle import ORDER_STATE_TOPIC, encode_outputs
from bridge.vocabulary import TOPIC_ROLES, Outcome, OutputKind

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "asyncapi.yaml"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ORDER = json.loads((ROOT / "tests" / "fixtures" / "order_full.json").read_text())


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return build_document()


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec.load()


def node_path(ref: str) -> list[str]:
    assert ref.startswith("#/"), ref
    return ref[2:].split("/")


def deref(doc: dict[str, Any], ref_node: dict[str, Any]) -> Any:
    node: Any = doc
    for part in node_path(ref_node["$ref"]):
        node = node[part]
    return node


def channel_messages(doc: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    return {name: deref(doc, ref) for name, ref in doc["channels"][channel]["messages"].items()}


def header_names(doc: dict[str, Any], message: dict[str, Any]) -> set[str]:
    return set(deref(doc, message["headers"])["properties"])


# -- current ---------------------------------------------------------------------------------


def test_the_committed_asyncapi_yaml_is_current(tmp_path: Path) -> None:
    """`order-bridge asyncapi --output` writes exactly the committed file (regenerate with
    `order-bridge asyncapi --output asyncapi.yaml` after changing topics, schemas or headers)."""
    out = tmp_path / "asyncapi.yaml"
    assert main(["asyncapi", "--output", str(out)]) == 0
    generated = out.read_text(encoding="utf-8")
    assert generated == COMMITTED.read_text(encoding="utf-8"), (
        "asyncapi.yaml is stale: run `order-bridge asyncapi --output asyncapi.yaml`"
    )
    assert yaml.safe_load(generated) == json.loads(json.dumps(build_document()))


def test_the_json_format_is_the_same_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any]
) -> None:
    assert main(["asyncapi", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == doc
    assert dump_document(doc, "json") == dump_document(build_document(), "json")  # deterministic
    with pytest.raises(ValueError, match="unknown format"):
        dump_document(doc, "toml")


def test_info_carries_the_package_version(doc: dict[str, Any]) -> None:
    from bridge import __version__

    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == __version__
    server = doc["servers"]["kafka"]
    assert server["protocol"] == "kafka"
    assert server["bindings"]["kafka"]["bindingVersion"] == "0.5.0"


# -- channels --------------------------------------------------------------------------------

TOPIC_FIELDS = sorted(name for name, f in TopicSettings.model_fields.items() if f.annotation is str)


def test_every_topic_the_bridge_uses_is_a_channel(doc: dict[str, Any]) -> None:
    topics = TopicSettings()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {getattr(topics, name) for name in TOPIC_FIELDS}
    # Every topic the bridge creates, and every output role (its metrics' topic label).
    assert set(topic_configs(BridgeSettings.model_construct())) <= addresses
    assert set(TOPIC_ROLES.values()) | {"commands"} <= set(doc["channels"])
    for channel in doc["channels"].values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
        assert "order id" in channel["description"]


def test_channel_bindings_are_the_topic_configs_the_bridge_creates() -> None:
    settings = BridgeSettings(
        topics=TopicSettings(
            commands="acme.cmd", snapshots="acme.snap", partitions=3, replication_factor=2
        )
    )
    doc = build_document(settings)
    by_address = {c["address"]: c["bindings"]["kafka"] for c in doc["channels"].values()}
    assert {"acme.cmd", "acme.snap"} <= set(by_address)
    for topic, config in topic_configs(settings).items():
        binding = by_address[topic]
        assert binding["partitions"] == 3
        assert binding["replicas"] == 2
        expected = {
            k: (v.split(",") if k == "cleanup.policy" else int(v)) for k, v in config.items()
        }
        expected.setdefault("cleanup.policy", ["delete"])
        assert binding["topicConfiguration"] == expected, topic
    assert by_address["acme.snap"]["topicConfiguration"]["cleanup.policy"] == ["compact"]
    state = doc["channels"]["orderState"]
    assert state["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"] == ["compact"]
    assert {"name": "internal"} in state["tags"]
    assert "INTERNAL" in state["description"]


def test_operations_receive_commands_and_send_every_output(doc: dict[str, Any]) -> None:
    ops = doc["operations"]
    actions = {(o["action"], o["channel"]["$ref"].rpartition("/")[2]) for o in ops.values()}
    assert ("receive", "commands") in actions
    assert ("receive", "notifications") in actions
    for role in TOPIC_ROLES.values():
        assert ("send", role) in actions
    assert ("send", "commands") in actions  # the relay, refresh, send, dlq replay
    group = ops["receiveCommands"]["bindings"]["kafka"]["groupId"]
    assert group["enum"] == [BridgeSettings.model_construct().kafka.group_id]
    for op in ops.values():  # every operation's messages are its channel's
        channel = op["channel"]["$ref"].rpartition("/")[2]
        for ref in op["messages"]:
            assert ref["$ref"].startswith(f"#/channels/{channel}/messages/")
            deref(doc, ref)


# -- payloads --------------------------------------------------------------------------------


def test_every_avro_payload_is_the_schema_the_codec_loads(
    doc: dict[str, Any], codec: AvroCodec
) -> None:
    seen: dict[str, str] = {}
    for channel in doc["channels"]:
        for message in channel_messages(doc, channel).values():
            payload = deref(doc, message["payload"]) if "$ref" in message["payload"] else None
            if not (isinstance(payload, dict) and "schemaFormat" in payload):
                continue
            if not payload["schemaFormat"].startswith("application/vnd.apache.avro"):
                continue
            schema = payload["schema"]
            name = schema["name"]
            canonical = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(schema))
            assert canonical == codec.canonical_form(name), name
            assert message["contentType"] == "application/avro"
            assert message["bindings"]["kafka"]["key"]["type"] == "string"
            seen[name] = channel
    assert set(seen) == set(codec.schema_names)
    assert seen["OrderSnapshot"] == "snapshots"
    assert seen["CommandResult"] == "results"
    assert seen["OrderStateChanged"] == seen["OrderDeleted"] == "events"
    assert seen["OrderCommand"] == "commands"


def test_the_avro_schemas_are_the_packaged_files_as_they_are(doc: dict[str, Any]) -> None:
    for name in ("OrderSnapshot", "OrderStateChanged", "OrderDeleted", "CommandResult"):
        text = (ROOT / "bridge" / "schemas" / f"{name}.avsc").read_text()
        assert doc["components"]["schemas"][name]["schema"] == json.loads(text)


def test_the_command_payload_is_the_commands_json_schema(doc: dict[str, Any]) -> None:
    """Put back the $defs the document moved to components/schemas: the commands' JSON Schema."""
    (message,) = [
        m
        for m in channel_messages(doc, "commands").values()
        if m["contentType"] == "application/json"
    ]
    payload = deref(doc, message["payload"])
    assert payload["schemaFormat"] == "application/schema+json;version=draft-07"
    text = json.dumps(payload["schema"]).replace("#/components/schemas/", "#/$defs/")
    rebuilt = json.loads(text)
    names = [r["$ref"].rpartition("/")[2] for r in rebuilt["oneOf"]]
    rebuilt["$defs"] = json.loads(
        json.dumps({n: doc["components"]["schemas"][n] for n in names}).replace(
            "#/components/schemas/", "#/$defs/"
        )
    )
    original = copy.deepcopy(command_json_schema())
    for key in ("$schema", "$id", "discriminator"):
        original.pop(key)
    assert rebuilt == original
    # ... and it judges commands as the bridge does (draft-07 validation).
    validator = jsonschema.Draft7Validator(rebuilt)
    common: dict[str, Any] = {
        "command_id": "c-1",
        "order_id": "o_1",
        "merchant": "norce",
        "channel": "1",
        "issued_at": NOW,
    }
    for command in (
        SetOrderState(state=OrderStatus("accepted"), **common),
        DeleteOrder(**common),
        RefreshOrder(reason="manual", **common),
    ):
        validator.validate(json.loads(command_to_json(command)))
    bad = json.loads(command_to_json(DeleteOrder(**common))) | {"state": "accepted"}
    assert not validator.is_valid(bad)


def test_notification_and_state_payloads_accept_what_the_bridge_writes(
    doc: dict[str, Any],
) -> None:
    schemas = doc["components"]["schemas"]
    body = {
        "notification": {"id": "n-1", "reference": "r", "scope": "s", "invoke": "i", "x": 1},
        "order": {"id": "o_1", "merchant": "norce", "channel": "1", "other": True},
    }
    parse_notification(json.dumps(body).encode())  # the ingress accepts it ...
    jsonschema.Draft7Validator(schemas["Notification"]).validate(body)  # ... and so does this
    missing = {"notification": body["notification"], "order": {"id": "o_1", "merchant": "m"}}
    with pytest.raises(InvalidCommandError):
        parse_notification(json.dumps(missing).encode())
    assert not jsonschema.Draft7Validator(schemas["Notification"]).is_valid(missing)
    state_validator = jsonschema.Draft7Validator(schemas["OrderState"])
    for state in (
        OrderState.of_order(ORDER, now=NOW, command_id="c-1"),
        OrderState.gone("accepted", now=NOW, command_id="c-2"),
    ):
        state_validator.validate(json.loads(state.encode()))


# -- headers ---------------------------------------------------------------------------------


def _src(headers: tuple[tuple[str, bytes | None], ...] = ()) -> SourceRecord:
    return SourceRecord("norce.order.commands", 0, 7, b"o_1", b"{}", headers, 0)


def test_every_output_header_the_bridge_writes_is_documented(
    doc: dict[str, Any], codec: AvroCodec
) -> None:
    order_id = ORDER["id"]
    cmd = SetOrderState(
        command_id="c-1",
        order_id=order_id,
        merchant="norce",
        channel="1",
        issued_at=NOW,
        state=OrderStatus("accepted"),
        correlation_id="corr-1",
    )
    delete = DeleteOrder(
        command_id="c-2", order_id=order_id, merchant="norce", channel="1", issued_at=NOW
    )
    outputs = [
        snapshot_output(cmd, ORDER, NOW),
        state_event_output(cmd, "processing", "accepted", None, NOW),
        result_output(Ids.of(cmd), _src(), Outcome.APPLIED, None, now=NOW),
    ]
    topics = {kind: kind.role for kind in OutputKind} | {ORDER_STATE_TOPIC: "orderState"}
    records = encode_outputs(
        Disposition(Outcome.APPLIED, "SetOrderState", outputs), topics, codec, state_partition=0
    )
    records += encode_outputs(
        Disposition(
            Outcome.APPLIED,
            "DeleteOrder",
            deleted_outputs(delete, "accepted", already=False, now=NOW),
        ),
        topics,
        codec,
        state_partition=0,
    )
    written: dict[str, set[str]] = {}
    for topic, _key, _value, headers, _partition in records:
        written.setdefault(topic, set()).update(name for name, _ in headers)
        values = dict(headers)
        if "norce.schema" in values:
            schema = (values["norce.schema"] or b"").decode()
            assert schema.rpartition(".")[2] in codec.schema_names
            assert schema == codec.schema_full_name(schema.rpartition(".")[2])
            assert values["content-type"] == b"application/avro"
    assert set(written) == {"snapshots", "events", "results", "orderState"}
    for channel, names in written.items():
        documented: set[str] = set()
        for message in channel_messages(doc, channel).values():
            documented |= header_names(doc, message)
        assert names <= documented, (channel, names - documented)
    output_headers = set(doc["components"]["schemas"]["OutputHeaders"]["properties"])
    # Documented and written: everything but the trace context (added by tracing, when on).
    assert output_headers - {"traceparent", "tracestate"} == (
        written["snapshots"] | written["events"] | written["results"]
    )


def test_every_dead_letter_header_the_bridge_writes_is_documented(doc: dict[str, Any]) -> None:
    (message,) = channel_messages(doc, "dlq").values()
    schema = deref(doc, message["headers"])
    documented = set(schema["properties"])
    assert schema["additionalProperties"] is True  # the original record's headers are kept
    cmd = DeleteOrder(
        command_id="c-2", order_id="o_1", merchant="norce", channel="1", issued_at=NOW
    )
    written: set[str] = set()
    for max_bytes in (1_000_000, 600):  # whole, and truncated (the __bridge.dlq.* headers)
        big = SourceRecord(
            "norce.order.commands", 2, 9, b"k" * 400, b"x" * 2000, (("h", b"v" * 300),), 0
        )
        out = dead_letter(
            big,
            "api_rejected",
            InvalidCommandError("api_rejected", "no"),
            stage="execute",
            now=NOW,
            http_status=400,
            attempts=1,
            ids=cmd,
            max_bytes=max_bytes,
        )
        written |= {name for name, _ in out.headers if name != "h"}
    assert "__bridge.dlq.truncated" in written
    assert "__bridge.dlq.original.key.size" in written
    assert written <= documented, written - documented
    jsonschema.Draft7Validator(schema).validate({name: "x" for name in written} | {"h": "original"})


def test_command_and_notification_headers_are_documented(doc: dict[str, Any]) -> None:
    cmd = RefreshOrder(
        command_id="ntf-1",
        order_id="o_1",
        merchant="norce",
        channel="1",
        issued_at=NOW,
        reason="notification",
        correlation_id="corr",
    )
    _key, value, headers = command_record(cmd, ("norce.notification.received-at", b"1"))
    # ... and as `order-bridge dlq replay` re-drives it after it was dead-lettered.
    letter = dead_letter(
        SourceRecord("norce.order.commands", 1, 5, b"o_1", value, tuple(headers), 0),
        "processing_error",
        RuntimeError("boom"),
        stage="execute",
        now=NOW,
        ids=cmd,
    )
    assert isinstance(letter.value, bytes)  # a dead letter keeps the original bytes
    dl = parse_dead_letter(1, 9, 0, letter.key, letter.value, letter.headers)
    redriven = redrive_headers(dl, "norce.order.commands.dlq", NOW)
    assert any(name.startswith("norce.redrive.") for name, _ in redriven)
    for message in channel_messages(doc, "commands").values():
        assert {name for name, _ in headers} <= header_names(doc, message)
        assert {name for name, _ in redriven} <= header_names(doc, message)
    stored = parse_notification(
        json.dumps(
            {
                "notification": {"id": "n-1", "reference": "r", "scope": "s", "invoke": "i"},
                "order": {"id": "o_1", "merchant": "norce", "channel": "1"},
            }
        ).encode()
    )
    (message,) = channel_messages(doc, "notifications").values()
    schema = deref(doc, message["headers"])
    values = {name: value.decode() for name, value in notification_headers(stored, 1)}
    jsonschema.Draft7Validator(schema).validate(values)
    assert set(schema["required"]) == set(values)


def test_from_env_documents_the_deployment_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_TOPICS__EVENTS", "acme.order.events")
    monkeypatch.setenv("BRIDGE_KAFKA__GROUP_ID", "acme-bridge")
    assert main(["asyncapi", "--from-env", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["channels"]["events"]["address"] == "acme.order.events"
    receive = doc["operations"]["receiveCommands"]["bindings"]["kafka"]["groupId"]
    assert receive["enum"] == ["acme-bridge"]
    relay = doc["operations"]["receiveNotifications"]["bindings"]["kafka"]["groupId"]
    assert relay["enum"] == ["acme-bridge.notifications"]
    # Without --from-env the environment does not matter: the committed defaults.
    assert main(["asyncapi", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["channels"]["events"]["address"] == (
        "norce.order.events"
    )
    monkeypatch.setenv("BRIDGE_TOPICS__PARTITIONS", "0")
    assert main(["asyncapi", "--from-env"]) == 2  # a bad setting: one line, exit 2
    assert "BRIDGE_TOPICS__PARTITIONS" in capsys.readouterr().err
