"""The simulator CLI (``python -m norce_simulator``) as a subprocess."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bridge_devkit.harness import SimulatorProcess, free_port
from norce_simulator import SimulatorApp, SimulatorConfig
from openapi_schema_validator import OAS30ReadValidator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

ROOT = Path(__file__).resolve().parents[2]
SPEC = json.loads((ROOT / "tests" / "norce-order-api.openapi.json").read_text())
BASE = "/api/v0/checkout/orders"


async def launch(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "norce_simulator",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def stop(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> int:
    if process.returncode is None:
        process.send_signal(sig)
    try:
        return await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        return await process.wait()


@pytest.fixture
async def running() -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    port = free_port()
    process = await launch(
        "--port", str(port), "--orders", "7", "--seed", "9", "--api-key", "k1", "--api-key", "k2"
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        yield process, json.loads(line)
    finally:
        await stop(process)


async def test_cli_serves_seeded_orders(
    running: tuple[asyncio.subprocess.Process, dict[str, Any]],
) -> None:
    """The start line names the URL and sample ids; keys are enforced; orders match the schema."""
    _, started = running
    assert started["event"] == "simulator_started"
    assert started["orders"] == 7
    assert len(started["seeded_ids_sample"]) == 5
    oid = started["seeded_ids_sample"][0]
    scope = {"x-merchant": "norce", "x-channel": "1"}
    async with httpx.AsyncClient(base_url=started["url"], headers=scope, timeout=5) as client:
        assert (await client.get(f"{BASE}/{oid}")).status_code == 401
        wrong = await client.get(f"{BASE}/{oid}", headers={"Authorization": "Bearer sim-api-key"})
        assert wrong.status_code == 401
        response = await client.get(f"{BASE}/{oid}", headers={"Authorization": "Bearer k2"})
        assert response.status_code == 200
    registry: Registry[Any] = Registry().with_resource(
        "urn:spec", Resource.from_contents(SPEC, default_specification=DRAFT4)
    )
    validator = OAS30ReadValidator(
        {"$ref": "urn:spec#/components/schemas/Order"},
        registry=registry,
        format_checker=oas30_format_checker,
    )
    assert [e.message for e in validator.iter_errors(response.json())] == []
    assert response.json()["id"] == oid


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_stops_cleanly_on_signal(sig: int) -> None:
    """SIGTERM and SIGINT stop the simulator with exit code 0."""
    process = await launch("--port", str(free_port()), "--orders", "1")
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert json.loads(line)["event"] == "simulator_started"
    assert await stop(process, sig) == 0


async def test_cli_applies_fault_flags() -> None:
    """--error-rate 1 makes the API answer 5xx while admin endpoints keep working."""
    process = await launch("--port", str(free_port()), "--orders", "1", "--error-rate", "1")
    try:
        assert process.stdout is not None
        started = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        async with httpx.AsyncClient(base_url=started["url"], timeout=5) as client:
            oid = started["seeded_ids_sample"][0]
            assert (await client.get(f"{BASE}/{oid}")).status_code in (500, 503)
            faults = (await client.get("/__admin/faults")).json()
            assert faults["error_rate"] == 1.0
    finally:
        await stop(process)


async def test_cli_rejects_invalid_settings() -> None:
    """Out-of-range settings exit with status 2 without serving."""
    process = await launch("--port", str(free_port()), "--error-rate", "3")
    assert await asyncio.wait_for(process.wait(), 30) == 2


async def test_a_simulator_process_freezes_what_it_seeded_out_of_the_full_collections(
    tmp_path: Path,
) -> None:
    """The store only grows; in a process of its own, each seeding moves everything alive to
    the permanent GC generation (a full collection over a benchmark's worth of orders stalled
    every request in flight for 100-300 ms). Orders stay readable and writable."""
    sim = SimulatorProcess(tmp_path / "sim.log", api_key="k1", seed=3)
    try:
        at_start = (await sim.admin("GET", "/stats"))["gc_frozen"]
        ids = await sim.seed(2_000)
        after_seed = (await sim.admin("GET", "/stats"))["gc_frozen"]
        headers = {"x-merchant": "norce", "x-channel": "1", "Authorization": "Bearer k1"}
        async with httpx.AsyncClient(base_url=sim.url, headers=headers, timeout=10) as api:
            put = await api.put(f"{BASE}/{ids[0]}/state", json={"currentStatus": "processing"})
            got = await api.get(f"{BASE}/{ids[0]}")
    finally:
        await sim.aclose()
    assert at_start > 0  # the start-up state
    assert after_seed > at_start + 2_000 * 20  # each order is dozens of containers
    assert put.status_code == 200
    assert got.json()["state"]["currentStatus"] == "processing"


async def test_an_in_process_simulator_leaves_the_host_s_collector_alone() -> None:
    """Embedded in a test process, seeding never freezes the host's objects."""
    app = SimulatorApp(SimulatorConfig(orders=0))
    before = gc.get_freeze_count()
    app.seed(500)
    assert gc.get_freeze_count() == before
    assert app.stats()["gc_frozen"] == before
