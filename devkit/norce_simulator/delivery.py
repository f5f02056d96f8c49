"""Asynchronous delivery of notification events: HTTP POSTs on the simulator's event loop.

One ``Deliverer`` per running simulator server (``start_simulator`` starts it, the handle's
``aclose`` stops it). It sleeps until the hub wakes it (a new event, a finished attempt, new
settings) or the next retry is due, takes due deliveries within the hub's concurrency and posts
each with an ``aiohttp`` client session (any event loop, uvloop included; several times
less CPU per delivery than ``httpx``). A 2xx answer delivers; any other status,
a timeout or a connection error is a failed attempt that the hub retries with backoff. Without a
running deliverer (an app used in-process only) events stay pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from norce_simulator.notifications import Delivery, NotificationHub

log = logging.getLogger("norce_simulator")

RECEIVER_DOWN = "receiver down (injected)"


class Deliverer:
    """Runs the delivery loop of one ``NotificationHub`` on the current event loop."""

    def __init__(self, hub: NotificationHub) -> None:
        self.hub = hub
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Attach to the hub and start the loop."""
        self.hub.wakeup = self.wake
        self._runner = self._loop.create_task(self._run(), name="notification-deliverer")

    def wake(self) -> None:
        """Wake the loop (thread-safe; a no-op once the loop is closed)."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            jobs, wait = self.hub.take_due(time.monotonic())
            for job in jobs:
                task = self._loop.create_task(self._attempt(job))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if jobs:
                continue  # take more while slots are free; the next call tells the wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _attempt(self, job: Delivery) -> None:
        event = job.event
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            if self.hub.faults.receiver_down:
                error = RECEIVER_DOWN
            else:
                assert event.url is not None
                async with self._client.post(
                    event.url,
                    data=event.body,
                    headers=event.headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.hub.policy.timeout_s),
                ) as response:
                    await response.read()
                    status = response.status
        except TimeoutError as exc:
            error = f"timeout: {type(exc).__name__}"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except asyncio.CancelledError:
            self.hub.abandon(job)  # shutting down: the delivery stays pending
            raise
        except Exception as exc:  # a bad URL or header must not kill the deliverer
            log.exception("notification delivery of %s failed", event.id)
            error = f"{type(exc).__name__}: {exc}"[:300]
        self.hub.finish_attempt(job, status, error, time.monotonic() - started)

    async def aclose(self) -> None:
        """Stop the loop and in-flight attempts (they stay pending) and close the client."""
        if self.hub.wakeup == self.wake:
            self.hub.wakeup = None
        tasks = [*self._tasks] + ([self._runner] if self._runner is not None else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.close()
