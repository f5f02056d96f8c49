"""Start-up failures of the real ``order-bridge`` console script: one line, a documented exit code.

Exit codes (README, Operations): 2 configuration, 3 a dependency unreachable within the start-up
deadline or refusing the bridge. While the bridge waits for an unreachable broker its health
server is up: ``/healthz`` answers 200 and ``/readyz`` 503 with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest
import trustme
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bridge_devkit.harness import API_KEY, clean_env, free_port, simulator, wait_exit
from bridge_devkit.harness import console_script as order_bridge_script

from .secrets_scan import SecretScanner
from .test_security import SecureBroker, secure_broker

__all__ = ["secure_broker"]  # the module-scoped SASL_SSL broker fixture, shared with this module

pytestmark = pytest.mark.broker


def _script() -> str:
    return order_bridge_script()


def _env(**settings: str) -> dict[str, str]:
    return clean_env(**{"BRIDGE_HTTP__HOST": "127.0.0.1", "BRIDGE_HTTP__PORT": "0", **settings})


def _free_port() -> int:
    return free_port()


def _failure_line(stderr: str) -> str:
    """The one human line a failed start-up prints; every other stderr line is a JSON log."""
    assert "Traceback" not in stderr, stderr[-3000:]
    plain = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            plain.append(line)
    assert len(plain) == 1, stderr[-3000:]
    assert plain[0].startswith("order-bridge: "), plain[0]
    return plain[0]


async def _run_to_exit(
    env: Mapping[str, str], *args: str, timeout_s: float = 60
) -> tuple[int, str]:
    proc = await asyncio.to_thread(
        subprocess.run,
        [_script(), *(args or ("run",))],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout_s,
        check=False,
        cwd="/",
    )
    return proc.returncode, proc.stderr.decode(errors="replace")


def _popen_run(env: Mapping[str, str], stderr_path: Path) -> subprocess.Popen[bytes]:
    with stderr_path.open("ab") as err:
        return subprocess.Popen(
            [_script(), "run"], env=dict(env), stdin=subprocess.DEVNULL, stdout=err, stderr=err
        )


@contextlib.asynccontextmanager
async def _spawned(
    env: Mapping[str, str], stderr_path: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    proc = _popen_run(env, stderr_path)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _get(url: str) -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            return await http.get(url)
    except httpx.TransportError:
        return None


# --------------------------------------------------------------------------- broker unreachable


async def test_unreachable_broker_exits_3_after_the_deadline_with_health_up_meanwhile(
    tmp_path: Path,
) -> None:
    """Nothing listens at the bootstrap address: /healthz 200 and /readyz 503 with a reason while
    waiting, then one line naming the variable and exit code 3."""
    http_port = _free_port()
    env = _env(
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{_free_port()}",
        BRIDGE_KAFKA__STARTUP_DEADLINE_S="8",
        BRIDGE_NORCE__API_KEY=API_KEY,
        BRIDGE_HTTP__PORT=str(http_port),
    )
    stderr_path = tmp_path / "stderr"
    base = f"http://127.0.0.1:{http_port}"
    async with _spawned(env, stderr_path) as proc:
        seen: dict[str, httpx.Response] = {}

        def probed() -> bool:
            return {"/healthz", "/readyz", "/metrics"} <= set(seen)

        deadline = time.monotonic() + 8
        while not probed() and proc.poll() is None and time.monotonic() < deadline:
            for path in ("/healthz", "/readyz", "/metrics"):
                response = await _get(base + path)
                if response is not None:
                    seen[path] = response
            await asyncio.sleep(0.05)
        assert probed(), f"the health server was not up while waiting: {stderr_path.read_text()}"
        code = await wait_exit(proc, 30, stderr_path)
    assert seen["/healthz"].status_code == 200
    assert seen["/readyz"].status_code == 503
    reason = seen["/readyz"].json()["reason"]
    assert "waiting for Kafka" in reason, reason
    assert "127.0.0.1" not in reason  # /readyz exposes no configuration
    assert "norce_bridge_" in seen["/metrics"].text
    stderr = stderr_path.read_text()
    assert code == 3, stderr[-3000:]
    line = _failure_line(stderr)
    assert "Kafka unreachable" in line
    assert "BRIDGE_KAFKA__BOOTSTRAP_SERVERS" in line
    assert "BRIDGE_KAFKA__STARTUP_DEADLINE_S" in line
    assert "bridge started" not in stderr


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def test_a_broker_that_becomes_reachable_within_the_deadline_is_used(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The bootstrap address starts accepting connections during the wait: the bridge starts,
    becomes ready and drains cleanly on SIGTERM."""
    broker_host, broker_port = kafka_bootstrap.rsplit(":", 1)
    port = _free_port()
    http_port = _free_port()
    suffix = uuid.uuid4().hex[:8]
    async with simulator() as sim:
        env = _env(
            BRIDGE_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
            BRIDGE_KAFKA__GROUP_ID=f"g-{suffix}",
            BRIDGE_KAFKA__STARTUP_DEADLINE_S="90",
            BRIDGE_TOPICS__COMMANDS=f"t-{suffix}.commands",
            BRIDGE_TOPICS__SNAPSHOTS=f"t-{suffix}.snapshots",
            BRIDGE_TOPICS__EVENTS=f"t-{suffix}.events",
            BRIDGE_TOPICS__RESULTS=f"t-{suffix}.results",
            BRIDGE_TOPICS__DLQ=f"t-{suffix}.dlq",
            BRIDGE_TOPICS__PARTITIONS="1",
            BRIDGE_NORCE__BASE_URL=sim.url,
            BRIDGE_NORCE__API_KEY=API_KEY,
            BRIDGE_HTTP__PORT=str(http_port),
        )
        base = f"http://127.0.0.1:{http_port}"
        stderr_path = tmp_path / "stderr"
        async with _spawned(env, stderr_path) as proc:
            waiting: list[str] = []

            async def readyz_reason() -> None:
                response = await _get(base + "/readyz")
                if response is not None and response.status_code == 503:
                    waiting.append(response.json()["reason"])

            deadline = time.monotonic() + 30
            while not waiting and time.monotonic() < deadline and proc.poll() is None:
                await readyz_reason()
                await asyncio.sleep(0.05)
            assert waiting, stderr_path.read_text()
            assert "waiting for Kafka" in waiting[0]

            async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                up_reader, up_writer = await asyncio.open_connection(broker_host, int(broker_port))
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

            proxy = await asyncio.start_server(forward, "127.0.0.1", port)
            try:
                ready: list[int] = []

                async def check_ready() -> None:
                    response = await _get(base + "/readyz")
                    if response is not None and response.status_code == 200:
                        ready.append(1)

                deadline = time.monotonic() + 90
                while not ready and proc.poll() is None and time.monotonic() < deadline:
                    await check_ready()
                    await asyncio.sleep(0.1)
                assert ready, stderr_path.read_text()[-3000:]
                proc.send_signal(signal.SIGTERM)
                code = await wait_exit(proc, 60, stderr_path)
            finally:
                proxy.close()
    stderr = stderr_path.read_text()
    assert code == 0, stderr[-3000:]
    assert "Kafka unreachable; retrying until the start-up deadline" in stderr
    assert "bridge started" in stderr


# --------------------------------------------------------------------------- refusals (SASL_SSL)


def _secure_env(broker: SecureBroker, **settings: str) -> dict[str, str]:
    user = broker.users["SCRAM-SHA-512"]
    env = _env(
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
        BRIDGE_KAFKA__SECURITY_PROTOCOL="SASL_SSL",
        BRIDGE_KAFKA__SASL_MECHANISM="SCRAM-SHA-512",
        BRIDGE_KAFKA__SASL_USERNAME=user.username,
        BRIDGE_KAFKA__SASL_PASSWORD=user.password,
        BRIDGE_KAFKA__SSL_CAFILE=str(broker.ca_file),
        BRIDGE_KAFKA__STARTUP_DEADLINE_S="300",
        BRIDGE_NORCE__API_KEY=API_KEY,
        BRIDGE_LOG_LEVEL="DEBUG",
    )
    env.update(settings)
    return env


async def test_wrong_sasl_password_is_one_line_and_exit_3_without_waiting(
    secure_broker: SecureBroker,
) -> None:
    """A rejected password fails at once (not after the 300 s deadline) with one line naming the
    password variables; neither password appears anywhere."""
    wrong = f"WrongPw-{secrets.token_hex(12)}"
    env = _secure_env(secure_broker, BRIDGE_KAFKA__SASL_PASSWORD=wrong)
    code, stderr = await _run_to_exit(env, timeout_s=90)
    assert code == 3, stderr[-3000:]
    line = _failure_line(stderr)
    assert "Authentication failed" in line
    assert "BRIDGE_KAFKA__SASL_PASSWORD" in line
    assert "bridge started" not in stderr
    scanner = SecretScanner(
        {"wrong password": wrong, "right password": secure_broker.users["SCRAM-SHA-512"].password}
    )
    scanner.scan_lines("stderr", stderr)
    scanner.assert_clean()


async def test_untrusted_ca_is_one_line_and_exit_3_and_hostname_check_off_is_warned(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """A CA that did not sign the broker's certificate: exit 3 naming BRIDGE_KAFKA__SSL_CAFILE;
    with BRIDGE_KAFKA__SSL_CHECK_HOSTNAME=false a warning line says host names are not checked."""
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    env = _secure_env(
        secure_broker,
        BRIDGE_KAFKA__SSL_CAFILE=str(other_ca),
        BRIDGE_KAFKA__SSL_CHECK_HOSTNAME="false",
    )
    code, stderr = await _run_to_exit(env, timeout_s=90)
    assert code == 3, stderr[-3000:]
    line = _failure_line(stderr)
    assert "TLS" in line
    assert "BRIDGE_KAFKA__SSL_CAFILE" in line
    warnings = [
        json.loads(raw)
        for raw in stderr.splitlines()
        if raw.startswith("{") and "SSL_CHECK_HOSTNAME" in raw
    ]
    assert len(warnings) == 1, stderr[-3000:]
    assert warnings[0]["level"] == "WARNING"


async def test_unusable_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    """A CA file that is not PEM: exit 2, one line naming BRIDGE_KAFKA__SSL_CAFILE."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    env = _env(
        BRIDGE_KAFKA__SECURITY_PROTOCOL="SSL",
        BRIDGE_KAFKA__SSL_CAFILE=str(not_pem),
        BRIDGE_NORCE__API_KEY=API_KEY,
    )
    code, stderr = await _run_to_exit(env)
    assert code == 2, stderr[-3000:]
    assert "BRIDGE_KAFKA__SSL_CAFILE" in _failure_line(stderr)


async def test_send_honours_the_kafka_security_settings_and_commands_topic(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """`order-bridge send` over SASL_SSL, configured only by BRIDGE_KAFKA__* (password from a
    file) and BRIDGE_TOPICS__COMMANDS, publishes the command keyed by order id."""
    topic = f"send-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_broker.plaintext)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    password_file = tmp_path / "sasl-password"
    password_file.write_text(secure_broker.users["SCRAM-SHA-512"].password + "\n")
    env = _secure_env(
        secure_broker,
        BRIDGE_KAFKA__SASL_PASSWORD="",
        BRIDGE_KAFKA__SASL_PASSWORD_FILE=str(password_file),
        BRIDGE_TOPICS__COMMANDS=topic,
    )
    del env["BRIDGE_KAFKA__SASL_PASSWORD"]
    proc = await asyncio.to_thread(
        subprocess.run,
        [_script(), "send", "--order-id", "o_sendSasl1", "--state", "accepted"],
        env=env,
        capture_output=True,
        timeout=90,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    sent = json.loads(proc.stdout)
    assert sent["topic"] == topic
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=secure_broker.plaintext, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records = []

        async def fetch() -> None:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                records.extend(msgs)

        deadline = time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            await fetch()
    finally:
        await consumer.stop()
    (record,) = records
    assert record.key == b"o_sendSasl1"
    value = json.loads(record.value)
    assert value["type"] == "SetOrderState"
    assert value["state"] == "accepted"
    assert value["commandId"] == sent["sent"]


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"BRIDGE_NORCE__BASE_URL": "http://norce.example.com/checkout/order/"},
            "BRIDGE_NORCE__ALLOW_INSECURE_HTTP",
        ),
        (
            {"BRIDGE_NORCE__ENVIRONMENT": "production", "BRIDGE_NORCE__SLUG": "evil.example/"},
            "BRIDGE_NORCE__SLUG",
        ),
        ({"BRIDGE_NORCE": '{"api_key": "not-json-secret", '}, "BRIDGE_NORCE:"),
        (
            {
                "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "BRIDGE_KAFKA__SASL_MECHANISM": "PLAIN",
                "BRIDGE_KAFKA__SASL_USERNAME": "bridge",
                "BRIDGE_KAFKA__SASL_PASSWORD_FILE": "/nonexistent/sasl-password",
            },
            "BRIDGE_KAFKA__SASL_PASSWORD_FILE",
        ),
        ({"BRIDGE_NORCE__API_KEY_FILE": "/nonexistent/api-key"}, "BRIDGE_NORCE__API_KEY_FILE"),
        ({"BRIDGE_SCHEMAS_DIR": "/nonexistent/schemas"}, "BRIDGE_SCHEMAS_DIR"),
    ],
)
async def test_configuration_failures_are_one_line_and_exit_2(
    settings: dict[str, str], expected: str
) -> None:
    """Each configuration problem: exit code 2, one line naming the variable, no value echoed."""
    env = _env(BRIDGE_NORCE__API_KEY=API_KEY, BRIDGE_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")
    if "BRIDGE_NORCE__API_KEY_FILE" in settings or "BRIDGE_NORCE" in settings:
        del env["BRIDGE_NORCE__API_KEY"]
    env.update(settings)
    code, stderr = await _run_to_exit(env)
    assert code == 2, stderr[-3000:]
    line = _failure_line(stderr)
    assert expected in line
    assert API_KEY not in stderr
    assert "not-json-secret" not in stderr


async def test_http_port_in_use_is_a_configuration_error() -> None:
    """The health port is taken: exit 2, one line naming BRIDGE_HTTP__PORT."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(BRIDGE_NORCE__API_KEY=API_KEY, BRIDGE_HTTP__PORT=str(port))
        code, stderr = await _run_to_exit(env)
    assert code == 2, stderr[-3000:]
    assert "BRIDGE_HTTP__PORT" in _failure_line(stderr)


async def test_missing_topics_with_creation_disabled_is_one_line_exit_2(
    kafka_bootstrap: str,
) -> None:
    """Topics missing and BRIDGE_TOPICS__CREATE_MISSING=false: exit 2 naming the topic."""
    env = _env(
        BRIDGE_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
        BRIDGE_TOPICS__COMMANDS=f"absent-{uuid.uuid4().hex[:8]}",
        BRIDGE_TOPICS__CREATE_MISSING="false",
        BRIDGE_NORCE__API_KEY=API_KEY,
    )
    code, stderr = await _run_to_exit(env)
    assert code == 2, stderr[-3000:]
    line = _failure_line(stderr)
    assert env["BRIDGE_TOPICS__COMMANDS"] in line
    assert "BRIDGE_TOPICS__CREATE_MISSING" in line
