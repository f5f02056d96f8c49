"""Membership lease: the bridge writes to Norce for a partition only while it provably owns it.

Kafka fences a paused or expelled member only at the Kafka boundary (its commits and
transactions fail). The side effect the bridge exists for, the Norce ``PUT``/``DELETE``, is
outside Kafka, so the bridge fences it itself:

* The group coordinator expires a member ``session.timeout.ms`` after the last heartbeat it
  *received*, and during a rebalance removes a member that has not rejoined within the rebalance
  timeout (which starts after the member's last heartbeat). Neither can happen while
  ``now - sent < min(session, rebalance) timeout``, where ``sent`` is when a heartbeat that was
  answered successfully (or a SyncGroup that succeeded) was *sent*: the broker saw it after that.
* So a member holds its lease while the age of its last successful heartbeat, on a clock that
  keeps running while the process is frozen (``CLOCK_BOOTTIME`` on Linux, else monotonic), is
  below that timeout minus a safety margin. A process resumed after SIGSTOP, a long GC pause or a
  VM freeze sees an expired lease at once, before any timer callback can write.
* A write needs the lease *and* the partition in the current assignment (not being revoked).
  Expired but still assigned: the write waits for the next heartbeat; renewed, it proceeds, so a
  member paused for less than the session timeout keeps its partitions and its work. The
  partition revoked (which is how aiokafka reports an expulsion, when it rejoins): the write is
  abandoned with :class:`LeaseLost`; the new owner runs the command.

Residual window (documented in the README, "Fencing"): a pause between the lease check and the
request's bytes leaving the socket longer than the margin. Closing it needs conditional writes on
the server (a fencing token or ``If-Match``), which the Norce API does not offer.

Everything here is pure (the clock is injected) except :data:`write_gate`, the context variable
through which the runtime hands each command's gate to the Norce client.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bridge.errors import BridgeError


class LeaseLost(BridgeError):
    """The partition of the command is no longer provably ours: abandon it, write nothing."""

    retriable = False


def lease_clock() -> float:
    """Seconds on a clock that keeps counting while the process (or the machine) is suspended."""
    return time.clock_gettime(_CLOCK)


_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


@dataclass
class MembershipLease:
    """The group-membership lease of one consumer (see the module docstring).

    ``timeout_s`` is ``min(session timeout, rebalance timeout)``; the lease is valid while the
    last successful heartbeat was sent less than ``timeout_s - margin_s`` ago.
    """

    timeout_s: float
    margin_s: float
    clock: Callable[[], float] = lease_clock
    renewed_at: float | None = None
    lost_count: int = 0
    _valid_before: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.margin_s <= 0 or self.margin_s >= self.timeout_s:
            raise ValueError("the lease margin must be positive and below the timeout")

    @property
    def limit_s(self) -> float:
        return self.timeout_s - self.margin_s

    def renew(self, sent_at: float) -> None:
        """A heartbeat or SyncGroup sent at ``sent_at`` (lease clock) was answered successfully."""
        if self.renewed_at is None or sent_at > self.renewed_at:
            self.renewed_at = sent_at

    def age(self) -> float | None:
        """Seconds since the last successful heartbeat was sent, None before the first one."""
        return None if self.renewed_at is None else self.clock() - self.renewed_at

    def valid(self) -> bool:
        """True while the lease holds; counts each transition from valid to expired once."""
        age = self.age()
        ok = age is not None and age < self.limit_s
        if self._valid_before and not ok:
            self.lost_count += 1
        self._valid_before = ok
        return ok

    def revoke(self) -> None:
        """The member left or lost the group: no lease until the next successful join."""
        if self._valid_before:
            self.lost_count += 1
        self._valid_before = False
        self.renewed_at = None


def lease_margin_s(timeout_s: float) -> float:
    """The safety margin kept below the timeout: 20 % of it, at least 1 s."""
    return max(1.0, 0.2 * timeout_s)


class WriteGate(Protocol):
    """What the Norce client checks before every write attempt (PUT/DELETE, retries included).

    ``acquire`` returns when the write may go out (the lease holds and the partition is still
    ours), waiting while the lease is merely expired, or raises :class:`LeaseLost`.
    """

    async def acquire(self) -> None: ...

    async def before_delete(self, previous_status: str | None) -> None:
        """Make durable, before a DELETE is sent, the state the order is deleted from."""


# The gate of the command the current task runs; None outside the runtime (tools, tests).
write_gate: contextvars.ContextVar[WriteGate | None] = contextvars.ContextVar(
    "write_gate", default=None
)
# Set by the Norce client while one write request is being sent: the HTTP transport checks the
# gate again once it holds a connection, immediately before the request's bytes are written (a
# pool wait or a TCP connect can take long, and aiohttp re-sends idempotent requests on a
# dropped keep-alive connection by itself).
sending_write: contextvars.ContextVar[WriteGate | None] = contextvars.ContextVar(
    "sending_write", default=None
)


async def recheck_before_send() -> None:
    """Called by the transport right before a request is written: re-acquire the write gate."""
    gate = sending_write.get()
    if gate is not None:
        await gate.acquire()
