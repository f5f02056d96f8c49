"""Where every task and thread is waiting, on demand: ``kill -USR1 <pid>`` logs a stack dump.

For a process that does not do what it should (a drain that does not end, a partition that does
not move), like ``jstack`` for a JVM: one ``stack dump`` log line with, for each place asyncio
tasks wait at, the chain of coroutines (file:line function, innermost last), how many tasks wait
there and their names; and for each thread its frames. Only code locations, no local
variables: no secret can leak through it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from types import FrameType
from typing import Any

log = logging.getLogger("bridge.stackdump")

MAX_GROUPS = 100  # distinct places tasks wait at
MAX_NAMES = 10  # task names listed per place
MAX_DEPTH = 24


def _where(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    short = "/".join(path.rsplit("/", 3)[-3:]) if "/" in path else path
    return f"{short}:{frame.f_lineno} {frame.f_code.co_name}"


def _await_chain(coro: Any) -> list[str]:
    """The frames a suspended coroutine waits in, outermost first (``cr_await`` followed)."""
    out: list[str] = []
    while coro is not None and len(out) < MAX_DEPTH:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        frame = frame or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        out.append(_where(frame))
        nxt = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        coro = nxt or getattr(coro, "ag_await", None)
    return out


def _thread_stack(frame: FrameType | None) -> list[str]:
    out: list[str] = []
    while frame is not None and len(out) < MAX_DEPTH:
        out.append(_where(frame))
        frame = frame.f_back
    out.reverse()
    return out


def thread_stacks() -> list[dict[str, Any]]:
    """Every thread with its frames, outermost first (safe from any thread)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return [
        {"thread": names.get(ident, str(ident)), "stack": _thread_stack(frame)}
        for ident, frame in sys._current_frames().items()
    ]


def stack_dump() -> dict[str, Any]:
    """Every task of the running loop and every thread, with where each one is waiting.

    Tasks waiting at the same place (hundreds of commands in flight in one HTTP call) are one
    entry with their count and the first few names, so the line stays small."""
    groups: dict[tuple[str, ...], list[str]] = {}
    tasks = asyncio.all_tasks()
    for task in tasks:
        groups.setdefault(tuple(_await_chain(task.get_coro())), []).append(task.get_name())
    for names in groups.values():
        names.sort()
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))
    return {
        "task_count": len(tasks),
        "tasks": [
            {"count": len(names), "names": names[:MAX_NAMES], "stack": list(stack)}
            for stack, names in ordered[:MAX_GROUPS]
        ],
        "threads": thread_stacks(),
    }


def log_stack_dump() -> None:
    """Log :func:`stack_dump` as one ``stack dump`` record (the SIGUSR1 handler)."""
    try:
        log.warning("stack dump", extra=stack_dump())
    except Exception as exc:  # a diagnostic aid must never take the service down
        log.error("stack dump failed", extra={"error": type(exc).__name__})


def exit_if_teardown_hangs(code: int, seconds: float) -> threading.Timer:
    """After the drain: should closing the clients, the loop and the interpreter take longer than
    ``seconds`` (a library task that ignores its cancel, a thread that does not end), log where
    every thread is and exit with ``code`` anyway. Cancel the timer to disarm it."""

    def overrun() -> None:
        log.error(
            "teardown did not finish; exiting",
            extra={"seconds": seconds, "threads": thread_stacks()},
        )
        os._exit(code)

    timer = threading.Timer(seconds, overrun)
    timer.daemon = True
    timer.start()
    return timer
