"""Circuit breaker for the Norce API: while it is open the bridge stops consuming.

closed ──(``threshold`` systemic failures in a row)──► open ──(open period elapsed)──► half_open
half_open ──(the single probe succeeds)──► closed;  half_open ──(probe fails)──► open (period x2,
capped). Callers ``await acquire()`` before a command: closed lets everyone through, open makes
them wait, half_open lets exactly one probe through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from bridge.vocabulary import CircuitState

State = CircuitState  # compatibility name


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        open_s: float,
        max_open_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        self._threshold = threshold
        self._base_open = open_s
        self._max_open = max_open_s
        self._open_for = open_s
        self._clock = clock
        self._on_change = on_change
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False
        self._changed = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self.state != CircuitState.CLOSED

    def _set(self, state: CircuitState) -> None:
        if state != self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)
        self._changed.set()
        self._changed = asyncio.Event()

    async def acquire(self) -> None:
        """Wait until a call is allowed (immediately while closed)."""
        while True:
            if self.state == CircuitState.CLOSED:
                return
            if self.state == CircuitState.OPEN:
                remaining = self._opened_at + self._open_for - self._clock()
                if remaining <= 0:
                    self._probe_out = False
                    self._set(CircuitState.HALF_OPEN)
                    continue
                waiter = self._changed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), remaining)
                continue
            # half_open
            if not self._probe_out:
                self._probe_out = True
                return
            await self._changed.wait()

    def success(self) -> None:
        self._failures = 0
        if self.state != CircuitState.CLOSED:
            self._open_for = self._base_open
            self._probe_out = False
            self._set(CircuitState.CLOSED)

    def abandon(self) -> None:
        """The probe was cancelled before it finished: let another caller probe."""
        if self.state == CircuitState.HALF_OPEN and self._probe_out:
            self._probe_out = False
            self._set(CircuitState.HALF_OPEN)

    def failure(self) -> None:
        self._failures += 1
        if self.state == CircuitState.HALF_OPEN:
            self._open_for = min(self._max_open, self._open_for * 2)
            self._open()
        elif self.state == CircuitState.CLOSED and self._failures >= self._threshold:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_out = False
        self._set(CircuitState.OPEN)
