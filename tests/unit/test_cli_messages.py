"""What a user who mistypes an ``order-bridge`` command sees: one line naming the command and the
argument at fault, exit code 2, never a traceback (found by walking the README as a new user)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bridge import cli
from bridge.startup import KafkaStartupError, wait_for_kafka


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["schema", "--write", "{dir}/missing/x.json"], "order-bridge: schema: cannot write "),
        (["asyncapi", "--output", "{dir}/missing/x.yaml"], "order-bridge: asyncapi: cannot write "),
        (["asyncapi", "--output", "{dir}"], "order-bridge: asyncapi: cannot write "),
    ],
)
def test_an_output_path_that_cannot_be_written_is_one_line_and_exit_2(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(dir=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    line = one_line(capsys)
    assert line.startswith(expected), line
    assert argv[-1] in line


def test_the_schema_is_written_where_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "schema.json"
    assert cli.main(["schema", "--write", str(target)]) == 0
    assert capsys.readouterr().out == f"wrote {target}\n"
    assert '"SetOrderState"' in target.read_text()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["dlq", "list", "--since", "yesterday"], "dlq list: --since 'yesterday' is not a date"),
        (["dlq", "list", "--until", "tomorrow"], "dlq list: --until 'tomorrow' is not a date"),
        (["dlq", "replay", "--yes", "--until", "x"], "dlq replay: --until 'x' is not a date"),
        (["refresh", "--all", "--since", "soon"], "refresh: --since 'soon' is not a date"),
        (
            ["dlq", "list", "--reason", "api_rejectd", "--reason", "oversize"],
            "dlq list: --reason 'api_rejectd' is not a dead-letter reason (one of: api_rejected,",
        ),
        (
            ["dlq", "replay", "--dry-run", "--reason", "nope"],
            "dlq replay: --reason 'nope' is not a dead-letter reason",
        ),
    ],
)
def test_filters_name_the_command_and_the_flag_at_fault(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any broker is contacted: a misspelt reason would otherwise match nothing
    (and a replay re-drive nothing) without a word."""
    assert cli.main(argv) == 2
    line = one_line(capsys)
    assert expected in line, line


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
def test_a_limit_below_one_is_refused(limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["dlq", "list", "--limit", limit])
    assert info.value.code == 2
    assert "--limit" in capsys.readouterr().err


def test_help_texts_are_plain_words(capsys: pytest.CaptureFixture[str]) -> None:
    """No reST markup (double back-quotes, :mod: roles) in --help; every subcommand says what
    its options do."""
    helps = {}
    for command in ("", "run", "schema"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"] if command else ["--help"])
        helps[command] = out = capsys.readouterr().out
        assert "``" not in out, out
        assert ":mod:" not in out, out
    assert "BRIDGE_*" in helps["run"]
    assert "write to PATH" in helps["schema"]


async def test_an_unresolvable_broker_name_says_so() -> None:
    """getaddrinfo's errors carry EAI_* codes, which os.strerror reads as 'Unknown error -2'."""
    with pytest.raises(KafkaStartupError) as info:
        await wait_for_kafka("nosuchhost.invalid:9092", {}, deadline_s=0.5, attempt_timeout_s=0.5)
    assert "host name not resolved" in str(info.value), info.value
    assert "Unknown error" not in str(info.value)


async def test_an_operator_command_names_its_own_flags_when_kafka_is_unreachable() -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(KafkaStartupError) as info:
            await wait_for_kafka(
                f"127.0.0.1:{port}",
                {},
                deadline_s=0.5,
                attempt_timeout_s=0.5,
                servers_hint="--bootstrap",
                deadline_hint="--timeout",
            )
    text = str(info.value)
    assert "check --bootstrap and" in text, text
    assert "(the wait is --timeout)" in text, text
    assert "BRIDGE_KAFKA__STARTUP_DEADLINE_S" not in text
