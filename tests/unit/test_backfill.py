"""``bridge.backfill`` and ``bridge.progress``: the RefreshOrder wire format (contract 1 of
issue 14), the checks made before anything is sent, page selection for ``--since``, the
summary, and the progress lines on a terminal and in a log."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from bridge import cli
from bridge.backfill import (
    RefreshRequest,
    RefreshSummary,
    check_order_ids,
    check_reason,
    check_scope,
    parse_since,
    refresh_command,
    refresh_record,
    run_refresh,
    select_page,
)
from bridge.commands import parse_command
from bridge.config import BridgeSettings
from bridge.errors import ConfigError
from bridge.progress import Progress, format_duration, rate

NOW = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


def test_a_refresh_command_follows_contract_1() -> None:
    cmd = refresh_command(
        "o_A", merchant="norce", channel="1", reason="backfill", issued_at=NOW, command_id="r-1"
    )
    key, value, headers = refresh_record(cmd)
    assert key == b"o_A"
    assert json.loads(value) == {
        "type": "RefreshOrder",
        "commandId": "r-1",
        "orderId": "o_A",
        "merchant": "norce",
        "channel": "1",
        "issuedAt": "2026-12-01T08:30:00Z",
        "reason": "backfill",
    }
    assert parse_command(value, headers) == cmd  # what the bridge reads back
    assert headers == [
        ("content-type", b"application/json"),
        ("norce.command.id", b"r-1"),
        ("norce.order.id", b"o_A"),
    ]
    fresh = refresh_command(
        "o_B", merchant="m", channel="c", reason="manual", issued_at=NOW, correlation_id="ops-9"
    )
    assert fresh.command_id.startswith("refresh-")
    assert fresh.correlation_id == "ops-9"
    assert ("norce.correlation.id", b"ops-9") in refresh_record(fresh)[2]


def test_bad_order_ids_are_refused_all_at_once() -> None:
    assert check_order_ids(["o_A", "o_B", "o_A"]) == ["o_A", "o_B"]
    with pytest.raises(ConfigError) as caught:
        check_order_ids(["o_A", "../x", "o_\nB", "a/b", ""])
    lines = str(caught.value).splitlines()
    assert lines[0] == "refresh: refused bad order ids:"
    assert len(lines) == 5


def test_reason_scope_and_since_are_checked() -> None:
    assert check_reason("notification") == "notification"
    for bad in ("", "x" * 201, "a\nb", "a\x00b", "a\u200bb"):
        with pytest.raises(ConfigError):
            check_reason(bad)
    assert check_scope("norce", "1") == ("norce", "1")
    with pytest.raises(ConfigError):
        check_scope("nor\rce", "1")
    assert parse_since("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T10:00:00+01:00") == datetime(2026, 11, 1, 9, tzinfo=UTC)
    with pytest.raises(ConfigError):
        parse_since("yesterday")


def test_a_page_is_selected_by_created_and_says_when_older_orders_begin() -> None:
    page = [
        {"id": "o_3", "created": "2026-11-03T00:00:00Z"},
        {"id": "o_2", "created": "2026-11-02T00:00:00Z"},
        {"id": "o_x", "created": "garbled"},  # kept: a refresh too many is harmless
        {"id": "bad/id", "created": "2026-11-02T00:00:00Z"},
        {"created": "2026-11-02T00:00:00Z"},
        "not an object",
        {"id": "o_1", "created": "2026-11-01T00:00:00Z"},
    ]
    assert select_page(page, None) == (["o_3", "o_2", "o_x", "o_1"], 3, False)
    since = datetime(2026, 11, 2, tzinfo=UTC)
    assert select_page(page, since) == (["o_3", "o_2", "o_x"], 4, True)


def test_the_summary_says_what_was_done() -> None:
    s = RefreshSummary(topic="cmds", listed=10, enqueued=8, failed=2, pages=1, duration_s=2.0)
    s.errors["KafkaTimeoutError"] = 2
    s.left_out = 1
    assert not s.ok
    text = s.text()
    assert "10 orders listed, enqueued 8 RefreshOrder commands on cmds, 1 pages" in text
    assert "2 NOT enqueued (KafkaTimeoutError)" in text
    assert "(4/s)" in text
    data = s.to_json()
    assert data["rate_per_s"] == 4.0
    assert data["failed"] == 2
    listing = RefreshSummary(topic="t", list_error="boom", dry_run=True)
    assert not listing.ok
    assert "listing stopped early: boom" in listing.text()
    assert "would enqueue 0" in listing.text()


def test_a_dry_run_of_given_orders_counts_without_kafka() -> None:
    out = io.StringIO()
    request = RefreshRequest(
        merchant="norce", channel="1", reason="manual", order_ids=("o_A", "o_B"), dry_run=True
    )

    def no_key() -> SecretStr:
        raise AssertionError("no API call for given orders")

    summary = asyncio.run(
        run_refresh(BridgeSettings(), {}, request, api_key=no_key, progress_stream=out)
    )
    assert (summary.listed, summary.enqueued, summary.failed) == (2, 2, 0)
    assert summary.topic == "norce.order.commands"
    assert "refresh (dry run): 2/2 (100%)" in out.getvalue()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_prints_a_line_per_interval_in_a_log() -> None:
    clock, out = _Clock(), io.StringIO()
    p = Progress("refresh", out, total=100, tty=False, interval_s=5, clock=clock)
    clock.now += 1
    p.update(10)
    assert out.getvalue() == ""
    clock.now += 4
    p.update(50)
    assert out.getvalue() == "refresh: 50/100 (50%), 10/s, 5.0s, ETA 5.0s\n"
    p.finish()  # nothing to end in a log
    assert out.getvalue().count("\n") == 1


def test_progress_redraws_a_bar_on_a_terminal() -> None:
    clock, out = _Clock(), io.StringIO()
    p = Progress("refresh", out, tty=True, clock=clock)
    clock.now += 1
    p.update(25, total=100)
    assert out.getvalue().startswith("\r\x1b[K[#######-----------------------] refresh: 25/100")
    p.finish()
    assert out.getvalue().endswith("\n")
    assert Progress("x", io.StringIO(), tty=False, clock=clock).line() == "x: 0, 0/s, 0.0s"


def test_durations_and_rates() -> None:
    assert format_duration(3.25) == "3.2s"
    assert format_duration(75) == "1m15s"
    assert format_duration(7320) == "2h02m"
    assert rate(10, 0) == 0.0
    assert rate(10, 4) == 2.5


def test_refresh_usage_errors_exit_2_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert cli.main(["refresh", "--order-id", "o_A", "--order-id", "../etc"]) == 2
    assert "refused bad order ids" in capsys.readouterr().err
    assert cli.main(["refresh", "--order-id", "o_A", "--since", "2026-01-01"]) == 2
    assert cli.main(["refresh", "--all", "--reason", "a\nb"]) == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["refresh", "--all", "--order-id", "o_A"])
    assert exited.value.code == 2
