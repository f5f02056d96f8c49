"""The `helm test` Pod's check, run as rendered against the bridge's real health server."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass

from helmtools import by_kind, render
from prometheus_client import CollectorRegistry

from bridge.health import start_health_server

# Generous: the check polls every 2 s; on a busy machine a poll may take longer.
RUN_TIMEOUT_S = 60.0


@dataclass
class ReadyAfter:
    """A runtime's health answers: not ready for the first ``not_ready_answers`` readiness asks."""

    not_ready_answers: int
    asked: int = 0

    def is_alive(self) -> tuple[bool, str]:
        return True, "ok"

    def is_ready(self) -> tuple[bool, str]:
        self.asked += 1
        if self.asked <= self.not_ready_answers:
            return False, "not connected to the Kafka brokers"
        return True, "ok"


def rendered_check() -> tuple[list[str], dict[str, str]]:
    """The test Pod's command and environment, as the chart renders them."""
    (pod,) = by_kind(render(), "Pod")
    (c,) = pod["spec"]["containers"]
    return c["command"], {e["name"]: e["value"] for e in c["env"]}


async def run_check(url: str, timeout_s: str) -> tuple[int, str, str]:
    """Run the rendered check with this Python against ``url``; (exit code, stdout, stderr)."""
    command, env = rendered_check()
    assert command[:2] == ["python", "-c"]
    env = {**os.environ, **env, "READYZ_URL": url, "TIMEOUT_S": timeout_s}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        command[2],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_passes_when_the_bridge_is_ready() -> None:
    """A ready bridge passes the check at once."""
    state = ReadyAfter(not_ready_answers=0)
    async with await start_health_server(
        CollectorRegistry(), state, host="127.0.0.1", port=0
    ) as server:
        code, out, err = await run_check(f"{server.url}/readyz", "30")
    assert code == 0, err
    assert "ready:" in out
    assert state.asked == 1


async def test_check_waits_for_readiness() -> None:
    """A bridge that becomes ready while the check polls passes it."""
    state = ReadyAfter(not_ready_answers=1)
    async with await start_health_server(
        CollectorRegistry(), state, host="127.0.0.1", port=0
    ) as server:
        code, out, err = await run_check(f"{server.url}/readyz", "30")
    assert code == 0, err
    assert "waiting:" in out
    assert "503" in out
    assert state.asked == 2


async def test_check_fails_with_the_reason_when_never_ready() -> None:
    """A bridge that stays unready fails the check, naming /readyz's reason."""
    state = ReadyAfter(not_ready_answers=1_000_000)
    async with await start_health_server(
        CollectorRegistry(), state, host="127.0.0.1", port=0
    ) as server:
        code, _, err = await run_check(f"{server.url}/readyz", "1")
    assert code == 1
    assert "not ready after 1s" in err
    assert "HTTP 503" in err
    assert "not connected to the Kafka brokers" in err


async def test_check_fails_when_nothing_answers() -> None:
    """No bridge behind the Service fails the check instead of hanging."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed again: connections are refused.
    code, _, err = await run_check(f"http://127.0.0.1:{port}/readyz", "1")
    assert code == 1
    assert "not ready after 1s" in err
    assert "refused" in err.lower()
