"""The Kafka broker of a development run: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a local one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

from bridge_devkit.localkafka import LocalKafka, external_bootstrap


def _quiet(_: str) -> None:
    """The default announcer: says nothing."""


@contextlib.contextmanager
def broker(say: Callable[[str], None] = _quiet) -> Iterator[str]:
    """Yield a bootstrap address: the external broker, or a fresh local KRaft broker (stopped
    and removed at the end). ``say`` is told what happens (for the demo and the benchmarks)."""
    external = external_bootstrap()
    if external:
        say(f"using the broker at KAFKA_BOOTSTRAP_SERVERS={external}")
        yield external
        return
    say("starting a local Apache Kafka broker (KRaft, single node) ...")
    kafka = LocalKafka()
    kafka.start()
    try:
        say(f"broker ready at {kafka.bootstrap_servers} in {kafka.cold_start_s or 0.0:.1f}s")
        yield kafka.bootstrap_servers
    finally:
        kafka.cleanup()


@contextlib.asynccontextmanager
async def async_broker(say: Callable[[str], None] = _quiet) -> AsyncIterator[str]:
    """:func:`broker` for asyncio code: the slow start and stop run in a thread."""
    manager = broker(say)
    bootstrap = await asyncio.to_thread(manager.__enter__)
    try:
        yield bootstrap
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
