"""Security: Kafka over SASL_SSL, no leaked secrets, no path/header injection, no exposed config.

A module-scoped KRaft broker gets a SASL_SSL listener whose CA and server certificate (for
``127.0.0.1``/``localhost``) are generated here with trustme, with PLAIN, SCRAM-SHA-256 and
SCRAM-SHA-512 enabled (PLAIN users in the listener's JAAS config, SCRAM credentials created at
format time). Its PLAINTEXT listener stays the inter-broker one and is used only where the test
itself needs a side door (creating topics for the process test, reading outputs).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiokafka.errors import KafkaConnectionError
from bridge_devkit.harness import (
    API_KEY,
    Bridge,
    clean_env,
    make_settings,
    poll_until,
    process_env,
    set_state,
    simulator,
    spawn_bridge,
    wait_exit,
)
from bridge_devkit.localkafka import LocalKafka, sasl_ssl_listener_properties
from cryptography.hazmat.primitives import serialization
from norce_simulator import ScriptedResponse, SimulatorConfig, SimulatorHandle, start_simulator
from pydantic import SecretStr

from bridge.app import build_service, ensure_topics, kafka_options
from bridge.config import BridgeSettings, KafkaSettings, NorceSettings, RetrySettings, load_settings
from bridge.errors import (
    ConfigError,
    InvalidCommandError,
    InvalidOrderIdError,
    NorceApiError,
    NorceConnectionError,
    NorceInvalidRequestError,
    NorceNotFoundError,
    NorceRateLimitedError,
    NorceTimeoutError,
    NorceUnauthorizedError,
    NorceUnavailableError,
)
from bridge.logs import configure_logging
from bridge.norce import NorceClient, build_http_client, load_secret

from .secrets_scan import SecretScanner, find_values

pytestmark = pytest.mark.broker

SASL_LISTENER = "SASL_SSL"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ORDERS = "/api/v0/checkout/orders"
REDACTED = "**********"


# --------------------------------------------------------------------------- broker fixture


@dataclass(frozen=True)
class SaslUser:
    mechanism: str
    username: str
    password: str


@dataclass(frozen=True)
class SecureBroker:
    kafka: LocalKafka
    bootstrap: str  # the SASL_SSL listener
    plaintext: str  # the PLAINTEXT (inter-broker) listener: test-side door only
    ca_file: Path
    users: Mapping[str, SaslUser]  # by mechanism


def _server_certificate(ca: trustme.CA) -> tuple[str, str]:
    """(certificate chain PEM, PKCS#8 key PEM) of a server certificate for 127.0.0.1/localhost."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    chain = "".join(blob.bytes().decode() for blob in leaf.cert_chain_pems)
    return chain, pkcs8


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    directory = tmp_path_factory.mktemp("sasl-ssl")
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    chain, key = _server_certificate(ca)
    users = {
        "PLAIN": SaslUser("PLAIN", "bridge-plain", f"PlainPw-{secrets.token_hex(12)}"),
        "SCRAM-SHA-256": SaslUser(
            "SCRAM-SHA-256", "bridge-scram256", f"Scram256Pw-{secrets.token_hex(12)}"
        ),
        "SCRAM-SHA-512": SaslUser(
            "SCRAM-SHA-512", "bridge-scram512", f"Scram512Pw-{secrets.token_hex(12)}"
        ),
    }
    broker = LocalKafka(
        extra_listeners={SASL_LISTENER: ("SASL_SSL", 0)},
        extra_properties=sasl_ssl_listener_properties(
            SASL_LISTENER,
            certificate_chain_pem=chain,
            private_key_pem=key,
            mechanisms=MECHANISMS,
            plain_users={users["PLAIN"].username: users["PLAIN"].password},
        ),
        scram_users={u.username: u.password for m, u in users.items() if m.startswith("SCRAM")},
    )
    t0 = time.monotonic()
    broker.start()
    print(f"\n[security] SASL_SSL broker ready in {time.monotonic() - t0:.1f}s")
    try:
        yield SecureBroker(
            kafka=broker,
            bootstrap=broker.listener_bootstrap(SASL_LISTENER),
            plaintext=broker.bootstrap_servers,
            ca_file=ca_file,
            users=users,
        )
    finally:
        broker.cleanup()


# --------------------------------------------------------------------------- helpers


def _write_secret(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")  # a mounted Secret usually ends in a newline
    path.chmod(0o600)
    return path


def secure_settings(
    broker: SecureBroker,
    sim_url: str,
    mechanism: str,
    *,
    secrets_dir: Path,
    password_in_file: bool,
    password: str | None = None,
    cafile: Path | bool | None = True,
    api_key_file: Path | None = None,
    partitions: int = 2,
) -> BridgeSettings:
    """The harness settings, with a SASL_SSL kafka section (and optionally a key file)."""
    base = make_settings(broker.bootstrap, sim_url, partitions=partitions)
    user = broker.users[mechanism]
    suffix = base.kafka.group_id.removeprefix("g-")
    kafka: dict[str, Any] = base.kafka.model_dump()
    kafka.update(
        client_id=f"cid-{suffix}",
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username=user.username,
        ssl_cafile=broker.ca_file if cafile is True else (cafile or None),
    )
    pw = user.password if password is None else password
    if password_in_file:
        kafka["sasl_password_file"] = _write_secret(
            secrets_dir / f"kafka-{uuid.uuid4().hex[:6]}" / "password", pw
        )
    else:
        kafka["sasl_password"] = SecretStr(pw)
    update: dict[str, Any] = {"kafka": KafkaSettings(**kafka)}
    if api_key_file is not None:
        norce: dict[str, Any] = base.norce.model_dump()
        norce.update(api_key_file=api_key_file, adapter_id=f"adapter-{suffix}")
        update["norce"] = NorceSettings(**norce)
    return base.model_copy(update=update)


@dataclass(frozen=True)
class OutRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class RecordingBridge(Bridge):
    """The harness ``Bridge`` whose own producer and output reader use ``client_options``.

    It also keeps every output record (key, value, headers) for scanning.
    """

    def __init__(
        self,
        client_bootstrap: str,
        sim: SimulatorHandle,
        settings: BridgeSettings,
        client_options: Mapping[str, Any],
    ) -> None:
        super().__init__(client_bootstrap, sim, settings)
        self.client_options = dict(client_options)
        self.records: list[OutRecord] = []

    def on_record(self, topic: str, partition: int, message: Any) -> None:
        headers = tuple((k, bytes(v or b"")) for k, v in message.headers)
        self.records.append(
            OutRecord(topic, partition, message.offset, message.key, message.value, headers)
        )

    def dead_letters(self) -> dict[tuple[int, int], OutRecord]:
        """Dead letters by the (partition, offset) of the command they carry (first one wins:
        at-least-once may legitimately repeat one after a rebalance)."""
        out: dict[tuple[int, int], OutRecord] = {}
        for r in self.records:
            if r.topic == self.topics.dlq:
                h = dict(r.headers)
                src = (int(h["__connect.errors.partition"]), int(h["__connect.errors.offset"]))
                out.setdefault(src, r)
        return out


@contextlib.asynccontextmanager
async def recording_bridge(
    client_bootstrap: str,
    sim: SimulatorHandle,
    settings: BridgeSettings,
    client_options: Mapping[str, Any],
    *,
    start: bool = True,
) -> AsyncIterator[RecordingBridge]:
    await ensure_topics(settings, dict(client_options))
    bridge = RecordingBridge(client_bootstrap, sim, settings, client_options)
    if start:
        await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.aclose()


def raw_command(
    order_id: str,
    *,
    merchant: str = "norce",
    channel: str = "1",
    kind: str = "SetOrderState",
    state: str = "processing",
    **extra: Any,
) -> tuple[str, bytes]:
    """A command as JSON bytes, built by hand so that no model validation stops bad values."""
    command_id = f"c-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {
        "type": kind,
        "commandId": command_id,
        "orderId": order_id,
        "merchant": merchant,
        "channel": channel,
        "issuedAt": datetime.now(UTC).isoformat(),
        **extra,
    }
    if kind == "SetOrderState":
        body["state"] = state
    return command_id, json.dumps(body).encode()


@contextlib.contextmanager
def bridge_logging(level: str) -> Iterator[io.StringIO]:
    """The bridge's logging set-up (``configure_logging``) into a buffer; restored afterwards."""
    root = logging.getLogger()
    noisy = ("aiokafka", "httpx", "httpcore", "kafka")
    saved_level, saved_handlers = root.level, list(root.handlers)
    saved_noisy = {name: logging.getLogger(name).level for name in noisy}
    stream = io.StringIO()
    configure_logging(level, stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)
        for name, lvl in saved_noisy.items():
            logging.getLogger(name).setLevel(lvl)


def connections_to(port: int) -> list[str]:
    """This process's open TCP sockets whose remote port is ``port`` (Linux ``/proc``)."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                ours.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[9] in ours:
                    found.append(f"{fields[1]} -> {fields[2]} state {fields[3]}")
    return found


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


def _command_id(value: bytes | None) -> str | None:
    """The commandId of a (possibly malformed) JSON command, if it has one."""
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    cid = data.get("commandId") if isinstance(data, dict) else None
    return cid if isinstance(cid, str) and cid else None


def _clean_env() -> dict[str, str]:
    return clean_env()


async def _metrics_url(proc: subprocess.Popen[bytes], stderr_path: Path, timeout_s: float) -> str:
    """The health server URL from the ``bridge started`` log line (polled with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in _read(stderr_path).splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("msg") == "bridge started":
                    return str(rec["metrics_url"])
        if proc.poll() is not None:
            raise AssertionError(
                f"the bridge exited ({proc.returncode}) before starting:\n"
                + _read(stderr_path)[-3000:]
            )
        await asyncio.sleep(0.1)
    raise AssertionError(f"no 'bridge started' log line within {timeout_s}s")


async def _fetch_endpoints(base_url: str) -> dict[str, str]:
    """Bodies (and headers) of every health-server endpoint, plus an unknown path."""
    out: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for path in ("/metrics", "/healthz", "/readyz", "/nope", "/metrics?x=1"):
            response = await http.get(path)
            head = "".join(f"{k}: {v}\n" for k, v in response.headers.items())
            out[f"GET {path}"] = f"{response.status_code}\n{head}\n{response.text}"
        response = await http.post("/readyz")
        out["POST /readyz"] = f"{response.status_code}\n{response.text}"
    return out


# --------------------------------------------------------------------------- 1. SASL_SSL


@pytest.mark.parametrize(
    ("mechanism", "password_in_file"),
    [("PLAIN", True), ("SCRAM-SHA-256", False), ("SCRAM-SHA-512", True)],
)
async def test_bridge_runs_end_to_end_over_sasl_ssl(
    secure_broker: SecureBroker, tmp_path: Path, mechanism: str, password_in_file: bool
) -> None:
    """Topics created, a command produced, applied and its result read back, all over SASL_SSL."""
    async with simulator() as sim:
        settings = secure_settings(
            secure_broker,
            sim.url,
            mechanism,
            secrets_dir=tmp_path,
            password_in_file=password_in_file,
        )
        assert settings.kafka.bootstrap_servers == secure_broker.bootstrap
        options = kafka_options(settings)  # the very options the bridge's clients get
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == mechanism
        assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
        assert options["ssl_context"].check_hostname
        (order_id,) = sim.app.seed(1, "norce", "1")
        command = set_state(order_id, "processing", correlation_id="corr-sasl")
        async with recording_bridge(secure_broker.bootstrap, sim, settings, options) as bridge:
            await bridge.send(command)
            out = await bridge.all_handled(timeout_s=60)
    (result,) = out.results_by_command()[command.command_id]
    assert result["outcome"] == "applied", result
    assert result["currentStatus"] == "processing"
    assert result["correlationId"] == "corr-sasl"
    assert sim.app.history(order_id) == ["checkout", "processing"]
    snapshots = [s for k, s in out.snapshots if k == order_id]
    assert snapshots
    assert snapshots[-1] is not None
    assert [e[1]["newStatus"] for e in out.events if e[1]["orderId"] == order_id] == ["processing"]
    assert not out.dlq


@pytest.mark.parametrize("mechanism", MECHANISMS)
async def test_wrong_sasl_password_fails_to_start_clearly_without_the_password(
    secure_broker: SecureBroker,
    tmp_path: Path,
    mechanism: str,
) -> None:
    """build_service fails; the logs say authentication failed; no password appears anywhere.

    The logs are the bridge's own JSON logs at DEBUG (``configure_logging``, as ``bridge run``
    sets them up). That matters: aiokafka's ``aiokafka.conn`` DEBUG lines print the SASL PLAIN
    auth bytes, password included; ``configure_logging`` keeps aiokafka at WARNING or above, and
    this test (with the process test below) fails if that ever changes.
    """
    wrong = f"WrongPw-{secrets.token_hex(12)}"
    right = secure_broker.users[mechanism].password
    settings = secure_settings(
        secure_broker,
        "http://127.0.0.1:9",
        mechanism,
        secrets_dir=tmp_path,
        password_in_file=mechanism != "SCRAM-SHA-256",
        password=wrong,
    )
    # Fails fast: a refusal is not retried until the start-up deadline (60 s by default), so
    # it arrives well within this 45 s bound instead of as a TimeoutError.
    assert settings.kafka.startup_deadline_s > 45
    with bridge_logging("DEBUG") as stream, pytest.raises(KafkaConnectionError) as info:
        await asyncio.wait_for(build_service(settings, api_key=SecretStr(API_KEY)), 45)
    # The refused connection is closed, not left half-closed behind the failure (its TLS close
    # was once still pending when an embedding application's event loop stopped).
    assert connections_to(int(secure_broker.bootstrap.rsplit(":", 1)[1])) == []
    logged = stream.getvalue()
    assert "Authentication failed" in logged, logged[-2000:]
    assert mechanism in logged or mechanism == "PLAIN"
    scanner = SecretScanner({"wrong password": wrong, "right password": right})
    scanner.scan_exception("build_service", info.value)
    scanner.scan_lines("captured logs", logged)
    scanner.scan_text("settings repr", repr(settings))
    scanner.scan_text("settings str", str(settings))
    scanner.assert_clean()


async def test_wrong_sasl_password_process_exits_nonzero_naming_the_failure(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """``python -m bridge run`` with a rejected password (env) exits non-zero and says why."""
    wrong = f"WrongPw-{secrets.token_hex(12)}"
    user = secure_broker.users["SCRAM-SHA-512"]
    settings = make_settings(secure_broker.plaintext, "http://127.0.0.1:9")
    env = _clean_env()
    env.update(
        {
            "BRIDGE_KAFKA__BOOTSTRAP_SERVERS": secure_broker.bootstrap,
            "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "BRIDGE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "BRIDGE_KAFKA__SASL_USERNAME": user.username,
            "BRIDGE_KAFKA__SASL_PASSWORD": wrong,
            "BRIDGE_KAFKA__SSL_CAFILE": str(secure_broker.ca_file),
            "BRIDGE_TOPICS__COMMANDS": settings.topics.commands,
            "BRIDGE_NORCE__BASE_URL": "http://127.0.0.1:9",
            "BRIDGE_NORCE__API_KEY": API_KEY,
            "BRIDGE_HTTP__HOST": "127.0.0.1",
            "BRIDGE_HTTP__PORT": "0",
            "BRIDGE_LOG_LEVEL": "DEBUG",
        }
    )
    stderr_path = tmp_path / "bridge.stderr"
    proc = spawn_bridge(env, stderr_path)
    try:
        code = await wait_exit(proc, 60, stderr_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = _read(stderr_path)
    assert code != 0, err[-2000:]
    assert "Authentication failed" in err, err[-2000:]
    assert "bridge started" not in err
    scanner = SecretScanner({"wrong password": wrong, "right password": user.password})
    scanner.scan_lines("stderr", err)
    scanner.assert_clean()


async def test_tls_is_verified_against_the_generated_ca(
    secure_broker: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the CA the handshake verifies 127.0.0.1; without it, verification fails."""
    host, port_text = secure_broker.bootstrap.rsplit(":", 1)
    port = int(port_text)

    # The generated CA verifies the broker's certificate for the address it is reached at.
    ctx = ssl.create_default_context(cafile=str(secure_broker.ca_file))
    _reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    try:
        cert = writer.get_extra_info("peercert")
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()

    # The system trust store (no CA configured) rejects it.
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await asyncio.open_connection(
            host, port, ssl=ssl.create_default_context(), server_hostname=host
        )

    # The bridge configured without the CA file cannot start, and says why.
    caplog.set_level(logging.WARNING)
    settings = secure_settings(
        secure_broker,
        "http://127.0.0.1:9",
        "SCRAM-SHA-256",
        secrets_dir=tmp_path,
        password_in_file=False,
        cafile=None,
    )
    assert settings.kafka.ssl_cafile is None
    with pytest.raises(KafkaConnectionError):
        await asyncio.wait_for(build_service(settings, api_key=SecretStr(API_KEY)), 60)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text[-2000:]

    # A client with a CA for the wrong name: check_hostname is on, so localhost-only trust of a
    # certificate is still tied to the address (sanity: the option the bridge sets is honoured).
    other = secure_settings(
        secure_broker,
        "http://127.0.0.1:9",
        "SCRAM-SHA-256",
        secrets_dir=tmp_path,
        password_in_file=False,
    )
    assert kafka_options(other)["ssl_context"].check_hostname is True


async def test_unusable_tls_files_are_configuration_errors(tmp_path: Path) -> None:
    """A missing/invalid CA, a client key without certificate or an encrypted key: ConfigError.

    In-process (``kafka_options``) and as ``bridge run`` (exit code 2, the variable named, no
    traceback); an encrypted key is refused rather than prompting for a passphrase.
    """
    ca = trustme.CA()
    leaf = ca.issue_cert("bridge-client")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    encrypted = tmp_path / "client-encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    cert = tmp_path / "client.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    good_ca = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(good_ca))
    not_pem = tmp_path / "not-a-ca.pem"
    not_pem.write_text("hello\n")
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "missing CA": ({"ssl_cafile": tmp_path / "nope.pem"}, "BRIDGE_KAFKA__SSL_CAFILE"),
        "CA not PEM": ({"ssl_cafile": not_pem}, "BRIDGE_KAFKA__SSL_CAFILE"),
        "key without cert": (
            {"ssl_cafile": good_ca, "ssl_keyfile": encrypted},
            "BRIDGE_KAFKA__SSL_KEYFILE",
        ),
        "encrypted key": (
            {"ssl_cafile": good_ca, "ssl_certfile": cert, "ssl_keyfile": encrypted},
            "BRIDGE_KAFKA__SSL_KEYFILE",
        ),
        "missing cert": (
            {"ssl_cafile": good_ca, "ssl_certfile": tmp_path / "nope.crt"},
            "BRIDGE_KAFKA__SSL_CERTFILE",
        ),
    }
    for name, (fields, variable) in cases.items():
        settings = BridgeSettings(kafka=KafkaSettings(security_protocol="SSL", **fields))
        with pytest.raises(ConfigError) as info:
            kafka_options(settings)
        assert variable in str(info.value), (name, str(info.value))
    ok = BridgeSettings(kafka=KafkaSettings(security_protocol="SSL", ssl_cafile=good_ca))
    assert kafka_options(ok)["ssl_context"].verify_mode == ssl.CERT_REQUIRED

    env = _clean_env()
    env.update(
        {
            "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "BRIDGE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "BRIDGE_KAFKA__SASL_USERNAME": "bridge",
            "BRIDGE_KAFKA__SASL_PASSWORD": "irrelevant-password",
            "BRIDGE_KAFKA__SSL_CAFILE": str(tmp_path / "nope.pem"),
            "BRIDGE_NORCE__API_KEY": API_KEY,
            "BRIDGE_HTTP__PORT": "0",
        }
    )
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "run"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, stderr[-2000:]
    assert "BRIDGE_KAFKA__SSL_CAFILE" in stderr
    assert "Traceback" not in stderr, stderr[-2000:]


# --------------------------------------------------------------------------- 2. secret leaks


def _workload(
    sim: SimulatorHandle, api_key: str
) -> tuple[list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]], dict[str, str]]:
    """(key, value, headers) records of a mixed workload, and order ids with a special role."""
    now = datetime.now(UTC)
    lifecycle = sim.app.seed(40, "norce", "1")
    to_delete = sim.app.seed(4, "norce", "1")
    illegal = sim.app.seed(3, "norce", "1")
    (echo_400,) = sim.app.seed(1, "norce", "1")
    (echo_500,) = sim.app.seed(1, "norce", "1")
    (reset_order,) = sim.app.seed(1, "norce", "1")
    (hang_order,) = sim.app.seed(1, "norce", "1")
    json_ct = [("content-type", b"application/json")]
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def add(order_id: str, value: bytes | None, headers: list[tuple[str, bytes]] = json_ct) -> None:
        records.append((order_id.encode(), value, headers))

    for state in ("processing", "accepted", "completed"):
        for o in lifecycle:
            add(o, raw_command(o, state=state, correlationId=f"corr-{o[-6:]}")[1])
    for o in to_delete:
        add(o, raw_command(o, state="processing")[1])
        add(o, raw_command(o, kind="DeleteOrder")[1])
    for o in illegal:  # checkout -> completed is not a legal transition: 400 -> api_rejected
        add(o, raw_command(o, state="completed")[1])
    for o in (echo_400, echo_500, reset_order, hang_order):
        add(o, raw_command(o, state="processing")[1])
    # 404s: unknown orders (set state, and delete of an order that never existed).
    add("o_missing_1", raw_command("o_missing_1", state="processing")[1])
    add("o_missing_2", raw_command("o_missing_2", kind="DeleteOrder")[1])
    # Expired command.
    add(
        lifecycle[0], raw_command(lifecycle[0], expiresAt=(now - timedelta(hours=1)).isoformat())[1]
    )
    # Malformed input.
    add("bad", b"{not json")
    add("bad", b"")
    add("bad", None)
    add("bad", b"\xff\xfe\x00")
    add("bad", b"[1, 2, 3]")
    add("bad", json.dumps({"type": "ShipOrder", "commandId": "x"}).encode())
    add("bad", raw_command("../etc/passwd")[1])
    add("bad", raw_command("o_x", merchant="norce\r\nAuthorization: Bearer x")[1])
    add("bad", raw_command("o_x", state="teleported")[1])
    add("bad", b"\xc3\x01garbage", [("content-type", b"application/avro")])
    add("bad", b"{" + b" " * (70 * 1024) + b"}")

    echo_msg = f"rejected request with Authorization: Bearer {api_key}"
    sim.app.set_faults(
        error_rate=0.1,
        rate_limit_rate=0.05,
        retry_after_s=0.2,
        hang_rate=0.02,
        hang_s=3,
        reset_rate=0.01,
        script=[
            # The API echoes the key back in an error body: the client must redact it.
            ScriptedResponse(
                status=400,
                method="PUT",
                path_suffix=f"/{echo_400}/state",
                body={"code": "order-bad-request", "message": echo_msg},
            ),
            ScriptedResponse(
                status=500,
                method="PUT",
                path_suffix=f"/{echo_500}/state",
                headers={"content-type": "text/plain"},
                body=f"upstream failure; {echo_msg}",
                count=2,
            ),
            ScriptedResponse(method="GET", path_suffix=f"/{reset_order}", fault="reset"),
            ScriptedResponse(method="PUT", path_suffix=f"/{hang_order}/state", fault="hang"),
        ],
    )
    roles = {"echo_400": echo_400, "echo_500": echo_500}
    return records, roles


async def test_full_workload_with_faults_leaks_no_secret(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """A DEBUG-level ``bridge run`` over SASL_SSL with API faults and bad input leaks no secret.

    Scanned: every stderr line, /metrics, /healthz, /readyz, every output record (key, value,
    headers) on the results, events, snapshots and dead-letter topics. Secrets: the Norce API key
    (from a file) and the SASL password (from the environment), in raw, truncated, URL-encoded,
    JSON-escaped, base64 and hex forms.
    """
    api_key = f"nk+{secrets.token_hex(10)}/{secrets.token_hex(6)}="
    user = secure_broker.users["PLAIN"]
    key_file = _write_secret(tmp_path / "secrets" / "norce" / "api-key", api_key)
    scanner = SecretScanner({"norce api key": api_key, "sasl password": user.password})

    sim = await start_simulator(
        SimulatorConfig(api_keys=(api_key,), seed=7, orders=0), host="127.0.0.1", port=0
    )
    try:
        settings = make_settings(secure_broker.plaintext, sim.url, partitions=3)
        records, roles = _workload(sim, api_key)
        env = process_env(
            settings,
            sim.url,
            BRIDGE_KAFKA__BOOTSTRAP_SERVERS=secure_broker.bootstrap,
            BRIDGE_KAFKA__SECURITY_PROTOCOL="SASL_SSL",
            BRIDGE_KAFKA__SASL_MECHANISM="PLAIN",
            BRIDGE_KAFKA__SASL_USERNAME=user.username,
            BRIDGE_KAFKA__SASL_PASSWORD=user.password,
            BRIDGE_KAFKA__SSL_CAFILE=str(secure_broker.ca_file),
            BRIDGE_NORCE__API_KEY_FILE=str(key_file),
            BRIDGE_NORCE__READ_TIMEOUT_S="1",
            BRIDGE_NORCE__RETRY__MAX_ATTEMPTS="6",
            BRIDGE_NORCE__RETRY__BASE_DELAY_S="0.02",
            BRIDGE_NORCE__RETRY__MAX_DELAY_S="0.2",
            BRIDGE_NORCE__RETRY__DEADLINE_S="8",
            BRIDGE_PROCESSING__DRAIN_DEADLINE_S="10",
        )
        del env["BRIDGE_NORCE__API_KEY"]  # the key comes from the file only
        stderr_path = tmp_path / "bridge.stderr"
        async with recording_bridge(secure_broker.plaintext, sim, settings, {}, start=False) as b:
            for key, value, headers in records:
                await b.send_raw(value, key=key, headers=headers)
            proc = spawn_bridge(env, stderr_path)
            try:
                metrics_url = await _metrics_url(proc, stderr_path, 60)
                await b.all_handled(timeout_s=180)
                await poll_until(
                    lambda: "command handled" in _read(stderr_path),
                    10,
                    "DEBUG log lines",
                )
                endpoints = await _fetch_endpoints(metrics_url)
                proc.send_signal(signal.SIGTERM)
                code = await wait_exit(proc, 30, stderr_path)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            await b.collect(lambda o: False, timeout_s=1.0)  # whatever was published last
            out_records = list(b.records)
            dlq = b.dead_letters()
            topics = b.topics
        stats = sim.app.stats()
    finally:
        await sim.aclose()

    log_text = _read(stderr_path)
    assert code == 0, log_text[-3000:]

    # --- the workload really exercised what it claims -----------------------------------------
    faults = stats["by_fault"]
    for kind in ("error", "rate_limit", "script", "script:reset", "script:hang"):
        assert faults.get(kind, 0) > 0, f"fault {kind} never injected: {stats}"
    reasons = {dict(r.headers)["__connect.errors.reason"].decode() for r in dlq.values()}
    for reason in ("api_rejected", "order_not_found", "invalid_json", "bad_order_id"):
        assert reason in reasons, f"no {reason} dead letter: {sorted(reasons)}"
    echoed = [
        r
        for r in dlq.values()
        if dict(r.headers).get("norce.order.id", b"").decode() == roles["echo_400"]
    ]
    assert len(echoed) == 1
    echo_message = dict(echoed[0].headers)["__connect.errors.exception.message"].decode()
    assert REDACTED in echo_message, echo_message
    lines = log_text.splitlines()
    levels = {json.loads(line).get("level") for line in lines if line.startswith("{")}
    assert {"DEBUG", "INFO"} <= levels, levels
    assert "metrics" in " ".join(endpoints)
    assert "norce_bridge_api_requests_total" in (endpoints["GET /metrics"])

    # --- the scan -------------------------------------------------------------------------------
    n_lines = scanner.scan_lines("bridge stderr", log_text)
    for name, body in endpoints.items():
        scanner.scan_lines(name, body, category="health endpoint")
    category = {
        topics.results: "result",
        topics.events: "event",
        topics.snapshots: "snapshot",
        topics.dlq: "dead letter",
    }
    for r in out_records:
        where = f"{category[r.topic]} p{r.partition}@{r.offset}"
        scanner.scan_record(where, r.key, r.value, r.headers, category=category[r.topic])
    print(
        f"\n[security] scanned {n_lines} log lines, {len(endpoints)} endpoint bodies, "
        f"{len(out_records)} output records ({len(dlq)} dead letters); faults {faults}"
    )
    assert scanner.scanned["dead letter"] >= len(dlq) >= 10
    with_command_id = sum(1 for _, value, _ in records if _command_id(value))
    assert scanner.scanned["result"] >= with_command_id > 100
    assert scanner.scanned["event"] > 0
    assert scanner.scanned["snapshot"] > 0
    scanner.assert_clean()


async def test_norce_client_errors_under_faults_carry_no_secret() -> None:
    """str/repr/args/attributes/tracebacks of every NorceClient error hold no key.

    Every error class is provoked (5xx, 429, hang → timeout, reset → connection error, 404,
    400, 401), including error bodies that echo the key back (JSON and plain text).
    """
    key = f"nk+{secrets.token_hex(10)}/{secrets.token_hex(6)}="
    scanner = SecretScanner({"norce api key": key})
    sim = await start_simulator(
        SimulatorConfig(api_keys=(key,), seed=9, orders=0), host="127.0.0.1", port=0
    )
    http = build_http_client(sim.url, read_timeout=0.4, connect_timeout=2, pool_timeout=2)
    errors: list[NorceApiError] = []
    try:
        orders = sim.app.seed(12, "norce", "1")
        echo = f"bad credentials Authorization: Bearer {key} for key={key}"
        sim.app.set_faults(
            hang_s=1.0,
            script=[
                ScriptedResponse(status=503, path_suffix=f"/{orders[0]}"),
                ScriptedResponse(
                    status=429, path_suffix=f"/{orders[1]}", headers={"Retry-After": "0"}
                ),
                ScriptedResponse(fault="hang", path_suffix=f"/{orders[2]}"),
                ScriptedResponse(fault="reset", path_suffix=f"/{orders[3]}"),
                ScriptedResponse(
                    status=400,
                    path_suffix=f"/{orders[4]}/state",
                    body={"code": "x", "message": echo},
                ),
                ScriptedResponse(
                    status=500,
                    path_suffix=f"/{orders[5]}",
                    headers={"content-type": "text/plain"},
                    body=echo,
                ),
                ScriptedResponse(
                    status=422,
                    path_suffix=f"/{orders[6]}/state",
                    headers={"content-type": "application/problem+json"},
                    body={"title": echo, "detail": echo, "errors": {"key": [echo]}},
                ),
                ScriptedResponse(status=401, path_suffix=f"/{orders[7]}", body={"message": echo}),
            ],
        )
        client = NorceClient(
            http,
            api_key=SecretStr(key),
            adapter_id="adapter",
            retry=RetrySettings(max_attempts=1, deadline_s=3),
        )
        scanner.scan_text("repr(client)", repr(client))
        scanner.scan_text("str(client)", str(client))

        async def attempt(call: Awaitable[Any]) -> None:
            try:
                await call
            except NorceApiError as exc:
                errors.append(exc)

        for o in [*orders[:4], orders[5], orders[7]]:
            await attempt(client.get_order_json(o, merchant="norce", channel="1"))
        for o in (orders[4], orders[6]):
            await attempt(client.set_state(o, "processing", merchant="norce", channel="1"))
        await attempt(client.get_order_json("o_unknown", merchant="norce", channel="1"))
        await attempt(client.set_state(orders[8], "completed", merchant="norce", channel="1"))
        # Random faults on top, for volume.
        sim.app.set_faults(error_rate=0.2, rate_limit_rate=0.1, retry_after_s=0, reset_rate=0.1)
        for i in range(60):
            o = orders[8 + i % 4]
            await attempt(client.get_order_json(o, merchant="norce", channel="1"))
        # A rejected key (another one): 401.
        wrong = NorceClient(
            http, api_key=SecretStr("not-the-key"), retry=RetrySettings(max_attempts=1)
        )
        sim.app.set_faults(error_rate=0, rate_limit_rate=0, reset_rate=0, script=[])
        await attempt(wrong.get_order_json(orders[9], merchant="norce", channel="1"))
    finally:
        await http.aclose()
        await sim.aclose()

    kinds = {type(e) for e in errors}
    for cls in (
        NorceUnavailableError,
        NorceRateLimitedError,
        NorceTimeoutError,
        NorceConnectionError,
        NorceNotFoundError,
        NorceInvalidRequestError,
        NorceUnauthorizedError,
    ):
        assert cls in kinds, f"{cls.__name__} was never raised: {sorted(k.__name__ for k in kinds)}"
    redacted = [e for e in errors if REDACTED in str(e)]
    assert len(redacted) >= 4, [str(e) for e in errors if e.status in (400, 401, 422, 500)]
    for i, exc in enumerate(errors):
        scanner.scan_exception(f"error {i}", exc)
    assert scanner.scanned["exception"] == len(errors) >= 25
    scanner.assert_clean()


async def test_configuration_errors_never_contain_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ConfigError (settings, secret files, bad keys) names variables, never secret values."""
    key = f"nk+{secrets.token_hex(10)}/{secrets.token_hex(6)}="
    password = f"SaslPw-{secrets.token_hex(12)}"
    scanner = SecretScanner({"norce api key": key, "sasl password": password})
    errors: dict[str, ConfigError] = {}

    def expect(name: str, fn: Callable[[], object]) -> None:
        with pytest.raises(ConfigError) as info:
            fn()
        errors[name] = info.value

    for var in [k for k in os.environ if k.startswith("BRIDGE_")]:
        monkeypatch.delenv(var)
    # From the environment: a misspelt secret variable, a secret put into the wrong variable,
    # an invalid value next to real secrets.
    env = {
        "BRIDGE_NORCE__APIKEY": key,  # typo: an unknown field holding the key
        "BRIDGE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "BRIDGE_KAFKA__SASL_MECHANISM": password,  # the password in the wrong variable
        "BRIDGE_KAFKA__SASL_USERNAME": "bridge",
        "BRIDGE_KAFKA__SASL_PASSWORD": password,
        "BRIDGE_PROCESSING__MAX_IN_FLIGHT": "lots",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    expect("load_settings(env)", load_settings)
    text = str(errors["load_settings(env)"])
    for var in ("BRIDGE_NORCE__APIKEY", "BRIDGE_KAFKA__SASL_MECHANISM", "MAX_IN_FLIGHT"):
        assert var in text, text
    for k in env:
        monkeypatch.delenv(k)

    expect(
        "load_settings(kwargs)",
        lambda: load_settings(
            kafka={
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-1",
                "sasl_username": key,
                "sasl_password": password,
            },
            norce={"api_key": key, "environment": "production", "base_url": key},
        ),
    )
    expect(
        "load_settings(sasl incomplete)",
        lambda: load_settings(
            kafka={"security_protocol": "SASL_PLAINTEXT", "sasl_password": password}
        ),
    )
    key_file = _write_secret(tmp_path / "key", key)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    expect("load_secret(both)", lambda: load_secret(SecretStr(key), key_file))
    expect("load_secret(empty file)", lambda: load_secret(None, empty))
    expect("load_secret(missing file)", lambda: load_secret(None, tmp_path / "missing"))
    expect("load_secret(directory)", lambda: load_secret(None, tmp_path))
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff" + key.encode())
    expect("load_secret(not utf-8)", lambda: load_secret(None, binary))
    http = build_http_client("http://127.0.0.1:9")
    try:
        expect(
            "NorceClient(key with CR/LF)",
            lambda: NorceClient(http, api_key=SecretStr(f"{key}\r\nX-Evil: 1")),
        )
        expect(
            "NorceClient(key with space)", lambda: NorceClient(http, api_key=SecretStr(f" {key} x"))
        )
    finally:
        await http.aclose()
    # build_service with both a key and a key file fails before touching Kafka.
    both = make_settings("127.0.0.1:9", "http://127.0.0.1:9")
    norce = both.norce.model_dump()
    norce.update(api_key=SecretStr(key), api_key_file=key_file)
    both = both.model_copy(update={"norce": NorceSettings(**norce)})
    with pytest.raises(ConfigError) as info:
        await build_service(both)
    errors["build_service(key and key file)"] = info.value

    for name, exc in errors.items():
        scanner.scan_exception(name, exc)

    # The real process: exit code 2, stderr names variables only.
    proc_env = _clean_env()
    proc_env.update(env)
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "run"],
        env=proc_env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, stderr
    assert "BRIDGE_NORCE__APIKEY" in stderr
    scanner.scan_lines("bridge run stderr", stderr)
    scanner.scan_lines("bridge run stdout", proc.stdout.decode(errors="replace"))
    scanner.assert_clean()


def test_a_rejected_base_url_is_not_echoed_with_credentials_in_it() -> None:
    """A bad Norce base URL carrying a credential (userinfo or query) is not echoed verbatim.

    ``NorceClient.__repr__`` already leaves userinfo out of the URL it shows; the ConfigError
    for a rejected URL must not print it either.
    """
    key = f"nk+{secrets.token_hex(10)}/{secrets.token_hex(6)}="
    scanner = SecretScanner({"credential in url": key})
    quoted = urllib.parse.quote(key, safe="")
    urls = [
        f"ftp://user:{quoted}@norce.example/checkout/order/",  # wrong scheme
        f"https://user:{quoted}@:443/",  # no host
        f"norce.example/checkout/order/?api_key={quoted}",  # not absolute
        f"https://norce.example:{key}/checkout/order/",  # a key pasted into the port
    ]
    kinds: list[str] = []
    for i, url in enumerate(urls):
        try:
            build_http_client(url)
        except Exception as exc:
            scanner.scan_exception(f"build_http_client(url #{i})", exc)
            kinds.append(type(exc).__name__)
        else:
            pytest.fail(f"url #{i} was accepted")
    scanner.assert_clean()
    # A bad URL is a configuration error (exit code 2 with a message), not a crash.
    assert kinds == ["ConfigError"] * len(urls), kinds


# --------------------------------------------------------------------------- 3. injection

BAD_ORDER_IDS = [
    "../x",
    "..%2f..",
    "a/b",
    "%2e%2e",
    "a?b=c",
    "a#b",
    "..",
    ".",
    "a\\b",
    "/abs",
    "a/../../admin",
    "a\r\nX-Injected: 1",
    "a\nb",
    "a\rb",
    "a\tb",
    " a",
    "a b",
    "a\u2028b",
    "a\u0085b",
    "a\x00b",
    "a\u200bb",
    "%00",
    "",
    "x" * 129,
]
BAD_SCOPES = [  # (merchant, channel)
    ("norce\r\nX-Injected: 1", "1"),
    ("norce", "1\r\nX-Injected: 1"),
    ("norce\n", "1"),
    ("norce", "\r\n"),
    ("nor\x00ce", "1"),
    ("norce\x7f", "1"),
    (" norce", "1"),
    ("", "1"),
]
ODD_BUT_VALID_IDS = [
    "a;b",
    "a:b",
    "a@b",
    "a+b",
    "a=b&c=d",
    "ä-ö",
    "a'b\"c",
    "~x",
    "a..b",
    "...",
    "a\uff0fb",  # fullwidth solidus
    "\uff0e\uff0e",  # fullwidth full stops
]
ALLOWED_REQUEST_HEADERS = {
    "host",
    "accept",
    "accept-encoding",
    "connection",
    "user-agent",
    "authorization",
    "x-merchant",
    "x-channel",
    "x-adapterid",
    "content-type",
    "content-length",
}


async def test_crafted_order_ids_and_scopes_never_reach_another_path_or_header(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traversal/injection attempts are dead-lettered at parse time; nothing odd is requested.

    Every HTTP request the simulator received (all headers, as parsed from the wire) is
    checked: only the expected paths, only the expected header names, no CR/LF anywhere.
    """
    async with simulator() as sim:
        requests: list[tuple[str, str, dict[str, str]]] = []
        original = sim.app.handle_lowered

        def recording(method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
            requests.append((method, target, dict(headers)))
            return original(method, target, headers, body)

        monkeypatch.setattr(sim.app, "handle_lowered", recording)
        (control,) = sim.app.seed(1, "norce", "1")
        settings = make_settings(kafka_bootstrap, sim.url, partitions=2)
        async with recording_bridge(kafka_bootstrap, sim, settings, {}) as bridge:
            expect: dict[tuple[int, int], tuple[str, set[str]]] = {}
            for order_id in BAD_ORDER_IDS:
                for kind in ("SetOrderState", "DeleteOrder"):
                    _, value = raw_command(order_id, kind=kind)
                    src = await bridge.send_raw(value, key=b"crafted")
                    expect[src] = (f"{kind} orderId={order_id!r}", {"bad_order_id"})
            for merchant, channel in BAD_SCOPES:
                _, value = raw_command("o_scope", merchant=merchant, channel=channel)
                src = await bridge.send_raw(value, key=b"crafted")
                expect[src] = (f"merchant={merchant!r} channel={channel!r}", {"invalid_field"})
            odd: dict[tuple[int, int], str] = {}
            for order_id in ODD_BUT_VALID_IDS:
                _, value = raw_command(order_id)
                odd[await bridge.send_raw(value, key=order_id.encode())] = order_id
            control_cmd = set_state(control, "processing")
            await bridge.send(control_cmd)
            out = await bridge.all_handled(timeout_s=60)
            dlq = bridge.dead_letters()

    problems: list[str] = []
    for src, (what, reasons) in expect.items():
        record = dlq.get(src)
        if record is None:
            problems.append(f"{what}: not dead-lettered")
            continue
        reason = dict(record.headers)["__connect.errors.reason"].decode()
        if reason not in reasons:
            problems.append(f"{what}: dead-lettered as {reason}, expected {sorted(reasons)}")
    for src, order_id in odd.items():  # valid ids for unknown orders: a 404 at the right path
        record = dlq.get(src)
        got = dict(record.headers)["__connect.errors.reason"].decode() if record else None
        if got != "order_not_found":
            problems.append(f"odd id {order_id!r}: {got}, expected order_not_found")
    assert not problems, "\n".join(problems)
    (result,) = out.results_by_command()[control_cmd.command_id]
    assert result["outcome"] == "applied"

    # The simulator's own call log: only the control order and the odd ids, each at its path.
    allowed_paths: dict[str, str] = {}
    for order_id in [control, *ODD_BUT_VALID_IDS]:
        segment = urllib.parse.quote(order_id, safe="")
        allowed_paths[f"{ORDERS}/{segment}"] = order_id
        allowed_paths[f"{ORDERS}/{segment}/state"] = order_id
    calls = sim.app.calls()
    assert calls, "the simulator saw no request at all"
    for call in calls:
        assert call["path"] in allowed_paths, f"unexpected request path {call['path']!r}"
        assert call["order_id"] == allowed_paths[call["path"]], call
        assert call["headers"]["x-merchant"] == "norce"
        assert call["headers"]["x-channel"] == "1"
    for order_id in ODD_BUT_VALID_IDS:
        seen = [c for c in calls if c["order_id"] == order_id]
        assert [c["method"] for c in seen] == ["GET"], (order_id, seen)

    # Every request as received on the wire: known header names only, no CR/LF, no injection.
    assert len(requests) == len(calls)
    for method, target, headers in requests:
        assert method in ("GET", "PUT"), (method, target)
        assert set(headers) <= ALLOWED_REQUEST_HEADERS, (target, sorted(headers))
        for header, text in headers.items():
            assert "\r" not in text, (target, header)
            assert "\n" not in text, (target, header)
            assert "injected" not in header.lower()
            assert "injected" not in text.lower()
        assert headers["x-merchant"] == "norce"
        assert headers["x-channel"] == "1"


async def test_norce_client_refuses_crafted_ids_and_header_values_before_sending() -> None:
    """Defence in depth: the client itself rejects them, and no request leaves the process."""
    async with simulator() as sim:
        (order_id,) = sim.app.seed(1, "norce", "1")
        http = build_http_client(sim.url)
        client = NorceClient(http, api_key=SecretStr(API_KEY))
        try:
            for bad in BAD_ORDER_IDS:
                with pytest.raises(InvalidOrderIdError):
                    await client.get_order_json(bad, merchant="norce", channel="1")
                with pytest.raises(InvalidOrderIdError):
                    await client.set_state(bad, "processing", merchant="norce", channel="1")
                with pytest.raises(InvalidOrderIdError):
                    await client.delete_order(bad, merchant="norce", channel="1")
            for merchant, channel in [*BAD_SCOPES, ("nörce", "1"), ("norce", "1\u0085")]:
                with pytest.raises(InvalidCommandError) as info:
                    await client.get_order_json(order_id, merchant=merchant, channel=channel)
                assert info.value.reason == "bad_header_value"
        finally:
            await http.aclose()
        assert sim.app.calls() == []


async def test_non_ascii_scope_is_dead_lettered_as_invalid_field_at_parse_time(
    kafka_bootstrap: str,
) -> None:
    """A merchant/channel that passes the command model but cannot be an HTTP header value.

    ``nörce`` or a C1 control character (U+0085, NEL) is not printable ASCII: the client refuses
    to send it (``bad_header_value``). The command is bad, so it must be dead-lettered as
    ``invalid_field`` straight away, not retried as an unexpected error.
    """
    async with simulator() as sim:
        settings = make_settings(kafka_bootstrap, sim.url, partitions=1)
        async with recording_bridge(kafka_bootstrap, sim, settings, {}) as bridge:
            srcs = {}
            for merchant, channel in (("nörce", "1"), ("norce", "1\u0085"), ("norce\u2028", "1")):
                _, value = raw_command("o_scope", merchant=merchant, channel=channel)
                srcs[await bridge.send_raw(value, key=b"scope")] = f"{merchant!r}/{channel!r}"
            await bridge.all_handled(timeout_s=60)
            dlq = bridge.dead_letters()
        assert sim.app.calls() == []
    got = {srcs[src]: dict(dlq[src].headers)["__connect.errors.reason"].decode() for src in srcs}
    assert set(got.values()) == {"invalid_field"}, got


# --------------------------------------------------------------------------- 4. no config exposed


async def test_health_and_metrics_expose_no_configuration_values(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    """/metrics, /healthz, /readyz (ready and not ready) carry no configuration value."""
    key_file = _write_secret(tmp_path / "secrets" / "norce-api-key", API_KEY)
    async with simulator() as sim:
        settings = secure_settings(
            secure_broker,
            sim.url,
            "SCRAM-SHA-256",
            secrets_dir=tmp_path / "secrets",
            password_in_file=True,
            api_key_file=key_file,
        )
        options = kafka_options(settings)
        await ensure_topics(settings, options)
        bridge = RecordingBridge(secure_broker.bootstrap, sim, settings, options)
        service = await build_service(settings)  # key and password from their files
        bodies: dict[str, str] = {}
        try:
            assert service.health is not None
            not_ready = await _fetch_endpoints(service.health.url)
            bodies.update({f"{k} (before start)": v for k, v in not_ready.items()})
            assert not_ready["GET /readyz"].startswith("503"), not_ready["GET /readyz"]
            bridge.service = service
            bridge.task = asyncio.create_task(service.runtime.run())
            (order_id,) = sim.app.seed(1, "norce", "1")
            await bridge.send(set_state(order_id, "processing"))
            await bridge.all_handled(timeout_s=60)
            base = service.health.url

            async def ready_with_series() -> bool:
                async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                    ready = (await http.get("/readyz")).status_code == 200
                    text = (await http.get("/metrics")).text
                return ready and "norce_bridge_committed_offset{" in text

            deadline = time.monotonic() + 30
            while not await ready_with_series():
                assert time.monotonic() < deadline, "never ready with committed offsets"
                await asyncio.sleep(0.1)
            bodies.update(await _fetch_endpoints(base))
        finally:
            await bridge.aclose()

    k, t, n = settings.kafka, settings.topics, settings.norce
    assert k.sasl_password_file is not None
    assert k.ssl_cafile is not None
    sim_host = urllib.parse.urlsplit(sim.url).netloc
    values = {
        "bootstrap servers": k.bootstrap_servers,
        "plaintext listener": secure_broker.plaintext,
        "norce base url": n.base_url,
        "norce host:port": sim_host,
        "group id": k.group_id,
        "client id": k.client_id,
        "adapter id": str(n.adapter_id),
        "sasl username": str(k.sasl_username),
        "api key file": str(key_file),
        "sasl password file": str(k.sasl_password_file),
        "ca file": str(k.ssl_cafile),
        "secrets directory": str(tmp_path),
        "api key": API_KEY,
        "sasl password": secure_broker.users["SCRAM-SHA-256"].password,
        **{
            f"topic {role}": name
            for role, name in zip(
                ("commands", "snapshots", "events", "results", "dlq"),
                (t.commands, t.snapshots, t.events, t.results, t.dlq),
                strict=True,
            )
        },
    }
    exposed = {name: found for name, body in bodies.items() if (found := find_values(body, values))}
    assert not exposed, "configuration values exposed:\n" + "\n".join(
        f"  {name}: {found}" for name, found in exposed.items()
    )
