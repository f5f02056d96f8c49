"""A real, single-node Apache Kafka broker (KRaft, combined broker+controller) on loopback.

One code path serves the pytest session fixture, the demo and the benchmarks:

1. :func:`ensure_kafka_libs` resolves the official broker artifact
   (``org.apache.kafka:kafka_2.13``, pinned below) with its runtime dependencies and a log4j2
   backend from Maven Central, using Maven, into a cache directory outside the repository
   (``$NORCE_BRIDGE_CACHE`` or ``$XDG_CACHE_HOME/norce-order-bridge`` or
   ``~/.cache/norce-order-bridge``). The download happens once; later runs reuse it.
2. :class:`LocalKafka` formats KRaft storage, starts ``java kafka.Kafka`` on free ports on
   127.0.0.1, waits until the broker answers metadata requests, and stops it with SIGTERM (then
   SIGKILL after a deadline). The broker's log goes to a file whose tail is included in the error
   when startup fails.
3. :func:`external_bootstrap` returns ``KAFKA_BOOTSTRAP_SERVERS`` when set: then nothing is started.

This module is development tooling (tests, demo, benchmarks), not part of the service's hot path;
it is the one place besides the settings model that reads the process environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.17"

_POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.norce-order-bridge</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = error
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""

_HOW_TO_FIX = (
    "Install a Java 17+ runtime and Apache Maven (e.g. `apt-get install -y openjdk-17-jre-headless "
    "maven`) with access to Maven Central, or point the project at an existing broker by setting "
    "KAFKA_BOOTSTRAP_SERVERS=host:port."
)


class LocalKafkaError(RuntimeError):
    """The local broker could not be provisioned or started; the message says what to do."""


def cache_root() -> Path:
    """Directory (outside the repository) where downloaded artifacts are kept between runs."""
    explicit = os.environ.get("NORCE_BRIDGE_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "norce-order-bridge"


def external_bootstrap() -> str | None:
    """The broker named by ``KAFKA_BOOTSTRAP_SERVERS``, if any: then nothing is started."""
    value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    return value or None


def ensure_kafka_libs(*, progress: bool = True) -> Path:
    """Resolve the broker's jars from Maven Central once; return the directory holding them."""
    home = cache_root() / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}"
    lib = home / "lib"
    marker = home / ".complete"
    if marker.exists() and any(lib.glob(f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar")):
        return lib
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        missing = " and ".join(n for n, p in (("java", java), ("mvn", mvn)) if p is None)
        raise LocalKafkaError(
            f"cannot provision the local Kafka broker: {missing} not found. {_HOW_TO_FIX}"
        )
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f"lib.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (home / "pom.xml").write_text(_POM)
    if progress:
        print(
            f"[localkafka] resolving org.apache.kafka:kafka_{SCALA_VERSION}:{KAFKA_VERSION} "
            f"from Maven Central into {home} (once)",
            flush=True,
        )
    started = time.monotonic()
    proc = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise LocalKafkaError(
            f"Maven could not resolve the Kafka broker artifacts (exit {proc.returncode}). "
            f"{_HOW_TO_FIX}\n--- maven output (tail) ---\n{tail}"
        )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    marker.write_text(KAFKA_VERSION)
    if progress:
        print(
            f"[localkafka] resolved {len(list(lib.glob('*.jar')))} jars "
            f"in {time.monotonic() - started:.1f}s",
            flush=True,
        )
    return lib


def terminate(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """Stop a local JVM process: SIGCONT (a paused one could not run its SIGTERM handler),
    SIGTERM, wait up to ``timeout_s``, then SIGKILL. Nothing for None or an exited process."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_metadata(
    bootstrap: str, *, timeout_s: float, client_kwargs: Mapping[str, object] | None = None
) -> None:
    """Block until the broker answers a metadata request (via aiokafka, on a private loop)."""
    from aiokafka.admin import AIOKafkaAdminClient

    errors: list[BaseException] = []

    async def probe() -> None:
        deadline = time.monotonic() + timeout_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=bootstrap, request_timeout_ms=3000, **dict(client_kwargs or {})
            )
            try:
                await admin.start()
                await admin.describe_cluster()
                return
            except Exception as exc:  # broker not up yet: retry until the deadline
                last = exc
            finally:
                with contextlib.suppress(Exception):
                    await admin.close()
            await asyncio.sleep(0.2)
        raise LocalKafkaError(
            f"broker at {bootstrap} did not answer metadata within {timeout_s}s: {last!r}"
        )

    def runner() -> None:
        try:
            asyncio.run(probe())
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=runner, name="localkafka-probe", daemon=True)
    t.start()
    t.join(timeout_s + 15)
    if errors:
        raise errors[0]


@dataclass
class LocalKafka:
    """A single-node KRaft broker on 127.0.0.1, started and stopped by this process.

    Extra listeners (e.g. SASL_SSL for security tests) can be added with ``extra_listeners``
    (name → port) and ``extra_properties``; ``data_dir`` may be given so that a restart keeps the
    log (broker restarts in fault tests). Property values may span lines (inline PEM
    certificates and keys): line breaks are written as ``\n`` escapes. ``scram_users``
    (name → password) are created for every mechanism in ``scram_mechanisms`` when the storage
    is formatted (KRaft keeps SCRAM credentials in the metadata log); see
    :func:`sasl_ssl_listener_properties` for a complete SASL_SSL listener. The PLAINTEXT listener
    stays the inter-broker one.
    """

    data_dir: Path | None = None
    heap: str = "768m"
    extra_listeners: dict[str, tuple[str, int]] = field(
        default_factory=dict
    )  # name -> (protocol, port)
    extra_properties: dict[str, str] = field(default_factory=dict)
    jvm_options: list[str] = field(default_factory=list)
    startup_timeout_s: float = 90.0
    port: int = 0
    controller_port: int = 0
    scram_users: dict[str, str] = field(default_factory=dict)  # name -> password (format time)
    scram_mechanisms: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512")
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_dir: bool = field(default=False, init=False, repr=False)
    _log_handle: object | None = field(default=None, init=False, repr=False)
    cold_start_s: float | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (benchmarks read its CPU from ``/proc``)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def listener_bootstrap(self, name: str) -> str:
        """``host:port`` of the extra listener ``name`` (its port is known once started)."""
        _protocol, port = self.extra_listeners[name]
        if not port:
            raise LocalKafkaError(f"listener {name} has no port yet: start the broker first")
        return f"127.0.0.1:{port}"

    @property
    def log_file(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "broker.log"

    def _properties(self) -> str:
        assert self.data_dir is not None
        listeners = [
            f"PLAINTEXT://127.0.0.1:{self.port}",
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
        ]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for name, (protocol, port) in self.extra_listeners.items():
            listeners.append(f"{name}://127.0.0.1:{port}")
            advertised.append(f"{name}://127.0.0.1:{port}")
            protocol_map.append(f"{name}:{protocol}")
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocol_map),
            "log.dirs": str(self.data_dir / "log"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "6",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.cleaner.threads": "1",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
            "log.index.size.max.bytes": "1048576",
        }
        props.update(self.extra_properties)
        return "".join(f"{k}={_escape_property_value(v)}\n" for k, v in props.items())

    def _scram_format_args(self) -> list[str]:
        """``--add-scram`` arguments of ``StorageTool format`` for ``scram_users``."""
        args: list[str] = []
        for name, password in self.scram_users.items():
            for bad in ('"', "\\", "\n", "\r"):
                if bad in name or bad in password:
                    raise LocalKafkaError(f"SCRAM user {name!r}: name/password contain {bad!r}")
            for mechanism in self.scram_mechanisms:
                args += ["--add-scram", f'{mechanism}=[name="{name}",password="{password}"]']
        return args

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise LocalKafkaError(
                f"cannot start the local Kafka broker: java not found. {_HOW_TO_FIX}"
            )
        return java

    def start(self) -> LocalKafka:
        """Provision (once), format storage (first start) and start the broker; wait until ready."""
        lib = ensure_kafka_libs()
        java = self._java()
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="norce-bridge-kafka-"))
            self._own_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        if not self.controller_port:
            self.controller_port = free_port()
        for name, (protocol, port) in list(self.extra_listeners.items()):
            if not port:
                self.extra_listeners[name] = (protocol, free_port())
        props_file = self.data_dir / "server.properties"
        props_file.write_text(self._properties())
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(_LOG4J2)
        classpath = f"{lib}/*"
        common = [f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        started = time.monotonic()
        if not (self.data_dir / "log" / "meta.properties").exists():
            import base64

            # Like Kafka's Uuid.randomUuid(): an id starting with "-" would be read as an option
            # by the StorageTool's argument parser (1 start in 64 failed that way).
            cid = "-"
            while cid.startswith("-"):
                cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                [
                    java,
                    "-Xmx256m",
                    *common,
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cid,
                    "-c",
                    str(props_file),
                    "--ignore-formatted",
                    *self._scram_format_args(),
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            if fmt.returncode != 0:
                raise LocalKafkaError(
                    f"formatting KRaft storage failed:\n{(fmt.stdout + fmt.stderr)[-3000:]}"
                )
        log = open(self.log_file, "ab")  # noqa: SIM115 - kept open for the broker's lifetime
        self._log_handle = log
        self._proc = subprocess.Popen(
            [
                java,
                f"-Xmx{self.heap}",
                f"-Xms{self.heap}",
                # kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS: without the 20 ms pause
                # goal, G1 aims at 200 ms and the broker paused 24-35 ms per young collection
                # under the benchmarks (both pipelines stalled behind it).
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
                *self.jvm_options,
                *common,
                "kafka.Kafka",
                str(props_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.cold_start_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout_s
        # Cheap TCP check first, then a real metadata round trip.
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise LocalKafkaError(
                    f"the broker exited with {self._proc.returncode} during startup\n"
                    f"{self.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                break
            time.sleep(0.1)
        else:
            raise LocalKafkaError(
                f"the broker did not open port {self.port} within {self.startup_timeout_s}s\n"
                f"{self.log_tail()}"
            )
        try:
            wait_for_metadata(
                self.bootstrap_servers, timeout_s=max(5.0, deadline - time.monotonic())
            )
        except LocalKafkaError as exc:
            raise LocalKafkaError(f"{exc}\n{self.log_tail()}") from exc

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the broker log (printed when startup fails)."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no broker log)"
        return "--- broker log (tail) ---\n" + "\n".join(text)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """SIGTERM (after SIGCONT), wait up to ``timeout_s``, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout_s)
        if self._log_handle is not None:
            with contextlib.suppress(Exception):
                self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None

    def kill(self) -> None:
        """SIGKILL the broker (crash simulation); the data directory is kept."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def pause(self) -> None:
        """SIGSTOP the broker: it stops answering, connections stay open (a hung broker)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again on the same ports and data directory."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the data directory if this object created it."""
        self.stop()
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def _escape_property_value(value: str) -> str:
    """A value for a Java properties file: line breaks become ``\\n``/``\\r`` escapes."""
    return value.replace("\r", "\\r").replace("\n", "\\n")


def sasl_ssl_listener_properties(
    listener: str,
    *,
    certificate_chain_pem: str,
    private_key_pem: str,
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
    plain_users: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Broker properties for a SASL_SSL listener named ``listener`` (for ``extra_properties``).

    TLS: the server certificate chain and its unencrypted PKCS#8 private key (PEM text), inline
    (``ssl.keystore.type=PEM``); no client certificates. SASL: ``mechanisms`` enabled on this
    listener only; PLAIN users (name → password) live in the listener's JAAS config, SCRAM users
    are created at format time (``LocalKafka.scram_users``).
    """
    if "BEGIN PRIVATE KEY" not in private_key_pem:
        raise LocalKafkaError("the listener key must be an unencrypted PKCS#8 PEM private key")
    prefix = f"listener.name.{listener.lower()}"
    props = {
        f"{prefix}.ssl.keystore.type": "PEM",
        f"{prefix}.ssl.keystore.certificate.chain": certificate_chain_pem.strip(),
        f"{prefix}.ssl.keystore.key": private_key_pem.strip(),
        f"{prefix}.ssl.client.auth": "none",
        f"{prefix}.sasl.enabled.mechanisms": ",".join(mechanisms),
    }
    for name, pw in (plain_users or {}).items():
        if not name or any(c in name for c in " \t=\"';\\") or any(c in pw for c in '"\\\r\n'):
            raise LocalKafkaError(f"PLAIN user {name!r}: unusable name or password characters")
    for mechanism in mechanisms:
        if mechanism == "PLAIN":
            users = "".join(f' user_{name}="{pw}"' for name, pw in (plain_users or {}).items())
            module = "org.apache.kafka.common.security.plain.PlainLoginModule"
            props[f"{prefix}.plain.sasl.jaas.config"] = f"{module} required{users};"
        elif mechanism.startswith("SCRAM-"):
            module = "org.apache.kafka.common.security.scram.ScramLoginModule"
            props[f"{prefix}.{mechanism.lower()}.sasl.jaas.config"] = f"{module} required;"
        else:
            raise LocalKafkaError(f"unsupported SASL mechanism {mechanism!r}")
    return props


@contextlib.contextmanager
def kafka_for_dev() -> Iterator[str]:
    """Yield a bootstrap address: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else a fresh local broker."""
    external = external_bootstrap()
    if external:
        yield external
        return
    with LocalKafka() as kafka:
        yield kafka.bootstrap_servers
