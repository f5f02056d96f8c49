"""``norce-simulator`` and ``order-bridge send`` through the console scripts, as the README
documents them."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess

import httpx
import pytest
from bridge_devkit.harness import clean_env, free_port, running_bridge, simulator
from bridge_devkit.harness import console_script as order_bridge_script

from bridge.order_model import OrderStatus

pytestmark = pytest.mark.broker


def _script() -> str:
    return order_bridge_script()


def _env(**settings: str) -> dict[str, str]:
    return clean_env(**settings)


def _free_port() -> int:
    return free_port()


@pytest.mark.parametrize(
    "argv", [["norce-simulator"], ["order-bridge-dev", "simulate"]], ids=["simulator", "devkit"]
)
def test_simulate_help_lists_the_simulator_options(argv: list[str]) -> None:
    """`norce-simulator --help` (and `order-bridge-dev simulate --help`) shows the simulator's
    options and exits 0."""
    proc = subprocess.run(
        [order_bridge_script(argv[0]), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for option in ("--port", "--orders", "--api-key", "--latency-ms", "--error-rate"):
        assert option in proc.stdout


async def test_simulate_serves_the_api_with_the_given_options() -> None:
    """`norce-simulator --port P --orders 3 --api-key K` serves seeded orders to that key
    only, and stops cleanly on SIGTERM."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        order_bridge_script("norce-simulator"),
        "--port",
        str(port),
        "--orders",
        "3",
        "--seed",
        "5",
        "--api-key",
        "readme-key",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        cwd="/",
    )
    try:
        assert proc.stdout is not None
        started = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert started["event"] == "simulator_started"
        assert started["orders"] == 3
        assert started["url"].endswith(f":{port}")
        order_id = started["seeded_ids_sample"][0]
        path = f"/api/v0/checkout/orders/{order_id}"
        scope = {"x-merchant": "norce", "x-channel": "1"}
        async with httpx.AsyncClient(base_url=started["url"], headers=scope, timeout=10) as http:
            ok = await http.get(path, headers={"Authorization": "Bearer readme-key"})
            denied = await http.get(path, headers={"Authorization": "Bearer other-key"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["id"] == order_id
        assert denied.status_code in (401, 403)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        await proc.communicate()
    assert code == 0


def test_send_state_choices_come_from_the_order_model() -> None:
    """--state and --expected-state accept exactly the OrderStatus values."""
    proc = subprocess.run(
        [_script(), "send", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    choices = "{" + ",".join(s.value for s in OrderStatus) + "}"
    assert f"--state {choices}" in proc.stdout, proc.stdout
    assert f"--expected-state {choices}" in proc.stdout, proc.stdout
    bad = subprocess.run(
        [_script(), "send", "--order-id", "o_x", "--state", "shipped"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


async def test_send_configured_by_the_environment_is_applied_by_the_bridge(
    kafka_bootstrap: str,
) -> None:
    """`order-bridge send --order-id … --state accepted --expected-state processing` with only
    BRIDGE_KAFKA__BOOTSTRAP_SERVERS and BRIDGE_TOPICS__COMMANDS set: the bridge applies it."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        (order_id,) = sim.app.seed(1, "norce", "1")
        env = _env(
            BRIDGE_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
            BRIDGE_TOPICS__COMMANDS=bridge.topics.commands,
        )
        first = await asyncio.to_thread(
            subprocess.run,
            [_script(), "send", "--order-id", order_id, "--state", "processing"],
            env=env,
            capture_output=True,
            timeout=90,
            check=False,
            cwd="/",
        )
        assert first.returncode == 0, first.stderr.decode()[-2000:]
        second = await asyncio.to_thread(
            subprocess.run,
            [
                _script(),
                "send",
                "--order-id",
                order_id,
                "--state",
                "accepted",
                "--expected-state",
                "processing",
                "--correlation-id",
                "readme-1",
            ],
            env=env,
            capture_output=True,
            timeout=90,
            check=False,
            cwd="/",
        )
        assert second.returncode == 0, second.stderr.decode()[-2000:]
        command_ids = []
        for out in (first, second):
            sent = json.loads(out.stdout)
            assert sent["topic"] == bridge.topics.commands
            bridge.sent.append((sent["partition"], sent["offset"]))
            command_ids.append(sent["sent"])
        outputs = await bridge.all_handled()
        outcomes = {r["commandId"]: (r["outcome"], r["correlationId"]) for r in outputs.results}
        assert outcomes == {
            command_ids[0]: ("applied", None),
            command_ids[1]: ("applied", "readme-1"),
        }
        assert sim.app.history(order_id) == ["checkout", "processing", "accepted"]


async def test_send_to_an_unreachable_broker_is_one_line_and_exit_3() -> None:
    """No broker at BRIDGE_KAFKA__BOOTSTRAP_SERVERS: one line and exit code 3 after --timeout."""
    env = _env(BRIDGE_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{_free_port()}")
    proc = await asyncio.to_thread(
        subprocess.run,
        [_script(), "send", "--order-id", "o_x", "--delete", "--timeout", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, proc.stderr
    assert "Kafka unreachable" in lines[0]
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in lines[0]
