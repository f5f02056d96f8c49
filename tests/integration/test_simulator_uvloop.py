"""The simulator under uvloop (issue 13): ``--event-loop uvloop`` serves real requests.

uvloop's ``TCPTransport`` is not an ``asyncio.Transport`` subclass; the simulator used to
assert that it was, so every connection was reset. These tests start the real CLI as a
subprocess and talk to it over loopback TCP.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bridge_devkit.harness import free_port

from .test_simulator_cli import launch as launch_simulator

ROOT = Path(__file__).resolve().parents[2]
BASE = "/api/v0/checkout/orders"
HEADERS = {"Authorization": "Bearer sim-api-key", "x-merchant": "norce", "x-channel": "1"}


async def launch(*args: str) -> asyncio.subprocess.Process:
    return await launch_simulator("--port", str(free_port()), *args)


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        return await process.wait()


async def started_line(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if not line:
        assert process.stderr is not None
        raise AssertionError((await process.stderr.read()).decode())
    value: dict[str, Any] = json.loads(line)
    return value


@pytest.fixture
async def uvloop_sim() -> AsyncIterator[dict[str, Any]]:
    process = await launch("--orders", "5", "--seed", "4", "--event-loop", "uvloop")
    try:
        yield await started_line(process)
    finally:
        assert await stop(process) == 0


async def test_uvloop_serves_every_operation(uvloop_sim: dict[str, Any]) -> None:
    """Under uvloop, GET, PUT state, POST, list and DELETE answer as documented."""
    assert uvloop_sim["event_loop"] == "uvloop"
    oid = uvloop_sim["seeded_ids_sample"][0]
    async with httpx.AsyncClient(base_url=uvloop_sim["url"], headers=HEADERS, timeout=5) as c:
        got = await c.get(f"{BASE}/{oid}")
        assert got.status_code == 200
        assert got.json()["id"] == oid
        put = await c.put(f"{BASE}/{oid}/state", json={"currentStatus": "processing"})
        assert (put.status_code, put.content) == (200, b"")
        after = (await c.get(f"{BASE}/{oid}")).json()
        assert after["state"]["currentStatus"] == "processing"
        created = await c.post(BASE, json={"reference": "uv-1"})
        assert created.status_code == 201
        listed = await c.get(BASE, params={"limit": 100})
        assert listed.status_code == 200
        assert created.json() in [order["id"] for order in listed.json()["data"]]
        assert (await c.delete(f"{BASE}/{oid}")).status_code == 204
        assert (await c.get(f"{BASE}/{oid}")).status_code == 404
        # Many keep-alive requests on few connections and many in parallel.
        answers = await asyncio.gather(*(c.get(f"{BASE}/{created.json()}") for _ in range(50)))
        assert {a.status_code for a in answers} == {200}


async def test_uvloop_reset_fault_is_a_real_tcp_reset(uvloop_sim: dict[str, Any]) -> None:
    """A scripted reset aborts the connection with a TCP RST under uvloop, then serving goes on."""
    url = uvloop_sim["url"]
    oid = uvloop_sim["seeded_ids_sample"][1]
    async with httpx.AsyncClient(base_url=url, timeout=5) as admin:
        script = {"script": [{"fault": "reset", "path_suffix": f"/{oid}"}]}
        assert (await admin.put("/__admin/faults", json=script)).status_code == 200
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
        writer.write(f"GET {BASE}/{oid} HTTP/1.1\r\nhost: sim\r\n{head}\r\n".encode())
        await writer.drain()
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=5) as c:
        assert (await c.get(f"{BASE}/{oid}")).status_code == 200


async def test_default_event_loop_is_asyncio() -> None:
    """Without --event-loop the simulator runs on asyncio even though uvloop is installed."""
    process = await launch("--orders", "1")
    try:
        started = await started_line(process)
        assert started["event_loop"] == "asyncio"
        async with httpx.AsyncClient(base_url=started["url"], headers=HEADERS, timeout=5) as c:
            oid = started["seeded_ids_sample"][0]
            assert (await c.get(f"{BASE}/{oid}")).status_code == 200
    finally:
        assert await stop(process) == 0


async def test_unknown_event_loop_is_refused() -> None:
    """An unknown --event-loop value exits with status 2 before serving."""
    process = await launch("--event-loop", "trio")
    assert await asyncio.wait_for(process.wait(), 30) == 2
    assert process.stderr is not None
    assert b"--event-loop" in await process.stderr.read()
