"""``order-bridge dlq list|show|replay`` through the console script, over dead letters written
by the real bridge (poison records, and API rejections scripted in the simulator), on the real
broker: filters, redaction, the replay round trip (rejected -> cause fixed -> replayed ->
applied -> replayed again -> already_applied), --dry-run, the confirmation on a terminal
(declined: nothing sent) and the refusal without one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import pytest
from bridge_devkit.harness import (
    JSON_HEADERS,
    Bridge,
    Outputs,
    clean_env,
    console_script,
    read_topic,
    running_bridge,
    set_state,
    simulator,
)

pytestmark = pytest.mark.broker

SECRET = "hunter2-do-not-print"


def _env(bridge: Bridge) -> dict[str, str]:
    return clean_env(
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS=bridge.bootstrap,
        BRIDGE_TOPICS__COMMANDS=bridge.topics.commands,
        BRIDGE_TOPICS__DLQ=bridge.topics.dlq,
    )


async def _dlq(bridge: Bridge, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [console_script(), "dlq", *args],
        env=_env(bridge),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
        stdin=subprocess.DEVNULL,
    )


async def _replay_on_a_terminal(
    bridge: Bridge, answer: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``dlq replay`` with a pseudo-terminal as stdin, ``answer`` typed in advance."""
    controller, terminal = os.openpty()
    try:
        os.write(controller, answer.encode())
        return await asyncio.to_thread(
            subprocess.run,
            [console_script(), "dlq", "replay", *args],
            env=_env(bridge),
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
        )
    finally:
        os.close(terminal)
        os.close(controller)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def _listed(bridge: Bridge, *filters: str) -> list[dict[str, Any]]:
    proc = await _dlq(bridge, "list", "--output", "json", *filters)
    assert proc.returncode == 0, proc.stderr
    return _lines(proc.stdout)


def _outcomes(o: Outputs, command_id: str) -> list[str]:
    return [r["outcome"] for r in o.results_by_command().get(command_id, [])]


async def test_dlq_list_show_replay_round_trip(kafka_bootstrap: str) -> None:
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        a, b, c = sim.app.seed(3, status="checkout")
        reject = {
            "method": "PUT",
            "path_suffix": "/state",
            "status": 400,
            "body": {"code": "order-bad-request", "message": "scripted rejection"},
            "count": 2,
        }
        sim.app.set_faults(script=[reject])
        cmd_a, cmd_b = set_state(a, "processing"), set_state(b, "processing")
        rejected = await bridge.send(cmd_a, cmd_b)
        poison_json = await bridge.send_raw(
            b"{not json", key=c.encode(), headers=[*JSON_HEADERS, ("x-api-key", SECRET.encode())]
        )
        poison_bytes = await bridge.send_raw(b"\xff\xfe\x00binary", key=b"k-bin")
        await bridge.all_handled()
        assert _outcomes(bridge.outputs, cmd_a.command_id) == ["failed"]

        # list: everything, then each filter
        everything = await _listed(bridge)
        assert len(everything) == 4
        assert all(SECRET not in json.dumps(d) for d in everything)
        api = await _listed(bridge, "--reason", "api_rejected")
        assert {d["orderId"] for d in api} == {a, b}
        assert {d["commandId"] for d in api} == {cmd_a.command_id, cmd_b.command_id}
        assert {(d["source"]["partition"], d["source"]["offset"]) for d in api} == set(rejected)
        assert all(d["httpStatus"] == 400 and d["replayable"] for d in api)
        assert [d["orderId"] for d in await _listed(bridge, "--order-id", a)] == [a]
        part, off = rejected[0]
        by_place = await _listed(
            bridge,
            "--source-partition",
            str(part),
            "--offset-from",
            str(off),
            "--offset-to",
            str(off),
        )
        assert [d["commandId"] for d in by_place] == [cmd_a.command_id]
        assert await _listed(bridge, "--since", "2999-01-01") == []
        assert await _listed(bridge, "--until", "2000-01-01T00:00:00Z") == []
        assert len(await _listed(bridge, "--limit", "1")) == 1
        table = await _dlq(bridge, "list", "--reason", "invalid_json")
        assert table.returncode == 0, table.stderr
        rows = table.stdout.splitlines()
        assert rows[0].split()[:4] == ["DLQ", "AT", "REASON", "SOURCE"]
        assert len(rows) == 2
        assert "invalid_json" in rows[1]

        # show: everything of one dead letter, credentials redacted, binary as base64
        poisoned = next(
            d
            for d in everything
            if d["source"]["offset"] == poison_json[1]
            and d["source"]["partition"] == poison_json[0]
        )
        shown = await _dlq(bridge, "show", poisoned["dlq"], "--output", "json")
        assert shown.returncode == 0, shown.stderr
        details = json.loads(shown.stdout)
        assert details["value"] == {"encoding": "utf-8", "text": "{not json", "size": 9}
        assert ["x-api-key", "[redacted]"] in details["originalHeaders"]
        assert ["content-type", "application/json"] in details["originalHeaders"]
        assert SECRET not in shown.stdout
        text = await _dlq(bridge, "show", poisoned["dlq"])
        assert text.returncode == 0
        assert "x-api-key: [redacted]" in text.stdout
        assert SECRET not in text.stdout
        binary = next(
            d
            for d in everything
            if d["source"]["offset"] == poison_bytes[1]
            and d["source"]["partition"] == poison_bytes[0]
        )
        details = json.loads((await _dlq(bridge, "show", binary["dlq"], "--output", "json")).stdout)
        assert details["value"]["encoding"] == "base64"
        missing = await _dlq(bridge, "show", "0:999999")
        assert missing.returncode == 1

        # replay: no terminal and no --yes refuses; --dry-run sends nothing
        ends = await bridge.end_offsets()
        refused = await _dlq(bridge, "replay", "--reason", "api_rejected")
        assert refused.returncode == 2
        assert "--yes" in refused.stderr
        declined = await _replay_on_a_terminal(bridge, "n\n", "--reason", "api_rejected")
        assert declined.returncode == 1, declined.stderr
        assert "Replay 2 dead letters from" in declined.stdout
        assert "nothing replayed" in declined.stderr
        dry = await _dlq(bridge, "replay", "--reason", "api_rejected", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.count("would replay") == 2
        assert _lines(dry.stdout.splitlines()[-1])[0]["matched"] == 2
        assert await bridge.end_offsets() == ends

        # the cause fixed, replayed: applied; replayed again: already_applied
        sim.app.set_faults(script=[])
        done = await _dlq(bridge, "replay", "--yes", "--reason", "api_rejected")
        assert done.returncode == 0, done.stderr
        counts = json.loads(done.stdout.splitlines()[-1])
        assert (counts["matched"], counts["replayed"], counts["skipped"]) == (2, 2, 0)
        out = await bridge.collect(
            lambda o: all("applied" in _outcomes(o, c.command_id) for c in (cmd_a, cmd_b)),
            timeout_s=60,
        )
        assert sim.app.history(a)[-1] == "processing"
        assert sim.app.history(b)[-1] == "processing"
        again = await _dlq(bridge, "replay", "--yes", "--reason", "api_rejected")
        assert again.returncode == 0, again.stderr
        out = await bridge.collect(
            lambda o: all("already_applied" in _outcomes(o, c.command_id) for c in (cmd_a, cmd_b)),
            timeout_s=60,
        )
        assert _outcomes(out, cmd_a.command_id) == ["failed", "applied", "already_applied"]

        # the replayed records: original key, value, headers, plus norce.redrive.*
        commands = await read_topic(
            kafka_bootstrap, bridge.topics.commands, bridge.codec, 3, raw=True, timeout_s=30
        )
        redriven = [r for r in commands if "norce.redrive.dlq-offset" in r.header_map()]
        assert len(redriven) == 4
        for rec in redriven:
            h = rec.header_map()
            assert h["norce.redrive.dlq-topic"] == bridge.topics.dlq.encode()
            assert h["norce.redrive.reason"] == b"api_rejected"
            assert h["content-type"] == b"application/json"
            assert sum(1 for n, _ in rec.headers if n == "norce.redrive.at") == 1
            assert rec.raw_key in (a.encode(), b.encode())
            assert json.loads(rec.raw or b"")["type"] == "SetOrderState"


async def test_dlq_on_a_missing_topic_is_one_line_and_exit_2(kafka_bootstrap: str) -> None:
    """A DLQ topic that does not exist: one line naming it and the setting, exit code 2."""
    env = clean_env(BRIDGE_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap)
    proc = await asyncio.to_thread(
        subprocess.run,
        [console_script(), "dlq", "list", "--topic", "no-such-dlq-topic", "--timeout", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "order-bridge: dlq: topic 'no-such-dlq-topic' does not exist (BRIDGE_TOPICS__DLQ, --topic)"
    ]
