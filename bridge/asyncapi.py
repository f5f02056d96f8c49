"""The AsyncAPI 3.0 contract of the bridge's topics, generated from the code.

``order-bridge asyncapi`` prints it; ``asyncapi.yaml`` at the repository root is the committed
copy (``tests/unit/test_asyncapi.py`` fails when it is not current, and
``tests/deploy/test_asyncapi_valid.py`` validates both with the official AsyncAPI parser).

Everything comes from the code, nothing is restated by hand where the code has it:

* channels: one per topic the bridge uses (``TOPIC_ROLES``, the commands, notifications and
  order state topics), addressed by the :class:`~bridge.config.TopicSettings` names, with the
  topic configuration the bridge creates them with (:func:`bridge.app.topic_configs`);
* payloads: the Avro schemas the codec loads (the packaged ``*.avsc`` files, their JSON as it
  is), and the JSON Schema of the commands (:func:`bridge.commands.command_json_schema`, its
  ``$defs`` moved to ``components/schemas``);
* headers: the names the bridge reads and writes (``bridge.outputs``, ``bridge.commands``,
  ``bridge.deadletter``, ``bridge.notification``; the unit test checks each record the code
  builds against them), plus the W3C trace context headers.

The document is deterministic: a fixed order where order carries meaning (Avro fields, the
channel list), sorted names elsewhere (headers), so the "is current" test is stable.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

from bridge import __version__
from bridge.config import BridgeSettings
from bridge.vocabulary import TOPIC_ROLES, DeadLetterReason, Outcome, OutputKind

__all__ = [
    "ASYNCAPI_VERSION",
    "AVRO_CONTENT_TYPE",
    "AVRO_SCHEMAS_BY_CHANNEL",
    "AVRO_SCHEMA_FORMAT",
    "CHANNELS",
    "JSON_SCHEMA_FORMAT",
    "build_document",
    "dump_document",
]

ASYNCAPI_VERSION: Final = "3.0.0"
KAFKA_BINDING_VERSION: Final = "0.5.0"
AVRO_SCHEMA_FORMAT: Final = "application/vnd.apache.avro+json;version=1.9.0"
JSON_SCHEMA_FORMAT: Final = "application/schema+json;version=draft-07"
AVRO_CONTENT_TYPE: Final = "application/avro"
"""The ``content-type`` of the bridge's single-object Avro records (``bridge.outputs``)."""
CONFLUENT_AVRO_CONTENT_TYPE: Final = "application/vnd.confluent.avro"
"""The ``content-type`` of Confluent-framed Avro records (``BRIDGE_AVRO__ENCODING=confluent``)."""
JSON_CONTENT_TYPE: Final = "application/json"
PLACEHOLDER_HOST: Final = "kafka.example.internal:9092"

# -- channels ------------------------------------------------------------------------------------

COMMANDS: Final = "commands"
NOTIFICATIONS: Final = "notifications"
ORDER_STATE: Final = "orderState"

CHANNELS: Final[tuple[str, ...]] = (
    COMMANDS,
    TOPIC_ROLES[OutputKind.SNAPSHOT],
    TOPIC_ROLES[OutputKind.EVENT],
    TOPIC_ROLES[OutputKind.RESULT],
    TOPIC_ROLES[OutputKind.DLQ],
    NOTIFICATIONS,
    ORDER_STATE,
)
"""Every channel of the document, in document order: the commands, the output topics (by their
role, ``bridge.vocabulary.TOPIC_ROLES``), the notifications and the order state store."""

_TOPIC_FIELD: Final[dict[str, str]] = {
    COMMANDS: "commands",
    TOPIC_ROLES[OutputKind.SNAPSHOT]: "snapshots",
    TOPIC_ROLES[OutputKind.EVENT]: "events",
    TOPIC_ROLES[OutputKind.RESULT]: "results",
    TOPIC_ROLES[OutputKind.DLQ]: "dlq",
    NOTIFICATIONS: "notifications",
    ORDER_STATE: "order_state",
}
"""Channel -> the ``TopicSettings`` field (``BRIDGE_TOPICS__<FIELD>``) naming its topic."""

AVRO_SCHEMAS_BY_CHANNEL: Final[dict[str, tuple[str, ...]]] = {
    COMMANDS: ("OrderCommand",),
    TOPIC_ROLES[OutputKind.SNAPSHOT]: ("OrderSnapshot",),
    TOPIC_ROLES[OutputKind.EVENT]: ("OrderStateChanged", "OrderDeleted"),
    TOPIC_ROLES[OutputKind.RESULT]: ("CommandResult",),
}
"""Which Avro records (short names of the codec's schemas) travel on which channel."""

_CHANNEL_TEXT: Final[dict[str, tuple[str, str]]] = {
    COMMANDS: (
        "Order commands (input)",
        "Order commands for the bridge to execute against the Norce Order API: SetOrderState, "
        "DeleteOrder, RefreshOrder. JSON (UTF-8) or Avro `OrderCommand` (single-object "
        "encoding), told apart by `content-type` or the Avro marker bytes. Key: the order id "
        "(recommended; the bridge orders by the `orderId` in the value, but the order state "
        "store is per partition, so all commands of one order must share a partition). "
        "Partitions: the bridge's parallelism across replicas (one consumer per partition); "
        "the order state topic must have as many.",
    ),
    TOPIC_ROLES[OutputKind.SNAPSHOT]: (
        "Order snapshots (compacted)",
        "The full order as Norce returned it after each change, Avro `OrderSnapshot`; a "
        "tombstone (null value) after a delete. Compacted: per order, the newest snapshot. "
        "Key: the order id. With exactly-once outputs read it `read_committed`.",
    ),
    TOPIC_ROLES[OutputKind.EVENT]: (
        "Order events",
        "State changes: Avro `OrderStateChanged` (source `bridge` or `external`) and "
        "`OrderDeleted`; `eventId` is deterministic (command id + kind), so replays are "
        "idempotent downstream. Key: the order id.",
    ),
    TOPIC_ROLES[OutputKind.RESULT]: (
        "Command results",
        "One Avro `CommandResult` per handled command (outcome "
        + ", ".join(f"`{o.value}`" for o in Outcome)
        + "); correlate by `commandId`. Key: the order id.",
    ),
    TOPIC_ROLES[OutputKind.DLQ]: (
        "Dead letters",
        "Commands (and notifications) the bridge could not handle: the original key, value "
        "and headers, plus Kafka Connect style `__connect.errors.*` headers "
        "(`__connect.errors.reason` is one of the dead-letter reasons). Re-drive with "
        "`order-bridge dlq replay`. Key: the original record's key (normally the order id).",
    ),
    NOTIFICATIONS: (
        "Norce order notifications",
        "Deliveries the notification ingress accepted (`BRIDGE_INGRESS__ENABLED`), stored "
        "before the 2xx answer: the body as received. The relay turns each into a "
        "RefreshOrder command on the commands topic. Key: the order id.",
    ),
    ORDER_STATE: (
        "Order state store (internal)",
        "INTERNAL to the bridge, not a public interface: what the bridge last published per "
        "order (a changelog like Kafka Streams'). Compacted; as many partitions as the "
        "commands topic (a record goes to its command's source partition). Key: the order id.",
    ),
}

# -- headers -------------------------------------------------------------------------------------

_TRACE_HEADERS: Final[dict[str, str]] = {
    "traceparent": "W3C trace context (`BRIDGE_OTEL__ENABLED`): the trace this record is part of.",
    "tracestate": "W3C trace context: vendor-specific trace state, with `traceparent`.",
}

_ID_HEADERS: Final[dict[str, str]] = {
    "norce.command.id": "The command's `commandId`.",
    "norce.order.id": "The order id (the record key).",
    "norce.correlation.id": "The command's `correlationId`, when it has one.",
}

COMMAND_HEADERS: Final[dict[str, str]] = {
    "content-type": (
        "`application/json` (charset UTF-8 only), `application/avro` or "
        "`application/vnd.apache.avro+binary` (case-insensitive, parameters allowed); "
        "without it the Avro marker bytes decide."
    ),
    "norce.notification.received-at": (
        "On a RefreshOrder from the notification relay: when the ingress received the "
        "notification (ms since the epoch); times `norce_bridge_notification_to_snapshot_seconds`."
    ),
    "norce.redrive.at": "Set by `order-bridge dlq replay`: when the record was re-driven.",
    "norce.redrive.dlq-offset": "Set by `order-bridge dlq replay`: the dead letter's offset.",
    "norce.redrive.dlq-partition": "Set by `order-bridge dlq replay`: the dead letter's partition.",
    "norce.redrive.dlq-topic": "Set by `order-bridge dlq replay`: the dead-letter topic.",
    "norce.redrive.reason": "Set by `order-bridge dlq replay`: the dead letter's reason.",
    **_ID_HEADERS,
    **_TRACE_HEADERS,
}
"""Headers the bridge reads on a command (only ``content-type`` and the received-at time change
what it does) and those its own tools write (send, refresh, the relay, dlq replay)."""

OUTPUT_HEADERS: Final[dict[str, str]] = {
    "content-type": (
        f"`{AVRO_CONTENT_TYPE}` (single-object encoding, the default) or "
        f"`{CONFLUENT_AVRO_CONTENT_TYPE}` (Confluent wire format, "
        "`BRIDGE_AVRO__ENCODING=confluent`)."
    ),
    "norce.schema": (
        "The full name of the value's Avro record, e.g. `com.norce.bridge.v1.OrderSnapshot`."
    ),
    **_ID_HEADERS,
    **_TRACE_HEADERS,
}
"""Headers of snapshots, events and results (tombstones: the id and trace headers only)."""

DEAD_LETTER_HEADERS: Final[dict[str, str]] = {
    "__connect.errors.topic": "The topic of the original record.",
    "__connect.errors.partition": "The partition of the original record.",
    "__connect.errors.offset": "The offset of the original record.",
    "__connect.errors.stage": "Where handling failed (e.g. `parse`, `execute`, `internal`).",
    "__connect.errors.class.name": "The error's class (module-qualified).",
    "__connect.errors.exception.message": "The error message (bounded; never the input echoed).",
    "__connect.errors.reason": "The dead-letter reason: one of "
    + ", ".join(f"`{r.value}`" for r in DeadLetterReason)
    + ".",
    "__connect.errors.timestamp": "When the record was dead-lettered (RFC 3339).",
    "__connect.errors.http.status": "The Norce API's HTTP status, when an API answer decided.",
    "__connect.errors.attempts": "How many API attempts were made.",
    "__bridge.dlq.truncated": "`true` when the original value was cut to fit the record limit.",
    "__bridge.dlq.original.size": "The original value's size in bytes (when truncated).",
    "__bridge.dlq.original.sha256": "SHA-256 (hex) of the original value (when truncated).",
    "__bridge.dlq.original.key.size": "The original key's size in bytes (when the key was cut).",
    "__bridge.dlq.original.headers.dropped": "`true` when the original headers did not fit.",
    **_ID_HEADERS,
    **_TRACE_HEADERS,
}
"""Headers the bridge adds to a dead letter; the original record's headers are kept too."""

NOTIFICATION_HEADERS: Final[dict[str, str]] = {
    "content-type": "`application/json`.",
    "norce.order.id": "The notification's `order.id` (the record key).",
    "norce.notification.id": "The notification's `notification.id`.",
    "norce.notification.received-at": "When the ingress received it (ms since the epoch).",
    **_TRACE_HEADERS,
}

ORDER_STATE_HEADERS: Final[dict[str, str]] = {
    "norce.command.id": "The command whose outputs this state record belongs to.",
}

_REQUIRED_HEADERS: Final[dict[str, tuple[str, ...]]] = {
    "DeadLetterHeaders": (
        "__connect.errors.offset",
        "__connect.errors.partition",
        "__connect.errors.reason",
    ),
    "NotificationHeaders": (
        "content-type",
        "norce.notification.id",
        "norce.notification.received-at",
        "norce.order.id",
    ),
    "OrderStateHeaders": ("norce.command.id",),
}


def _headers_schema(name: str, headers: Mapping[str, str], *, open_: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": f"Kafka record headers ({name}); values are UTF-8 text.",
        "properties": {h: {"type": "string", "description": headers[h]} for h in sorted(headers)},
        "additionalProperties": open_,
    }
    required = _REQUIRED_HEADERS.get(name)
    if required:
        schema["required"] = sorted(required)
    return schema


# -- payloads ------------------------------------------------------------------------------------


def _avro_schemas(source: Path | Traversable | None) -> dict[str, dict[str, Any]]:
    """Short name -> the schema JSON of each ``*.avsc`` the codec loads (as the file has it)."""
    from bridge.codec import packaged_schemas

    directory = packaged_schemas() if source is None else source
    out: dict[str, dict[str, Any]] = {}
    for f in sorted(directory.iterdir(), key=lambda f: f.name):
        if f.name.endswith(".avsc") and f.is_file():
            out[f.name.removesuffix(".avsc")] = json.loads(f.read_text(encoding="utf-8"))
    return out


def _rewrite_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.replace("#/$defs/", prefix)
                if k == "$ref" and isinstance(v, str)
                else _rewrite_refs(v, prefix)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix) for v in node]
    return node


def _command_json_schemas() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The commands' JSON Schema as (payload, definitions for ``components/schemas``).

    Its ``$defs`` move to ``components/schemas`` (a ``$ref`` in an AsyncAPI document resolves
    against the document), its draft 2020-12 ``$schema``/``$id`` go (the payload is declared
    draft-07, which the parser validates; nothing in it needs a newer draft), and pydantic's
    OpenAPI-style ``discriminator`` object becomes the ``type`` property's ``const`` in each
    ``oneOf`` branch, which is already there."""
    from bridge.commands import command_json_schema

    schema = copy.deepcopy(command_json_schema())
    defs = schema.pop("$defs", {})
    for key in ("$schema", "$id", "discriminator"):
        schema.pop(key, None)
    prefix = "#/components/schemas/"
    payload = _rewrite_refs(schema, prefix)
    definitions = {name: _rewrite_refs(defs[name], prefix) for name in sorted(defs)}
    return payload, definitions


_NOTIFICATION_SCHEMA_NOTE: Final = (
    "A Norce order notification delivery as the ingress received and validated it "
    "(bridge.notification.parse_notification); other fields are kept as they are."
)


def _notification_schema() -> dict[str, Any]:
    from bridge.commands import MAX_SCOPE_LENGTH, SCOPE_PATTERN
    from bridge.notification import MAX_NOTIFICATION_ID_LENGTH
    from bridge.order_ids import MAX_ORDER_ID_LENGTH

    text = {"type": "string", "minLength": 1, "maxLength": 4096}
    scope = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_SCOPE_LENGTH,
        "pattern": SCOPE_PATTERN,
    }
    return {
        "type": "object",
        "description": _NOTIFICATION_SCHEMA_NOTE,
        "required": ["notification", "order"],
        "properties": {
            "notification": {
                "type": "object",
                "required": ["id", "invoke", "reference", "scope"],
                "properties": {
                    "id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_NOTIFICATION_ID_LENGTH,
                        "pattern": r"^[\x21-\x7e]+$",
                        "description": "Notification id: printable ASCII without blanks.",
                    },
                    "invoke": text,
                    "reference": text,
                    "scope": text,
                },
                "additionalProperties": True,
            },
            "order": {
                "type": "object",
                "required": ["channel", "id", "merchant"],
                "properties": {
                    "channel": scope,
                    "id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_ORDER_ID_LENGTH,
                        "description": "Order id, safe as one URL path segment "
                        "(bridge.order_ids.validate_order_id).",
                    },
                    "merchant": scope,
                },
                "additionalProperties": True,
            },
        },
        "additionalProperties": True,
    }


def _order_state_schema() -> dict[str, Any]:
    from bridge.order_state import STATE_VERSION

    nullable_string = {"type": ["string", "null"]}
    return {
        "type": "object",
        "description": "What the bridge last published for the order (bridge.order_state).",
        "required": ["at", "commandId", "deleted", "digest", "status", "transitions", "v"],
        "properties": {
            "v": {"type": "integer", "const": STATE_VERSION, "description": "Record version."},
            "status": {**nullable_string, "description": "The order status published."},
            "transitions": {"type": "integer", "minimum": 0},
            "deleted": {"type": "boolean", "description": "The last publication was a tombstone."},
            "digest": {**nullable_string, "description": "SHA-256 of the order JSON published."},
            "at": {"type": "string", "format": "date-time"},
            "commandId": {"type": "string"},
        },
        "additionalProperties": False,
    }


# -- the document --------------------------------------------------------------------------------


def _ref(*path: str) -> dict[str, str]:
    return {"$ref": "#/" + "/".join(path)}


def _kafka_message_binding(avro: bool) -> dict[str, Any]:
    binding: dict[str, Any] = {
        "key": {"type": "string", "description": "The order id (UTF-8)."},
        "bindingVersion": KAFKA_BINDING_VERSION,
    }
    if avro:
        binding["schemaIdLocation"] = "payload"
        binding["schemaIdPayloadEncoding"] = (
            "single-object: C3 01 + 8-byte CRC-64-AVRO fingerprint (default); "
            "confluent: magic byte 0 + 4-byte schema id (BRIDGE_AVRO__ENCODING=confluent)"
        )
    return binding


def build_document(
    settings: BridgeSettings | None = None, *, schemas_dir: Path | Traversable | None = None
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the bridge's topics.

    ``settings`` None: the defaults (the committed ``asyncapi.yaml``); a deployment's settings
    give its topic names, partitions, replication and group ids. ``schemas_dir``: as the codec's
    (None: the packaged schemas; ``settings.schemas_dir`` when given)."""
    from bridge.app import topic_configs

    s = settings if settings is not None else BridgeSettings.model_construct()
    t = s.topics
    avro = _avro_schemas(schemas_dir if schemas_dir is not None else s.schemas_dir)
    missing = sorted({n for ns in AVRO_SCHEMAS_BY_CHANNEL.values() for n in ns} - set(avro))
    extra = sorted(set(avro) - {n for ns in AVRO_SCHEMAS_BY_CHANNEL.values() for n in ns})
    if missing or extra:
        raise ValueError(
            f"Avro schemas not as documented: missing {missing}, not in a channel {extra}"
        )
    configs = topic_configs(s)
    command_payload, command_defs = _command_json_schemas()

    schemas: dict[str, Any] = {}
    for name in sorted(avro):
        schemas[name] = {"schemaFormat": AVRO_SCHEMA_FORMAT, "schema": avro[name]}
    schemas["OrderCommandJson"] = {"schemaFormat": JSON_SCHEMA_FORMAT, "schema": command_payload}
    for name, definition in command_defs.items():
        schemas[name] = definition
    schemas["Notification"] = _notification_schema()
    schemas["OrderState"] = _order_state_schema()
    schemas["CommandHeaders"] = _headers_schema("CommandHeaders", COMMAND_HEADERS, open_=True)
    schemas["OutputHeaders"] = _headers_schema("OutputHeaders", OUTPUT_HEADERS, open_=False)
    schemas["DeadLetterHeaders"] = _headers_schema(
        "DeadLetterHeaders", DEAD_LETTER_HEADERS, open_=True
    )
    schemas["NotificationHeaders"] = _headers_schema(
        "NotificationHeaders", NOTIFICATION_HEADERS, open_=False
    )
    schemas["OrderStateHeaders"] = _headers_schema(
        "OrderStateHeaders", ORDER_STATE_HEADERS, open_=False
    )

    def avro_message(name: str, summary: str) -> dict[str, Any]:
        return {
            "name": name,
            "title": name,
            "summary": summary,
            "contentType": AVRO_CONTENT_TYPE,
            "headers": _ref("components", "schemas", "OutputHeaders"),
            "payload": _ref("components", "schemas", name),
            "bindings": {"kafka": _kafka_message_binding(True)},
        }

    messages: dict[str, Any] = {
        "OrderCommandJson": {
            "name": "OrderCommandJson",
            "title": "Order command (JSON)",
            "summary": "SetOrderState, DeleteOrder or RefreshOrder as strict JSON (UTF-8); "
            "unknown fields are rejected.",
            "contentType": JSON_CONTENT_TYPE,
            "headers": _ref("components", "schemas", "CommandHeaders"),
            "payload": _ref("components", "schemas", "OrderCommandJson"),
            "bindings": {"kafka": _kafka_message_binding(False)},
        },
        "OrderCommand": {
            **avro_message("OrderCommand", "The same commands as Avro (single-object encoding)."),
            "title": "Order command (Avro)",
            "headers": _ref("components", "schemas", "CommandHeaders"),
        },
        "OrderSnapshot": avro_message("OrderSnapshot", "The order as Norce returned it."),
        "OrderTombstone": {
            "name": "OrderTombstone",
            "title": "Order tombstone",
            "summary": "Null value after the order was deleted (compaction removes the order).",
            "headers": _ref("components", "schemas", "OutputHeaders"),
            "payload": {"type": "null"},
            "bindings": {"kafka": _kafka_message_binding(False)},
        },
        "OrderStateChanged": avro_message("OrderStateChanged", "An order changed state."),
        "OrderDeleted": avro_message("OrderDeleted", "An order was deleted."),
        "CommandResult": avro_message("CommandResult", "How one command ended."),
        "DeadLetter": {
            "name": "DeadLetter",
            "title": "Dead letter",
            "summary": "The original record (key, value, headers) with the error headers.",
            "contentType": "application/octet-stream",
            "headers": _ref("components", "schemas", "DeadLetterHeaders"),
            "payload": {
                "description": "The original value's bytes, unchanged (truncated only as the "
                "__bridge.dlq.* headers say); its content type is the original's.",
            },
            "bindings": {"kafka": _kafka_message_binding(False)},
        },
        "Notification": {
            "name": "Notification",
            "title": "Norce order notification",
            "summary": "A notification delivery, stored as received.",
            "contentType": JSON_CONTENT_TYPE,
            "headers": _ref("components", "schemas", "NotificationHeaders"),
            "payload": _ref("components", "schemas", "Notification"),
            "bindings": {"kafka": _kafka_message_binding(False)},
        },
        "OrderState": {
            "name": "OrderState",
            "title": "Order state record (internal)",
            "summary": "What the bridge last published for the order.",
            "contentType": JSON_CONTENT_TYPE,
            "headers": _ref("components", "schemas", "OrderStateHeaders"),
            "payload": _ref("components", "schemas", "OrderState"),
            "bindings": {"kafka": _kafka_message_binding(False)},
        },
    }
    channel_messages: dict[str, tuple[str, ...]] = {
        COMMANDS: ("OrderCommandJson", "OrderCommand"),
        TOPIC_ROLES[OutputKind.SNAPSHOT]: ("OrderSnapshot", "OrderTombstone"),
        TOPIC_ROLES[OutputKind.EVENT]: ("OrderStateChanged", "OrderDeleted"),
        TOPIC_ROLES[OutputKind.RESULT]: ("CommandResult",),
        TOPIC_ROLES[OutputKind.DLQ]: ("DeadLetter",),
        NOTIFICATIONS: ("Notification",),
        ORDER_STATE: ("OrderState",),
    }

    channels: dict[str, Any] = {}
    for channel in CHANNELS:
        field = _TOPIC_FIELD[channel]
        topic = getattr(t, field)
        title, description = _CHANNEL_TEXT[channel]
        topic_config: dict[str, Any] = {}
        for key, value in sorted(configs.get(topic, {}).items()):
            topic_config[key] = value.split(",") if key == "cleanup.policy" else int(value)
        if "cleanup.policy" not in topic_config:
            topic_config["cleanup.policy"] = ["delete"]
        binding: dict[str, Any] = {
            "topic": topic,
            "partitions": t.partitions,
            "replicas": t.replication_factor,
            "topicConfiguration": dict(sorted(topic_config.items())),
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
        channels[channel] = {
            "address": topic,
            "title": title,
            "description": f"{description} Topic name: `BRIDGE_TOPICS__{field.upper()}`; "
            "partitions and replicas are what the bridge creates a missing topic with "
            "(`BRIDGE_TOPICS__PARTITIONS`, `BRIDGE_TOPICS__REPLICATION_FACTOR`).",
            "messages": {m: _ref("components", "messages", m) for m in channel_messages[channel]},
            "bindings": {"kafka": binding},
        }
        if channel == ORDER_STATE:
            channels[channel]["tags"] = [{"name": "internal"}]

    group = s.kafka.group_id
    relay_group = s.ingress.relay_group(group)

    def operation(
        action: str, channel: str, summary: str, group_id: str | None = None
    ) -> dict[str, Any]:
        op: dict[str, Any] = {
            "action": action,
            "channel": _ref("channels", channel),
            "summary": summary,
            "messages": [
                _ref("channels", channel, "messages", m) for m in channel_messages[channel]
            ],
        }
        if group_id is not None:
            op["bindings"] = {
                "kafka": {
                    "groupId": {"type": "string", "enum": [group_id]},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            }
        return op

    operations: dict[str, Any] = {
        "receiveCommands": operation(
            "receive",
            COMMANDS,
            "The bridge consumes commands (group `BRIDGE_KAFKA__GROUP_ID`), executes them "
            "against the Norce API and commits when their outputs are acknowledged.",
            group,
        ),
        "sendCommands": operation(
            "send",
            COMMANDS,
            "RefreshOrder commands from the notification relay and `order-bridge refresh`; "
            "`order-bridge send` and `order-bridge dlq replay` write commands too.",
        ),
        "sendSnapshots": operation("send", "snapshots", "A snapshot (or tombstone) per change."),
        "sendEvents": operation("send", "events", "An event per state change or delete."),
        "sendResults": operation("send", "results", "One result per handled command."),
        "sendDeadLetters": operation(
            "send", "dlq", "Records that could not be handled (commands and notifications)."
        ),
        "receiveDeadLetters": operation(
            "receive", "dlq", "`order-bridge dlq list|show|replay` read the dead letters."
        ),
        "sendNotifications": operation(
            "send", NOTIFICATIONS, "The ingress stores each accepted notification delivery."
        ),
        "receiveNotifications": operation(
            "receive",
            NOTIFICATIONS,
            "The relay (group `<BRIDGE_KAFKA__GROUP_ID>.notifications` unless "
            "`BRIDGE_INGRESS__RELAY_GROUP_ID`) turns each into a RefreshOrder command.",
            relay_group,
        ),
        "sendOrderState": operation(
            "send", ORDER_STATE, "Internal: the order's new state, with its outputs."
        ),
        "receiveOrderState": operation(
            "receive",
            ORDER_STATE,
            "Internal: a partition's store is read from the beginning on assignment.",
        ),
    }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:norce-order-bridge",
        "info": {
            "title": "norce-order-bridge",
            "version": __version__,
            "description": (
                "Kafka topics of norce-order-bridge: order commands in, Norce Checkout order "
                "snapshots, state-change events and command results out (Avro), dead letters, "
                "the notification ingress's topic and the internal order state store. "
                "Generated by `order-bridge asyncapi` from the code; see the README section "
                "'Consuming the topics'. Topic names are the defaults (each configurable)."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": AVRO_CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": PLACEHOLDER_HOST,
                "protocol": "kafka",
                "description": "Placeholder: the brokers of BRIDGE_KAFKA__BOOTSTRAP_SERVERS "
                "(TLS and SASL per BRIDGE_KAFKA__SECURITY_PROTOCOL).",
                "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION}},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def dump_document(document: Mapping[str, Any], fmt: str = "yaml") -> str:
    """The document as YAML (block style, no aliases) or JSON (indented), newline-terminated."""
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if fmt != "yaml":
        raise ValueError(f"unknown format {fmt!r} (yaml or json)")
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text: str = yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )
    return text
