"""Progress and summary lines of the operator commands (``order-bridge refresh``, ``dlq``).

On a terminal: one line redrawn in place (a bar when the total is known, the rate and an ETA);
otherwise (a log, a pipe): one plain line every ``interval_s`` seconds, so a job's log shows
that it is moving without drowning in carriage returns. The clock is injected (tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration", "rate"]


def format_duration(seconds: float) -> str:
    """``75.0`` -> ``1m15s``; ``3.25`` -> ``3.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rate(count: int, seconds: float) -> float:
    """Items per second (0 when no time has passed)."""
    return count / seconds if seconds > 0 else 0.0


class Progress:
    """Reports ``done`` (of an optional ``total``) on ``stream``, throttled."""

    BAR_WIDTH = 30

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        total: int | None = None,
        tty: bool | None = None,
        interval_s: float = 5.0,
        tty_interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.total = total
        self.tty = stream.isatty() if tty is None else tty
        self.interval_s = tty_interval_s if self.tty else interval_s
        self.clock = clock
        self.started = clock()
        self.done = 0
        self._last_shown = self.started
        self._drawn = False

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def update(self, done: int, *, total: int | None = None, force: bool = False) -> None:
        """Record progress; show it if ``interval_s`` passed since the last line (or ``force``)."""
        self.done = done
        if total is not None:
            self.total = total
        now = self.clock()
        if force or now - self._last_shown >= self.interval_s:
            self._last_shown = now
            self._show(now)

    def line(self, now: float | None = None) -> str:
        """The progress text (without a line ending)."""
        elapsed = (self.clock() if now is None else now) - self.started
        per_s = rate(self.done, elapsed)
        text = f"{self.label}: {self.done}"
        if self.total:
            share = min(1.0, self.done / self.total)
            text += f"/{self.total} ({share:.0%})"
            if self.tty:
                filled = int(share * self.BAR_WIDTH)
                bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
                text = f"[{bar}] " + text
        text += f", {per_s:.0f}/s, {format_duration(elapsed)}"
        if self.total and per_s > 0 and self.done < self.total:
            text += f", ETA {format_duration((self.total - self.done) / per_s)}"
        return text

    def _show(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(now))
            self._drawn = True
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the in-place line (a terminal) so what follows starts on a new line."""
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K" + self.line() + "\n")
            self.stream.flush()
            self._drawn = False
