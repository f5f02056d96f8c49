"""The SIGUSR1 stack dump: each task's chain of awaited coroutines, each thread's frames."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys

import pytest

from bridge.logs import JsonFormatter
from bridge.stackdump import log_stack_dump, stack_dump


async def _inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def _outer(gate: asyncio.Event) -> None:
    await _inner(gate)


async def test_a_suspended_task_shows_every_coroutine_it_waits_in() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(_outer(gate), name="waiter")
    await asyncio.sleep(0)  # let it start and suspend
    try:
        dump = stack_dump()
    finally:
        gate.set()
        await task
    (waiter,) = [t["stack"] for t in dump["tasks"] if t["names"] == ["waiter"]]
    names = [frame.rsplit(" ", 1)[1] for frame in waiter]
    assert names[:3] == ["_outer", "_inner", "wait"]  # outermost first, into asyncio's Event
    assert "tests/unit/test_stackdump.py:" in waiter[0]
    assert dump["task_count"] == sum(t["count"] for t in dump["tasks"]) >= 2  # the test's too
    main = [t for t in dump["threads"] if t["thread"] == "MainThread"]
    assert main
    assert any(frame.endswith(" stack_dump") for frame in main[0]["stack"])


async def test_tasks_waiting_at_the_same_place_are_one_entry() -> None:
    """Hundreds of commands in one HTTP call are one line with their count, not hundreds."""
    gate = asyncio.Event()
    tasks = [asyncio.create_task(_outer(gate), name=f"cmd-{i:03}") for i in range(250)]
    await asyncio.sleep(0)
    try:
        dump = stack_dump()
    finally:
        gate.set()
        await asyncio.gather(*tasks)
    (group,) = [t for t in dump["tasks"] if t["names"][0].startswith("cmd-")]
    assert group["count"] == 250
    assert group["names"] == [f"cmd-{i:03}" for i in range(10)]
    assert dump["tasks"][0] is group  # the largest group first
    assert len(json.dumps(dump)) < 20_000


async def test_the_dump_is_one_json_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bridge.stackdump"):
        log_stack_dump()
    (record,) = [r for r in caplog.records if r.getMessage() == "stack dump"]
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == "stack dump"
    assert parsed["tasks"]
    assert parsed["threads"]


_HANGING_TEARDOWN = """
import logging, sys, threading
from bridge.logs import configure_logging
from bridge.stackdump import exit_if_teardown_hangs
configure_logging("INFO")
exit_if_teardown_hangs(3, 0.3)
threading.Thread(target=threading.Event().wait, name="stuck-worker").start()  # never ends
"""


def test_a_teardown_that_hangs_exits_with_the_code_and_says_where_it_hung() -> None:
    """A non-daemon thread that never ends would keep the interpreter from exiting."""
    proc = subprocess.run(
        [sys.executable, "-c", _HANGING_TEARDOWN], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 3
    (line,) = [json.loads(x) for x in proc.stderr.decode().splitlines() if x.strip()]
    assert line["msg"] == "teardown did not finish; exiting"
    assert "stuck-worker" in {t["thread"] for t in line["threads"]}


def test_a_teardown_that_finishes_keeps_its_own_exit() -> None:
    script = "from bridge.stackdump import exit_if_teardown_hangs\nexit_if_teardown_hangs(3, 30)"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=20, check=False
    )
    assert proc.returncode == 0
    assert proc.stderr == b""
