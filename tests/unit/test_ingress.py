"""The notification ingress's pure parts: payload validation, auth settings, relay commands.

HTTP behaviour (status codes, limits, timeouts, the Kafka write) is tested on the real broker
in ``tests/integration/test_ingress.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bridge.config import IngressSettings, load_settings
from bridge.errors import ConfigError
from bridge.metrics import BridgeMetrics
from bridge.notification import (
    MAX_NOTIFICATION_ID_LENGTH,
    NotificationError,
    load_ingress_auth,
    notification_headers,
    parse_notification,
)
from bridge.notify_relay import command_id, received_at_ms, refresh_command

SECRET = "s3cret-webhook-value-0123"
TOKEN = "tok_0123456789abcdefXYZ"


def payload(**order: Any) -> dict[str, Any]:
    base_order: dict[str, Any] = {
        "id": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
        "merchant": "norce",
        "channel": "se",
        "state": {"currentStatus": "completed"},
    }
    base_order.update(order)
    return {
        "notification": {
            "id": "ocGooDddTOjKOuFmNnkEozEpfuTh",
            "adapterId": "bridge",
            "reference": "state-changes",
            "scope": "/state/currentStatus",
            "schema": {"const": "completed"},
            "invoke": "https://bridge.example/notifications",
        },
        "order": {k: v for k, v in base_order.items() if v is not ...},
    }


def body(d: Any) -> bytes:
    return json.dumps(d).encode()


def test_a_documented_delivery_is_accepted() -> None:
    n = parse_notification(body(payload()))
    assert (n.notification_id, n.order_id, n.merchant, n.channel) == (
        "ocGooDddTOjKOuFmNnkEozEpfuTh",
        "o_yClTSySjyAuuBjmiBlHCjuEcTf",
        "norce",
        "se",
    )


MALFORMED: list[tuple[bytes, str]] = [
    (b"", "invalid_json"),
    (b"{", "invalid_json"),
    (b"\xef\xbb\xbf{}", "invalid_json"),
    (b'{"a": 1, "a": 2}', "invalid_json"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b'{"x": NaN}', "invalid_json"),
    (b'{"x": 1e400}', "invalid_json"),
    (b"[" * 40 + b"]" * 40, "invalid_json"),
    (b'{"order": {"id": "\\ud800"}}', "invalid_json"),
]


@pytest.mark.parametrize(("raw", "reason"), MALFORMED)
def test_malformed_json_is_refused_with_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(NotificationError) as info:
        parse_notification(raw)
    assert (info.value.outcome, info.value.reason) == ("malformed", reason)


def _without(d: dict[str, Any], path: str) -> dict[str, Any]:
    top, _, name = path.partition(".")
    del d[top][name]
    return d


HOSTILE_ORDER_IDS = [
    "../x",
    "..",
    ".",
    "a/b",
    "a?b",
    "a#b",
    "a%2Fb",
    "a\\b",
    "a b",
    "a\r\nX-Injected: 1",
    "a\nb",
    "a\u200bb",
    "\u202eevil",
    "x" * 4096,
    "",
]


@pytest.mark.parametrize(
    ("doc", "reason", "field"),
    [
        ([], "not_an_object", None),
        ("x", "not_an_object", None),
        ({"order": payload()["order"]}, "missing_field", "notification"),
        ({"notification": payload()["notification"]}, "missing_field", "order"),
        ({**payload(), "order": "o_1"}, "invalid_field", "order"),
        (_without(payload(), "notification.id"), "missing_field", "notification.id"),
        (_without(payload(), "notification.reference"), "missing_field", "notification.reference"),
        (_without(payload(), "notification.scope"), "missing_field", "notification.scope"),
        (_without(payload(), "notification.invoke"), "missing_field", "notification.invoke"),
        (_without(payload(), "order.id"), "missing_field", "order.id"),
        (_without(payload(), "order.merchant"), "missing_field", "order.merchant"),
        (_without(payload(), "order.channel"), "missing_field", "order.channel"),
        (payload(id=12345), "bad_order_id", "order.id"),
        (payload(merchant="nor\r\nce"), "invalid_field", "order.merchant"),
        (payload(channel="x" * 65), "invalid_field", "order.channel"),
        (payload(channel=1), "invalid_field", "order.channel"),
        *[(payload(id=bad), "bad_order_id", "order.id") for bad in HOSTILE_ORDER_IDS],
    ],
)
def test_invalid_payloads_name_a_reason_and_field_never_the_input(
    doc: Any, reason: str, field: str | None
) -> None:
    with pytest.raises(NotificationError) as info:
        parse_notification(body(doc))
    err = info.value
    assert (err.outcome, err.reason, err.field) == ("invalid", reason, field)
    if isinstance(doc, dict) and isinstance(doc.get("order"), dict):
        order_id = doc["order"].get("id")
        if isinstance(order_id, str) and len(order_id) > 3:
            assert order_id not in err.message


@pytest.mark.parametrize(
    "nid",
    ["", "a b", "a\nb", "é", "x" * (MAX_NOTIFICATION_ID_LENGTH + 1), 7],
)
def test_notification_ids_must_fit_a_header_and_a_command_id(nid: Any) -> None:
    doc = payload()
    doc["notification"]["id"] = nid
    with pytest.raises(NotificationError) as info:
        parse_notification(body(doc))
    assert info.value.field == "notification.id"


def test_the_longest_notification_id_still_makes_a_valid_command_id() -> None:
    cid = command_id("n" * MAX_NOTIFICATION_ID_LENGTH, b"{}")
    assert len(cid) <= 128


def test_stored_record_headers() -> None:
    n = parse_notification(body(payload()))
    assert dict(notification_headers(n, 1_700_000_000_123)) == {
        "content-type": b"application/json",
        "norce.order.id": b"o_yClTSySjyAuuBjmiBlHCjuEcTf",
        "norce.notification.id": b"ocGooDddTOjKOuFmNnkEozEpfuTh",
        "norce.notification.received-at": b"1700000000123",
    }


def test_refresh_command_follows_the_contract() -> None:
    raw = body(payload())
    n = parse_notification(raw)
    key, value, headers = refresh_command(n, raw, 1_764_633_600_250)
    cid = f"ntf-ocGooDddTOjKOuFmNnkEozEpfuTh-{hashlib.sha256(raw).hexdigest()[:12]}"
    assert key == b"o_yClTSySjyAuuBjmiBlHCjuEcTf"
    assert json.loads(value) == {
        "type": "RefreshOrder",
        "commandId": cid,
        "orderId": "o_yClTSySjyAuuBjmiBlHCjuEcTf",
        "merchant": "norce",
        "channel": "se",
        "issuedAt": "2025-12-02T00:00:00.250000Z",
        "reason": "notification",
    }
    assert dict(headers) == {
        "content-type": b"application/json",
        "norce.command.id": cid.encode(),
        "norce.order.id": key,
        "norce.notification.received-at": b"1764633600250",
    }
    # The same delivery relayed twice is the same command, byte for byte.
    assert refresh_command(n, raw, 1_764_633_600_250) == (key, value, headers)


@pytest.mark.parametrize("received_ms", [9_999_999_999_999_999, -9_999_999_999_999_999])
def test_a_received_at_beyond_any_date_is_an_invalid_notification(received_ms: int) -> None:
    """The header accepts 16 digits; a value past year 9999 (only a record written beside the
    ingress can carry one) is dead-lettered as bad_timestamp, not an error that made the relay
    re-read its batch forever."""
    raw = body(payload())
    n = parse_notification(raw)
    with pytest.raises(NotificationError) as info:
        refresh_command(n, raw, received_ms)
    assert info.value.reason == "bad_timestamp"
    assert info.value.field == "norce.notification.received-at"


def test_received_at_falls_back_to_the_record_timestamp() -> None:
    assert received_at_ms([("norce.notification.received-at", b"12")], 99) == 12
    assert received_at_ms([("norce.notification.received-at", b"1e3")], 99) == 99
    assert received_at_ms([("norce.notification.received-at", None)], 99) == 99
    assert received_at_ms(None, 99) == 99


# -- settings ------------------------------------------------------------------------------------


def test_ingress_is_off_by_default_with_the_contract_defaults() -> None:
    s = load_settings().ingress
    assert (s.enabled, s.host, s.port, s.secret_header) == (
        False,
        "0.0.0.0",
        8081,
        "X-Norce-Webhook-Secret",
    )
    assert (s.max_body_bytes, s.body_timeout_s, s.ack_timeout_s) == (1_048_576, 10.0, 10.0)
    assert not s.relay_enabled()
    assert load_settings().topics.notifications == "norce.order.notifications"


def test_enabled_without_any_auth_is_one_config_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRESS__ENABLED", "true")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "\n" not in text
    assert "BRIDGE_INGRESS__SECRET" in text
    assert "BRIDGE_INGRESS__PATH_TOKEN" in text


def test_relay_follows_the_ingress_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_INGRESS__ENABLED", "true")
    monkeypatch.setenv("BRIDGE_INGRESS__SECRET", SECRET)
    s = load_settings()
    assert s.ingress.relay_enabled()
    assert s.ingress.relay_group("g") == "g.notifications"
    monkeypatch.setenv("BRIDGE_INGRESS__RELAY", "false")
    assert not load_settings().ingress.relay_enabled()
    monkeypatch.setenv("BRIDGE_INGRESS__ENABLED", "false")
    monkeypatch.setenv("BRIDGE_INGRESS__RELAY", "true")
    assert load_settings().ingress.relay_enabled()


def test_auth_from_env_and_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    auth = load_ingress_auth(
        IngressSettings(enabled=True, secret_file=secret_file, path_token=SecretStr(TOKEN))
    )
    assert (auth.secret, auth.path_token) == (SECRET.encode(), TOKEN.encode())
    assert SECRET not in repr(auth)
    assert TOKEN not in repr(auth)


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"secret": SecretStr("short")}, "BRIDGE_INGRESS__SECRET"),
        ({"secret": SecretStr("x" * 20 + "\x01")}, "BRIDGE_INGRESS__SECRET"),
        ({"path_token": SecretStr("tok/with/slashes-long")}, "BRIDGE_INGRESS__PATH_TOKEN"),
        ({"path_token": SecretStr("short")}, "BRIDGE_INGRESS__PATH_TOKEN"),
        (
            {"secret": SecretStr(SECRET), "secret_file": Path("/nonexistent")},
            "BRIDGE_INGRESS__SECRET",
        ),
    ],
)
def test_bad_secrets_are_config_errors_without_the_value(
    kwargs: dict[str, Any], variable: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_ingress_auth(IngressSettings(enabled=True, **kwargs))
    text = str(info.value)
    assert variable in text
    for value in kwargs.values():
        if isinstance(value, SecretStr):
            assert value.get_secret_value() not in text


def test_secret_header_must_be_a_header_name() -> None:
    with pytest.raises(ValueError, match="header name"):
        IngressSettings(secret_header="X-Bad Header")


def test_notification_metrics_are_pre_created_and_closed() -> None:
    registry = CollectorRegistry()
    m = BridgeMetrics(registry, version="t", processing_guarantee="at_least_once", ordering="key")
    for outcome in (
        "accepted",
        "unauthorized",
        "too_large",
        "malformed",
        "invalid",
        "timeout",
        "kafka_unavailable",
    ):
        value = registry.get_sample_value(
            "norce_bridge_notifications_received_total", {"outcome": outcome}
        )
        assert value == 0.0
    for outcome in ("relayed", "invalid"):
        value = registry.get_sample_value(
            "norce_bridge_notifications_relayed_total", {"outcome": outcome}
        )
        assert value == 0.0
    m.notification_received("accepted")
    m.notification_stored(0.01)
    m.notification_relayed("relayed")
    assert (
        registry.get_sample_value(
            "norce_bridge_notifications_received_total", {"outcome": "accepted"}
        )
        == 1.0
    )
    assert registry.get_sample_value("norce_bridge_notification_ingress_seconds_count") == 1.0
    with pytest.raises(ValueError, match="unknown notification outcome"):
        m.notification_received("bogus")
    with pytest.raises(ValueError, match="unknown relay outcome"):
        m.notification_relayed("bogus")


async def test_a_bad_webhook_secret_fails_start_up_before_kafka() -> None:
    from bridge.app import build_service
    from bridge.config import BridgeSettings, KafkaSettings

    settings = BridgeSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", startup_deadline_s=60),
        ingress=IngressSettings(enabled=True, secret=SecretStr("short")),
    )
    with pytest.raises(ConfigError, match="BRIDGE_INGRESS__SECRET"):
        await asyncio.wait_for(
            build_service(settings, api_key=SecretStr("k"), start_http=False), 10
        )
