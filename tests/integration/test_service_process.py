"""``order-bridge run`` as a real process: configuration from env, SIGTERM drain, restart, logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from bridge_devkit.harness import (
    API_KEY,
    Bridge,
    BridgeProcess,
    clean_env,
    free_port,
    log_lines,
    metrics_text,
    poll_until,
    process_env,
    running_bridge,
    set_state,
    simulator,
    spawn_bridge,
    wait_exit,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _env(bridge: Bridge, drain_s: float) -> dict[str, str]:
    return process_env(
        bridge.settings, bridge.sim.url, BRIDGE_PROCESSING__DRAIN_DEADLINE_S=str(drain_s)
    )


async def test_sigterm_drains_commits_only_finished_work_and_a_restart_finishes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """SIGTERM exits within the deadline, commits no unfinished work; a restart completes."""
    drain_s = 5.0
    async with (
        simulator(latency_ms=40) as sim,
        running_bridge(kafka_bootstrap, sim, start=False) as bridge,
    ):
        orders = sim.app.seed(60, "norce", "1")
        commands = [
            set_state(o, s) for s in ("processing", "accepted", "completed") for o in orders
        ]
        await bridge.send(*commands)
        log_path = tmp_path / "bridge.log"
        env = _env(bridge, drain_s)
        proc = spawn_bridge(env, log_path)
        try:
            await bridge.collect(lambda o: len(o.results) >= 40, timeout_s=60)
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            # Bounded by the drain deadline (plus slack for a busy machine), never killed.
            code = await wait_exit(proc, drain_s + 30, log_path)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert code == 0

        # No committed offset is past a record whose outputs are missing.
        await bridge.collect(lambda o: False, timeout_s=1.0)
        handled = bridge.outputs.handled_sources()
        committed = await bridge.committed()
        for partition, offset in committed.items():
            below = {(p, o) for p, o in bridge.sent if p == partition and o < offset}
            assert below <= handled, (
                f"partition {partition}: committed {offset} past unfinished work"
            )
        assert len(bridge.outputs.results) < len(commands), "the run finished before SIGTERM"

        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        messages = [rec["msg"] for rec in lines]
        assert "draining" in messages
        assert messages.index("draining") < messages.index("bridge stopped")
        stopped = [rec for rec in lines if rec["msg"] == "bridge stopped"]
        assert len(stopped) == 1
        assert stopped[0]["applied"] >= 40
        with_ids = [rec for rec in lines if "command_id" in rec]
        assert with_ids
        assert all("order_id" in rec for rec in with_ids)
        assert API_KEY not in log_path.read_text()

        proc = spawn_bridge(env, log_path)
        try:
            out = await bridge.all_handled(timeout_s=90)
            proc.send_signal(signal.SIGTERM)
            # Nothing left to drain, but the same bound as above: the final commit (at least
            # 5 s) and the consumer's close (at most 15 s) wait on a broker that may be busy.
            assert await wait_exit(proc, drain_s + 30, log_path) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        per_command = out.results_by_command()
        assert set(per_command) == {c.command_id for c in commands}
        assert not out.dlq
        for o in orders:
            assert sim.app.history(o) == ["checkout", "processing", "accepted", "completed"]


async def test_missing_topics_fail_with_a_clear_message_when_creation_is_disabled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With topic creation off, startup fails naming the missing topic, exit code 2."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim, start=False) as bridge:
        env = _env(bridge, 5)
        env["BRIDGE_TOPICS__EVENTS"] = "no-such-topic-events"
        log_path = tmp_path / "bridge.log"
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "bridge", "run"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2
        assert b"no-such-topic-events" in proc.stderr
        assert b"BRIDGE_TOPICS__CREATE_MISSING" in proc.stderr
        assert not log_path.exists()


def test_invalid_configuration_is_reported_per_variable_without_values() -> None:
    """A bad setting fails at startup naming the variable, never echoing secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        {
            "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "lots",
            "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "BRIDGE_KAFKA__SASL_PASSWORD": "hunter2-very-secret",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "run"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "BRIDGE_PROCESSING__MAX_IN_FLIGHT" in err
    assert "BRIDGE_KAFKA" in err
    assert "hunter2-very-secret" not in err


async def test_health_endpoints_and_metrics_while_running(kafka_bootstrap: str) -> None:
    """/healthz, /readyz and /metrics answer, and expose no configuration values."""
    import httpx

    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        (order_id,) = sim.app.seed(1, "norce", "1")
        await bridge.send(set_state(order_id, "processing"))
        await bridge.all_handled()
        service = bridge.service
        assert service is not None
        assert service.health is not None
        await poll_until(lambda: service.runtime.assigned, 10, "assignment")
        async with httpx.AsyncClient(base_url=service.health.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            metrics = (await http.get("/metrics")).text
        assert 'norce_bridge_commands_total{outcome="applied",type="SetOrderState"} 1.0' in metrics
        assert "norce_bridge_api_request_duration_seconds_bucket" in metrics
        assert sim.url.split("//")[1] not in metrics
        assert API_KEY not in metrics
        assert bridge.settings.kafka.bootstrap_servers not in metrics


async def test_send_publishes_one_json_command_that_the_bridge_applies(
    kafka_bootstrap: str,
) -> None:
    """`order-bridge send` produces a JSON command keyed by order id; the bridge applies it."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim) as bridge:
        (order_id,) = sim.app.seed(1, "norce", "1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "send",
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            bridge.topics.commands,
            "--order-id",
            order_id,
            "--state",
            "processing",
            "--expected-state",
            "checkout",
            "--correlation-id",
            "ops-1",
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        sent = json.loads(stdout)
        bridge.sent.append((sent["partition"], sent["offset"]))
        out = await bridge.all_handled()
        (result,) = out.results
        assert result["commandId"] == sent["sent"]
        assert result["outcome"] == "applied"
        assert result["correlationId"] == "ops-1"
        assert sim.app.history(order_id) == ["checkout", "processing"]


async def test_sigusr1_logs_where_every_task_waits_and_the_service_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``kill -USR1``: one "stack dump" line naming each task and the coroutines it waits in
    (the intake waiting in aiokafka's getmany); no secret in it; the service carries on."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim, start=False) as bridge:
        first, second = sim.app.seed(2, "norce", "1")
        log_path = tmp_path / "bridge.log"
        proc = spawn_bridge(_env(bridge, 5), log_path)
        try:
            await bridge.send(set_state(first, "processing"))
            await bridge.collect(lambda o: len(o.results) == 1, timeout_s=60)
            proc.send_signal(signal.SIGUSR1)
            await poll_until(
                lambda: any(r["msg"] == "stack dump" for r in log_lines(log_path)),
                10,
                "the stack dump",
            )
            await bridge.send(set_state(second, "processing"))
            out = await bridge.all_handled(timeout_s=60)
            proc.send_signal(signal.SIGTERM)
            assert await wait_exit(proc, 30, log_path) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert [r["outcome"] for r in out.results] == ["applied", "applied"]
    (dump,) = [r for r in log_lines(log_path) if r["msg"] == "stack dump"]
    names = {name for t in dump["tasks"] for name in t["names"]}
    assert {"dispatch", "commit", "monitor"} <= names
    assert dump["task_count"] == sum(t["count"] for t in dump["tasks"])
    stacks = [t["stack"] for t in dump["tasks"]]
    assert any(
        any("bridge/intake.py" in f and " loop" in f for f in stack)
        and any("getmany" in f for f in stack)
        for stack in stacks
    ), stacks
    assert any(t["thread"] == "MainThread" for t in dump["threads"])
    assert API_KEY not in log_path.read_text()


async def test_the_service_runs_a_command_end_to_end_on_uvloop_with_a_warm_pool(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """BRIDGE_EVENT_LOOP=uvloop: a command end to end; ready only after the pool is warm; the
    warm-up sends no request (the simulator sees only the command's); GC pauses exported."""
    async with simulator() as sim, running_bridge(kafka_bootstrap, sim, start=False) as bridge:
        (order_id,) = sim.app.seed(1, "norce", "1")
        port = free_port()
        env = {**_env(bridge, 5), "BRIDGE_EVENT_LOOP": "uvloop", "BRIDGE_HTTP__PORT": str(port)}
        log_path = tmp_path / "bridge.log"
        proc = spawn_bridge(env, log_path)
        try:
            await bridge.send(set_state(order_id, "processing"))
            out = await bridge.all_handled(timeout_s=60)
            assert [r["outcome"] for r in out.results] == ["applied"]
            ready = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
            metrics = await metrics_text(port)
            proc.send_signal(signal.SIGTERM)
            assert await wait_exit(proc, 30, log_path) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert ready == 200
    assert metrics is not None
    assert 'norce_bridge_gc_pause_max_seconds{generation="2"}' in metrics
    assert 'norce_bridge_gc_pause_seconds_count{generation="2"}' in metrics
    records = log_lines(log_path)
    by_msg = {r["msg"]: r for r in records}
    assert by_msg["bridge started"]["event_loop"].startswith("uvloop")
    assert by_msg["HTTP connection pool warmed"]["connections"] == 4
    assert by_msg["garbage collector tuned"]["gc_frozen"] > 0
    assert by_msg["bridge stopped"]["applied"] == 1
    assert len(by_msg["bridge stopped"]["gc_pause_max_ms"]) == 3
    # Only the command's own requests reached the API: GET, PUT, GET.
    assert [c["method"] for c in sim.app.calls()] == ["GET", "PUT", "GET"]
    # The bridge's own lines (aiokafka may log coordinator moves of a busy test broker).
    assert not [
        r
        for r in records
        if r["level"] in ("WARNING", "ERROR") and r["logger"].startswith("bridge")
    ]


def _get(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback URL
        return int(response.status)


def test_uvloop_asked_for_but_not_installed_exits_2_with_one_line(tmp_path: Path) -> None:
    """Start-up refuses (exit 2, one line) instead of silently running on asyncio."""
    fake = tmp_path / "uvloop"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('uvloop is not installed here')\n")
    env = clean_env(BRIDGE_EVENT_LOOP="uvloop", PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "bridge", "run"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "BRIDGE_EVENT_LOOP=uvloop" in lines[0]
    assert "norce-order-bridge[uvloop]" in lines[0]


async def test_sigterm_exits_in_bounded_time_when_the_broker_hangs(tmp_path: Path) -> None:
    """A broker that stops answering (SIGSTOP) during the drain does not keep the bridge alive:
    the final commits are bounded by the drain deadline, the client closes by their timeouts,
    and the process exits by itself (a Kubernetes grace period can be sized from the settings).
    Own broker: pausing the session's would stall every other test."""
    from bridge_devkit.localkafka import LocalKafka

    drain_s = 3.0
    broker = LocalKafka()
    await asyncio.to_thread(broker.start)
    try:
        async with (
            simulator() as sim,
            running_bridge(broker.bootstrap_servers, sim, start=False) as bridge,
        ):
            orders = sim.app.seed(10, "norce", "1")
            await bridge.send(*(set_state(o, "processing") for o in orders))
            log_path = tmp_path / "bridge.log"
            proc = spawn_bridge(_env(bridge, drain_s), log_path)
            try:
                await bridge.collect(lambda o: len(o.results) >= 10, timeout_s=60)
                broker.pause()
                proc.send_signal(signal.SIGTERM)
                # drain (bounded by the deadline, final commits at least 5 s) + consumer and
                # producer close (15 s each) + slack for a busy machine; never a kill.
                code = await wait_exit(proc, drain_s + 5 + 30 + 25, log_path)
            finally:
                broker.resume()
                if proc.poll() is None:
                    proc.kill()
            assert code == 0, log_path.read_text()[-3000:]
            messages = [rec["msg"] for rec in log_lines(log_path)]
            assert "draining" in messages
            assert "bridge stopped" in messages
    finally:
        await asyncio.to_thread(broker.cleanup)


async def test_sigterm_during_a_rebalance_that_waits_for_a_killed_member_exits_at_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A member killed with SIGKILL stays in the group until its session times out, so the next
    member's join waits that long; aiokafka's ``getmany`` waits for the assignment without a
    timeout. A SIGTERM then (a pod deleted during a rollout) starts the drain at once, and the
    process exits within the consumer's bounded close (15 s: aiokafka's close waits for the
    pending join), not after the rebalance; the next start gets every partition and works."""
    session_s = 30
    async with (
        simulator() as sim,
        running_bridge(kafka_bootstrap, sim, start=False) as bridge,
    ):
        env = _env(bridge, 5.0) | {"BRIDGE_KAFKA__SESSION_TIMEOUT_MS": str(session_s * 1000)}
        first = BridgeProcess(env, tmp_path / "first.log")
        second: BridgeProcess | None = None
        try:
            await first.wait_for_log("partitions assigned", 60)
            first.kill()
            second = BridgeProcess(env, tmp_path / "second.log")
            # the join has begun; it lasts until the killed member's session times out
            await second.wait_for_log("partitions revoked", 60)
            started = asyncio.get_running_loop().time()
            code = await second.stop(session_s + 30)
            took = asyncio.get_running_loop().time() - started
        finally:
            if not first.exited:
                first.kill()
            if second is not None and not second.exited:
                second.kill()
        assert code == 0, second.log_tail()
        # without the interrupt: the drain starts when the rebalance ends, ~session_s after the
        # kill, and the exit follows it
        assert took < session_s - 5, f"SIGTERM took {took:.1f}s: it waited for the rebalance"
        records = {rec["msg"]: rec for rec in second.log_records()}
        assert "bridge stopped" in records
        signalled, draining = (
            datetime.fromisoformat(records[msg]["ts"])
            for msg in ("signal received: draining", "draining")
        )
        assert (draining - signalled).total_seconds() < 2
        assert "partitions assigned" not in records

        orders = sim.app.seed(6, "norce", "1")
        await bridge.send(*(set_state(o, "processing") for o in orders))
        third = BridgeProcess(env, tmp_path / "third.log")
        try:
            await bridge.collect(lambda o: len(o.results) >= len(orders), timeout_s=120)
        finally:
            assert await third.stop(60) == 0, third.log_tail()
