"""What a retry wrapper costs on a call that succeeds at once: stamina vs a plain loop.

Each operation is awaited ``--calls`` times inside (a) a hand-written retry loop (one
``try``/``except`` and an attempt counter) and (b) ``stamina.retry_context`` with a backoff
hook, the way the bridge would use it. Printed: microseconds per successful call for each, the
difference, and the difference as a share of the operation's own cost. Operations:

* ``noop``: an ``async def`` returning at once (the wrapper alone);
* ``client-mock``: ``NorceClient.get_order_json`` over ``httpx.MockTransport`` (the client's
  own CPU without sockets);
* ``client-aiohttp``: the same over the bridge's aiohttp transport against the Norce API
  simulator in this process (a real request on loopback, both ends' CPU on one core).

The client itself retries with stamina, so both columns of the client rows include one
``retry_context`` already; the difference between the columns is the cost of one more, i.e.
what the client pays per successful call for stamina instead of a hand-written loop. The
figures are CPU time on a shared machine: compare the two columns of one run, not runs.

Usage::

    python bench/retry_overhead.py --calls 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import stamina
from norce_simulator import SimulatorConfig, start_simulator
from pydantic import SecretStr

from bridge.config import RetrySettings
from bridge.errors import NorceApiError
from bridge.norce import NorceClient
from bridge.norce_http import build_http_client

Op = Callable[[], Awaitable[object]]
API_KEY = "sim-api-key"
ONE_ATTEMPT = RetrySettings(max_attempts=1)


def _retriable(exc: Exception) -> bool | float:
    return isinstance(exc, NorceApiError) and exc.retriable and 0.0


async def hand_loop(op: Op) -> object:
    """The shape of the hand-written loop: count attempts, re-raise what is not retried."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except NorceApiError as err:
            if not err.retriable or attempt >= 6:
                raise


async def stamina_loop(op: Op) -> object:
    """stamina with a backoff hook deciding (attempts and deadline left to the hook)."""
    async for attempt in stamina.retry_context(on=_retriable, attempts=None, timeout=None):
        with attempt:
            return await op()
    raise AssertionError("unreachable")


async def per_call_us(wrapper: Callable[[Op], Awaitable[object]], op: Op, calls: int) -> float:
    """Microseconds per call of ``wrapper(op)``, after a warm-up."""
    for _ in range(min(200, calls)):
        await wrapper(op)
    started = time.perf_counter()
    for _ in range(calls):
        await wrapper(op)
    return (time.perf_counter() - started) / calls * 1e6


async def measure(name: str, op: Op, calls: int, rounds: int) -> None:
    """Alternate the two wrappers ``rounds`` times and print the medians."""
    hand: list[float] = []
    stam: list[float] = []
    for _ in range(rounds):
        hand.append(await per_call_us(hand_loop, op, calls))
        stam.append(await per_call_us(stamina_loop, op, calls))
    h, s = statistics.median(hand), statistics.median(stam)
    print(
        f"{name:15s} hand-written {h:8.1f} us/call   stamina {s:8.1f} us/call   "
        f"overhead {s - h:6.1f} us ({(s - h) / h * 100:5.1f} % of the call)"
    )


async def main(calls: int, rounds: int) -> None:
    """Run the three operations."""

    async def noop() -> None:
        return None

    await measure("noop", noop, calls * 10, rounds)

    order = {"id": "o_1", "merchant": "norce", "channel": "1", "state": {"transitions": []}}
    mock = httpx.MockTransport(lambda _request: httpx.Response(200, json=order))
    async with build_http_client("http://127.0.0.1:9", transport=mock) as http:
        client = NorceClient(http, api_key=SecretStr(API_KEY), retry=ONE_ATTEMPT)

        async def get_mock() -> Any:
            return await client.get_order_json("o_1", merchant="norce", channel="1")

        await measure("client-mock", get_mock, calls, rounds)

    sim = await start_simulator(
        SimulatorConfig(api_keys=(API_KEY,), seed=1, orders=1), host="127.0.0.1", port=0
    )
    try:
        (order_id,) = sim.app.seed(1, "norce", "1")
        async with build_http_client(sim.url, http_backend="aiohttp") as http:
            client = NorceClient(http, api_key=SecretStr(API_KEY), retry=ONE_ATTEMPT)

            async def get_real() -> Any:
                return await client.get_order_json(order_id, merchant="norce", channel="1")

            await measure("client-aiohttp", get_real, calls // 2, rounds)
    finally:
        await sim.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
