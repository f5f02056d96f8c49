"""Delivery rate of the simulator's order notifications (issue 14).

Seeds ``--orders`` orders, registers one channel notification that fires on ``processing``,
moves every order to ``processing`` "as another adapter" at once and measures how long the
simulator takes to deliver every event to an ``aiohttp.web`` receiver that answers 200 at once.
Simulator and receiver share this process (and its CPU), so the figure is a floor for what a
separate receiver (the bridge's ingress) would see.

Usage::

    python bench/simulator_notifications.py --orders 2000 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web
from bridge_devkit.harness import free_port
from norce_simulator import SimulatorConfig, start_simulator


async def run(orders: int, concurrency: int) -> None:
    received = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(status=200)

    receiver = web.Application()
    receiver.router.add_post("/{tail:.*}", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sim = await start_simulator(SimulatorConfig(orders=orders, log_calls=False))
    app, hub = sim.app, sim.app.notifications

    def admin(method: str, path: str, body: object) -> None:
        response = app.handle(method, f"/__admin{path}", {}, json.dumps(body).encode())
        assert response.status == 200, response.body

    admin("PUT", "/adapters/bench", {"internalUrl": f"http://127.0.0.1:{port}"})
    admin("PUT", "/notification-settings", {"concurrency": concurrency})
    notification = {
        "adapterId": "bench",
        "reference": "bench",
        "scope": "/state/currentStatus",
        "schema": {"const": "processing"},
        "invoke": "{configuration.adapter.internalUrl}/notifications/{order.id}",
    }
    admin(
        "PUT",
        "/notifications",
        {"merchant": "norce", "channel": "1", "notifications": [notification]},
    )
    started = time.monotonic()
    for order_id in app.seeded_ids:
        admin("POST", f"/orders/{order_id}/state", {"state": "processing", "adapterId": "bench"})
    while True:
        if not hub.stats()["pending"]:
            break
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    stats = hub.stats()
    await sim.aclose()
    await runner.cleanup()
    print(f"simulator notifications: {orders} events, concurrency {concurrency}")
    print(f"  delivered     {stats['delivered']} (received {received}, retries {stats['retries']})")
    print(f"  elapsed       {elapsed:.2f} s")
    print(f"  rate          {orders / elapsed:,.0f} deliveries/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(run(args.orders, args.concurrency))


if __name__ == "__main__":
    main()
