"""The simulator CLI (``python -m norce_simulator``) as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bridge_devkit.harness import free_port
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
