"""The bridge as ``bridge run`` processes: start with an environment, logs to a file, signals.

``spawn_bridge``/``wait_exit`` are the bare operations; ``BridgeProcess`` adds what the
benchmarks and the chaos harness do to a process: SIGTERM and wait, ``kill -9``, SIGSTOP and
SIGCONT, reading its JSON log (whole, or incrementally with ``LogFollower``) and its metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from bridge_devkit.harness.util import log_lines, poll_until

HEALTH_PREFIX = "health server listening on port "
STACK_DUMP = '"msg": "stack dump"'


def spawn_bridge(
    env: Mapping[str, str], log_path: Path, *, argv: Sequence[str] = (sys.executable,)
) -> subprocess.Popen[bytes]:
    """Start ``<argv> -m bridge run`` with ``env``; its (JSON) logs are appended to ``log_path``.
    ``argv`` may wrap the interpreter (e.g. ``env PYTHONPATH=... python``) if it keeps the pid."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*argv, "-m", "bridge", "run"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def wait_exit(
    proc: subprocess.Popen[bytes], timeout_s: float, log_path: Path | None = None
) -> int:
    """The process's exit code, polling with a deadline (killed and failed past it).

    With ``log_path`` (the process's log), a process that does not exit is first asked for a
    stack dump (SIGUSR1), and the failure shows the end of its log: where it was stuck."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            tail = ""
            if log_path is not None:
                proc.send_signal(signal.SIGUSR1)
                with contextlib.suppress(AssertionError):
                    await poll_until(lambda: log_count(log_path, STACK_DUMP) > 0, 3.0, "dump")
                tail = "\n" + log_tail(log_path, 40)
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"the bridge process did not exit within {timeout_s}s{tail}")
        await asyncio.sleep(0.05)
    return proc.returncode


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def assigned_partitions(path: Path) -> list[int] | None:
    """The partitions of the last "partitions assigned" line of a bridge log, None if none yet."""
    lines = [x for x in log_lines(path) if x.get("msg") == "partitions assigned"]
    return None if not lines else list(lines[-1].get("partitions", []))


def log_count(path: Path, needle: str) -> int:
    """How often ``needle`` occurs in a log file so far (0 if it cannot be read)."""
    try:
        return path.read_text(errors="replace").count(needle)
    except OSError:
        return 0


async def metrics_text(port: int) -> str | None:
    """A bridge's ``/metrics`` page on ``port`` (None when it cannot be read)."""
    async with httpx.AsyncClient(timeout=2.0) as http:
        try:
            return (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        except httpx.HTTPError:
            return None


async def scrape_metric(port: int, name: str) -> float | None:
    """One sample of an unlabelled metric on a bridge's ``/metrics`` (None when unreadable)."""
    text = await metrics_text(port)
    for line in (text or "").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class LogFollower:
    """Incremental reader of a JSON log file: each ``poll`` returns the complete new lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return []
        self._offset += len(chunk)
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()  # a line still being written is read next time
        out: list[dict[str, Any]] = []
        for raw in lines:
            with contextlib.suppress(ValueError):
                rec = json.loads(raw)
                if isinstance(rec, dict):
                    out.append(rec)
        return out


class BridgeProcess:
    """One ``bridge run`` process with its configuration in ``BRIDGE_*`` variables."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        argv: Sequence[str] = (sys.executable,),
    ) -> None:
        self.log_path = log_path
        self.proc = spawn_bridge(env, log_path, argv=argv)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def exited(self) -> bool:
        return self.proc.poll() is not None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        """``kill -9`` this pid (only) and reap it."""
        self.proc.kill()
        self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the process freezes (its timers fire at once on SIGCONT)."""
        if not self.exited:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused process."""
        if not self.exited:
            self.proc.send_signal(signal.SIGCONT)

    async def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (graceful drain) and wait; past ``timeout_s`` killed, and -9 returned."""
        if not self.exited:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.proc.wait, timeout_s)
            if not self.exited:
                self.kill()
                return -9
        return self.proc.returncode

    def log_records(self) -> list[dict[str, Any]]:
        return log_lines(self.log_path)

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)

    async def wait_for_log(self, want: str, timeout_s: float) -> dict[str, Any]:
        """Poll the log (with a deadline) for the first record whose msg starts with ``want``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for rec in self.log_records():
                if str(rec.get("msg", "")).startswith(want):
                    return rec
            if self.exited:
                raise RuntimeError(f"bridge exited before logging {want!r}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge did not log {want!r} within {timeout_s}s")
            await asyncio.sleep(0.05)

    async def metrics_port(self, timeout_s: float = 60.0) -> int:
        rec = await self.wait_for_log(HEALTH_PREFIX, timeout_s)
        return int(str(rec["msg"])[len(HEALTH_PREFIX) :])
