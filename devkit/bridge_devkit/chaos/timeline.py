"""The run's clock: seconds since the run started, and the notes printed along the way."""

from __future__ import annotations

import time


class Timeline:
    """``t()`` seconds since the start (``restart`` moves the start); ``note`` prints and keeps
    a line stamped with it."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.notes: list[str] = []

    def restart(self) -> None:
        self.t0 = time.monotonic()

    def t(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        """Print a stamped line (not kept)."""
        print(f"  [{self.t():6.1f}s] {text}", flush=True)

    def note(self, text: str) -> None:
        """Print a stamped line and keep it."""
        line = f"  [{self.t():6.1f}s] {text}"
        self.notes.append(line.strip())
        print(line, flush=True)
