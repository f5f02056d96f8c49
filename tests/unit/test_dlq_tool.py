"""``bridge.dlq_tool``: dead letters as ``bridge.deadletter`` writes them are read back whole
(original headers vs diagnosis), filtered, shown with credentials redacted, and re-driven with
fresh ``norce.redrive.*`` headers; the ``dlq`` command's refusals need no broker."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from bridge import cli, cli_ops
from bridge.commands import SetOrderState
from bridge.deadletter import dead_letter, internal_error
from bridge.dlq_tool import (
    REDACTED,
    DeadLetter,
    DlqFilter,
    format_table,
    is_secret_header,
    parse_coordinates,
    parse_dead_letter,
    plan_replay,
    printable_headers,
    redrive_headers,
    terminal_safe,
)
from bridge.errors import ConfigError, InvalidCommandError
from bridge.order_model import OrderStatus
from bridge.outputs import SourceRecord

NOW = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
CMD = SetOrderState(
    command_id="c-1",
    order_id="o_A",
    merchant="norce",
    channel="1",
    issued_at=NOW,
    state=OrderStatus("accepted"),
)
ORIGINAL_HEADERS = (
    ("content-type", b"application/json"),
    ("Authorization", b"Bearer s3cret"),
    ("norce.redrive.reason", b"stale"),
    ("nothing", None),
)


def _as_read(
    out_headers: list[tuple[str, bytes | None]],
    value: bytes | None,
    offset: int = 7,
    key: bytes | None = b"o_A",
    partition: int = 1,
) -> DeadLetter:
    return parse_dead_letter(partition, offset, 1_700_000_000_000, key, value, out_headers)


def _api_rejected(offset: int = 7, source_offset: int = 42, order: str = "o_A") -> DeadLetter:
    src = SourceRecord("cmds", 2, source_offset, order.encode(), b'{"x":1}', ORIGINAL_HEADERS, 0)
    out = dead_letter(
        src,
        "api_rejected",
        RuntimeError("HTTP 400"),
        stage="TASK_PUT",
        now=NOW,
        http_status=400,
        ids=CMD.model_copy(update={"order_id": order}),
    )
    assert isinstance(out.value, bytes)
    return _as_read(out.headers, out.value, offset, out.key)


def test_a_dead_letter_is_read_back_as_the_bridge_wrote_it() -> None:
    dl = _api_rejected()
    assert dl.original_headers == list(ORIGINAL_HEADERS)
    assert dl.reason == "api_rejected"
    assert (dl.source_topic, dl.source_partition, dl.source_offset) == ("cmds", 2, 42)
    assert dl.at == NOW
    assert dl.http_status == 400
    assert (dl.command_id, dl.order_id) == ("c-1", "o_A")
    assert dl.message == "HTTP 400"
    assert dl.error_class == "builtins.RuntimeError"
    assert dl.replay_blocker() is None
    summary = dl.summary()
    assert summary["dlq"] == "1:7"
    assert summary["source"] == {"topic": "cmds", "partition": 2, "offset": 42}


def test_truncated_bare_and_headerless_dead_letters_are_not_replayable() -> None:
    big = SourceRecord("cmds", 0, 1, b"k", b"v" * 5000, (("h", b"x"),), 0)
    cut = dead_letter(big, "oversize", ValueError("big"), stage="S", now=NOW, max_bytes=2000)
    assert isinstance(cut.value, bytes)
    assert _as_read(cut.headers, cut.value).replay_blocker() == "truncated"
    huge = SourceRecord("cmds", 0, 1, b"k", b"v", (("big", b"h" * 5000),), 0)
    dropped = dead_letter(huge, "oversize", ValueError("big"), stage="S", now=NOW, max_bytes=2000)
    assert isinstance(dropped.value, bytes)
    assert _as_read(dropped.headers, dropped.value).replay_blocker() == "headers_dropped"
    empty = SourceRecord("cmds", 0, 1, None, None, (), 0)
    error = InvalidCommandError("empty_value", "no value")
    nothing = dead_letter(empty, "empty_value", error, stage="S", now=NOW)
    dl = _as_read(nothing.headers, None, key=None)
    assert dl.replay_blocker() == "no_value"
    assert dl.order_id is None
    last = internal_error(
        SourceRecord("cmds", 0, 3, b"o_B", b"{}", (), 0), KeyError("x"), now=NOW, codec=None
    )
    value = last.outputs[0].value
    assert isinstance(value, bytes)
    read = _as_read(last.outputs[0].headers, value, key=last.outputs[0].key)
    assert read.reason == "internal_error"
    assert read.order_id == "o_B"  # no norce.order.id header: the record key


def test_a_dead_letter_without_an_error_time_uses_the_record_time() -> None:
    dl = _as_read([("__connect.errors.reason", b"internal_error")], b"v")
    assert dl.at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert dl.source_offset is None
    assert dl.reason == "internal_error"
    assert _as_read([], b"v").reason == "unknown"


def test_show_redacts_credentials_and_shows_binary_as_base64() -> None:
    dl = _api_rejected()
    details = dl.details()
    assert ["Authorization", REDACTED] in details["originalHeaders"]
    assert ["nothing", None] in details["originalHeaders"]
    assert "s3cret" not in json.dumps(details)
    assert details["value"] == {"encoding": "utf-8", "text": '{"x":1}', "size": 7}
    binary = _as_read([("k", b"\xff")], b"\xff\x00")
    shown = binary.details()
    assert shown["value"]["encoding"] == "base64"
    assert shown["originalHeaders"] == [["k", "base64:/w=="]]
    for name in ("x-api-key", "X-Norce-Webhook-Secret", "sasl.password", "token", "Cookie"):
        assert is_secret_header(name), name
    assert not is_secret_header("content-type")
    assert printable_headers([("PASSWORD", b"x")]) == [["PASSWORD", REDACTED]]
    text = cli_ops.show_text(details)
    assert "Authorization: [redacted]" in text
    assert "s3cret" not in text


def test_filters_match_reason_time_place_order_and_limit() -> None:
    letters = [_api_rejected(i, 40 + i, order=f"o_{i}") for i in range(5)]
    assert DlqFilter().select(letters) == letters
    assert DlqFilter(reasons=frozenset({"oversize"})).select(letters) == []
    assert DlqFilter(since=NOW, until=NOW).select(letters) == letters
    assert DlqFilter(until=datetime(2026, 1, 1, tzinfo=UTC)).select(letters) == []
    assert DlqFilter(since=datetime(2027, 1, 1, tzinfo=UTC)).select(letters) == []
    assert DlqFilter(source_partitions=frozenset({0})).select(letters) == []
    ranged = DlqFilter(offset_from=41, offset_to=42).select(letters)
    assert [d.source_offset for d in ranged] == [41, 42]
    assert DlqFilter(offset_to=40).select(letters) == letters[:1]
    assert DlqFilter(order_ids=frozenset({"o_3"})).select(letters) == [letters[3]]
    assert DlqFilter(limit=2).select(letters) == letters[:2]
    no_place = _as_read([("__connect.errors.reason", b"x")], b"v")
    assert DlqFilter(offset_from=0).select([no_place]) == []


def test_the_table_has_one_row_per_dead_letter() -> None:
    letters = [_api_rejected(3), _as_read([("__connect.errors.exception.message", b"m" * 99)], b"")]
    rows = format_table(letters, width=20).splitlines()
    assert rows[0].split() == ["DLQ", "AT", "REASON", "SOURCE", "ORDER", "COMMAND", "MESSAGE"]
    assert rows[1].split()[:4] == ["1:3", "2026-12-01T08:30:00.000Z", "api_rejected", "2:42"]
    assert rows[2].endswith("m" * 19 + "…")


def test_table_and_show_escape_what_would_drive_the_terminal() -> None:
    """Dead letters carry whatever a producer wrote: an order id with ESC/CR/LF or a bidi
    override would forge rows or recolour the operator's terminal. Every such character is
    printed as its escape; ordinary non-ASCII text is kept."""
    hostile = "o_x\x1b[2K\r\n2026-01-01 FORGED\u202eé"
    letter = _as_read(
        [("__connect.errors.exception.message", b"bad\x07bell")],
        b'{"orderId": "o_x\x1b[2K"}\n',
        key=hostile.encode(),
    )
    assert letter.order_id == hostile  # the original key, when no order id header was read
    rows = format_table([letter]).splitlines()
    assert len(rows) == 2
    assert "o_x\\x1b[2K\\r\\n2026-01-01 FORGED\\u202eé" in rows[1]
    assert "bad\\x07bell" in rows[1]
    text = cli_ops.show_text(letter.details())
    assert "\x1b" not in text
    assert "\r" not in text
    assert "\u202e" not in text
    assert '{"orderId": "o_x\\x1b[2K"}\\n' in text
    assert terminal_safe("order é 日本 ok") == "order é 日本 ok"


def test_redrive_headers_replace_stale_ones_and_name_the_dead_letter() -> None:
    dl = _api_rejected(9)
    headers = redrive_headers(dl, "dlq-topic", NOW)
    names = [n for n, _ in headers]
    assert names[:3] == ["content-type", "Authorization", "nothing"]  # original, stale dropped
    assert dict(headers[3:]) == {
        "norce.redrive.dlq-topic": b"dlq-topic",
        "norce.redrive.dlq-partition": b"1",
        "norce.redrive.dlq-offset": b"9",
        "norce.redrive.reason": b"api_rejected",
        "norce.redrive.at": b"2026-12-01T08:30:00.000000Z",
    }
    assert headers[1] == ("Authorization", b"Bearer s3cret")  # replayed as it was


def test_the_replay_plan_counts_what_it_skips() -> None:
    ok = _api_rejected()
    empty = _as_read([("__connect.errors.reason", b"empty_value")], None)
    plan = plan_replay([ok, empty])
    assert plan.replayable == [ok]
    assert plan.counts() == {
        "matched": 2,
        "replayed": 0,
        "skipped": 1,
        "skipped_by_reason": {"no_value": 1},
        "failed": 0,
    }


def test_coordinates_are_partition_colon_offset() -> None:
    assert parse_coordinates("2:17") == (2, 17)
    assert parse_coordinates(" 0 : 0 ") == (0, 0)
    for bad in ("2", "a:1", "-1:2", "1:2:3", ""):
        with pytest.raises(ConfigError):
            parse_coordinates(bad)


def test_replay_without_a_terminal_or_yes_refuses_before_connecting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    monkeypatch.setenv("BRIDGE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    assert cli.main(["dlq", "replay", "--reason", "api_rejected"]) == 2
    assert "--yes" in capsys.readouterr().err
    assert cli.main(["dlq", "show", "nope"]) == 2
    assert "PARTITION:OFFSET" in capsys.readouterr().err
