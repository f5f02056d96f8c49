"""How one Norce API call retries, as a ``stamina`` backoff hook.

The settings are ``bridge.config.RetrySettings`` (``BRIDGE_NORCE__RETRY__*``), the one source.
Each logical call gets a :class:`RetryRun`; ``stamina.retry_context(on=run.on_error, ...)``
drives the attempts and sleeps, and the hook alone decides, per failure:

* only ``err.retriable`` failures are retried, at most ``max_attempts`` attempts in all;
* the delay before retry ``n`` (0-based) is full jitter, ``uniform(0, min(max_delay_s,
  base_delay_s * 2**n))``, or the server's ``Retry-After`` capped at ``retry_after_cap_s``;
* a call never sleeps past ``deadline_s`` after it started: it raises the last error instead
  (time spent waiting for the write gate is not counted, see :meth:`RetryRun.extend`);
* each retry is logged and reported to the observer (the retry metric) before the sleep.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from bridge.config import RetrySettings
from bridge.errors import NorceApiError
from bridge.norce_errors import retry_reason

__all__ = ["RetryRun", "full_jitter"]

logger = logging.getLogger("bridge.norce")


def full_jitter(settings: RetrySettings, retry_index: int, rng: random.Random) -> float:
    """Full-jitter delay before retry ``retry_index`` (0 for the first retry)."""
    ceiling = min(settings.max_delay_s, settings.base_delay_s * 2.0 ** min(retry_index, 64))
    return rng.uniform(0.0, ceiling)


class RetryRun:
    """The retry state of one logical call: attempts made, deadline, last failure."""

    def __init__(
        self,
        settings: RetrySettings,
        *,
        endpoint: str,
        clock: Callable[[], float],
        rng: random.Random,
        on_retry: Callable[[str, str], None],
    ) -> None:
        self._settings = settings
        self._endpoint = endpoint
        self._clock = clock
        self._rng = rng
        self._on_retry = on_retry
        self._deadline = clock() + settings.deadline_s
        self._failure: NorceApiError | None = None
        self.attempts = 0

    @property
    def remaining_s(self) -> float:
        """Seconds left before the call's deadline."""
        return self._deadline - self._clock()

    def start_attempt(self) -> int:
        """Count the attempt about to be made; raise the last error if the deadline passed."""
        if self._failure is not None and self._clock() >= self._deadline:
            raise self._failure
        self.attempts += 1
        return self.attempts

    def extend(self, seconds: float) -> None:
        """Move the deadline by time that was not the API's (waiting for the write gate)."""
        self._deadline += seconds

    def on_error(self, exc: Exception) -> bool | float:
        """stamina's backoff hook: False to raise ``exc``, else the seconds to wait."""
        if not isinstance(exc, NorceApiError) or not exc.retriable:
            return False
        self._failure = exc
        s = self._settings
        if self.attempts >= s.max_attempts:
            return False
        if exc.retry_after is not None:
            delay = min(exc.retry_after, s.retry_after_cap_s)
        else:
            delay = full_jitter(s, self.attempts - 1, self._rng)
        if self._clock() + delay >= self._deadline:
            return False
        reason = retry_reason(exc)
        logger.info(
            "Norce %s failed (%s) on attempt %d/%d; retrying in %.3fs",
            self._endpoint,
            reason,
            self.attempts,
            s.max_attempts,
            delay,
        )
        self._on_retry(self._endpoint, reason)
        return delay
