"""Small utilities of the development harness: deadlines, ports, environments, scripts, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bridge_devkit.localkafka import free_port

__all__ = [
    "clean_env",
    "console_script",
    "free_port",
    "log_lines",
    "parse_ts",
    "poll_until",
    "read_json_lines",
]


async def poll_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` with a deadline (no fixed sleeps as synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without BRIDGE_* and KAFKA_BOOTSTRAP_SERVERS, plus ``settings``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BRIDGE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(settings)
    return env


def console_script(name: str = "order-bridge") -> str:
    """An installed console script (``order-bridge``, or the devkit's ``order-bridge-dev`` and
    ``norce-simulator``) next to this interpreter, run exactly as the README documents it."""
    script = Path(sys.executable).with_name(name)
    if not script.is_file():
        raise AssertionError(f"the console script is not installed: {script}")
    return str(script)


def read_json_lines(data: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines text (other and partial lines skipped)."""
    out: list[dict[str, Any]] = []
    for line in data.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict):
                out.append(rec)
    return out


def log_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines a bridge process wrote so far (partial last lines skipped)."""
    try:
        return read_json_lines(path.read_text(errors="replace"))
    except OSError:
        return []


def parse_ts(text: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (bridge logs and the simulator's call log)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
